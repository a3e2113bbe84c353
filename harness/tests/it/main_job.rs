//! The main job end to end (small): every command acknowledged, balances
//! conserved, and the same workload gives the same state hash every time.

use keel_core::{EngineConfig, Fusion, WaitStrategy};
use keel_harness::load::{run, Durability, LoadConfig};
use keel_journal::SyncPolicy;

fn config(fusion: Fusion) -> LoadConfig {
    LoadConfig {
        durability: Durability::None,
        transfers: 20_000,
        producers: 1,
        window: 16,
        accounts: 100,
        engine: EngineConfig {
            fusion,
            wait_strategy: WaitStrategy::spin_then_yield(),
            ..EngineConfig::default()
        },
        progress: false,
    }
}

#[test]
fn main_job_acknowledges_everything_and_conserves_balances() {
    let report = run(&config(Fusion::Paired)).unwrap();
    assert_eq!(report.commands, 20_000 + 100);
    assert_eq!(report.applied + report.rejected, 20_000);
    assert_eq!(report.total_balance, report.deposited);
    assert_eq!(report.ack_latency_ns.len(), 20_100);
}

#[test]
fn one_producer_runs_are_deterministic_across_fusions() {
    let hashes: Vec<u64> = [Fusion::Single, Fusion::Paired, Fusion::Separate]
        .into_iter()
        .map(|f| run(&config(f)).unwrap().state_hash)
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hashes[1], hashes[2]);
}

#[test]
fn durable_main_job_recovers_and_replays_to_the_same_state_hash() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let durable = LoadConfig {
        durability: Durability::Journal {
            dir: dir.path().to_path_buf(),
            sync: SyncPolicy::Sync,
            chain: true,
            allow_buffered: false,
        },
        ..config(Fusion::Paired)
    };
    let first = run(&durable).unwrap();
    let journal = first.journal.as_ref().unwrap();
    assert_eq!(journal.recovered_records, 0);
    assert_eq!(journal.records_at_end, 20_100);
    assert_eq!(journal.replayed_state_hash, first.state_hash);
    // A second run recovers the first run's state from the journal.
    let second = run(&durable).unwrap();
    let journal = second.journal.as_ref().unwrap();
    assert_eq!(journal.recovered_records, 20_100);
    assert_eq!(journal.records_at_end, 40_200);
    assert_eq!(journal.replayed_state_hash, second.state_hash);
    assert_eq!(
        second.total_balance, second.deposited,
        "two runs of deposits, conserved"
    );
}
