//! Submission: validation, idempotency, back-pressure and async completion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::constants::PAYLOAD_BYTES_MAX;
use keel_core::{
    BackPressure, Command, CommandRef, EngineBuilder, EngineConfig, InMemoryJournaller, Journaller,
    StageError, SubmitError, ValidationError, Validator,
};

use crate::support::{payload, Balances, DEPOSIT};

struct TenantAllowList;

impl Validator for TenantAllowList {
    fn validate(&self, command: &Command<'_>) -> Result<(), ValidationError> {
        match command.tenant_id {
            0 | 1 => Ok(()),
            _ => Err(ValidationError { code: 403 }),
        }
    }
}

#[test]
fn malformed_commands_are_rejected_and_never_enter_the_ring() {
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .journaller(InMemoryJournaller::with_capacity(16))
        .validator(TenantAllowList)
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let big = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(
        submitter.submit(&Command::new(DEPOSIT, &big)),
        Err(SubmitError::PayloadTooLarge { len, max }) if len == PAYLOAD_BYTES_MAX + 1 && max == PAYLOAD_BYTES_MAX
    ));
    assert!(matches!(
        submitter.submit(&Command::new(0, b"")),
        Err(SubmitError::ReservedCommandType)
    ));
    let mut no_schema = Command::new(DEPOSIT, b"");
    no_schema.schema_version = 0;
    assert!(matches!(
        submitter.submit(&no_schema),
        Err(SubmitError::ReservedSchemaVersion)
    ));
    let mut stranger = Command::new(DEPOSIT, b"");
    stranger.tenant_id = 9;
    assert!(matches!(
        submitter.submit_detached(&stranger),
        Err(SubmitError::Rejected { code: 403 })
    ));
    // A payload of exactly the maximum is fine.
    let mut max = vec![0u8; PAYLOAD_BYTES_MAX];
    max[..12].copy_from_slice(&payload(0, 5));
    let ack = submitter.submit(&Command::new(DEPOSIT, &max)).unwrap();
    assert_eq!(ack.sequence, 0, "rejected commands consumed no sequence");
    drop(submitter);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.journaller.records().len(), 1);
}

#[test]
fn duplicate_idempotency_key_returns_original_outcome_without_reapplying() {
    let config = EngineConfig {
        dedup_entries: 4,
        ..EngineConfig::default()
    };
    let engine = EngineBuilder::new(config, Balances::default())
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let body = payload(3, 100);
    let mut command = Command::new(DEPOSIT, &body);
    command.idempotency_key = 0xfeed;
    let first = submitter.submit(&command).unwrap();
    assert!(!first.duplicate);
    let second = submitter.submit(&command).unwrap();
    assert!(second.duplicate);
    assert_eq!(second.outcome, first.outcome);
    assert_ne!(second.sequence, first.sequence);
    // Push the key out of the 4-entry window: then it is applied again.
    for key in 1..=4u128 {
        let mut other = Command::new(DEPOSIT, &body);
        other.idempotency_key = key;
        submitter.submit(&other).unwrap();
    }
    let third = submitter.submit(&command).unwrap();
    assert!(!third.duplicate, "key evicted from the bounded window");
    drop(submitter);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.state_machine.balances[3], 100 * 6);
    assert_eq!(stopped.dedup.len(), 4);
}

#[test]
fn sessions_register_through_the_log_and_a_session_request_is_never_run_twice() {
    use keel_core::session::{REQUEST_EXPIRED, SESSION_UNKNOWN};
    use keel_core::{Registered, Registration, SESSION_REGISTER};
    let config = EngineConfig {
        dedup_entries: 4,
        ..EngineConfig::default()
    };
    let engine = EngineBuilder::new(config, Balances::default())
        .journaller(InMemoryJournaller::with_capacity(64))
        .validator(TenantAllowList)
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let register = |resume| {
        let mut bytes = Vec::new();
        Registration {
            scope: 0x5c0e,
            session: 1,
            resume,
            principal: b"p",
        }
        .encode(&mut bytes);
        bytes
    };
    // Engine-reserved types and malformed session keys never enter the ring.
    for reserved in [0xFF00, 0xFFFE] {
        assert!(matches!(
            submitter.submit(&Command::new(reserved, b"")),
            Err(SubmitError::ReservedCommandType)
        ));
    }
    let body = payload(3, 100);
    let mut no_request = Command::new(DEPOSIT, &body);
    no_request.session = true;
    no_request.idempotency_key = 0x5c0e << 64;
    assert!(matches!(
        submitter.submit(&no_request),
        Err(SubmitError::SessionKey)
    ));
    assert!(matches!(
        submitter.submit(&Command::new(SESSION_REGISTER, &[1, 2, 3])),
        Err(SubmitError::BadRegistration)
    ));

    let resume = register(true);
    let mut registration = Command::new(SESSION_REGISTER, &resume);
    // Registration skips the host's validator (tenant 9 is not allowed).
    registration.tenant_id = 9;
    let unknown = submitter.submit(&registration).unwrap();
    assert_eq!(unknown.outcome.code, SESSION_UNKNOWN, "nothing to resume");
    let mut request = Command::new(DEPOSIT, &body);
    request.session = true;
    request.idempotency_key = 0x5c0e << 64 | 1;
    let refused = submitter.submit(&request).unwrap();
    assert_eq!(
        refused.outcome.code, SESSION_UNKNOWN,
        "unregistered: not run"
    );

    let create = register(false);
    let created = submitter
        .submit(&Command::new(SESSION_REGISTER, &create))
        .unwrap();
    assert_eq!(
        Registered::from_outcome(&created.outcome),
        Some(Registered::New)
    );
    assert!(submitter.submit(&request).unwrap().outcome.code.is_ok());
    assert!(submitter.submit(&request).unwrap().duplicate);
    // Four other keys push request 1's outcome out of the window: its retry
    // is refused, never run again.
    for n in 2..=5u128 {
        request.idempotency_key = 0x5c0e << 64 | n;
        submitter.submit(&request).unwrap();
    }
    request.idempotency_key = 0x5c0e << 64 | 1;
    assert_eq!(
        submitter.submit(&request).unwrap().outcome.code,
        REQUEST_EXPIRED
    );
    let resumed = submitter.submit(&registration).unwrap();
    assert_eq!(
        Registered::from_outcome(&resumed.outcome),
        Some(Registered::Resumed { highest: 5 })
    );
    drop(submitter);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(
        stopped.state_machine.balances[3],
        100 * 5,
        "each request ran once"
    );
    assert_eq!(
        stopped.journaller.records().len(),
        11,
        "registrations and refused requests are journaled too (replay repeats them)"
    );
}

/// A journaller that blocks every batch until the test opens its valve.
struct Valve(Arc<AtomicBool>);

impl Journaller for Valve {
    fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
        Ok(())
    }
    fn end_of_batch(&mut self, _last_sequence: u64) -> Result<(), StageError> {
        while !self.0.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        Ok(())
    }
}

#[test]
fn full_ring_gives_busy_not_an_endless_spin() {
    for back_pressure in [
        BackPressure::Fail,
        BackPressure::Wait(Duration::from_millis(20)),
    ] {
        let valve = Arc::new(AtomicBool::new(false));
        let config = EngineConfig {
            ring_slots: 64,
            in_flight_max: 64,
            back_pressure,
            ..EngineConfig::default()
        };
        let engine = EngineBuilder::new(config, Balances::default())
            .journaller(Valve(Arc::clone(&valve)))
            .start()
            .unwrap();
        let mut submitter = engine.submitter();
        let body = payload(0, 1);
        let mut accepted = 0;
        let busy = loop {
            match submitter.submit_detached(&Command::new(DEPOSIT, &body)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(
                accepted <= 64,
                "a ring of 64 accepted more than 64 unjournaled commands"
            );
        };
        assert!(
            matches!(busy, SubmitError::Busy),
            "{back_pressure:?}: {busy:?}"
        );
        assert_eq!(accepted, 64);
        valve.store(true, Ordering::Release);
        engine.pause().unwrap();
        engine.resume();
        let ack = submitter.submit(&Command::new(DEPOSIT, &body)).unwrap();
        assert_eq!(ack.sequence, 64);
        drop(submitter);
        assert_eq!(engine.shutdown().unwrap().state_machine.balances[0], 65);
    }
}

#[test]
fn completion_table_exhaustion_is_busy_and_dropped_futures_free_their_cells() {
    let valve = Arc::new(AtomicBool::new(false));
    let config = EngineConfig {
        ring_slots: 64,
        in_flight_max: 4,
        back_pressure: BackPressure::Fail,
        ..EngineConfig::default()
    };
    let engine = EngineBuilder::new(config, Balances::default())
        .journaller(Valve(Arc::clone(&valve)))
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let body = payload(0, 1);
    let pending: Vec<_> = (0..4)
        .map(|_| {
            submitter
                .submit_async(&Command::new(DEPOSIT, &body))
                .unwrap()
        })
        .collect();
    assert!(matches!(
        submitter.submit_async(&Command::new(DEPOSIT, &body)),
        Err(SubmitError::Busy)
    ));
    drop(pending);
    valve.store(true, Ordering::Release);
    // The publisher frees abandoned cells as it completes them; pause drains.
    engine.pause().unwrap();
    engine.resume();
    // Every abandoned cell comes back: 4 more waits succeed, repeatedly.
    for _ in 0..3 {
        let futures: Vec<_> = (0..4)
            .map(|_| {
                submitter
                    .submit_async(&Command::new(DEPOSIT, &body))
                    .unwrap()
            })
            .collect();
        for ack in futures::executor::block_on(futures::future::join_all(futures)) {
            assert!(ack.unwrap().outcome.code.is_ok());
        }
    }
    drop(submitter);
    assert_eq!(engine.shutdown().unwrap().state_machine.balances[0], 16);
}

#[test]
fn async_submit_completes_with_correlation_ids() {
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    let futures: Vec<_> = (0..1000u64)
        .map(|i| {
            let body = payload(2, 1);
            let mut command = Command::new(DEPOSIT, &body);
            command.correlation_id = i * 3;
            submitter.submit_async(&command).unwrap()
        })
        .collect();
    let sequences: Vec<u64> = futures.iter().map(|f| f.sequence()).collect();
    let acks = futures::executor::block_on(futures::future::join_all(futures));
    for (i, ack) in acks.into_iter().enumerate() {
        let ack = ack.unwrap();
        assert_eq!(ack.correlation_id, i as u64 * 3);
        assert_eq!(ack.sequence, sequences[i]);
        assert_eq!(ack.outcome.data(), &(i as i64 + 1).to_le_bytes());
    }
}

struct Stamps(Vec<(u64, u64)>);

impl keel_core::StateMachine for Stamps {
    fn apply(&mut self, command: &CommandRef<'_>, _outcome: &mut keel_core::Outcome) {
        self.0.push((command.sequence, command.timestamp_ns()));
    }
    fn state_hash(&self) -> u64 {
        self.0.len() as u64
    }
}

#[test]
fn batch_submission_is_one_contiguous_claim_all_or_nothing() {
    let clock = std::sync::Arc::new(keel_core::ManualClock::new(1_000));
    let engine = EngineBuilder::new(EngineConfig::default(), Stamps(Vec::with_capacity(64)))
        .clock(std::sync::Arc::clone(&clock))
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    submitter
        .submit_detached(&Command::new(1, b"first"))
        .unwrap();
    let bodies: Vec<[u8; 4]> = (0..10u32).map(|i| i.to_le_bytes()).collect();
    let batch: Vec<Command<'_>> = bodies.iter().map(|b| Command::new(1, b)).collect();
    clock.set(5_000);
    assert_eq!(submitter.submit_batch_detached(&batch).unwrap(), 1);
    // One bad command refuses the whole batch: nothing sequenced.
    let mut bad = batch.clone();
    bad[4].command_type = 0;
    assert!(matches!(
        submitter.submit_batch_detached(&bad),
        Err(SubmitError::ReservedCommandType)
    ));
    assert!(matches!(
        submitter.submit_batch_detached(&[]),
        Err(SubmitError::BatchSize { len: 0, .. })
    ));
    let too_big = vec![Command::new(1, b""); 4097];
    assert!(matches!(
        submitter.submit_batch_detached(&too_big),
        Err(SubmitError::BatchSize {
            len: 4097,
            max: 4096
        })
    ));
    assert_eq!(
        submitter
            .submit(&Command::new(1, b"last"))
            .unwrap()
            .sequence,
        11
    );
    drop(submitter);
    let stamps = engine.shutdown().unwrap().state_machine.0;
    let expected: Vec<(u64, u64)> = std::iter::once((0, 1_000))
        .chain((0..10).map(|i| (1 + i, 5_000 + i)))
        .chain(std::iter::once((11, 5_000)))
        .collect();
    assert_eq!(stamps, expected, "contiguous sequences, timestamps t + i");
}
