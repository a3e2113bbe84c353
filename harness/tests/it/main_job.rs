//! The main job end to end (small): every command acknowledged, balances
//! conserved, and the same workload gives the same state hash every time.

use keel_core::{EngineConfig, Fusion, WaitStrategy};
use keel_harness::load::{run, LoadConfig};

fn config(fusion: Fusion) -> LoadConfig {
    LoadConfig {
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
