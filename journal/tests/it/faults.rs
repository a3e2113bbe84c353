//! One test per fault the journal must survive or report.

use keel_journal::{
    BadSpot, Corruption, FaultConfig, Journal, JournalError, OpenError, ScanError, Storage,
};

use crate::support::{all_records, append_batch, assert_records, config, open, storage, BLOCK};

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let disk = storage(1);
    let mut journal = open(disk.clone());
    let mut n = 0;
    for batch in 1..40 {
        append_batch(&mut journal, n, n + batch % 7 + 1).unwrap();
        n += batch % 7 + 1;
    }
    assert!(journal.segment_id() > 1, "small segments rolled");
    assert_eq!(journal.status().durable_next(), n);
    drop(journal);
    assert_records(&all_records(&disk), n);
    let (mut journal, report) = Journal::open(disk.clone(), config()).unwrap();
    assert!(report.truncated.is_none());
    assert_eq!(journal.next_sequence(), n);
    append_batch(&mut journal, n, n + 5).unwrap();
    assert_records(&all_records(&disk), n + 5);
}

#[test]
fn kill_mid_batch_keeps_every_acknowledged_record() {
    for seed in 0..50 {
        let disk = storage(seed);
        let mut journal = open(disk.clone());
        append_batch(&mut journal, 0, 20).unwrap();
        let acknowledged = journal.status().durable_next();
        // The next batch is partly written (buffer-full writes) but the
        // process dies before its end-of-batch sync.
        let crashed = {
            let mut journal = journal;
            use keel_core::Journaller;
            for n in 20..80 {
                let header = keel_core::CommandHeader {
                    command_type: 1,
                    schema_version: 1,
                    ..Default::default()
                };
                let body = [n as u8; 40];
                journal
                    .append(&keel_core::CommandRef {
                        sequence: n,
                        header: &header,
                        payload: &body,
                    })
                    .unwrap();
            }
            disk.crash()
        };
        let (_, report) =
            Journal::open(crashed.clone(), config()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let records = all_records(&crashed);
        assert!(
            records.len() as u64 >= acknowledged,
            "seed {seed}: lost acknowledged records"
        );
        assert_records(&records[..acknowledged as usize], acknowledged);
        assert_eq!(
            report.scan.next_sequence,
            records.len() as u64,
            "seed {seed}"
        );
    }
}

#[test]
fn torn_last_write_is_truncated_and_reported() {
    // Unsynced batches torn by crashes at many seeds: open always succeeds,
    // reports what it cut, and the journal accepts writes right after.
    let mut torn_seen = 0;
    for seed in 0..100 {
        let disk = storage(seed);
        let mut journal = open(disk.clone());
        append_batch(&mut journal, 0, 10).unwrap();
        // The next batch's write succeeds but its sync fails: dirty at crash.
        disk.set_faults(FaultConfig {
            eio_on_sync: Some(0),
            ..FaultConfig::default()
        });
        assert!(append_batch(&mut journal, 10, 40).is_err());
        let crashed = disk.crash();
        let (mut journal, report) =
            Journal::open(crashed.clone(), config()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let Some(torn) = report.truncated {
            torn_seen += 1;
            assert!(torn.end > torn.offset, "seed {seed}");
        }
        let next = journal.next_sequence();
        assert!(next >= 10, "seed {seed}");
        append_batch(&mut journal, next, next + 3).unwrap();
        assert_records(&all_records(&crashed), next + 3);
    }
    assert!(torn_seen > 0, "the crash model produced torn tails");
}

#[test]
fn bit_flip_in_a_middle_record_is_located() {
    let disk = storage(7);
    let mut journal = open(disk.clone());
    append_batch(&mut journal, 0, 10).unwrap();
    append_batch(&mut journal, 10, 20).unwrap();
    drop(journal);
    let records = all_records(&disk);
    let victim = &records[4];
    disk.corrupt(victim.segment_id, victim.offset + 100, |b| b[0] ^= 0x10);
    match Journal::open(disk.clone(), config()) {
        Err(OpenError::Scan(ScanError::Corrupt(Corruption::Record {
            segment_id,
            offset,
            expected_sequence,
            reason: BadSpot::Undecodable(_),
        }))) => {
            assert_eq!(
                (segment_id, offset, expected_sequence),
                (victim.segment_id, victim.offset, 4)
            );
        }
        other => panic!("expected located corruption, got {other:?}"),
    }
    let message = Journal::open(disk, config()).unwrap_err().to_string();
    assert!(
        message.contains("segment 1 at offset") && message.contains("sequence 4"),
        "{message}"
    );
}

#[test]
fn zeroed_tail_is_an_end_but_a_zeroed_hole_is_corruption() {
    let disk = storage(8);
    let mut journal = open(disk.clone());
    for b in 0..6 {
        append_batch(&mut journal, b * 5, b * 5 + 5).unwrap();
    }
    drop(journal);
    let records = all_records(&disk);
    let block = u64::from(BLOCK);
    // Zero the block holding the last record: a clean (shorter) end.
    let tail = disk.crash();
    let last = records.last().unwrap();
    let tail_block = last.offset / block * block;
    tail.corrupt(last.segment_id, tail_block, |b| b[..BLOCK as usize].fill(0));
    let kept = all_records(&tail);
    assert!(kept.len() < records.len());
    assert!(Journal::open(tail, config()).is_ok());
    // Zero a block in the middle: valid records follow, so it is a hole.
    let hole = disk.crash();
    let middle = &records[12];
    let middle_block = middle.offset / block * block;
    hole.corrupt(middle.segment_id, middle_block, |b| {
        b[..BLOCK as usize].fill(0)
    });
    match Journal::open(hole, config()) {
        Err(OpenError::Scan(ScanError::Corrupt(Corruption::Record {
            segment_id, offset, ..
        }))) => {
            assert_eq!(segment_id, middle.segment_id);
            assert!(offset <= middle.offset);
        }
        other => panic!("expected a hole to be corruption, got {other:?}"),
    }
}

#[test]
fn eio_on_sync_is_fail_stop_with_no_ack() {
    let disk = storage(9);
    let mut journal = open(disk.clone());
    append_batch(&mut journal, 0, 5).unwrap();
    let before = journal.status().durable_next();
    disk.set_faults(FaultConfig {
        eio_on_sync: Some(0),
        ..FaultConfig::default()
    });
    let error = append_batch(&mut journal, 5, 10).unwrap_err();
    let error = error.downcast::<JournalError>().unwrap();
    assert!(
        matches!(*error, JournalError::Sync { segment_id: 1, .. }),
        "{error}"
    );
    assert_eq!(
        journal.status().durable_next(),
        before,
        "nothing of the failed batch acknowledged"
    );
}

#[test]
fn eio_on_write_is_fail_stop_naming_segment_and_offset() {
    let disk = storage(10);
    let mut journal = open(disk.clone());
    append_batch(&mut journal, 0, 5).unwrap();
    disk.set_faults(FaultConfig {
        eio_on_write: Some(0),
        ..FaultConfig::default()
    });
    let error = append_batch(&mut journal, 5, 10).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("journal write failed: segment 1 offset "),
        "{message}"
    );
    assert_eq!(journal.status().durable_next(), 5);
}

#[test]
fn enospc_at_segment_roll_backs_up_then_resumes_with_contiguous_sequences() {
    let disk = storage(11);
    let (journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let status = journal.status();
    disk.set_no_space(true);
    // The preallocated next segment may already exist; remove spares so the
    // roll must create one.
    let writer = std::thread::spawn(move || {
        let mut journal = journal;
        let mut n = 0;
        while journal.segment_id() < 4 {
            append_batch(&mut journal, n, n + 10).unwrap();
            n += 10;
        }
        (journal, n)
    });
    while !status.out_of_space() {
        std::thread::yield_now();
    }
    let stuck_at = status.durable_next();
    assert!(status.out_of_space());
    disk.set_no_space(false);
    let (journal, n) = writer.join().unwrap();
    assert!(!status.out_of_space());
    assert!(stuck_at < n);
    drop(journal);
    assert_records(&all_records(&disk), n);
}

#[test]
fn misdirected_write_is_detected() {
    let disk = storage(12);
    let mut journal = open(disk.clone());
    append_batch(&mut journal, 0, 5).unwrap();
    // The next write lands one block too far: a hole, then a record whose
    // offset field does not match where it sits.
    disk.set_faults(FaultConfig {
        misdirect_write: Some(0),
        ..FaultConfig::default()
    });
    append_batch(&mut journal, 5, 8).unwrap();
    disk.set_faults(FaultConfig::default());
    append_batch(&mut journal, 8, 12).unwrap();
    drop(journal);
    match Journal::open(disk, config()) {
        Err(OpenError::Scan(ScanError::Corrupt(Corruption::Record {
            expected_sequence, ..
        }))) => {
            assert_eq!(expected_sequence, 5);
        }
        other => panic!("expected misdirected write to be caught, got {other:?}"),
    }
}

#[test]
fn stale_record_from_an_earlier_use_never_validates() {
    let disk = storage(13);
    let mut journal = open(disk.clone());
    append_batch(&mut journal, 0, 6).unwrap();
    // A later batch vouches that 0..6 were synced.
    append_batch(&mut journal, 6, 9).unwrap();
    drop(journal);
    let records = all_records(&disk);
    // Copy record 1's bytes over record 4's place: checksum fine, position wrong.
    let bytes = disk.durable_bytes(1);
    let (from, to) = (records[1].offset as usize, records[4].offset as usize);
    let len = 96 + records[1].payload.len();
    let stale = bytes[from..from + len].to_vec();
    disk.corrupt(1, to as u64, |b| b[..len].copy_from_slice(&stale));
    assert!(
        all_records_or_error(&disk).is_err(),
        "a reader stops at the stale record"
    );
    match Journal::open(disk, config()) {
        Err(OpenError::Scan(ScanError::Corrupt(Corruption::Record {
            offset,
            expected_sequence: 4,
            reason: BadSpot::Misplaced { sequence: 1, .. },
            ..
        }))) => assert_eq!(offset, to as u64),
        other => panic!("expected the stale record to be located, got {other:?}"),
    }
}

fn all_records_or_error<S: Storage>(disk: &S) -> Result<Vec<keel_journal::OwnedRecord>, ScanError> {
    let mut out = Vec::new();
    keel_journal::read_records(disk, 0, u64::MAX, &mut |r| {
        out.push(keel_journal::OwnedRecord::from_record(r))
    })?;
    Ok(out)
}

#[test]
fn async_policy_syncs_an_idle_journal_within_its_interval() {
    let disk = storage(14);
    let config = keel_journal::JournalConfig {
        sync: keel_journal::SyncPolicy::Async(std::time::Duration::from_millis(2)),
        ..config()
    };
    let (mut journal, _) = Journal::open(disk.clone(), config).unwrap();
    append_batch(&mut journal, 0, 10).unwrap();
    append_batch(&mut journal, 10, 20).unwrap();
    // No more batches: only the background timer can make them durable. A
    // power cut keeps exactly the synced bytes.
    let mut rounds = 0u64;
    while all_records(&disk.crash()).len() < 20 {
        rounds += 1;
        assert!(rounds < 50_000_000, "the idle journal was never synced");
        std::thread::yield_now();
    }
    assert_records(&all_records(&disk.crash()), 20);
}
