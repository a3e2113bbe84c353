//! Replay from the journal: rebuilds a state machine and its idempotency
//! window by running every journaled command through the same step the
//! business-logic processor runs (`keel_core::apply`). [`Replayer`] applies
//! records handed to it (e.g. by `Journal::open_replaying`, so recovery scans
//! the journal once); [`replay`] is a read-only scan of a whole journal.

use keel_core::{apply, CommandHeader, CommandRef, DedupTable, StateMachine};
use keel_journal::format::Record;
use keel_journal::{read_records, ScanError, ScanReport, Storage};

/// Rebuilds state record by record.
#[derive(Debug)]
pub struct Replayer<S> {
    /// The state machine so far.
    pub state_machine: S,
    /// The idempotency window so far (hand it to `EngineBuilder::dedup`).
    pub dedup: DedupTable,
    /// Records applied.
    pub records: u64,
}

impl<S: StateMachine> Replayer<S> {
    /// Starts from `state_machine` and an empty window of `dedup_entries`.
    pub fn new(state_machine: S, dedup_entries: usize) -> Self {
        Self {
            state_machine,
            dedup: DedupTable::with_capacity(dedup_entries),
            records: 0,
        }
    }

    /// Applies one journaled command.
    pub fn apply(&mut self, record: &Record<'_>) {
        let m = &record.header.meta;
        let header = CommandHeader {
            idempotency_key: m.idempotency_key,
            correlation_id: m.correlation_id,
            timestamp_ns: m.timestamp_ns,
            command_type: m.command_type,
            schema_version: m.schema_version,
            tenant_id: m.tenant_id,
            payload_len: record.payload.len() as u32,
            completion: keel_core::completion::NO_COMPLETION,
        };
        let command = CommandRef {
            sequence: record.header.sequence,
            header: &header,
            payload: record.payload,
        };
        apply(&mut self.state_machine, &mut self.dedup, &command);
        self.records += 1;
    }
}

/// Applies every record of the journal in `storage` (read-only) to
/// `state_machine`; returns the replayer and the scan.
pub fn replay<S: StateMachine, St: Storage>(
    storage: &St,
    state_machine: S,
    dedup_entries: usize,
) -> Result<(Replayer<S>, ScanReport), ScanError> {
    let mut replayer = Replayer::new(state_machine, dedup_entries);
    let scan = read_records(storage, 0, u64::MAX, &mut |r| replayer.apply(r))?;
    Ok((replayer, scan))
}
