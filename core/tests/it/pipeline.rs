//! The graph end to end: ordering, log-first gating, every fusion and wait
//! strategy, and a multi-producer stress test against a model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_core::{
    Command, CommandRef, EngineBuilder, EngineConfig, Fusion, InMemoryJournaller, Journaller,
    StageError, WaitStrategy,
};

use crate::support::{
    payload, retry_busy, Balances, ACCOUNTS, DEPOSIT, INSUFFICIENT_FUNDS, WITHDRAW,
};

fn configs() -> Vec<EngineConfig> {
    let mut out = Vec::new();
    for fusion in [
        Fusion::Separate,
        Fusion::Paired,
        Fusion::Single,
        Fusion::Gated,
    ] {
        for wait_strategy in [
            WaitStrategy::default(),
            WaitStrategy::spin_then_yield(),
            WaitStrategy::Blocking {
                spins: 0,
                yield_for: std::time::Duration::ZERO,
            },
        ] {
            out.push(EngineConfig {
                ring_slots: 64,
                in_flight_max: 64,
                fusion,
                wait_strategy,
                ..EngineConfig::default()
            });
        }
    }
    out
}

#[test]
fn every_fusion_and_wait_strategy_applies_in_order_with_results() {
    for config in configs() {
        let label = format!("{:?}/{:?}", config.fusion, config.wait_strategy);
        let engine = EngineBuilder::new(config, Balances::default())
            .journaller(InMemoryJournaller::with_capacity(1000))
            .start()
            .unwrap();
        let mut submitter = engine.submitter();
        for i in 0..200u64 {
            let p = payload(1, 10);
            let mut command = Command::new(DEPOSIT, &p);
            command.correlation_id = i;
            let ack = submitter.submit(&command).unwrap();
            assert_eq!(ack.sequence, i, "{label}");
            assert_eq!(ack.correlation_id, i, "{label}");
            assert!(ack.outcome.code.is_ok());
            assert_eq!(ack.outcome.data(), &(10 * (i as i64 + 1)).to_le_bytes());
        }
        let p = payload(1, 1_000_000);
        let rejected = submitter.submit(&Command::new(WITHDRAW, &p)).unwrap();
        assert_eq!(rejected.outcome.code, INSUFFICIENT_FUNDS, "{label}");
        drop(submitter);
        let stopped = engine.shutdown().unwrap();
        assert_eq!(stopped.commands, 201, "{label}");
        assert!(stopped.state_machine.sequences_in_order, "{label}");
        assert_eq!(stopped.state_machine.balances[1], 2000, "{label}");
        let journaled: Vec<u64> = stopped
            .journaller
            .records()
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert_eq!(journaled, (0..201).collect::<Vec<_>>(), "{label}");
    }
}

/// A journaller that publishes its durable sequence, and a state machine that
/// checks every command it applies is at or below it: log-first.
struct DurableMark(Arc<AtomicU64>);

impl Journaller for DurableMark {
    fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
        Ok(())
    }
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        self.0.store(last_sequence + 1, Ordering::Release);
        Ok(())
    }
}

struct CheckLogFirst {
    durable_next: Arc<AtomicU64>,
    violations: u64,
    applied: u64,
}

impl keel_core::StateMachine for CheckLogFirst {
    fn apply(&mut self, command: &CommandRef<'_>, _outcome: &mut keel_core::Outcome) {
        if command.sequence >= self.durable_next.load(Ordering::Acquire) {
            self.violations += 1;
        }
        self.applied += 1;
    }
    fn state_hash(&self) -> u64 {
        self.applied
    }
}

#[test]
fn business_logic_never_sees_an_unjournaled_command() {
    for config in configs() {
        let durable_next = Arc::new(AtomicU64::new(0));
        let machine = CheckLogFirst {
            durable_next: Arc::clone(&durable_next),
            violations: 0,
            applied: 0,
        };
        let engine = EngineBuilder::new(config, machine)
            .journaller(DurableMark(durable_next))
            .start()
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..3 {
                let mut submitter = engine.submitter();
                s.spawn(move || {
                    for _ in 0..2000 {
                        retry_busy(|| submitter.submit_detached(&Command::new(7, b"x")));
                    }
                });
            }
        });
        let stopped = engine.shutdown().unwrap();
        assert_eq!(stopped.state_machine.applied, 6000);
        assert_eq!(stopped.state_machine.violations, 0);
    }
}

/// Several producers: no gaps, no duplicates, per-producer order kept,
/// balances equal the model's.
#[test]
fn multi_producer_stress_matches_model() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 25_000;
    for fusion in [
        Fusion::Separate,
        Fusion::Paired,
        Fusion::Single,
        Fusion::Gated,
    ] {
        let config = EngineConfig {
            ring_slots: 256,
            in_flight_max: 256,
            fusion,
            ..EngineConfig::default()
        };
        let engine = EngineBuilder::new(config, Balances::default())
            .journaller(InMemoryJournaller::with_capacity(
                (PRODUCERS * PER_PRODUCER) as usize,
            ))
            .start()
            .unwrap();
        let mut model = [0i64; ACCOUNTS];
        for p in 0..PRODUCERS {
            for i in 0..PER_PRODUCER {
                model[((p * 7 + i) % ACCOUNTS as u64) as usize] += (i % 100) as i64;
            }
        }
        std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let mut submitter = engine.submitter();
                s.spawn(move || {
                    let mut pending = Vec::new();
                    let mut last_sequence = None;
                    for i in 0..PER_PRODUCER {
                        let body = payload((p * 7 + i) as u32, (i % 100) as i64);
                        let mut command = Command::new(DEPOSIT, &body);
                        command.correlation_id = (p << 32) | i;
                        match i % 3 {
                            0 => {
                                let ack = retry_busy(|| submitter.submit(&command));
                                assert_eq!(ack.correlation_id, command.correlation_id);
                                assert!(last_sequence < Some(ack.sequence));
                                last_sequence = Some(ack.sequence);
                            }
                            1 => {
                                let future = retry_busy(|| submitter.submit_async(&command));
                                pending.push((command.correlation_id, future));
                                if pending.len() == 32 {
                                    for (correlation_id, future) in pending.drain(..) {
                                        let ack = futures::executor::block_on(future).unwrap();
                                        assert_eq!(ack.correlation_id, correlation_id);
                                    }
                                }
                            }
                            _ => {
                                let sequence = retry_busy(|| submitter.submit_detached(&command));
                                assert!(last_sequence < Some(sequence));
                                last_sequence = Some(sequence);
                            }
                        }
                    }
                    for (correlation_id, future) in pending {
                        let ack = futures::executor::block_on(future).unwrap();
                        assert_eq!(ack.correlation_id, correlation_id);
                    }
                });
            }
        });
        let stopped = engine.shutdown().unwrap();
        let records = stopped.journaller.records();
        assert_eq!(records.len() as u64, PRODUCERS * PER_PRODUCER, "{fusion:?}");
        let mut next_per_producer = [0u64; PRODUCERS as usize];
        for (n, record) in records.iter().enumerate() {
            assert_eq!(record.sequence, n as u64, "gap or duplicate ({fusion:?})");
            let producer = (record.correlation_id >> 32) as usize;
            let index = record.correlation_id & 0xffff_ffff;
            assert_eq!(
                index, next_per_producer[producer],
                "producer order ({fusion:?})"
            );
            next_per_producer[producer] += 1;
        }
        assert_eq!(stopped.state_machine.balances, model, "{fusion:?}");
        assert!(stopped.state_machine.sequences_in_order);
        assert_eq!(stopped.dedup.len(), 0);
    }
}

#[test]
fn metrics_record_every_stage_and_every_ack() {
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .start()
        .unwrap();
    let mut submitter = engine.submitter();
    for _ in 0..100 {
        submitter
            .submit(&Command::new(DEPOSIT, &payload(0, 1)))
            .unwrap();
    }
    let metrics = engine.metrics();
    assert_eq!(metrics.ack_latency_ns.len(), 100);
    for stage in keel_core::StageName::ALL {
        let batches = metrics.stage(stage).len();
        assert!((1..=100).contains(&batches), "{stage}: {batches} batches");
    }
    assert!(!metrics.ring_occupancy.is_empty());
}

/// A journaller whose batches cost a device write is timed on every batch
/// (a rare stall must not hide between samples); others one in 16.
#[test]
fn a_writing_journaller_is_timed_on_every_batch() {
    struct Writing {
        batches: Arc<AtomicU64>,
        writes: bool,
    }
    impl Journaller for Writing {
        fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
            Ok(())
        }
        fn end_of_batch(&mut self, _last_sequence: u64) -> Result<(), StageError> {
            self.batches.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn times_every_batch(&self) -> bool {
            self.writes
        }
    }
    for writes in [true, false] {
        let batches = Arc::new(AtomicU64::new(0));
        let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
            .journaller(Writing {
                batches: Arc::clone(&batches),
                writes,
            })
            .start()
            .unwrap();
        let mut submitter = engine.submitter();
        for _ in 0..200 {
            // One at a time: every command is its own batch.
            submitter
                .submit(&Command::new(DEPOSIT, &payload(0, 1)))
                .unwrap();
        }
        let timed = engine
            .metrics()
            .stage(keel_core::StageName::Journaller)
            .len();
        let batches = batches.load(Ordering::Relaxed);
        drop(submitter);
        engine.shutdown().unwrap();
        if writes {
            assert_eq!(timed, batches, "every batch timed");
        } else {
            assert_eq!(timed, batches.div_ceil(16), "one batch in 16 timed");
        }
    }
}

/// An event sink that reads the engine's metrics (as an exporter or an
/// alerting hook might): the publisher holds no metrics lock while it calls
/// the sink, so this completes; and every waited-for ack is counted.
#[test]
fn an_event_sink_may_read_metrics_and_every_ack_is_counted() {
    struct ReadingSink {
        metrics: Arc<std::sync::OnceLock<keel_core::MetricsHandle>>,
        reads: Arc<AtomicU64>,
    }
    impl keel_core::EventSink for ReadingSink {
        fn on_applied(&mut self, _: &CommandRef<'_>, _: &keel_core::Applied) {
            if let Some(metrics) = self.metrics.get() {
                let _ = metrics.snapshot().ack_latency_ns.len();
                self.reads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let metrics = Arc::new(std::sync::OnceLock::new());
    let reads = Arc::new(AtomicU64::new(0));
    let engine = EngineBuilder::new(EngineConfig::default(), Balances::default())
        .journaller(InMemoryJournaller::with_capacity(1000))
        .event_sink(ReadingSink {
            metrics: Arc::clone(&metrics),
            reads: Arc::clone(&reads),
        })
        .start()
        .unwrap();
    metrics.set(engine.metrics_handle()).unwrap();
    // A reader thread copying histograms all the while.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (handle, stop) = (engine.metrics_handle(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = handle.snapshot();
            }
        })
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut submitter = engine.submitter();
    std::thread::spawn(move || {
        for _ in 0..500 {
            let p = payload(1, 1);
            submitter.submit(&Command::new(DEPOSIT, &p)).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    // A hang guard, not a timing assertion: before the fix this deadlocked.
    done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the sink reading metrics deadlocked the publisher");
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    // A caller is completed before the sink sees its command: count the
    // sink's reads once shutdown has drained the publisher.
    let stopped = engine.shutdown().unwrap();
    assert_eq!(reads.load(Ordering::Relaxed), 500);
    assert_eq!(
        stopped.metrics.ack_latency_ns.len(),
        500,
        "no ack lost to a busy lock"
    );
}
