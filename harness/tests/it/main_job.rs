//! The main job end to end (small): every transfer acknowledged with a
//! result, debits equal credits, and a restart from the journal reaches the
//! state hash the engine had at shutdown.

use keel_harness::config::{Durability, FusionArg, NodeConfig, WaitArg};
use keel_harness::load::{run, LoadConfig};

fn config(dir: &std::path::Path, durability: Durability, fusion: FusionArg) -> LoadConfig {
    let mut node = NodeConfig::default();
    node.journal.data_dir = dir.to_path_buf();
    node.journal.durability = durability;
    node.journal.chain = true;
    node.engine.fusion = fusion;
    node.engine.wait_strategy = WaitArg::SpinYield;
    node.ledger.accounts_max = 1024;
    node.ledger.transfers_max = 1 << 16;
    LoadConfig {
        node,
        transfers: 20_000,
        producers: 2,
        window: 8,
        batch: 5,
        accounts: 100,
        progress: false,
        ..LoadConfig::default()
    }
}

#[test]
fn every_transfer_gets_a_result_and_debits_equal_credits() {
    for fusion in [FusionArg::Single, FusionArg::Paired, FusionArg::Separate] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let report = run(&config(dir.path(), Durability::None, fusion)).unwrap();
        assert_eq!(report.transfer_results.iter().sum::<u64>(), 20_000);
        let (debits, credits) = report.posted_debits_credits;
        assert_eq!(debits, credits);
        // 100 funding transfers of 100,000 plus the workload.
        assert!(debits > 100 * 100_000, "{fusion:?}");
        assert!(report.restart.is_none());
    }
}

#[test]
fn durable_main_job_restarts_to_the_same_state_hash() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let durable = config(dir.path(), Durability::Sync, FusionArg::Paired);
    let first = run(&durable).unwrap();
    assert_eq!(first.recovery.records, 0);
    let restart = first.restart.unwrap();
    assert_eq!(restart.state_hash, first.state_hash);
    // 12 account commands (9 per command), 15 funding commands (7 per command), 4,000 transfer commands (5 each).
    assert_eq!(restart.records, 12 + 15 + 4_000);
    // A second run recovers the first, re-creates nothing (`exists`), and
    // its restart matches again.
    let second = run(&durable).unwrap();
    assert_eq!(second.recovery.records, restart.records);
    assert_eq!(second.recovery.state_hash, first.state_hash);
    let restart = second.restart.unwrap();
    assert_eq!(restart.state_hash, second.state_hash);
    assert_ne!(second.state_hash, first.state_hash);
}
