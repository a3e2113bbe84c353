//! Frame bodies: the handshake (`Hello`, `Welcome`, `Refused`) and the
//! batched `Request` / `Reply` bodies. Each body type has an `encode` that
//! appends to a reused buffer and a `decode` that borrows and checks every
//! length against the bytes present (typed [`FrameError::Malformed`] with the
//! offset, never a panic).
//!
//! ```text
//! Hello    version_min u16, version_max u16, token_len u16, reserved u16, token
//! Welcome  version u16, reserved u16, tenant u32, in_flight_max u32,
//!          entries_per_frame_max u16, reserved u16, body_bytes_max u32
//! Refused  code u16, message_len u16, message (UTF-8)
//! Request  count u16, reserved u16, then count entries of
//!          request u64, correlation u64, command_type u16, schema_version u16,
//!          payload_len u16, reserved u16, payload
//! Reply    count u16, reserved u16, then count entries of 80 bytes:
//!          request u64, correlation u64, sequence u64, code u32, status u8,
//!          data_len u8, reserved u16, data [48]
//! ```

use crate::header::{FrameError, Kind};
use crate::{
    ENTRIES_PER_FRAME_MAX, MESSAGE_BYTES_MAX, PAYLOAD_BYTES_MAX, RESULT_BYTES_MAX, TOKEN_BYTES_MAX,
};

/// Bytes of a request entry before its payload.
pub const REQUEST_ENTRY_HEADER_BYTES: usize = 24;
/// Bytes of one reply entry (fixed size).
pub const REPLY_ENTRY_BYTES: usize = 80;

/// A bounds-checked little-endian reader over a body.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: Kind,
}

impl<'a> Reader<'a> {
    fn new(kind: Kind, bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0, kind }
    }
    fn malformed(&self) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            offset: self.at,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() - self.at < n {
            return Err(self.malformed());
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A reserved field: must be zero.
    fn zero16(&mut self) -> Result<(), FrameError> {
        let at = self.at;
        match self.u16()? {
            0 => Ok(()),
            _ => Err(FrameError::Malformed {
                kind: self.kind,
                offset: at,
            }),
        }
    }
    fn end(&self) -> Result<(), FrameError> {
        match self.at == self.bytes.len() {
            true => Ok(()),
            false => Err(self.malformed()),
        }
    }
}

/// The client's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Oldest protocol version the client speaks.
    pub version_min: u16,
    /// Newest protocol version the client speaks.
    pub version_max: u16,
    /// Bearer token (empty: none; a client certificate or anonymous access).
    pub token: &'a [u8],
}

impl<'a> Hello<'a> {
    /// Appends the body to `out`. Panics on a token over [`TOKEN_BYTES_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.token.len() <= TOKEN_BYTES_MAX, "token too long");
        out.extend_from_slice(&self.version_min.to_le_bytes());
        out.extend_from_slice(&self.version_max.to_le_bytes());
        out.extend_from_slice(&(self.token.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(self.token);
    }

    /// Reads a `Hello` body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(Kind::Hello, body);
        let version_min = r.u16()?;
        let version_max = r.u16()?;
        let len = r.u16()? as usize;
        r.zero16()?;
        if len > TOKEN_BYTES_MAX {
            return Err(r.malformed());
        }
        let token = r.take(len)?;
        r.end()?;
        Ok(Self {
            version_min,
            version_max,
            token,
        })
    }
}

/// The node's answer to an accepted `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u16,
    /// The tenant the connection's principal acts for.
    pub tenant: u32,
    /// Requests the connection may have unanswered at once; more are `Busy`.
    pub in_flight_max: u32,
    /// Entries one frame may carry.
    pub entries_per_frame_max: u16,
    /// Body bytes one frame may carry.
    pub body_bytes_max: u32,
}

impl Welcome {
    /// Bytes of the body.
    pub const BYTES: usize = 20;

    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&self.tenant.to_le_bytes());
        out.extend_from_slice(&self.in_flight_max.to_le_bytes());
        out.extend_from_slice(&self.entries_per_frame_max.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&self.body_bytes_max.to_le_bytes());
    }

    /// Reads a `Welcome` body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(Kind::Welcome, body);
        let version = r.u16()?;
        r.zero16()?;
        let tenant = r.u32()?;
        let in_flight_max = r.u32()?;
        let entries_per_frame_max = r.u16()?;
        r.zero16()?;
        let body_bytes_max = r.u32()?;
        r.end()?;
        Ok(Self {
            version,
            tenant,
            in_flight_max,
            entries_per_frame_max,
            body_bytes_max,
        })
    }
}

/// Why the node refused a connection or a frame (it closes the connection after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[non_exhaustive]
pub enum RefusalCode {
    /// No protocol version in common; the message names the node's.
    UnsupportedVersion = 1,
    /// Missing or invalid credentials.
    Unauthenticated = 2,
    /// A frame failed to decode (bad magic, checksum, oversized, malformed).
    BadFrame = 3,
    /// A valid frame at the wrong time (a request before `Hello`, a second `Hello`, …).
    ProtocolViolation = 4,
    /// The node holds its maximum number of connections.
    TooManyConnections = 5,
    /// The node is shutting down.
    ShuttingDown = 6,
    /// No complete frame arrived within the frame timeout.
    Timeout = 7,
    /// A `Hello` with [`crate::FLAG_RESUME`] named a session the node does
    /// not hold (evicted from its bounded session table, or never
    /// registered): requests it had in flight may or may not have been
    /// applied; look their effects up before going on with a new session.
    SessionEvicted = 8,
    /// A code this build does not know (from a newer peer).
    Other = u16::MAX,
}

impl RefusalCode {
    fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::UnsupportedVersion,
            2 => Self::Unauthenticated,
            3 => Self::BadFrame,
            4 => Self::ProtocolViolation,
            5 => Self::TooManyConnections,
            6 => Self::ShuttingDown,
            7 => Self::Timeout,
            8 => Self::SessionEvicted,
            _ => Self::Other,
        }
    }
}

/// A `Refused` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// Why.
    pub code: RefusalCode,
    /// A human-readable explanation (UTF-8, at most [`MESSAGE_BYTES_MAX`] bytes).
    pub message: &'a str,
}

impl<'a> Refusal<'a> {
    /// Appends the body to `out`, cutting the message at a character
    /// boundary to fit [`MESSAGE_BYTES_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut len = self.message.len().min(MESSAGE_BYTES_MAX);
        while !self.message.is_char_boundary(len) {
            len -= 1;
        }
        out.extend_from_slice(&(self.code as u16).to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&self.message.as_bytes()[..len]);
    }

    /// Reads a `Refused` body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(Kind::Refused, body);
        let code = RefusalCode::from_u16(r.u16()?);
        let len = r.u16()? as usize;
        if len > MESSAGE_BYTES_MAX {
            return Err(r.malformed());
        }
        let at = r.at;
        let message = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::Malformed {
            kind: Kind::Refused,
            offset: at,
        })?;
        r.end()?;
        Ok(Self { code, message })
    }
}

/// One request inside a `Request` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestEntry<'a> {
    /// The session's request number (non-zero, unique per session): with the
    /// session id, the command's idempotency key.
    pub request: u64,
    /// The caller's id, echoed in the reply.
    pub correlation: u64,
    /// The state machine's command type.
    pub command_type: u16,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The command body (at most [`PAYLOAD_BYTES_MAX`]).
    pub payload: &'a [u8],
}

impl RequestEntry<'_> {
    /// Bytes this entry takes in a body.
    pub fn encoded_len(&self) -> usize {
        REQUEST_ENTRY_HEADER_BYTES + self.payload.len()
    }
}

/// Builds and reads `Request` bodies.
#[derive(Debug, Clone, Copy)]
pub struct Requests<'a> {
    count: u16,
    entries: &'a [u8],
}

impl<'a> Requests<'a> {
    /// Starts a body in `out` (cleared): append entries with [`Requests::push`].
    pub fn begin(out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0; 4]);
    }

    /// Appends `entry` to a body started with [`Requests::begin`]. Panics on a
    /// payload over [`PAYLOAD_BYTES_MAX`] or past [`ENTRIES_PER_FRAME_MAX`]
    /// entries: callers check both before.
    pub fn push(out: &mut Vec<u8>, entry: &RequestEntry<'_>) {
        assert!(
            entry.payload.len() <= PAYLOAD_BYTES_MAX,
            "payload too large"
        );
        let count = u16::from_le_bytes([out[0], out[1]]) + 1;
        assert!(
            usize::from(count) <= ENTRIES_PER_FRAME_MAX,
            "too many entries"
        );
        out[..2].copy_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&entry.request.to_le_bytes());
        out.extend_from_slice(&entry.correlation.to_le_bytes());
        out.extend_from_slice(&entry.command_type.to_le_bytes());
        out.extend_from_slice(&entry.schema_version.to_le_bytes());
        out.extend_from_slice(&(entry.payload.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(entry.payload);
    }

    /// Checks a whole `Request` body (every entry's lengths, reserved bytes
    /// and limits) so that iterating it afterwards cannot fail.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(Kind::Request, body);
        let count = r.u16()?;
        r.zero16()?;
        if count == 0 || usize::from(count) > ENTRIES_PER_FRAME_MAX {
            return Err(FrameError::Malformed {
                kind: Kind::Request,
                offset: 0,
            });
        }
        let entries = &body[4..];
        for _ in 0..count {
            r.take(20)?;
            let len = r.u16()? as usize;
            r.zero16()?;
            if len > PAYLOAD_BYTES_MAX {
                return Err(r.malformed());
            }
            r.take(len)?;
        }
        r.end()?;
        Ok(Self { count, entries })
    }

    /// Entries in the body.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether the body has no entry (never, once decoded).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = RequestEntry<'a>> + 'a {
        let mut rest = self.entries;
        (0..self.count).map(move |_| {
            let mut r = Reader::new(Kind::Request, rest);
            let request = r.u64().expect("checked in decode");
            let correlation = r.u64().expect("checked");
            let command_type = r.u16().expect("checked");
            let schema_version = r.u16().expect("checked");
            let len = r.u16().expect("checked") as usize;
            r.take(2).expect("checked");
            let payload = r.take(len).expect("checked");
            rest = &rest[r.at..];
            RequestEntry {
                request,
                correlation,
                command_type,
                schema_version,
                payload,
            }
        })
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum ReplyStatus {
    /// Applied and durable; `code` and `data` are the state machine's outcome.
    Applied = 0,
    /// A retry of a request already applied: the original outcome, not re-applied.
    Duplicate = 1,
    /// Not sequenced: the ring or the connection's window is full. Retry the
    /// same request number.
    Busy = 2,
    /// Refused by the node's validator before sequencing; `code` says why.
    Rejected = 3,
    /// Not a valid command (reserved type or version, request number 0).
    Invalid = 4,
    /// Over the principal's rate limit; not sequenced.
    Throttled = 5,
    /// The engine stopped (fail-stop or shutdown); the outcome of this
    /// request is unknown unless a later retry answers it.
    Unavailable = 6,
    /// The frame's tenant is not the principal's.
    WrongTenant = 7,
    /// Not executed, and the node cannot answer it exactly once any more:
    /// `code` 1, the session is no longer in the node's session table
    /// (evicted); `code` 2, the request was applied earlier but its outcome
    /// is no longer held (or it is older than the session's window of
    /// 1,024 request numbers). Look its effects up.
    SessionEvicted = 8,
    /// A status this build does not know.
    Other = u8::MAX,
}

impl ReplyStatus {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Applied,
            1 => Self::Duplicate,
            2 => Self::Busy,
            3 => Self::Rejected,
            4 => Self::Invalid,
            5 => Self::Throttled,
            6 => Self::Unavailable,
            7 => Self::WrongTenant,
            8 => Self::SessionEvicted,
            _ => Self::Other,
        }
    }

    /// Whether the request was executed (now or before) and `code`/`data` hold its outcome.
    pub fn executed(self) -> bool {
        matches!(self, Self::Applied | Self::Duplicate)
    }
}

/// One reply inside a `Reply` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyEntry {
    /// The request number answered.
    pub request: u64,
    /// The request's correlation id.
    pub correlation: u64,
    /// The command's journal sequence (executed statuses only; for a
    /// `Duplicate`, the retry's own record, not the original's).
    pub sequence: u64,
    /// The state machine's result code, or the validator's refusal code.
    pub code: u32,
    /// What happened.
    pub status: ReplyStatus,
    len: u8,
    data: [u8; RESULT_BYTES_MAX],
}

impl ReplyEntry {
    /// A reply with no result body.
    pub fn new(request: u64, correlation: u64, status: ReplyStatus) -> Self {
        Self {
            request,
            correlation,
            sequence: 0,
            code: 0,
            status,
            len: 0,
            data: [0; RESULT_BYTES_MAX],
        }
    }

    /// Sets the result body. Panics over [`RESULT_BYTES_MAX`].
    pub fn with_data(mut self, data: &[u8]) -> Self {
        assert!(data.len() <= RESULT_BYTES_MAX, "result body too large");
        self.len = data.len() as u8;
        self.data[..data.len()].copy_from_slice(data);
        self
    }

    /// The result body.
    pub fn data(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// Builds and reads `Reply` bodies.
#[derive(Debug, Clone, Copy)]
pub struct Replies<'a> {
    entries: &'a [u8],
}

impl<'a> Replies<'a> {
    /// Starts a body in `out` (cleared).
    pub fn begin(out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0; 4]);
    }

    /// Entries in a body being built.
    pub fn count(out: &[u8]) -> usize {
        usize::from(u16::from_le_bytes([out[0], out[1]]))
    }

    /// Appends a reply to a body started with [`Replies::begin`]. Panics past
    /// [`ENTRIES_PER_FRAME_MAX`].
    pub fn push(out: &mut Vec<u8>, entry: &ReplyEntry) {
        let count = Self::count(out) + 1;
        assert!(count <= ENTRIES_PER_FRAME_MAX, "too many entries");
        out[..2].copy_from_slice(&(count as u16).to_le_bytes());
        out.extend_from_slice(&entry.request.to_le_bytes());
        out.extend_from_slice(&entry.correlation.to_le_bytes());
        out.extend_from_slice(&entry.sequence.to_le_bytes());
        out.extend_from_slice(&entry.code.to_le_bytes());
        out.push(entry.status as u8);
        out.push(entry.len);
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&entry.data);
    }

    /// Checks a `Reply` body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(Kind::Reply, body);
        let count = usize::from(r.u16()?);
        r.zero16()?;
        if count == 0 || count > ENTRIES_PER_FRAME_MAX {
            return Err(FrameError::Malformed {
                kind: Kind::Reply,
                offset: 0,
            });
        }
        for _ in 0..count {
            r.take(29)?;
            let len = usize::from(r.u8()?);
            r.zero16()?;
            if len > RESULT_BYTES_MAX {
                return Err(r.malformed());
            }
            r.take(RESULT_BYTES_MAX)?;
        }
        r.end()?;
        Ok(Self {
            entries: &body[4..],
        })
    }

    /// The replies, in order.
    pub fn iter(&self) -> impl Iterator<Item = ReplyEntry> + 'a {
        self.entries.chunks_exact(REPLY_ENTRY_BYTES).map(|e| {
            let mut r = Reader::new(Kind::Reply, e);
            let request = r.u64().expect("checked in decode");
            let correlation = r.u64().expect("checked");
            let sequence = r.u64().expect("checked");
            let code = r.u32().expect("checked");
            let status = ReplyStatus::from_u8(r.u8().expect("checked"));
            let len = r.u8().expect("checked");
            r.take(2).expect("checked");
            let mut data = [0; RESULT_BYTES_MAX];
            data.copy_from_slice(r.take(RESULT_BYTES_MAX).expect("checked"));
            ReplyEntry {
                request,
                correlation,
                sequence,
                code,
                status,
                len,
                data,
            }
        })
    }
}
