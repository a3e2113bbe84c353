//! The command envelope: what a producer submits ([`Command`]), what every
//! stage sees ([`CommandRef`]), and the fixed header stored in a ring slot.

use crate::constants::PAYLOAD_BYTES_MAX;

/// A command as a producer submits it. Borrowed: nothing is allocated; the
/// payload is copied into the pre-allocated ring slot at submit.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// State-machine-defined command type. `0` is reserved and rejected.
    pub command_type: u16,
    /// Schema version of the payload encoding. `0` is reserved and rejected.
    pub schema_version: u16,
    /// Caller-chosen id carried unchanged to the acknowledgement and the publisher.
    pub correlation_id: u64,
    /// Deduplication key; `0` means "no key, never deduplicated".
    pub idempotency_key: u128,
    /// Tenant the command belongs to (passed to the validator and the state machine).
    pub tenant_id: u32,
    /// The key is a registered session's `scope << 64 | request`
    /// ([`crate::session`]): the engine checks it against the session table,
    /// so a request of an evicted session, or one whose outcome was
    /// forgotten, is refused rather than executed again.
    pub session: bool,
    /// Encoded command body, at most [`PAYLOAD_BYTES_MAX`] bytes.
    pub payload: &'a [u8],
}

impl<'a> Command<'a> {
    /// A command with the given type and payload, schema version 1 and no key.
    pub fn new(command_type: u16, payload: &'a [u8]) -> Self {
        Self {
            command_type,
            schema_version: 1,
            correlation_id: 0,
            idempotency_key: 0,
            tenant_id: 0,
            session: false,
            payload,
        }
    }
}

/// The fixed-size header of a slot. Written only by the producer that claimed
/// the slot, read by every stage after the producer published it.
///
/// The slot's sequence is not stored: it is the ring position, which every
/// stage knows exactly because each consumes every sequence in order.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct CommandHeader {
    /// Deduplication key; `0` means none.
    pub idempotency_key: u128,
    /// Caller-chosen id, carried end to end.
    pub correlation_id: u64,
    /// Sequencer timestamp (ns since the Unix epoch) stamped at submit; also
    /// the start of the command's acknowledgement-latency measurement.
    pub timestamp_ns: u64,
    /// State-machine-defined command type (non-zero).
    pub command_type: u16,
    /// Payload schema version (non-zero).
    pub schema_version: u16,
    /// Tenant id.
    pub tenant_id: u32,
    /// Number of valid bytes in the slot payload; `<= PAYLOAD_BYTES_MAX`.
    pub payload_len: u32,
    /// Index of the caller's completion cell, or [`crate::completion::NO_COMPLETION`].
    pub completion: u32,
    /// [`FLAG_SESSION`] or 0; journaled in the record's flags.
    pub flags: u16,
}

/// Header flag: the idempotency key is a session's `scope << 64 | request`.
/// The same bit (1) in a journal record's flags.
pub const FLAG_SESSION: u16 = 1 << 1;

impl CommandHeader {
    /// Whether the key is a session request's.
    #[inline]
    pub fn is_session(&self) -> bool {
        self.flags & FLAG_SESSION != 0
    }
}

/// A command as a stage sees it: header plus the valid payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct CommandRef<'a> {
    /// The command's position in the ring: unique, gap-free, starting at 0 per engine run.
    pub sequence: u64,
    /// The slot header.
    pub header: &'a CommandHeader,
    /// The payload bytes (`header.payload_len` of them).
    pub payload: &'a [u8],
}

impl CommandRef<'_> {
    /// Sequencer timestamp (ns since the Unix epoch): the only time a state machine sees.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns
    }

    /// The command type.
    #[inline]
    pub fn command_type(&self) -> u16 {
        self.header.command_type
    }
}

const _: () = assert!(std::mem::size_of::<CommandHeader>() <= 64);
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);
