//! Recovery from a snapshot's sequence: `scan_from` reads only the segments
//! at or after it (headers of the earlier ones are still checked), visits
//! exactly the records a full scan would from that segment on, and ends in
//! the same place; a damaged header stops the skipping.

use keel_journal::{scan, scan_from, Journal, Storage};

use crate::support::{append_batch, config, open, storage};

fn journal_of(records: u64) -> keel_journal::FaultyStorage {
    let storage = storage(7);
    let mut journal = open(storage.clone());
    for from in (0..records).step_by(25) {
        append_batch(&mut journal, from, (from + 25).min(records)).unwrap();
    }
    drop(journal);
    storage
}

#[test]
fn a_scan_from_a_sequence_skips_whole_segments_below_it() {
    let storage = journal_of(1000);
    let full = scan(&storage, &mut |_| {}).unwrap();
    assert!(full.segments.len() > 5, "small segments: many rolls");
    let from = 700;
    let mut visited = Vec::new();
    let report = scan_from(&storage, from, &mut |r| visited.push(r.header.sequence)).unwrap();
    assert_eq!(report.next_sequence, full.next_sequence);
    assert_eq!(report.segments.len(), full.segments.len());
    assert_eq!(report.records(), full.records());
    let first = visited[0];
    assert!(first <= from, "the segment holding {from} is read in full");
    assert!(first > 0, "earlier segments were skipped");
    assert_eq!(visited, (first..1000).collect::<Vec<_>>());
    // A journal reopened from that point continues the same sequence.
    let (journal, _) = Journal::open_replaying_from(storage, config(), from, &mut |_| {}).unwrap();
    assert_eq!(journal.next_sequence(), 1000);
}

#[test]
fn skipped_segments_are_not_read_but_a_bad_header_stops_the_skipping() {
    let storage = journal_of(1000);
    let ids = storage.list().unwrap();
    // Damage a record inside the first segment: a full scan refuses; a scan
    // from 700 never reads it (the snapshot covers it; `verify` would not).
    storage.corrupt(ids[0], 700, |b| b[0] ^= 0xff);
    assert!(scan(&storage, &mut |_| {}).is_err());
    assert!(scan_from(&storage, 700, &mut |_| {}).is_ok());
    // Damage the second segment's header: skipping stops before it and the
    // damage is found.
    storage.corrupt(ids[1], 3, |b| b[0] ^= 0xff);
    assert!(scan_from(&storage, 700, &mut |_| {}).is_err());
}
