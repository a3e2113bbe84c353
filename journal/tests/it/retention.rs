//! Retention honours holds: a reader's claim (a projector's checkpoint)
//! keeps the segments it still needs, under both deleting policies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_journal::{Journal, JournalConfig, Retention, Storage};

use crate::support::{all_records, append_batch, config, storage};

fn segments<S: Storage>(storage: &S) -> usize {
    storage.list().unwrap().len()
}

fn run(retention: Retention, release: bool) {
    let disk = storage(7);
    let config = JournalConfig {
        retention,
        ..config()
    };
    let (mut journal, _) = Journal::open(disk.clone(), config).unwrap();
    let status = journal.status();
    let needed_from = Arc::new(AtomicU64::new(0));
    let hold = status.hold(Arc::clone(&needed_from));
    let mut next = 0;
    for _ in 0..40 {
        append_batch(&mut journal, next, next + 20).unwrap();
        next += 20;
        if release {
            status.release_below(next);
        }
    }
    let held_segments = segments(&disk);
    assert!(
        held_segments > 4,
        "{retention:?}: the hold at 0 kept every segment ({held_segments})"
    );
    assert_eq!(all_records(&disk).len() as u64, next, "nothing dropped");

    // The reader moves on: older segments go at the next rolls.
    needed_from.store(next - 20, Ordering::Release);
    for _ in 0..10 {
        append_batch(&mut journal, next, next + 20).unwrap();
        next += 20;
        if release {
            status.release_below(next);
        }
    }
    let first = all_records(&disk)[0].sequence;
    assert!(
        first > 0,
        "{retention:?}: segments below the hold were dropped"
    );
    assert!(
        first <= 780,
        "{retention:?}: none the hold still needs (first record {first})"
    );

    // No hold: retention is as before.
    drop(hold);
    assert_eq!(status.held_from(), u64::MAX);
}

#[test]
fn a_hold_keeps_segments_under_keep_n() {
    run(Retention::KeepSegments(2), false);
}

#[test]
fn a_hold_keeps_segments_a_snapshot_released() {
    run(Retention::CoveredBySnapshots, true);
}
