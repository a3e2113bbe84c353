//! The tailing reader follows a live writer across segment rolls; retention
//! drops covered segments and reading continues from what is left.

use keel_journal::{read_records, FaultConfig, Journal, JournalTail, OwnedRecord};

use crate::support::{append_batch, assert_records, config, storage};

#[test]
fn tail_follows_a_live_writer_across_rolls_exactly_once() {
    let disk = storage(21);
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let status = journal.status();
    let mut tail = JournalTail::new(&disk, 0);
    let mut seen = Vec::new();
    let mut n = 0;
    for batch in 1..60 {
        append_batch(&mut journal, n, n + batch % 9 + 1).unwrap();
        n += batch % 9 + 1;
        tail.poll(status.durable_next(), &mut |r| {
            seen.push(OwnedRecord::from_record(r))
        })
        .unwrap();
        assert_eq!(seen.len() as u64, n, "tail caught up after batch {batch}");
    }
    assert!(journal.segment_id() > 2, "the tail crossed segment rolls");
    // Nothing new: a poll hands over nothing.
    assert_eq!(
        tail.poll(status.durable_next(), &mut |_| panic!("no new records"))
            .unwrap(),
        0
    );
    assert_records(&seen, n);
}

#[test]
fn tail_from_a_sequence_and_unbounded_tail_stops_at_a_torn_write() {
    let disk = storage(22);
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    append_batch(&mut journal, 0, 30).unwrap();
    let mut from_ten = Vec::new();
    JournalTail::new(&disk, 10)
        .poll(u64::MAX, &mut |r| from_ten.push(r.header.sequence))
        .unwrap();
    assert_eq!(from_ten, (10..30).collect::<Vec<_>>());
    // A write whose sync failed and then a crash: the unbounded tail reads
    // what is valid and stops without an error.
    disk.set_faults(FaultConfig {
        eio_on_sync: Some(0),
        ..FaultConfig::default()
    });
    assert!(append_batch(&mut journal, 30, 60).is_err());
    let crashed = disk.crash();
    let mut count = 0;
    JournalTail::new(&crashed, 0)
        .poll(u64::MAX, &mut |_| count += 1)
        .unwrap();
    assert!((30..=60).contains(&count), "{count}");
}

#[test]
fn corruption_below_the_durable_bound_is_an_error_for_the_tail() {
    let disk = storage(23);
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    append_batch(&mut journal, 0, 10).unwrap();
    let status = journal.status();
    let mut records = Vec::new();
    read_records(&disk, 0, u64::MAX, &mut |r| {
        records.push(OwnedRecord::from_record(r))
    })
    .unwrap();
    disk.corrupt(records[3].segment_id, records[3].offset + 120, |b| {
        b[0] ^= 1
    });
    let error = JournalTail::new(&disk, 0)
        .poll(status.durable_next(), &mut |_| {})
        .unwrap_err();
    assert!(error.to_string().contains("expected sequence 3"), "{error}");
}

#[test]
fn drop_below_removes_covered_segments_and_the_rest_still_reads() {
    let disk = storage(24);
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let mut n = 0;
    while journal.segment_id() < 5 {
        append_batch(&mut journal, n, n + 10).unwrap();
        n += 10;
    }
    let dropped = journal.drop_below(n / 2).unwrap();
    assert!(!dropped.is_empty());
    assert!(!dropped.contains(&journal.segment_id()));
    let mut first = None;
    let mut count = 0;
    read_records(&disk, 0, u64::MAX, &mut |r| {
        first.get_or_insert(r.header.sequence);
        count += 1;
    })
    .unwrap();
    let first = first.unwrap();
    assert!(first > 0 && first <= n / 2, "first kept sequence {first}");
    assert_eq!(
        first + count,
        n,
        "everything from the first kept record on is there"
    );
    // And the journal still opens and appends after the retention.
    drop(journal);
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    append_batch(&mut journal, n, n + 3).unwrap();
}

#[test]
fn a_slow_device_changes_timing_not_contents() {
    let disk = storage(25);
    disk.set_faults(FaultConfig {
        latency: Some(std::time::Duration::from_millis(1)),
        ..FaultConfig::default()
    });
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    append_batch(&mut journal, 0, 40).unwrap();
    append_batch(&mut journal, 40, 45).unwrap();
    drop(journal);
    assert_records(&crate::support::all_records(&disk), 45);
}
