//! Fuzz target: the frame decoder and every body decoder never panic on
//! arbitrary bytes, and whatever they accept survives a re-encode.
//!
//! The raw bytes go to `decode_frame` at every prefix length (a stream read
//! in pieces). They are also wrapped as the body of a valid frame, so the
//! fuzzer reaches the body decoders without having to forge a checksum.
#![no_main]

use keel_protocol::{
    decode_frame, encode_frame, Header, Hello, Kind, Refusal, Replies, RequestEntry, Requests,
    Welcome, BODY_BYTES_MAX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raw_stream(data);
    if let Some((&selector, body)) = data.split_first() {
        wrapped_body(selector, body);
    }
});

/// Arbitrary bytes as a stream: every prefix either needs more bytes, is
/// refused, or holds a frame that re-encodes to exactly its own bytes.
fn raw_stream(data: &[u8]) {
    let mut previous_complete = false;
    for end in 0..=data.len().min(4096) {
        match decode_frame(&data[..end]) {
            Ok(None) => assert!(!previous_complete, "a complete frame became incomplete"),
            Ok(Some((frame, consumed))) => {
                previous_complete = true;
                assert!(consumed <= end);
                let mut out = Vec::new();
                encode_frame(&frame.header, frame.body, &mut out);
                assert_eq!(out, &data[..consumed]);
            }
            Err(_) => return,
        }
    }
}

/// The bytes as the body of a well-formed frame of a kind chosen by the
/// first byte: the frame always decodes, and its body decoder must not panic.
fn wrapped_body(selector: u8, body: &[u8]) {
    if body.len() > BODY_BYTES_MAX {
        return;
    }
    let Some(kind) = Kind::from_u8(selector % 9) else {
        return;
    };
    let mut frame = Vec::new();
    encode_frame(&Header::new(kind), body, &mut frame);
    let (decoded, consumed) = decode_frame(&frame)
        .expect("a frame this crate encoded decodes")
        .expect("and is complete");
    assert_eq!(consumed, frame.len());
    assert_eq!(decoded.body, body);
    let mut out = Vec::new();
    match kind {
        Kind::Hello => {
            if let Ok(hello) = Hello::decode(body) {
                hello.encode(&mut out);
                assert_eq!(out, body, "a Hello re-encodes to its own bytes");
            }
        }
        Kind::Welcome => {
            if let Ok(welcome) = Welcome::decode(body) {
                welcome.encode(&mut out);
                assert_eq!(out, body, "a Welcome re-encodes to its own bytes");
            }
        }
        Kind::Refused => {
            if let Ok(refusal) = Refusal::decode(body) {
                refusal.encode(&mut out);
                // An unknown code decodes as `Other`, so compare values.
                assert_eq!(Refusal::decode(&out).expect("re-decodes"), refusal);
            }
        }
        Kind::Request => {
            if let Ok(requests) = Requests::decode(body) {
                Requests::begin(&mut out);
                let entries: Vec<RequestEntry<'_>> = requests.iter().collect();
                assert_eq!(entries.len(), requests.len());
                for entry in &entries {
                    Requests::push(&mut out, entry);
                }
                assert_eq!(out, body, "a Request body re-encodes to its own bytes");
            }
        }
        Kind::Reply => {
            if let Ok(replies) = Replies::decode(body) {
                Replies::begin(&mut out);
                let entries: Vec<_> = replies.iter().collect();
                for entry in &entries {
                    Replies::push(&mut out, entry);
                }
                let again: Vec<_> = Replies::decode(&out).expect("re-decodes").iter().collect();
                assert_eq!(again, entries);
            }
        }
        // Replication bodies are decoded (and fuzzed) by keel-replication.
        Kind::Ping | Kind::Pong | Kind::Replication => {}
    }
}
