//! Keel's wire protocol: length-prefixed, checksummed, little-endian frames
//! between a client and a node (and, later, between replicas).
//!
//! Every frame is a fixed 64-byte [`Header`] followed by `body_len` bytes of
//! body. The header's last field is an XXH3-64 of the header's first 56
//! bytes followed by the body, so a flipped bit anywhere is found before a
//! byte of the body is interpreted. The byte layout is in `docs/protocol.md`
//! and pinned by golden tests (`tests/golden.rs`): a change that moves a byte
//! fails them.
//!
//! Decoding never panics and never allocates: [`decode_frame`] borrows the
//! body from the read buffer and returns `Ok(None)` while the frame is
//! incomplete, after refusing an oversized `body_len` from the header alone
//! (so a peer cannot make the reader buffer more than [`BODY_BYTES_MAX`]).
//! Encoding appends to a caller-owned `Vec<u8>` that is reused across frames.

#![forbid(unsafe_code)]

mod body;
mod header;

pub use body::{
    Hello, Refusal, RefusalCode, Replies, ReplyEntry, ReplyStatus, RequestEntry, Requests, Welcome,
    REPLY_ENTRY_BYTES, REQUEST_ENTRY_HEADER_BYTES,
};
pub use header::{
    decode_frame, decode_frame_limited, encode_frame, encode_frame_limited, Frame, FrameError,
    Header, Kind, FLAG_RESUME,
};

/// The frame magic, `"KEEL"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"KEEL");
/// The protocol version this build speaks (the only one so far).
pub const VERSION: u16 = 1;
/// Bytes in every frame's header.
pub const HEADER_BYTES: usize = 64;
/// The largest body a frame may carry; a larger `body_len` is refused from
/// the header alone.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest body on a replication link (`Kind::Replication`): an `Append`
/// carries whole group-commit writes.
pub const REPLICATION_BODY_BYTES_MAX: usize = 32 << 20;
/// The most entries (requests or replies) one frame carries.
pub const ENTRIES_PER_FRAME_MAX: usize = 256;
/// The largest payload one request entry carries (the engine's slot payload).
pub const PAYLOAD_BYTES_MAX: usize = 896;
/// The largest result body one reply entry carries (the engine's outcome body).
pub const RESULT_BYTES_MAX: usize = 48;
/// The longest bearer token a `Hello` may carry.
pub const TOKEN_BYTES_MAX: usize = 256;
/// The longest message a `Refused` frame carries.
pub const MESSAGE_BYTES_MAX: usize = 512;

const _: () = assert!(HEADER_BYTES == 64);
const _: () = assert!(
    4 + ENTRIES_PER_FRAME_MAX * REPLY_ENTRY_BYTES <= BODY_BYTES_MAX,
    "a full reply frame fits one body"
);
const _: () = assert!(BODY_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(PAYLOAD_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(RESULT_BYTES_MAX <= u8::MAX as usize);
