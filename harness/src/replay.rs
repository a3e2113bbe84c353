//! Replay from the journal: rebuilds a state machine (and its idempotency
//! window) by running every journaled command through the same step the
//! business-logic processor runs (`keel_core::apply`).

use keel_core::{apply, CommandHeader, CommandRef, DedupTable, StateMachine};
use keel_journal::{read_records, ScanError, ScanReport, Storage};

/// What a replay rebuilt.
#[derive(Debug)]
pub struct Replayed<S> {
    /// The state machine after the last record.
    pub state_machine: S,
    /// The idempotency window after the last record.
    pub dedup: DedupTable,
    /// Records applied.
    pub records: u64,
    /// The journal scan (segments, next sequence, torn tail if any).
    pub scan: ScanReport,
}

/// Applies every record of the journal in `storage` to `state_machine`.
pub fn replay<S: StateMachine, St: Storage>(
    storage: &St,
    mut state_machine: S,
    dedup_entries: usize,
) -> Result<Replayed<S>, ScanError> {
    let mut dedup = DedupTable::with_capacity(dedup_entries);
    let mut records = 0;
    let scan = read_records(storage, 0, u64::MAX, &mut |r| {
        let m = &r.header.meta;
        let header = CommandHeader {
            idempotency_key: m.idempotency_key,
            correlation_id: m.correlation_id,
            timestamp_ns: m.timestamp_ns,
            command_type: m.command_type,
            schema_version: m.schema_version,
            tenant_id: m.tenant_id,
            payload_len: r.payload.len() as u32,
            completion: keel_core::completion::NO_COMPLETION,
        };
        let command = CommandRef {
            sequence: r.header.sequence,
            header: &header,
            payload: r.payload,
        };
        apply(&mut state_machine, &mut dedup, &command);
        records += 1;
    })?;
    Ok(Replayed {
        state_machine,
        dedup,
        records,
        scan,
    })
}
