//! Stage traits that other crates implement ([`Journaller`], [`Replicator`],
//! [`EventSink`]) and the in-memory implementations the core ships for
//! durability `none` and for tests.

use crate::envelope::CommandRef;
use crate::slot::Applied;

/// The error type a stage reports; any error is fail-stop for the engine.
pub type StageError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Makes commands durable. Called on one thread, in sequence order.
///
/// The BLP sees a command only after `end_of_batch` for its batch returned
/// `Ok`: that is how log-first holds by construction. An `Err` stops the
/// engine; nothing in that batch is acknowledged.
pub trait Journaller: Send + 'static {
    /// Buffers one command of the current batch. Must not allocate.
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError>;
    /// Makes every appended command durable under the journaller's policy.
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError>;
    /// True when a batch costs a device write: the stage then times every
    /// batch (a clock read is noise against a write), so a rare stall is
    /// never missed by the one-in-16 sample the other stages use.
    fn times_every_batch(&self) -> bool {
        false
    }
}

/// Streams commands to followers. Runs in parallel with the journaller; the
/// BLP is gated on both.
pub trait Replicator: Send + 'static {
    /// Sends one command of the current batch.
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError>;
    /// Completes the batch per the replication policy.
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError>;
    /// As [`Journaller::times_every_batch`].
    fn times_every_batch(&self) -> bool {
        false
    }
}

/// Receives every applied command with its result, on the publisher thread,
/// after the caller was completed (e.g. to feed a projector). Must not block
/// for long: it delays completions of later commands.
pub trait EventSink: Send + 'static {
    /// One applied command.
    fn on_applied(&mut self, command: &CommandRef<'_>, applied: &Applied);
    /// End of a publisher batch.
    fn end_of_batch(&mut self, _last_sequence: u64) {}
}

/// Durability `none`: keeps nothing, acknowledges at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopJournaller;

impl Journaller for NoopJournaller {
    fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
        Ok(())
    }
    fn end_of_batch(&mut self, _last_sequence: u64) -> Result<(), StageError> {
        Ok(())
    }
}

/// No followers: acknowledges at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopReplicator;

impl Replicator for NoopReplicator {
    fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
        Ok(())
    }
    fn end_of_batch(&mut self, _last_sequence: u64) -> Result<(), StageError> {
        Ok(())
    }
}

/// Discards applied events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl EventSink for NoopSink {
    fn on_applied(&mut self, _command: &CommandRef<'_>, _applied: &Applied) {}
}

/// A journaller for tests: records the sequence, type and payload checksum of
/// every command into a pre-allocated vector; fails with
/// [`CapacityExceeded`] when full instead of growing.
#[derive(Debug)]
pub struct InMemoryJournaller {
    records: Vec<JournaledRecord>,
    durable_sequence: Option<u64>,
}

/// One record kept by [`InMemoryJournaller`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournaledRecord {
    /// The command's sequence.
    pub sequence: u64,
    /// Its correlation id.
    pub correlation_id: u64,
    /// Its command type.
    pub command_type: u16,
}

/// [`InMemoryJournaller`] ran out of its pre-allocated capacity.
#[derive(Debug, thiserror::Error)]
#[error("in-memory journal full at sequence {sequence} (capacity {capacity})")]
pub struct CapacityExceeded {
    /// The sequence that did not fit.
    pub sequence: u64,
    /// The configured capacity.
    pub capacity: usize,
}

impl InMemoryJournaller {
    /// A journal that holds at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            durable_sequence: None,
        }
    }

    /// The records appended so far, in order.
    pub fn records(&self) -> &[JournaledRecord] {
        &self.records
    }

    /// The last sequence made "durable" by `end_of_batch`.
    pub fn durable_sequence(&self) -> Option<u64> {
        self.durable_sequence
    }
}

impl Journaller for InMemoryJournaller {
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError> {
        if self.records.len() == self.records.capacity() {
            return Err(Box::new(CapacityExceeded {
                sequence: command.sequence,
                capacity: self.records.capacity(),
            }));
        }
        self.records.push(JournaledRecord {
            sequence: command.sequence,
            correlation_id: command.header.correlation_id,
            command_type: command.header.command_type,
        });
        Ok(())
    }

    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        debug_assert_eq!(self.records.last().map(|r| r.sequence), Some(last_sequence));
        self.durable_sequence = Some(last_sequence);
        Ok(())
    }
}
