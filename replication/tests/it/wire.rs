//! The replication messages' bytes, pinned (docs/protocol.md,
//! "Replication frames"), and decoding that never panics.

use keel_replication::sim::Rng;
use keel_replication::wire::{decode, encode, WireError};
use keel_replication::{Entry, Message};

fn messages() -> Vec<Message> {
    vec![
        Message::Append {
            epoch: 3,
            prev_seq: 0x1122,
            prev_epoch: 2,
            entries: vec![
                Entry {
                    seq: 0x1123,
                    epoch: 3,
                    data: vec![0xaa, 0xbb],
                },
                Entry {
                    seq: 0x1124,
                    epoch: 3,
                    data: Vec::new(),
                },
            ],
            commit: 0x1120,
        },
        Message::Ack {
            epoch: 3,
            incarnation: 9,
            received: 0x1124,
            durable: 0x1123,
        },
        Message::Mismatch {
            epoch: 3,
            last_seq: 7,
            last_epoch: 1,
        },
        Message::Fenced { epoch: 4 },
        Message::Seal { epoch: 5 },
        Message::Sealed {
            epoch: 5,
            incarnation: 2,
            last_seq: 0x1124,
            last_epoch: 3,
        },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_message_has_pinned_bytes_and_round_trips() {
    let golden = [
        concat!(
            "01",
            "03000000",
            "2211000000000000",
            "02000000",
            "2011000000000000",
            "02000000",
            "2311000000000000",
            "03000000",
            "02000000",
            "aabb",
            "2411000000000000",
            "03000000",
            "00000000"
        ),
        concat!(
            "02",
            "03000000",
            "0900000000000000",
            "2411000000000000",
            "2311000000000000"
        ),
        concat!("03", "03000000", "0700000000000000", "01000000"),
        concat!("04", "04000000"),
        concat!("05", "05000000"),
        concat!(
            "06",
            "05000000",
            "0200000000000000",
            "2411000000000000",
            "03000000"
        ),
    ];
    for (message, golden) in messages().iter().zip(golden) {
        let mut bytes = Vec::new();
        encode(message, &mut bytes);
        assert_eq!(hex(&bytes), golden, "{message:?}");
        assert_eq!(&decode(&bytes).unwrap(), message);
    }
}

#[test]
fn every_truncation_and_any_trailing_byte_is_a_typed_error() {
    for message in messages() {
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        for len in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..len]), Err(WireError::Truncated { .. })),
                "{message:?} cut at {len}"
            );
        }
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(WireError::Trailing { extra: 1 }));
    }
    assert_eq!(decode(&[9]), Err(WireError::UnknownTag(9)));
    let mut huge = vec![1u8];
    huge.extend_from_slice(&[0; 24]);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&huge),
        Err(WireError::TooManyEntries { count: u32::MAX })
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng::new(7);
    let mut valid = Vec::new();
    for message in messages() {
        encode(&message, &mut valid);
    }
    for _ in 0..20_000 {
        let len = rng.below(64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if rng.chance(500_000) && !bytes.is_empty() {
            // Start from a real tag so the field decoders are exercised.
            bytes[0] = 1 + rng.below(6) as u8;
        }
        let _ = decode(&bytes);
        // Flipped bytes of valid encodings, too.
        let mut flipped = valid.clone();
        let at = rng.below(flipped.len() as u64) as usize;
        flipped[at] ^= 1 << rng.below(8);
        let _ = decode(&flipped);
    }
}
