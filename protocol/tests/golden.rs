//! Golden bytes: the wire format is pinned here. A change that moves a byte
//! fails these tests; a new version must still decode the old frames.

use keel_protocol::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(header: Header, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&header, body, &mut out);
    out
}

#[test]
fn header_layout_is_pinned() {
    let mut header = Header::new(Kind::Ping);
    header.tenant = 0x0403_0201;
    header.session = 0x1111_2222_3333_4444;
    header.request = 7;
    header.correlation = 0xAB;
    header.shard = 2;
    header.epoch = 3;
    let bytes = frame(header, &[]);
    assert_eq!(bytes.len(), HEADER_BYTES);
    assert_eq!(&bytes[0..4], b"KEEL");
    assert_eq!(
        hex(&bytes[..56]),
        concat!(
            "4b45454c",
            "0100",
            "06",
            "00",
            "00000000",
            "01020304",
            "4444333322221111",
            "0700000000000000",
            "ab00000000000000",
            "02000000",
            "03000000",
            "0000000000000000"
        )
    );
    assert_eq!(
        hex(&bytes[56..]),
        "ae5b2bb6dd8314a1",
        "checksum of header prefix"
    );
    let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
    assert_eq!(used, HEADER_BYTES);
    assert_eq!(decoded.header, header);
}

#[test]
fn hello_welcome_refused_bodies_are_pinned() {
    let mut body = Vec::new();
    Hello {
        version_min: 1,
        version_max: 2,
        token: b"tok",
    }
    .encode(&mut body);
    assert_eq!(hex(&body), "0100020003000000746f6b");
    assert_eq!(Hello::decode(&body).unwrap().token, b"tok");

    body.clear();
    Welcome {
        version: 1,
        tenant: 9,
        in_flight_max: 64,
        entries_per_frame_max: 256,
        body_bytes_max: 65536,
    }
    .encode(&mut body);
    assert_eq!(hex(&body), "0100000009000000400000000001000000000100");
    assert_eq!(Welcome::decode(&body).unwrap().tenant, 9);

    body.clear();
    Refusal {
        code: RefusalCode::UnsupportedVersion,
        message: "v1",
    }
    .encode(&mut body);
    assert_eq!(hex(&body), "010002007631");
}

#[test]
fn request_and_reply_bodies_are_pinned() {
    let mut body = Vec::new();
    Requests::begin(&mut body);
    Requests::push(
        &mut body,
        &RequestEntry {
            request: 1,
            correlation: 2,
            command_type: 3,
            schema_version: 1,
            payload: &[0xEE, 0xFF],
        },
    );
    assert_eq!(
        hex(&body),
        "01000000010000000000000002000000000000000300010002000000eeff"
    );
    let requests = Requests::decode(&body).unwrap();
    let entries: Vec<_> = requests.iter().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].payload, &[0xEE, 0xFF]);

    Replies::begin(&mut body);
    let mut reply = ReplyEntry::new(1, 2, ReplyStatus::Duplicate).with_data(&[0xAA]);
    reply.sequence = 5;
    reply.code = 4;
    Replies::push(&mut body, &reply);
    assert_eq!(body.len(), 4 + REPLY_ENTRY_BYTES);
    assert_eq!(
        hex(&body[..37]),
        concat!(
            "01000000",
            "0100000000000000",
            "0200000000000000",
            "0500000000000000",
            "04000000",
            "01",
            "01",
            "0000",
            "aa"
        )
    );
    assert!(
        body[37..].iter().all(|&b| b == 0),
        "unused data bytes are zero"
    );
    let back: Vec<_> = Replies::decode(&body).unwrap().iter().collect();
    assert_eq!(back, vec![reply]);
}

#[test]
fn session_resume_flag_and_eviction_codes_are_pinned() {
    let mut header = Header::new(Kind::Hello);
    header.flags = FLAG_RESUME;
    let bytes = frame(header, &[]);
    assert_eq!(bytes[7], 0x01, "RESUME is bit 0 of the flags byte");
    assert_eq!(
        decode_frame(&bytes).unwrap().unwrap().0.header.flags,
        FLAG_RESUME
    );
    // Every other flag bit is reserved: refused, never ignored.
    for bit in 1..8 {
        let mut bad = bytes.clone();
        bad[7] = 1 << bit;
        assert_eq!(decode_frame(&bad).unwrap_err(), FrameError::Reserved);
    }

    let mut body = Vec::new();
    Refusal {
        code: RefusalCode::SessionEvicted,
        message: "",
    }
    .encode(&mut body);
    assert_eq!(hex(&body), "08000000");
    assert_eq!(
        Refusal::decode(&body).unwrap().code,
        RefusalCode::SessionEvicted
    );

    Replies::begin(&mut body);
    let mut reply = ReplyEntry::new(1, 1, ReplyStatus::SessionEvicted);
    reply.code = 2;
    Replies::push(&mut body, &reply);
    assert_eq!(body[4 + 28], 8, "status byte of SessionEvicted");
    assert_eq!(Replies::decode(&body).unwrap().iter().next(), Some(reply));
}
