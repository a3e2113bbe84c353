//! Operating errors of the core: submit errors, configuration errors and why
//! an engine stopped. Business rejections are not here: they are
//! [`crate::ResultCode`]s in the outcome.

use std::sync::Arc;

/// Names of the pipeline stages, for metrics and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageName {
    /// Makes commands durable.
    Journaller,
    /// Streams commands to followers.
    Replicator,
    /// Applies commands to the state machine.
    BusinessLogic,
    /// Completes callers and feeds the event sink.
    Publisher,
}

impl StageName {
    /// All stages in pipeline order.
    pub const ALL: [StageName; crate::constants::STAGE_COUNT] = [
        StageName::Journaller,
        StageName::Replicator,
        StageName::BusinessLogic,
        StageName::Publisher,
    ];

    /// Index into per-stage arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StageName::Journaller => "journaller",
            StageName::Replicator => "replicator",
            StageName::BusinessLogic => "business-logic processor",
            StageName::Publisher => "publisher",
        })
    }
}

/// Why the engine stopped accepting and completing commands.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// `shutdown` was called; everything submitted before it was completed.
    #[error("engine shut down")]
    Shutdown,
    /// A stage panicked; commands it had not released were not acknowledged.
    #[error("{stage} panicked: {message}")]
    StagePanicked {
        /// The lane's first stage that was running when the panic happened.
        stage: StageName,
        /// The panic message.
        message: String,
    },
    /// A stage returned an error (e.g. a journal write failed): fail-stop.
    #[error("{stage} failed at sequence {sequence}: {source}")]
    StageFailed {
        /// The failing stage.
        stage: StageName,
        /// The sequence of the batch's last command (none of the batch was acknowledged).
        sequence: u64,
        /// The stage's error.
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Why a command was not accepted (or its ack not delivered).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The payload exceeds the slot's inline capacity.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Bytes submitted.
        len: usize,
        /// The limit ([`crate::constants::PAYLOAD_BYTES_MAX`]).
        max: usize,
    },
    /// Command type 0 and types `0xFF00..=0xFFFE` are reserved (`0xFFFF`
    /// is the engine's session registration).
    #[error("command type 0 and 0xff00..=0xfffe are reserved")]
    ReservedCommandType,
    /// A session request without a scope or request number in its key, or
    /// a session registration with a key.
    #[error(
        "a session request needs scope and request number in its key; a registration has none"
    )]
    SessionKey,
    /// A session registration whose payload is not a
    /// [`crate::session::Registration`] (scope 0, a bad resume byte, or a
    /// principal length that disagrees with the payload).
    #[error("a session registration's payload does not decode")]
    BadRegistration,
    /// Schema version 0 is reserved.
    #[error("schema version 0 is reserved")]
    ReservedSchemaVersion,
    /// The validator refused the command; it was not sequenced.
    #[error("command refused by the validator with code {code}")]
    Rejected {
        /// The validator's reason code.
        code: u32,
    },
    /// A batch is empty or larger than the ring.
    #[error("batch of {len} commands: must be between 1 and the ring size {max}")]
    BatchSize {
        /// Commands in the batch.
        len: usize,
        /// The ring size.
        max: usize,
    },
    /// The ring or the completion table stayed full for the configured wait.
    #[error("engine busy: no free slot within the back-pressure wait")]
    Busy,
    /// The engine is paused; nothing was sequenced.
    #[error("engine paused")]
    Paused,
    /// The engine stopped; the command was not (or not known to be) acknowledged.
    #[error("engine stopped: {0}")]
    EngineStopped(StopReason),
}

/// An [`crate::EngineConfig`] value is out of range; names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{option}` = {value}: {expected}")]
pub struct ConfigError {
    /// The option's name as written in configuration files.
    pub option: &'static str,
    /// The offending value, rendered.
    pub value: String,
    /// What is expected instead.
    pub expected: &'static str,
}
