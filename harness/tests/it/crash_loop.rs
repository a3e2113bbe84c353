//! The crash loop: `keel-crash-child` serves transfers with `sync`
//! durability on a real file system and appends every acknowledged
//! transfer to its acknowledgement file; the test SIGKILLs it at seeded
//! random moments (1 MiB segments, so many kills land near a segment roll),
//! and after every kill checks, on the recovered journal:
//! - it opens: a torn tail may be cut, corruption is never accepted;
//! - every acknowledged transfer is in the replayed ledger with the result
//!   it was acknowledged with (applied if `ok`, absent if rejected);
//! - the replayed ledger's invariants hold (maintained hash = recomputed,
//!   debits = credits);
//! - the newest snapshot the child's shadow snapshotter wrote (every 100
//!   commands, so some kills land mid-snapshot) loads without warnings and,
//!   with the journal's tail, reaches the same state.
//!
//! `KEEL_CRASH_KILLS` (default 100) and `KEEL_CRASH_SEED` replay or extend a
//! run; the seed is printed with every failure.

use std::time::Duration;

use keel_core::StateMachine;
use keel_harness::config::NodeConfig;
use keel_harness::replay::{replay, Replayer};
use keel_harness::snapshot;
use keel_journal::{read_records, FsStorage, SnapshotStore};
use keel_ledger::Ledger;

use crate::support::{env, spawn_crash_child};

#[test]
fn every_acknowledged_transfer_survives_kill_9() {
    let seed = env("KEEL_CRASH_SEED", 0xc0ffee);
    let kills = env("KEEL_CRASH_KILLS", 100);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let acks = dir.path().join("acks.txt");
    let config = NodeConfig::crash_loop(data.clone());
    let mut rng = seed;
    let mut acknowledged = 0;
    let mut from_snapshots = 0;
    for kill in 0..kills {
        let (mut child, ready) = spawn_crash_child(&data, &acks, &[]);
        assert_eq!(
            ready, "ready\n",
            "seed {seed}, kill {kill}: the child did not start"
        );
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 20 + (rng >> 33) % 280;
        std::thread::sleep(Duration::from_millis(delay_ms)); // the kill moment, not synchronisation
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (acks_seen, snapshot_used) = check(&config, &acks, seed, kill);
        acknowledged = acks_seen;
        from_snapshots += u64::from(snapshot_used);
    }
    assert!(
        acknowledged > kills,
        "seed {seed}: the loop acknowledged almost nothing"
    );
    assert!(
        from_snapshots > 0,
        "seed {seed}: no snapshot was ever written"
    );
}

/// Replays the journal read-only and checks every acknowledgement against
/// it; returns the number of acknowledged transfers and whether a snapshot
/// was there to check too.
fn check(config: &NodeConfig, acks: &std::path::Path, seed: u64, kill: u64) -> (u64, bool) {
    let at = format!("seed {seed}, kill {kill}");
    let storage = FsStorage::open_read_only(&config.journal.data_dir).unwrap();
    let (replayed, _scan) = replay(
        &storage,
        Ledger::new(config.ledger_config()),
        config.engine.dedup_entries,
    )
    .unwrap_or_else(|e| panic!("{at}: the journal does not recover: {e}"));
    let ledger = replayed.state_machine;
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash(), "{at}");
    // Snapshots written while serving (some killed mid-write: never loaded
    // half-written) plus the journal's tail reach the same state.
    let store = SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep).unwrap();
    let dedup_entries = config.engine.dedup_entries;
    let (restored, warnings) = snapshot::load_newest::<Ledger>(
        &store,
        &config.ledger_config(),
        dedup_entries,
        u64::MAX,
        snapshot::journal_id_in(&config.journal.data_dir),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{at}: {warnings:?}");
    let snapshot_used = restored.is_some();
    if let Some(r) = restored {
        let mut tail = Replayer::resume(r.state_machine, r.dedup, r.sequence);
        read_records(&storage, r.sequence, u64::MAX, &mut |rec| tail.apply(rec)).unwrap();
        assert_eq!(tail.gap(), None, "{at}");
        let from_snapshot = tail.finish().state_machine;
        assert_eq!(
            from_snapshot.state_hash(),
            ledger.state_hash(),
            "{at}: snapshot + tail differs"
        );
    }
    let (debits, credits) = ledger.accounts().fold((0u128, 0u128), |(d, c), a| {
        (
            d + u128::from(a.debits_posted),
            c + u128::from(a.credits_posted),
        )
    });
    assert_eq!(debits, credits, "{at}");
    let text = std::fs::read_to_string(acks).unwrap_or_default();
    let mut count = 0;
    // A kill can cut the last line short: only complete lines are acks.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut fields = line.split_whitespace();
        let id: u128 = fields.next().unwrap().parse().unwrap();
        let code: u8 = fields.next().unwrap().parse().unwrap();
        let present = ledger.transfer(id).is_some();
        assert_eq!(
            present,
            code == 0,
            "{at}: acknowledged transfer {id} (code {code}) lost or invented"
        );
        count += 1;
    }
    (count, snapshot_used)
}
