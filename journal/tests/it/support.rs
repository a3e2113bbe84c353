//! Helpers: drive a `Journal` as the engine's journaller stage would.

use keel_core::{CommandHeader, CommandRef, Journaller};
use keel_journal::{
    read_records, FaultConfig, FaultyStorage, Journal, JournalConfig, OwnedRecord, Storage,
};

pub const BLOCK: u32 = 512;

/// A small-segment config so tests roll often.
pub fn config() -> JournalConfig {
    JournalConfig {
        segment_size: 16 * 1024,
        write_buffer_bytes: 4096,
        ..JournalConfig::default()
    }
}

pub fn storage(seed: u64) -> FaultyStorage {
    FaultyStorage::new(
        BLOCK,
        FaultConfig {
            seed,
            ..FaultConfig::default()
        },
    )
}

/// The payload of sequence `n`: deterministic, variable length.
pub fn payload(n: u64) -> Vec<u8> {
    let len = (n * 37 % 200) as usize;
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

/// Appends sequences `from..to` as one batch. Returns the batch result.
pub fn append_batch<S: Storage>(
    journal: &mut Journal<S>,
    from: u64,
    to: u64,
) -> Result<(), keel_core::StageError> {
    for n in from..to {
        let header = CommandHeader {
            command_type: 1 + (n % 5) as u16,
            schema_version: 1,
            correlation_id: n * 10,
            idempotency_key: u128::from(n) << 64,
            timestamp_ns: 1_000 + n,
            tenant_id: 3,
            payload_len: payload(n).len() as u32,
            completion: u32::MAX,
            flags: 0,
        };
        let body = payload(n);
        journal.append(&CommandRef {
            sequence: n,
            header: &header,
            payload: &body,
        })?;
    }
    journal.end_of_batch(to - 1)
}

/// Every record in the journal.
pub fn all_records<S: Storage>(storage: &S) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    read_records(storage, 0, u64::MAX, &mut |r| {
        out.push(OwnedRecord::from_record(r))
    })
    .unwrap();
    out
}

/// Asserts the records are exactly sequences `0..n` with the expected contents.
pub fn assert_records(records: &[OwnedRecord], n: u64) {
    assert_eq!(records.len() as u64, n, "record count");
    for (i, r) in records.iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.sequence, i);
        assert_eq!(r.payload, payload(i), "payload of {i}");
        assert_eq!(r.meta.correlation_id, i * 10);
        assert_eq!(r.meta.timestamp_ns, 1_000 + i);
        assert_eq!(r.meta.idempotency_key, u128::from(i) << 64);
    }
}

pub fn open<S: Storage>(storage: S) -> Journal<S> {
    Journal::open(storage, config()).unwrap().0
}
