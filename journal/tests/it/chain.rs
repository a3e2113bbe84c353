//! The optional tamper-evident chain: a record altered with a recomputed
//! checksum passes an unchained journal but breaks a chained one, located at
//! the next record.

use keel_journal::{
    read_records, BadSpot, Corruption, Journal, JournalConfig, OpenError, OwnedRecord, ScanError,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::support::{all_records, append_batch, assert_records, config, storage};

fn chained() -> JournalConfig {
    JournalConfig {
        chain: true,
        ..config()
    }
}

/// Rewrites one payload byte of `record` and recomputes its checksum: what an
/// attacker with write access (not a random fault) would do.
fn forge(disk: &keel_journal::FaultyStorage, record: &OwnedRecord, chained: bool) {
    let header_and_chain = 96 + if chained { 32 } else { 0 };
    let len = header_and_chain + record.payload.len();
    disk.corrupt(record.segment_id, record.offset, |b| {
        b[header_and_chain] ^= 0xff;
        let checksum = xxh3_64(&b[8..len]);
        b[..8].copy_from_slice(&checksum.to_le_bytes());
    });
}

#[test]
fn chained_journal_round_trips_and_continues_the_chain_after_reopen() {
    let disk = storage(41);
    let (mut journal, _) = Journal::open(disk.clone(), chained()).unwrap();
    append_batch(&mut journal, 0, 30).unwrap();
    drop(journal);
    let (mut journal, report) = Journal::open(disk.clone(), chained()).unwrap();
    assert!(report.scan.last_record_hash.is_some());
    append_batch(&mut journal, 30, 60).unwrap();
    drop(journal);
    let mut chains = 0;
    read_records(&disk, 0, u64::MAX, &mut |r| {
        chains += usize::from(r.header.chain.is_some())
    })
    .unwrap();
    assert_eq!(chains, 60);
    assert_records(&all_records(&disk), 60);
}

#[test]
fn a_forged_record_passes_without_the_chain_and_is_caught_with_it() {
    for chain in [false, true] {
        let disk = storage(42);
        let config = JournalConfig { chain, ..config() };
        let (mut journal, _) = Journal::open(disk.clone(), config.clone()).unwrap();
        append_batch(&mut journal, 0, 10).unwrap();
        append_batch(&mut journal, 10, 20).unwrap();
        drop(journal);
        let records = all_records(&disk);
        forge(&disk, &records[5], chain);
        let result = Journal::open(disk.clone(), config);
        match (chain, result) {
            (false, Ok(_)) => {
                // Checksums alone cannot tell a forgery from the original.
                assert_ne!(all_records(&disk)[5].payload, records[5].payload);
            }
            (
                true,
                Err(OpenError::Scan(ScanError::Corrupt(Corruption::Record {
                    offset,
                    expected_sequence,
                    reason: BadSpot::ChainBroken,
                    ..
                }))),
            ) => {
                assert_eq!((offset, expected_sequence), (records[6].offset, 6));
            }
            (chain, other) => panic!("chain {chain}: unexpected {other:?}"),
        }
    }
}
