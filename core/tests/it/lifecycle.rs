//! Lifecycle: fail-stop on panics and stage errors, graceful shutdown,
//! pause/resume, configuration errors and pinning that never panics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_core::{
    Command, CommandRef, EngineBuilder, EngineConfig, Fusion, Journaller, Pinning, StageError,
    StageName, StopReason, SubmitError, WaitStrategy,
};

use crate::support::{payload, Balances, DEPOSIT, PANIC};

#[test]
fn panicking_state_machine_stops_the_engine_and_nobody_hangs() {
    for fusion in [
        Fusion::Separate,
        Fusion::Paired,
        Fusion::Single,
        Fusion::Gated,
    ] {
        let config = EngineConfig {
            fusion,
            ..EngineConfig::default()
        };
        let engine = EngineBuilder::new(config, Balances::default())
            .start()
            .unwrap();
        let body = payload(0, 1);
        // Other callers wait on commands queued behind the panicking one.
        let waiting = std::thread::scope(|s| {
            let mut submitter = engine.submitter();
            let killer = s.spawn(move || submitter.submit(&Command::new(PANIC, &body)));
            let mut submitter = engine.submitter();
            let bystanders = s.spawn(move || {
                (0..100)
                    .map(|_| submitter.submit(&Command::new(DEPOSIT, &body)))
                    .collect::<Vec<_>>()
            });
            let killed = killer.join().unwrap();
            assert!(
                matches!(
                    killed,
                    Err(SubmitError::EngineStopped(StopReason::StagePanicked {
                        stage: StageName::BusinessLogic,
                        ..
                    }))
                ),
                "{fusion:?}: {killed:?}"
            );
            bystanders.join().unwrap()
        });
        // Bystanders before the panic were acknowledged; every one after it got an error.
        let first_error = waiting
            .iter()
            .position(|r| r.is_err())
            .unwrap_or(waiting.len());
        assert!(waiting[first_error..]
            .iter()
            .all(|r| matches!(r, Err(SubmitError::EngineStopped(_)))));
        let mut submitter = engine.submitter();
        assert!(matches!(
            submitter.submit(&Command::new(DEPOSIT, &body)),
            Err(SubmitError::EngineStopped(StopReason::StagePanicked { .. }))
        ));
        assert!(matches!(
            engine.stop_reason(),
            Some(StopReason::StagePanicked { .. })
        ));
        drop(submitter);
        assert!(matches!(
            engine.shutdown(),
            Err(StopReason::StagePanicked { .. })
        ));
    }
}

/// A journaller whose write fails at a given sequence.
struct FailAt(u64);

#[derive(Debug, thiserror::Error)]
#[error("injected write failure")]
struct Injected;

impl Journaller for FailAt {
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError> {
        match command.sequence == self.0 {
            true => Err(Box::new(Injected)),
            false => Ok(()),
        }
    }
    fn end_of_batch(&mut self, _last_sequence: u64) -> Result<(), StageError> {
        Ok(())
    }
}

struct CountApplied(Arc<AtomicU64>);

impl keel_core::StateMachine for CountApplied {
    fn apply(&mut self, command: &CommandRef<'_>, _outcome: &mut keel_core::Outcome) {
        self.0.fetch_max(command.sequence + 1, Ordering::SeqCst);
    }
    fn state_hash(&self) -> u64 {
        0
    }
}

#[test]
fn journal_failure_is_fail_stop_and_nothing_of_the_batch_is_applied() {
    let applied_next = Arc::new(AtomicU64::new(0));
    let engine = EngineBuilder::new(
        EngineConfig::default(),
        CountApplied(Arc::clone(&applied_next)),
    )
    .journaller(FailAt(50))
    .start()
    .unwrap();
    let mut submitter = engine.submitter();
    let mut results = Vec::new();
    for _ in 0..100 {
        results.push(submitter.submit(&Command::new(1, b"")));
    }
    for (n, result) in results.iter().enumerate() {
        match n < 50 {
            true => assert_eq!(result.as_ref().unwrap().sequence, n as u64),
            false => assert!(
                matches!(
                    result,
                    Err(SubmitError::EngineStopped(StopReason::StageFailed {
                        stage: StageName::Journaller,
                        sequence: 50,
                        ..
                    }))
                ),
                "{n}: {result:?}"
            ),
        }
    }
    assert_eq!(
        applied_next.load(Ordering::SeqCst),
        50,
        "nothing at or after the failed write was applied"
    );
    let reason = engine.stop_reason().unwrap().to_string();
    assert!(
        reason.contains("journaller failed at sequence 50: injected write failure"),
        "{reason}"
    );
}

#[test]
fn shutdown_drains_everything_submitted() {
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let body = payload(5, 2);
    let pending: Vec<_> = (0..3000)
        .map(|i| match i % 2 {
            0 => Some(
                submitter
                    .submit_async(&Command::new(DEPOSIT, &body))
                    .unwrap(),
            ),
            _ => {
                submitter
                    .submit_detached(&Command::new(DEPOSIT, &body))
                    .unwrap();
                None
            }
        })
        .collect();
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.commands, 3000);
    assert_eq!(stopped.state_machine.balances[5], 6000);
    for future in pending.into_iter().flatten() {
        assert!(futures::executor::block_on(future)
            .unwrap()
            .outcome
            .code
            .is_ok());
    }
    assert!(matches!(
        submitter.submit(&Command::new(DEPOSIT, &body)),
        Err(SubmitError::EngineStopped(StopReason::Shutdown))
    ));
}

#[test]
fn pause_drains_and_rejects_until_resume() {
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let body = payload(1, 1);
    for _ in 0..500 {
        submitter
            .submit_detached(&Command::new(DEPOSIT, &body))
            .unwrap();
    }
    engine.pause().unwrap();
    assert_eq!(
        engine.processed(StageName::Publisher),
        500,
        "pause returned before draining"
    );
    assert!(matches!(
        submitter.submit(&Command::new(DEPOSIT, &body)),
        Err(SubmitError::Paused)
    ));
    engine.resume();
    assert_eq!(
        submitter
            .submit(&Command::new(DEPOSIT, &body))
            .unwrap()
            .sequence,
        500
    );
}

#[test]
fn bad_configuration_names_the_option() {
    let config = EngineConfig {
        ring_slots: 1000,
        ..EngineConfig::default()
    };
    let error = EngineBuilder::new(config, Balances::default())
        .start()
        .unwrap_err();
    assert_eq!(error.option, "ring_slots");
    let config = EngineConfig {
        in_flight_max: 0,
        ..EngineConfig::default()
    };
    assert_eq!(
        EngineBuilder::new(config, Balances::default())
            .start()
            .unwrap_err()
            .option,
        "in_flight_max"
    );
}

#[test]
fn pinning_to_missing_cores_is_reported_not_fatal() {
    let config = EngineConfig {
        fusion: Fusion::Separate,
        wait_strategy: WaitStrategy::spin_then_yield(),
        pinning: Pinning::Cores(vec![0, 4096, 4097, 4098]),
        ..EngineConfig::default()
    };
    let engine = EngineBuilder::new(config, Balances::default())
        .start()
        .unwrap();
    let report = engine.pinning();
    assert_eq!(report.len(), 4);
    assert_eq!(report[1].requested, Some(4096));
    assert!(!report[1].pinned);
    let mut submitter = engine.submitter();
    assert!(submitter
        .submit(&Command::new(DEPOSIT, &payload(0, 1)))
        .is_ok());
}

/// A host shares the engine handle (metrics, pause, stop reason) across
/// threads and moves one submitter into each submitting thread.
#[test]
fn handles_are_thread_safe() {
    fn shared<T: Send + Sync>() {}
    fn moved<T: Send>() {}
    shared::<keel_core::Engine<Balances>>();
    moved::<keel_core::Submitter>();
    moved::<keel_core::PendingAck>();
    let engine = std::sync::Arc::new(
        EngineBuilder::new(EngineConfig::default(), Balances::default())
            .start()
            .unwrap(),
    );
    let mut submitter = engine.submitter();
    submitter
        .submit(&Command::new(DEPOSIT, &payload(0, 1)))
        .unwrap();
    let watcher = {
        let engine = std::sync::Arc::clone(&engine);
        std::thread::spawn(move || engine.metrics().ack_latency_ns.len())
    };
    assert_eq!(
        watcher.join().unwrap(),
        1,
        "another thread sees the engine's metrics"
    );
}
