//! The sharded model test (ADR 0014): `keel-crash-child --shards 3` runs
//! random single- and cross-shard transfers and now and then abandons a
//! saga mid-way (its driver dying alone); the test SIGKILLs the whole node
//! at seeded moments, and after every kill restarts it, lets it resume the
//! open sagas and checks:
//! - every acknowledged single-shard transfer is on its shard, once, and
//!   a refused one nowhere;
//! - every acknowledged cross-shard transfer is committed on both sides
//!   (reservation and credit posted), a refused one on neither, and an
//!   abandoned saga one way or the other on both;
//! - no money is created or destroyed: Σ of every balance is 0, each pair
//!   of clearing accounts nets to 0, nothing is left pending;
//! - each shard's state equals a replay of its journal.
//!
//! `KEEL_SHARD_CRASH_KILLS` (default 12) and `KEEL_SHARD_CRASH_SEED` replay
//! or extend a run; the seed is printed with every failure.

use std::time::Duration;

use keel_core::StateMachine;
use keel_harness::config::NodeConfig;
use keel_harness::replay::replay;
use keel_harness::sharded::ShardedNode;
use keel_journal::FsStorage;
use keel_ledger::routing::{clearing_account_id, saga_step_id, SlotTable};
use keel_ledger::{Ledger, PendingState};

use crate::support::{env, spawn_crash_child};

const SHARDS: usize = 3;

#[test]
fn sagas_settle_and_no_money_moves_twice_across_kill_9() {
    let seed = env("KEEL_SHARD_CRASH_SEED", 0x5a6a);
    let kills = env("KEEL_SHARD_CRASH_KILLS", 12);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let acks = dir.path().join("acks.txt");
    let config = NodeConfig::sharded_crash_loop(data.clone(), SHARDS);
    let mut rng = seed;
    let mut totals = (0, 0, 0, 0);
    for kill in 0..kills {
        let shards = SHARDS.to_string();
        let (mut child, ready) = spawn_crash_child(&data, &acks, &["--shards", &shards]);
        assert!(
            ready.starts_with("ready"),
            "seed {seed}, kill {kill}: the child did not start: {ready:?}"
        );
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 100 + (rng >> 33) % 500;
        let before = std::fs::metadata(&acks).map_or(0, |m| m.len());
        // The kill moment. On a loaded machine the child may not have acknowledged anything
        // yet: every run must add some traffic (at most 10 s more).
        std::thread::sleep(Duration::from_millis(delay_ms));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&acks).map_or(0, |m| m.len()) < before + 2_000
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        totals = check(&config, &acks, &format!("seed {seed}, kill {kill}"));
        eprintln!(
            "kill {kill} after {delay_ms} ms: {totals:?} (single, cross, abandoned, refused)"
        );
    }
    let (single, cross, abandoned, refused) = totals;
    assert!(
        single > kills && cross > kills && abandoned > 0 && refused > 0,
        "seed {seed}: too little traffic: {totals:?}"
    );
}

/// Restarts the node on the killed one's directories, lets it resume open
/// sagas, stops it and checks its state against every acknowledgement;
/// returns (single-shard, cross-shard, abandoned, refused) counts.
fn check(config: &NodeConfig, acks: &std::path::Path, at: &str) -> (u64, u64, u64, u64) {
    let node = ShardedNode::start(config).unwrap_or_else(|e| panic!("{at}: restart: {e}"));
    node.recover_sagas()
        .unwrap_or_else(|e| panic!("{at}: saga recovery: {e}"));
    let stopped = node.shutdown().unwrap();
    let ledgers: Vec<&Ledger> = stopped.iter().map(|s| &s.state_machine).collect();
    let table = SlotTable::even(config.shards.table_version, SHARDS, &[]).unwrap();

    let text = std::fs::read_to_string(acks).unwrap_or_default();
    let mut counts = (0, 0, 0, 0);
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let id: u128 = f[0].parse().unwrap();
        let (debit, credit): (u128, u128) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let (s1, s2) = (table.shard(0, debit), table.shard(0, credit));
        let acknowledged_ok = f[1] == "0";
        counts.3 += u64::from(f[1] != "0" && f[1] != "a");
        if s1 == s2 {
            let holders: Vec<usize> = (0..SHARDS)
                .filter(|&s| ledgers[s].transfer(id).is_some())
                .collect();
            let expected = match acknowledged_ok {
                true => vec![usize::from(s1)],
                false => vec![], // refused: nowhere
            };
            assert_eq!(holders, expected, "{at}: transfer {id} ({line})");
            counts.0 += 1;
            continue;
        }
        let posted = |shard: u16, step: u8| {
            ledgers[usize::from(shard)]
                .transfer(saga_step_id(id, step))
                .is_some_and(|(_, state)| state == PendingState::Posted)
        };
        let (debit, credit) = (posted(s1, 1), posted(s2, 2));
        assert_eq!(
            debit, credit,
            "{at}: saga {id} settled on one side only ({line})"
        );
        match f[1] {
            // Abandoned: either outcome, but on both sides (checked above).
            "a" => counts.2 += 1,
            _ => {
                assert_eq!(debit, acknowledged_ok, "{at}: saga {id} ({line})");
                counts.1 += 1;
            }
        }
    }

    let net = |a: &keel_ledger::Account| i128::from(a.credits_posted) - i128::from(a.debits_posted);
    let total: i128 = ledgers.iter().flat_map(|l| l.accounts()).map(net).sum();
    assert_eq!(total, 0, "{at}: money created or destroyed");
    for s1 in 0..SHARDS as u16 {
        for s2 in s1 + 1..SHARDS as u16 {
            let side = |o: u16, p: u16| {
                ledgers[usize::from(o)]
                    .account(clearing_account_id(o, p, 1))
                    .map_or(0, net)
            };
            assert_eq!(side(s1, s2) + side(s2, s1), 0, "{at}: clearing {s1}<->{s2}");
        }
    }
    let pending: u64 = ledgers
        .iter()
        .flat_map(|l| l.accounts())
        .map(|a| a.debits_pending + a.credits_pending)
        .sum();
    assert_eq!(pending, 0, "{at}: a saga was left unsettled");

    for (i, ledger) in ledgers.iter().enumerate() {
        assert_eq!(ledger.state_hash(), ledger.recompute_state_hash(), "{at}");
        let storage = FsStorage::open_read_only(config.for_shard(i).journal.data_dir).unwrap();
        let (replayed, _) = replay(
            &storage,
            Ledger::new(config.ledger_config()),
            config.engine.dedup_entries,
        )
        .unwrap_or_else(|e| panic!("{at}: shard {i} does not replay: {e}"));
        assert_eq!(
            replayed.state_machine.state_hash(),
            ledger.state_hash(),
            "{at}: shard {i} differs from its journal's replay"
        );
    }
    counts
}
