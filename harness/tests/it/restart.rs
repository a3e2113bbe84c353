//! Restart from the journal keeps the idempotency window: a command retried
//! after a restart with the same key returns the original outcome and is not
//! applied twice, and a full replay reaches the live engine's state hash.

use keel_core::{Command, Engine, EngineConfig, StateMachine};
use keel_harness::demo::{encode, DemoAccounts, DEPOSIT};
use keel_harness::replay::{replay, Replayer};
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig};

fn start(dir: &std::path::Path) -> Engine<DemoAccounts, Journal<FsStorage>> {
    let storage = FsStorage::open(dir, IoMode::DirectSync).unwrap();
    let config = EngineConfig::default();
    let mut replayed = Replayer::new(DemoAccounts::new(4), config.dedup_entries);
    let (journal, _) = Journal::open_replaying(storage, JournalConfig::default(), &mut |r| {
        replayed.apply(r)
    })
    .unwrap();
    let config = EngineConfig {
        first_sequence: journal.next_sequence(),
        ..config
    };
    Engine::builder(config, replayed.state_machine)
        .dedup(replayed.dedup)
        .journaller(journal)
        .start()
        .unwrap()
}

#[test]
fn retried_command_after_restart_is_a_duplicate_and_replay_agrees() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let body = encode(0, 1, 100);
    let mut deposit = Command::new(DEPOSIT, &body);
    deposit.idempotency_key = 42;

    let engine = start(dir.path());
    let first = engine.submitter().submit(&deposit).unwrap();
    assert!(!first.duplicate);
    drop(engine.shutdown().unwrap());

    let engine = start(dir.path());
    let retried = engine.submitter().submit(&deposit).unwrap();
    assert!(retried.duplicate, "the recovered window remembers key 42");
    assert_eq!(retried.outcome, first.outcome);
    let live = engine.shutdown().unwrap().state_machine;
    assert_eq!(live.total(), 100, "applied once");

    let storage = FsStorage::open(dir.path(), IoMode::DirectSync).unwrap();
    let (full, _) = replay(
        &storage,
        DemoAccounts::new(4),
        EngineConfig::default().dedup_entries,
    )
    .unwrap();
    assert_eq!(full.state_machine.state_hash(), live.state_hash());
}

#[test]
fn a_recovered_window_of_another_size_is_refused_by_name() {
    let window = keel_core::DedupTable::with_capacity(8);
    let error = Engine::builder(EngineConfig::default(), DemoAccounts::new(4))
        .dedup(window)
        .start()
        .unwrap_err();
    assert_eq!(error.option, "dedup_entries");
}
