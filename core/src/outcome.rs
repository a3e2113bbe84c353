//! The result of applying one command: a result code plus a small inline
//! result body. Business rejections are data here, never errors.

use crate::constants::RESULT_BYTES_MAX;

/// Result code of an applied command. `0` is success; every other value is a
/// state-machine-defined business rejection (insufficient funds, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResultCode(pub u32);

impl ResultCode {
    /// The command was applied successfully.
    pub const OK: ResultCode = ResultCode(0);

    /// Whether this code means success.
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

/// A fixed-size outcome written by the business-logic processor into the slot.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Outcome {
    /// The result code.
    pub code: ResultCode,
    len: u8,
    data: [u8; RESULT_BYTES_MAX],
}

impl Default for Outcome {
    fn default() -> Self {
        Self::code(ResultCode::OK)
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("code", &self.code.0)
            .field("data", &self.data())
            .finish()
    }
}

impl Outcome {
    /// An outcome with a code and an empty body.
    pub const fn code(code: ResultCode) -> Self {
        Self {
            code,
            len: 0,
            data: [0; RESULT_BYTES_MAX],
        }
    }

    /// Sets code and body. Panics if `body` exceeds [`RESULT_BYTES_MAX`]: a
    /// state machine writing more than the slot holds is a programming error.
    pub fn set(&mut self, code: ResultCode, body: &[u8]) {
        assert!(body.len() <= RESULT_BYTES_MAX, "result body too large");
        self.code = code;
        self.len = body.len() as u8;
        self.data[..body.len()].copy_from_slice(body);
    }

    /// The result body.
    pub fn data(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// What the caller receives for an acknowledged command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The command's sequence in this engine run.
    pub sequence: u64,
    /// The caller's correlation id, unchanged.
    pub correlation_id: u64,
    /// The state machine's outcome (for a duplicate: the original one).
    pub outcome: Outcome,
    /// True when the idempotency key was seen before and the command was not re-applied.
    pub duplicate: bool,
    /// Submit to acknowledgement, ns: the command's sequencer timestamp to
    /// the publisher completing it (the value the ack-latency metric
    /// records). A caller that knows when it *meant* to send adds its own
    /// lateness to correct for coordinated omission.
    pub latency_ns: u64,
}
