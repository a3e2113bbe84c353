//! The Keel engine as a benchmark contender: `submit_detached` from one
//! producer; an event sink on the publisher records latency from the
//! intended send time carried in the payload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;
use keel_core::{
    Applied, Command, CommandRef, Engine, EngineConfig, EventSink, Fusion, Outcome, ResultCode,
    StateMachine, SubmitError, Submitter, WaitStrategy,
};

use crate::clock::{histogram, now_ns, Pacer};
use crate::{Measured, Mode, PipelineArgs};

struct Sum(u64);

impl StateMachine for Sum {
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        self.0 = self.0.wrapping_add(u64::from(command.payload[8]));
        outcome.set(ResultCode::OK, &[]);
    }
    fn state_hash(&self) -> u64 {
        self.0
    }
}

struct LatencySink {
    histogram: Histogram<u64>,
    /// Record events at or after this sequence (None: record nothing).
    record_from: Option<u64>,
    done: Arc<AtomicU64>,
}

impl EventSink for LatencySink {
    fn on_applied(&mut self, command: &CommandRef<'_>, _applied: &Applied) {
        if self
            .record_from
            .is_some_and(|from| command.sequence >= from)
        {
            let intended = u64::from_le_bytes(command.payload[..8].try_into().expect("8 bytes"));
            self.histogram
                .saturating_record(now_ns().saturating_sub(intended).max(1));
        }
    }
    fn end_of_batch(&mut self, last_sequence: u64) {
        self.done.store(last_sequence + 1, Ordering::Release);
    }
}

fn send(submitter: &mut Submitter, intended: u64) {
    let mut body = [1u8; 16];
    body[..8].copy_from_slice(&intended.to_le_bytes());
    loop {
        match submitter.submit_detached(&Command::new(1, &body)) {
            Ok(_) => return,
            Err(SubmitError::Busy) => continue,
            Err(e) => panic!("benchmark submit failed: {e}"),
        }
    }
}

fn send_batches(submitter: &mut Submitter, events: u64, n: usize) {
    let body = [1u8; 16];
    let batch = vec![Command::new(1, &body); n];
    let mut sent = 0;
    while sent < events {
        let k = (events - sent).min(n as u64) as usize;
        match submitter.submit_batch_detached(&batch[..k]) {
            Ok(_) => sent += k as u64,
            Err(SubmitError::Busy) => continue,
            Err(e) => panic!("benchmark submit failed: {e}"),
        }
    }
}

/// Runs the Keel contender with the given lanes and wait strategy.
pub fn measure(args: &PipelineArgs, fusion: Fusion, wait_strategy: WaitStrategy) -> Measured {
    let config = EngineConfig {
        ring_slots: args.ring_slots,
        fusion,
        wait_strategy,
        ..EngineConfig::default()
    };
    let run = |events: u64, mode: Mode| {
        let rate = match mode {
            Mode::Paced(rate) => Some(rate),
            _ => None,
        };
        let done = Arc::new(AtomicU64::new(0));
        let sink = LatencySink {
            histogram: histogram(),
            record_from: rate.map(|_| events - args.latency_events),
            done: Arc::clone(&done),
        };
        let engine = Engine::builder(config.clone(), Sum(0))
            .event_sink(sink)
            .start()
            .expect("valid benchmark config");
        let mut submitter = engine.submitter();
        let start = now_ns();
        match mode {
            Mode::Unpaced => (0..events).for_each(|_| send(&mut submitter, 0)),
            Mode::Batched(n) => send_batches(&mut submitter, events, n),
            Mode::Paced(rate) => {
                let pacer = Pacer::new(rate);
                (0..events).for_each(|i| send(&mut submitter, pacer.wait_for(i)));
            }
        }
        while done.load(Ordering::Acquire) < events {
            std::thread::yield_now();
        }
        let elapsed = now_ns() - start;
        drop(submitter);
        let stopped = engine.shutdown().expect("clean shutdown");
        if std::env::var_os("KEEL_PERF_DEBUG").is_some() {
            for stage in keel_core::StageName::ALL {
                let h = stopped.metrics.stage(stage);
                eprintln!("{stage}: {} batches, mean {:.0} ns", h.len(), h.mean());
            }
        }
        (events as f64 * 1e9 / elapsed as f64, stopped.sink.histogram)
    };
    Measured::from_runs(args, true, run)
}
