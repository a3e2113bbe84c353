//! The fixed 64-byte frame header, the frame checksum, and the decoder that
//! cuts frames out of a byte stream.
//!
//! ```text
//! offset size field
//!  0     4    magic        "KEEL"
//!  4     2    version      protocol version (1)
//!  6     1    kind         Kind
//!  7     1    flags        bit 0 RESUME (Hello: the session must exist;
//!                          Welcome: it did); other bits must be zero
//!  8     4    body_len     bytes after the header, <= BODY_BYTES_MAX
//! 12     4    tenant       the tenant the frame acts for
//! 16     8    session      the client's session id (random, non-zero)
//! 24     8    request      the first request number the frame carries
//! 32     8    correlation  the sender's frame id, echoed in the answer
//! 40     4    shard        the shard addressed (0 until sharding lands)
//! 44     4    epoch        the leader epoch the sender knows (0 until replication)
//! 48     8    reserved     zero
//! 56     8    checksum     XXH3-64 of bytes 0..56 then the body
//! ```

use xxhash_rust::xxh3::Xxh3;

use crate::{BODY_BYTES_MAX, HEADER_BYTES, MAGIC};

/// Header flag bit 0 on `Hello`: resume the session, which must exist (a
/// reconnect); on `Welcome`: the session existed, and `request` is the
/// highest request number it has applied. Other flag bits are reserved.
pub const FLAG_RESUME: u8 = 1;

const FLAGS_KNOWN: u8 = FLAG_RESUME;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → node, first frame: versions spoken and credentials.
    Hello = 1,
    /// Node → client: the connection is accepted (version, tenant, limits).
    Welcome = 2,
    /// Node → client: the connection or frame is refused; the node closes it.
    Refused = 3,
    /// Client → node: one or more requests.
    Request = 4,
    /// Node → client: one or more replies.
    Reply = 5,
    /// Either way: are you there? (answered with `Pong`, same correlation).
    Ping = 6,
    /// The answer to `Ping`.
    Pong = 7,
    /// Replica ↔ replica or controller (replication links only; a client
    /// port refuses it): a routed replication message, docs/protocol.md.
    Replication = 8,
}

impl Kind {
    /// The kind a header's kind byte names, or `None` for an unknown byte.
    pub fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Refused,
            4 => Kind::Request,
            5 => Kind::Reply,
            6 => Kind::Ping,
            7 => Kind::Pong,
            8 => Kind::Replication,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Frame kind.
    pub kind: Kind,
    /// Flags ([`FLAG_RESUME`]).
    pub flags: u8,
    /// Body bytes after the header.
    pub body_len: u32,
    /// Tenant.
    pub tenant: u32,
    /// Session id.
    pub session: u64,
    /// First request number carried.
    pub request: u64,
    /// Frame id, echoed in the answer.
    pub correlation: u64,
    /// Shard addressed.
    pub shard: u32,
    /// Leader epoch known to the sender.
    pub epoch: u32,
}

impl Header {
    /// A header of `kind` with every other field zero (set what you need).
    pub fn new(kind: Kind) -> Self {
        Self {
            version: crate::VERSION,
            kind,
            flags: 0,
            body_len: 0,
            tenant: 0,
            session: 0,
            request: 0,
            correlation: 0,
            shard: 0,
            epoch: 0,
        }
    }
}

/// A frame cut out of the stream: its header and borrowed body.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The body (`header.body_len` bytes), checksum verified.
    pub body: &'a [u8],
}

/// Why bytes are not a frame. Each is a protocol violation: the node answers
/// with a `Refused` frame and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first four bytes are not `"KEEL"` (not Keel's protocol at all,
    /// e.g. an HTTP request or TLS to a plain port).
    #[error("bad magic {found:#010x}: not a Keel frame")]
    BadMagic {
        /// The bytes found, as a little-endian u32.
        found: u32,
    },
    /// `body_len` exceeds [`BODY_BYTES_MAX`].
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// The declared body length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The kind byte names no kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flags or reserved bytes are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// The checksum does not match header and body.
    #[error("frame checksum mismatch: header says {expected:016x}, bytes give {actual:016x}")]
    Checksum {
        /// The header's checksum.
        expected: u64,
        /// The checksum of the bytes received.
        actual: u64,
    },
    /// The body does not hold what its kind says (offset of the first bad byte).
    #[error("malformed {kind:?} body at byte {offset}")]
    Malformed {
        /// The frame kind.
        kind: Kind,
        /// Offset in the body.
        offset: usize,
    },
}

fn checksum(header_prefix: &[u8], body: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(header_prefix);
    hasher.update(body);
    hasher.digest()
}

/// Appends one frame (header with `body_len` and checksum filled in, then
/// `body`) to `out`. Panics if `body` exceeds [`BODY_BYTES_MAX`]: the
/// encoders in this crate never build one.
pub fn encode_frame(header: &Header, body: &[u8], out: &mut Vec<u8>) {
    encode_frame_limited(header, body, BODY_BYTES_MAX, out);
}

/// [`encode_frame`] for a link with a larger body limit (a replication
/// link's [`crate::REPLICATION_BODY_BYTES_MAX`]). Panics past `max`.
pub fn encode_frame_limited(header: &Header, body: &[u8], max: usize, out: &mut Vec<u8>) {
    assert!(body.len() <= max, "frame body too large");
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&header.version.to_le_bytes());
    out.push(header.kind as u8);
    out.push(header.flags);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&header.tenant.to_le_bytes());
    out.extend_from_slice(&header.session.to_le_bytes());
    out.extend_from_slice(&header.request.to_le_bytes());
    out.extend_from_slice(&header.correlation.to_le_bytes());
    out.extend_from_slice(&header.shard.to_le_bytes());
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let sum = checksum(&out[start..start + 56], body);
    out.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len() - start, HEADER_BYTES);
    out.extend_from_slice(body);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Cuts the first frame out of `buf`. `Ok(None)`: more bytes are needed
/// (the header is checked as soon as it is complete, so an oversized or
/// foreign frame is refused before its body arrives). `Ok(Some((frame,
/// consumed)))`: a whole, checksum-verified frame of `consumed` bytes.
/// The version is not checked here: the handshake negotiates it.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    decode_frame_limited(buf, BODY_BYTES_MAX)
}

/// [`decode_frame`] for a link whose bodies may reach `max` bytes (a
/// replication link's [`crate::REPLICATION_BODY_BYTES_MAX`]).
pub fn decode_frame_limited(
    buf: &[u8],
    max: usize,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() >= 4 {
        let magic = u32_at(buf, 0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
    }
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let body_len = u32_at(buf, 8);
    if body_len as usize > max {
        return Err(FrameError::Oversized { len: body_len, max });
    }
    let kind = Kind::from_u8(buf[6]).ok_or(FrameError::UnknownKind(buf[6]))?;
    if buf[7] & !FLAGS_KNOWN != 0 || buf[48..56].iter().any(|&b| b != 0) {
        return Err(FrameError::Reserved);
    }
    let end = HEADER_BYTES + body_len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let body = &buf[HEADER_BYTES..end];
    let expected = u64_at(buf, 56);
    let actual = checksum(&buf[..56], body);
    if expected != actual {
        return Err(FrameError::Checksum { expected, actual });
    }
    let header = Header {
        version: u16_at(buf, 4),
        kind,
        flags: buf[7],
        body_len,
        tenant: u32_at(buf, 12),
        session: u64_at(buf, 16),
        request: u64_at(buf, 24),
        correlation: u64_at(buf, 32),
        shard: u32_at(buf, 40),
        epoch: u32_at(buf, 44),
    };
    Ok(Some((Frame { header, body }, end)))
}
