//! The journal as the engine's journaller stage: log-first, fail-stop on a
//! sync error, and ENOSPC as back-pressure that resumes without a gap.

use std::time::Duration;

use keel_core::{
    BackPressure, Command, CommandRef, Engine, EngineConfig, Outcome, StageName, StateMachine,
    StopReason, SubmitError,
};
use keel_journal::{FaultConfig, Journal};

use crate::support::{all_records, config, storage};

struct Count(u64);

impl StateMachine for Count {
    fn apply(&mut self, _command: &CommandRef<'_>, _outcome: &mut Outcome) {
        self.0 += 1;
    }
    fn state_hash(&self) -> u64 {
        self.0
    }
}

#[test]
fn engine_on_the_journal_acknowledges_only_journaled_commands() {
    let disk = storage(31);
    let (journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let engine_config = EngineConfig {
        first_sequence: journal.next_sequence(),
        ..EngineConfig::default()
    };
    let engine = Engine::builder(engine_config, Count(0))
        .journaller(journal)
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    for i in 0..500u64 {
        let ack = submitter
            .submit(&Command::new(1, &i.to_le_bytes()))
            .unwrap();
        assert_eq!(ack.sequence, i);
    }
    drop(submitter);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.state_machine.0, 500);
    let records = all_records(&disk);
    assert_eq!(records.len(), 500);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.payload == (i as u64).to_le_bytes()));
}

#[test]
fn sync_error_stops_the_engine_and_acknowledges_nothing_of_the_batch() {
    let disk = storage(32);
    let (journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let engine = Engine::builder(EngineConfig::default(), Count(0))
        .journaller(journal)
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    submitter.submit(&Command::new(1, b"ok")).unwrap();
    disk.set_faults(FaultConfig {
        eio_on_sync: Some(0),
        ..FaultConfig::default()
    });
    match submitter.submit(&Command::new(1, b"lost")) {
        Err(SubmitError::EngineStopped(StopReason::StageFailed {
            stage: StageName::Journaller,
            sequence: 1,
            source,
        })) => assert!(
            source
                .to_string()
                .contains("journal sync failed: segment 1"),
            "{source}"
        ),
        other => panic!("expected fail-stop, got {other:?}"),
    }
    assert_eq!(
        engine.processed(StageName::BusinessLogic),
        1,
        "the BLP never saw the failed batch"
    );
    assert!(matches!(
        submitter.submit(&Command::new(1, b"after")),
        Err(SubmitError::EngineStopped(_))
    ));
}

/// An engine whose journal waits for disk space at a segment roll, with
/// its ring backed up.
struct Stuck {
    disk: keel_journal::FaultyStorage,
    status: keel_journal::JournalStatus,
    engine: Engine<Count, Journal<keel_journal::FaultyStorage>>,
    submitter: keel_core::Submitter,
    /// Commands accepted before the ring backed up.
    accepted: u64,
}

fn stuck_at_a_roll(seed: u64) -> Stuck {
    let disk = storage(seed);
    let (journal, _) = Journal::open(disk.clone(), config()).unwrap();
    let status = journal.status();
    let engine_config = EngineConfig {
        back_pressure: BackPressure::Wait(Duration::from_millis(1)),
        ..EngineConfig::default()
    };
    let engine = Engine::builder(engine_config, Count(0))
        .journaller(journal)
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    disk.set_no_space(true);
    let body = [7u8; 200];
    let mut accepted = 0u64;
    // Submit until the journal needs a new segment and the ring backs up.
    loop {
        match submitter.submit_detached(&Command::new(1, &body)) {
            Ok(_) => accepted += 1,
            Err(SubmitError::Busy) if status.out_of_space() => break,
            Err(SubmitError::Busy) => {}
            Err(e) => panic!("{e}"),
        }
    }
    Stuck {
        disk,
        status,
        engine,
        submitter,
        accepted,
    }
}

#[test]
fn no_space_at_roll_is_back_pressure_then_resumes_without_a_gap() {
    let Stuck {
        disk,
        status,
        engine,
        mut submitter,
        accepted,
    } = stuck_at_a_roll(33);
    let body = [7u8; 200];
    let durable_while_full = status.durable_next();
    assert!(
        durable_while_full < accepted,
        "commands waited, none acknowledged past the roll"
    );
    disk.set_no_space(false);
    // The roll retries on its own; once it succeeds the ring drains.
    let ack = loop {
        match submitter.submit(&Command::new(1, &body)) {
            Err(SubmitError::Busy) => continue,
            other => break other.unwrap(),
        }
    };
    assert!(!status.out_of_space());
    assert_eq!(ack.sequence, accepted, "sequences continue without a gap");
    drop(submitter);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.state_machine.0, accepted + 1);
    let records = all_records(&disk);
    assert_eq!(records.len() as u64, accepted + 1);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.sequence == i as u64));
}

/// A shutdown while the disk stays full: once the host abandons the wait
/// (the node does so after `SHUTDOWN_SPACE_WAIT`), the journaller fails the
/// batch, the engine stops, and `shutdown` returns the reason instead of
/// hanging; nothing past the roll was acknowledged.
#[test]
fn shutdown_on_a_full_disk_returns_once_the_wait_is_abandoned() {
    let Stuck {
        disk,
        status,
        engine,
        submitter,
        ..
    } = stuck_at_a_roll(34);
    assert!(status.out_of_space_for().is_some());
    drop(submitter);
    status.abandon_waits();
    match engine.shutdown() {
        Err(keel_core::StopReason::StageFailed { source, .. }) => {
            assert!(source.to_string().contains("out of space"), "{source}")
        }
        Err(other) => panic!("stopped for another reason: {other}"),
        Ok(_) => panic!("shutdown reported success on a full disk"),
    }
    assert!(all_records(&disk).len() as u64 <= status.durable_next());
}
