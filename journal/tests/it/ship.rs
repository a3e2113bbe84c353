//! A follower's journal written from its leader's writes
//! (`Journal::set_observer` → `Journal::write_shipped`) is byte-identical,
//! segment rolls included; a write that does not continue it is refused
//! before anything is written.

use std::sync::{Arc, Mutex};

use keel_journal::{FsStorage, IoMode, Journal, ShipError, Storage, Written};

use crate::support::{all_records, append_batch, assert_records, config};

type Shipped = Arc<Mutex<Vec<(u64, u64, Vec<u8>)>>>;

/// Collects every write `leader` makes from now on.
fn observe(leader: &mut Journal<FsStorage>) -> Shipped {
    let shipped: Shipped = Arc::default();
    let sink = Arc::clone(&shipped);
    leader.set_observer(Box::new(move |w: Written<'_>| {
        sink.lock()
            .unwrap()
            .push((w.segment_id, w.offset, w.bytes.to_vec()));
    }));
    shipped
}

fn ship(from: &Shipped, to: &mut Journal<FsStorage>) {
    for (segment_id, offset, bytes) in from.lock().unwrap().drain(..) {
        to.write_shipped(Written {
            segment_id,
            offset,
            bytes: &bytes,
        })
        .unwrap_or_else(|e| panic!("segment {segment_id} offset {offset}: {e}"));
    }
}

#[test]
fn a_follower_written_from_the_leaders_writes_is_byte_identical_across_rolls() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (leader_dir, follower_dir) = (dir.path().join("leader"), dir.path().join("follower"));
    let (mut leader, _) = Journal::open(
        FsStorage::open(&leader_dir, IoMode::DirectSync).unwrap(),
        config(),
    )
    .unwrap();
    let (mut follower, _) = Journal::open(
        FsStorage::open(&follower_dir, IoMode::DirectSync).unwrap(),
        config(),
    )
    .unwrap();
    let shipped = observe(&mut leader);
    let mut n = 0;
    for batch in 1..30 {
        append_batch(&mut leader, n, n + batch).unwrap();
        n += batch;
        ship(&shipped, &mut follower);
        assert_eq!(follower.next_sequence(), n);
        assert_eq!(
            follower.status().durable_next(),
            n,
            "synced like a group commit"
        );
        assert_eq!(
            follower.last_record_checksum(),
            leader.last_record_checksum()
        );
    }
    assert!(leader.segment_id() > 2, "the run rolled segments");
    drop((leader, follower));
    let leader = FsStorage::open(&leader_dir, IoMode::DirectSync).unwrap();
    let follower = FsStorage::open(&follower_dir, IoMode::DirectSync).unwrap();
    let ids = leader.list().unwrap();
    assert_eq!(follower.list().unwrap(), ids);
    for id in ids {
        let name = keel_journal::storage::segment_name(id);
        let (a, b) = (
            std::fs::read(leader_dir.join(&name)).unwrap(),
            std::fs::read(follower_dir.join(&name)).unwrap(),
        );
        assert!(a == b, "segment {id} differs");
    }
    assert_records(&all_records(&follower), n);
    let (journal, _) = Journal::open(follower, config()).unwrap();
    assert_eq!(journal.next_sequence(), n);
}

#[test]
fn a_shipped_write_that_does_not_continue_the_journal_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut leader, _) = Journal::open(
        FsStorage::open(dir.path().join("l"), IoMode::DirectSync).unwrap(),
        config(),
    )
    .unwrap();
    let (mut follower, _) = Journal::open(
        FsStorage::open(dir.path().join("f"), IoMode::DirectSync).unwrap(),
        config(),
    )
    .unwrap();
    let shipped = observe(&mut leader);
    append_batch(&mut leader, 0, 3).unwrap();
    append_batch(&mut leader, 3, 6).unwrap();
    let writes: Vec<_> = shipped.lock().unwrap().drain(..).collect();
    assert_eq!(writes.len(), 2);
    let (segment_id, offset, first) = &writes[0];
    let (_, second_offset, second) = &writes[1];
    // Out of order: the second write before the first.
    let early = Written {
        segment_id: *segment_id,
        offset: *second_offset,
        bytes: second,
    };
    assert!(matches!(
        follower.write_shipped(early),
        Err(ShipError::Position { .. })
    ));
    // A flipped byte in a record: refused by its checksum, nothing written.
    let mut damaged = first.clone();
    damaged[40] ^= 1;
    let bad = Written {
        segment_id: *segment_id,
        offset: *offset,
        bytes: &damaged,
    };
    assert!(matches!(
        follower.write_shipped(bad),
        Err(ShipError::Record { .. })
    ));
    assert_eq!(follower.next_sequence(), 0);
    // The real writes then apply in order; the same write twice is refused.
    follower
        .write_shipped(Written {
            segment_id: *segment_id,
            offset: *offset,
            bytes: first,
        })
        .unwrap();
    let again = Written {
        segment_id: *segment_id,
        offset: *offset,
        bytes: first,
    };
    assert!(matches!(
        follower.write_shipped(again),
        Err(ShipError::Position { .. })
    ));
    follower
        .write_shipped(Written {
            segment_id: *segment_id,
            offset: *second_offset,
            bytes: second,
        })
        .unwrap();
    assert_eq!(follower.next_sequence(), 6);
}
