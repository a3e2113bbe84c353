//! Property tests: every encoded frame decodes to itself whatever the read
//! boundaries; any damaged byte is refused with a typed error (never a
//! panic, never a wrong frame).

use keel_protocol::*;
use proptest::prelude::*;

fn request_frame(session: u64, entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    Requests::begin(&mut body);
    for (request, payload) in entries {
        Requests::push(
            &mut body,
            &RequestEntry {
                request: *request,
                correlation: request ^ 7,
                command_type: 2,
                schema_version: 1,
                payload,
            },
        );
    }
    let mut header = Header::new(Kind::Request);
    header.session = session;
    header.request = entries[0].0;
    let mut out = Vec::new();
    encode_frame(&header, &body, &mut out);
    out
}

proptest! {
    #[test]
    fn frames_round_trip_in_pieces(
        session in any::<u64>(),
        entries in prop::collection::vec((1u64.., prop::collection::vec(any::<u8>(), 0..64)), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = request_frame(session, &entries);
        let cut = cut.index(bytes.len());
        if cut < bytes.len() {
            // Fewer bytes than a frame: need more, never an error.
            prop_assert!(decode_frame(&bytes[..cut]).unwrap().is_none());
        }
        let (frame, used) = decode_frame(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame.header.session, session);
        let decoded = Requests::decode(frame.body).unwrap();
        let got: Vec<(u64, Vec<u8>)> = decoded.iter().map(|e| (e.request, e.payload.to_vec())).collect();
        prop_assert_eq!(got, entries);
    }

    #[test]
    fn any_flipped_bit_is_refused(
        entries in prop::collection::vec((1u64.., prop::collection::vec(any::<u8>(), 0..32)), 1..5),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = request_frame(1, &entries);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        match decode_frame(&bytes) {
            Err(_) => {}
            // A flip in body_len can make the frame look longer: incomplete, not wrong.
            Ok(None) => prop_assert!((8..12).contains(&at)),
            Ok(Some(_)) => prop_assert!(false, "a damaged frame decoded"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((frame, _))) = decode_frame(&bytes) {
            let _ = Requests::decode(frame.body);
            let _ = Replies::decode(frame.body);
            let _ = Hello::decode(frame.body);
            let _ = Refusal::decode(frame.body);
        }
        let _ = Requests::decode(&bytes);
        let _ = Replies::decode(&bytes);
        let _ = Hello::decode(&bytes);
        let _ = Welcome::decode(&bytes);
        let _ = Refusal::decode(&bytes);
    }
}

#[test]
fn oversized_is_refused_from_the_header_alone() {
    let mut bytes = request_frame(1, &[(1, vec![1, 2])]);
    bytes[8..12].copy_from_slice(&(BODY_BYTES_MAX as u32 + 1).to_le_bytes());
    assert!(matches!(
        decode_frame(&bytes[..HEADER_BYTES]),
        Err(FrameError::Oversized { .. })
    ));
}

#[test]
fn foreign_bytes_are_refused_at_once() {
    assert!(matches!(
        decode_frame(b"GET / HTTP/1.1\r\n"),
        Err(FrameError::BadMagic { .. })
    ));
    assert!(matches!(
        decode_frame(&[0x16, 0x03, 0x01, 0x00]),
        Err(FrameError::BadMagic { .. })
    ));
}
