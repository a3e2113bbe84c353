//! `cut_from`: a divergent suffix is removed, kept byte for byte for
//! audit, and the journal continues; a crash mid-cut leaves a valid
//! journal; a cut it cannot make leaves the journal untouched.

use keel_journal::format::decode_record;
use keel_journal::{
    cut_from, CutError, FaultConfig, FsStorage, IoMode, Journal, JournalConfig, Storage,
};

use crate::support::{all_records, append_batch, assert_records, payload, storage, BLOCK};

fn one_segment() -> JournalConfig {
    JournalConfig {
        segment_size: 1 << 20,
        write_buffer_bytes: 64 << 10,
        ..JournalConfig::default()
    }
}

/// The sequences and payloads of records stored back to back.
fn decode_all(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let record = decode_record(bytes).expect("a whole record");
        out.push((record.header.sequence, record.payload.to_vec()));
        bytes = &bytes[record.bytes.len()..];
    }
    out
}

#[test]
fn a_divergent_suffix_is_cut_kept_for_audit_and_the_journal_continues() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let (mut journal, _) = Journal::open(
        FsStorage::open(&data, IoMode::DirectSync).unwrap(),
        one_segment(),
    )
    .unwrap();
    for (from, to) in [(0, 5), (5, 12), (12, 20)] {
        append_batch(&mut journal, from, to).unwrap();
    }
    drop(journal);
    let storage = FsStorage::open(&data, IoMode::DirectSync).unwrap();
    assert_eq!(
        cut_from(&storage, 20, &dir.path().join("divergent")).unwrap(),
        None
    );
    // From the middle of a group-commit write.
    let cut = cut_from(&storage, 9, &dir.path().join("divergent"))
        .unwrap()
        .expect("a cut");
    assert_eq!((cut.from, cut.to, cut.segment_id), (9, 19, 1));
    let kept = std::fs::read(&cut.kept_in).unwrap();
    assert_eq!(kept.len() as u64, cut.bytes);
    let expected: Vec<(u64, Vec<u8>)> = (9..20).map(|n| (n, payload(n))).collect();
    assert_eq!(
        decode_all(&kept),
        expected,
        "the cut records, byte for byte"
    );
    assert_records(&all_records(&storage), 9);
    let (mut journal, report) = Journal::open(storage, one_segment()).unwrap();
    assert!(report.truncated.is_none(), "a cut leaves no torn tail");
    assert_eq!(journal.next_sequence(), 9);
    append_batch(&mut journal, 9, 15).unwrap();
    drop(journal);
    let storage = FsStorage::open(&data, IoMode::DirectSync).unwrap();
    assert_records(&all_records(&storage), 15);
}

#[test]
fn a_cut_beyond_the_last_segment_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let storage = storage(1);
    let mut journal = Journal::open(storage.clone(), crate::support::config())
        .unwrap()
        .0;
    let mut n = 0;
    for batch in 1..30 {
        append_batch(&mut journal, n, n + batch).unwrap();
        n += batch;
    }
    drop(journal);
    let before = all_records(&storage);
    match cut_from(&storage, 3, dir.path()) {
        Err(CutError::AcrossSegments {
            from: 3,
            segment_id: 1,
            last_segment,
        }) => assert!(last_segment > 1),
        other => panic!("expected AcrossSegments, got {other:?}"),
    }
    assert_eq!(all_records(&storage), before);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no audit copy of a refused cut"
    );
}

/// A crash at any write or sync of a cut (zeroing runs back to front in
/// synced chunks) leaves a journal that opens clean, holding a prefix of
/// the records: never a hole followed by records, which would read as
/// corruption.
#[test]
fn a_crash_anywhere_in_a_cut_leaves_a_valid_prefix() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // 700 records are cut: writes/syncs 0..=699 invalidate them (last
    // first), 700 zeroes the region.
    for fault in [0u64, 1, 2, 3, 100, 350, 698, 699, 700] {
        for on_sync in [false, true] {
            let storage = storage(fault);
            assert_eq!(storage.block_size(), BLOCK);
            let mut journal = Journal::open(storage.clone(), one_segment()).unwrap().0;
            for from in (0..1000).step_by(50) {
                append_batch(&mut journal, from, from + 50).unwrap();
            }
            drop(journal);
            // Counts restart: the cut's own writes and syncs are 0, 1, …
            storage.set_faults(FaultConfig {
                seed: fault,
                eio_on_write: (!on_sync).then_some(fault),
                eio_on_sync: on_sync.then_some(fault),
                ..FaultConfig::default()
            });
            let result = cut_from(
                &storage,
                300,
                &dir.path().join(format!("{fault}-{on_sync}")),
            );
            let survivor = storage.crash();
            let (journal, _) = Journal::open(survivor.clone(), one_segment())
                .unwrap_or_else(|e| panic!("fault {fault} (sync: {on_sync}, cut {result:?}): {e}"));
            let left = journal.next_sequence();
            assert!(
                (300..=1000).contains(&left),
                "fault {fault}: {left} records"
            );
            drop(journal);
            assert_records(&all_records(&survivor), left);
        }
    }
}
