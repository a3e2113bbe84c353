//! Replay from the journal: rebuilds a state machine and its idempotency
//! window by running every journaled command through the same step the
//! business-logic processor runs (`keel_core::apply`). [`Replayer`] applies
//! records handed to it (e.g. by `Journal::open_replaying`, so recovery scans
//! the journal once); [`replay`] is a read-only scan of a whole journal.
//!
//! Like the live BLP, replay looks one command ahead: record n is handed to
//! [`StateMachine::prefetch`] before record n-1 is applied, so the state
//! machine's cache misses overlap. The last record is applied by
//! [`Replayer::finish`], which is the only way to get the state out.

use keel_core::constants::PAYLOAD_BYTES_MAX;
use keel_core::{apply, CommandHeader, CommandRef, DedupTable, StateMachine};
use keel_journal::format::Record;
use keel_journal::{read_records, ScanError, ScanReport, Storage};

/// Rebuilds state record by record.
#[derive(Debug)]
pub struct Replayer<S> {
    state_machine: S,
    dedup: DedupTable,
    records: u64,
    /// Records below this sequence are already in the state (a snapshot).
    from: u64,
    /// The sequence the next applied record must have (gap detection).
    expected: Option<u64>,
    /// The first gap seen: (expected, found).
    gap: Option<(u64, u64)>,
    /// The record handed in last, not yet applied (`pending_len` payload bytes).
    pending: Option<(u64, CommandHeader)>,
    pending_payload: Box<[u8; PAYLOAD_BYTES_MAX]>,
    /// Checksum of the last record applied (or of the one before `from`,
    /// when resumed with it; 0: unknown): a snapshot of this state records it.
    last_checksum: u64,
}

/// What a finished replay rebuilt.
#[derive(Debug)]
pub struct Replayed<S> {
    /// The state machine after the last record.
    pub state_machine: S,
    /// The idempotency window (hand it to `EngineBuilder::dedup`).
    pub dedup: DedupTable,
    /// Records applied.
    pub records: u64,
}

impl<S: StateMachine> Replayer<S> {
    /// Starts from `state_machine` and an empty window of `dedup_entries`.
    pub fn new(state_machine: S, dedup_entries: usize) -> Self {
        Self::resume(state_machine, DedupTable::with_capacity(dedup_entries), 0)
    }

    /// Continues from a state that already holds every command below
    /// `from` (a snapshot): earlier records are skipped, and the first
    /// applied one must be `from` itself (else [`Replayer::gap`]).
    pub fn resume(state_machine: S, dedup: DedupTable, from: u64) -> Self {
        Self {
            state_machine,
            dedup,
            records: 0,
            from,
            // Even from 0: a journal that starts later (its head was
            // deleted after a snapshot) cannot be replayed onto an empty state.
            expected: Some(from),
            gap: None,
            pending: None,
            pending_payload: Box::new([0; PAYLOAD_BYTES_MAX]),
            last_checksum: 0,
        }
    }

    /// Sets the checksum of the record before `from` (the one a resumed
    /// snapshot recorded), so a snapshot taken before any new record
    /// carries it on.
    pub fn with_last_record_checksum(mut self, checksum: u64) -> Self {
        self.last_checksum = checksum;
        self
    }

    /// The checksum of the last record applied (see `with_last_record_checksum`).
    pub fn last_record_checksum(&self) -> u64 {
        self.last_checksum
    }

    /// The first discontinuity: (the sequence expected, the one found). A
    /// journal that does not continue the snapshot cannot be replayed onto it.
    pub fn gap(&self) -> Option<(u64, u64)> {
        self.gap
    }

    /// Records applied (or pending) so far, not counting skipped ones.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Takes one journaled command: prefetches it, applies the previous one.
    /// Records below the resume point are skipped; after a gap nothing more
    /// is applied.
    pub fn apply(&mut self, record: &Record<'_>) {
        let sequence = record.header.sequence;
        if sequence < self.from || self.gap.is_some() {
            return;
        }
        if let Some(expected) = self.expected {
            if sequence != expected {
                self.gap = Some((expected, sequence));
                return;
            }
        }
        self.expected = Some(sequence + 1);
        self.last_checksum = record.checksum();
        let header = record.header.meta.command_header(record.payload.len());
        self.state_machine.prefetch(&CommandRef {
            sequence: record.header.sequence,
            header: &header,
            payload: record.payload,
        });
        self.apply_pending();
        self.pending_payload[..record.payload.len()].copy_from_slice(record.payload);
        self.pending = Some((record.header.sequence, header));
        self.records += 1;
    }

    /// Applies the record held back for lookahead, so the state machine
    /// holds everything handed in so far (e.g. to compare a checkpoint).
    pub fn flush(&mut self) {
        self.apply_pending();
    }

    /// The idempotency window as of the last `flush`.
    pub fn dedup(&self) -> &DedupTable {
        &self.dedup
    }

    /// The sequence this replayer resumed at (0 for a full replay).
    pub fn resume_point(&self) -> u64 {
        self.from
    }

    /// The state machine as of the last `flush` (or `finish`).
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// Applies the last record and hands over the rebuilt state.
    pub fn finish(mut self) -> Replayed<S> {
        self.apply_pending();
        Replayed {
            state_machine: self.state_machine,
            dedup: self.dedup,
            records: self.records,
        }
    }

    fn apply_pending(&mut self) {
        if let Some((sequence, header)) = self.pending.take() {
            let command = CommandRef {
                sequence,
                header: &header,
                payload: &self.pending_payload[..header.payload_len as usize],
            };
            apply(&mut self.state_machine, &mut self.dedup, &command);
        }
    }
}

/// Applies every record of the journal in `storage` (read-only) to
/// `state_machine`; returns what it rebuilt and the scan.
pub fn replay<S: StateMachine, St: Storage>(
    storage: &St,
    state_machine: S,
    dedup_entries: usize,
) -> Result<(Replayed<S>, ScanReport), ScanError> {
    let mut replayer = Replayer::new(state_machine, dedup_entries);
    let scan = read_records(storage, 0, u64::MAX, &mut |r| replayer.apply(r))?;
    Ok((replayer.finish(), scan))
}
