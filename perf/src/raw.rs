//! The baseline: a raw `disruptor` pipeline of the same diamond shape
//! (journaller ∥ replicator → BLP → publisher) with an event of the same size
//! as a Keel slot and the crate's own managed consumer threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use disruptor::wait_strategies::WaitStrategy;
use disruptor::{build_multi_producer, Producer, Sequence};

use crate::clock::{histogram, now_ns, Pacer};
use crate::{Measured, Mode, PipelineArgs};

/// Same footprint as a Keel slot: 64-byte header area, 896-byte payload, result.
#[repr(align(64))]
struct RawEvent {
    intended_ns: u64,
    value: u64,
    _header: [u8; 48],
    payload: [u8; keel_core::constants::PAYLOAD_BYTES_MAX],
    result: AtomicU64,
}

impl Default for RawEvent {
    fn default() -> Self {
        Self {
            intended_ns: 0,
            value: 0,
            _header: [0; 48],
            payload: [0; keel_core::constants::PAYLOAD_BYTES_MAX],
            result: AtomicU64::new(0),
        }
    }
}

/// Yield whenever no event is ready: the raw counterpart of Keel's
/// `SpinThenYield { spins: 0 }` (5 threads share 2 cores here).
#[derive(Clone, Copy)]
struct Yield;

impl WaitStrategy for Yield {
    fn wait_for(&self, _sequence: Sequence) {
        std::thread::yield_now();
    }
}

fn run(
    args: &PipelineArgs,
    paired: bool,
    events: u64,
    mode: Mode,
) -> (f64, hdrhistogram::Histogram<u64>) {
    let rate = match mode {
        Mode::Paced(rate) => Some(rate),
        _ => None,
    };
    let record_from = rate.map(|_| events - args.latency_events);
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let mut histogram = histogram();
    let publisher = {
        let done = Arc::clone(&done);
        move |e: &RawEvent, sequence: Sequence, _end: bool| {
            let sequence = sequence as u64;
            std::hint::black_box(e.result.load(Ordering::Relaxed));
            if record_from.is_some_and(|from| sequence >= from) {
                histogram.saturating_record(now_ns().saturating_sub(e.intended_ns).max(1));
            }
            done.store(sequence + 1, Ordering::Release);
            if sequence + 1 == events {
                tx.send(histogram.clone()).expect("receiver waits");
            }
        }
    };
    let mut sum = 0u64;
    let blp = move |e: &RawEvent, _s: Sequence, _end: bool| {
        sum = sum.wrapping_add(e.value);
        e.result.store(sum, Ordering::Relaxed);
    };
    let journaller = |e: &RawEvent, _s: Sequence, _end: bool| {
        std::hint::black_box(e.payload[0]);
    };
    let replicator = |e: &RawEvent, _s: Sequence, _end: bool| {
        std::hint::black_box(e.payload[0]);
    };
    let builder = build_multi_producer(args.ring_slots, RawEvent::default, Yield);
    let mut producer = match paired {
        false => builder
            .handle_events_with(journaller)
            .handle_events_with(replicator)
            .and_then()
            .handle_events_with(blp)
            .and_then()
            .handle_events_with(publisher)
            .build(),
        // The same work on two threads, as Keel's paired lanes run it.
        true => {
            let mut blp = blp;
            let mut publisher = publisher;
            builder
                .handle_events_with(move |e: &RawEvent, s: Sequence, end: bool| {
                    journaller(e, s, end);
                    replicator(e, s, end);
                })
                .and_then()
                .handle_events_with(move |e: &RawEvent, s: Sequence, end: bool| {
                    blp(e, s, end);
                    publisher(e, s, end);
                })
                .build()
        }
    };
    let fill = |e: &mut RawEvent, intended: u64| {
        e.intended_ns = intended;
        e.value = 1;
        e.payload[..16].copy_from_slice(&[1; 16]);
    };
    let mut publish = |intended: u64| {
        while producer.try_publish(|e| fill(e, intended)).is_err() {
            std::thread::yield_now();
        }
    };
    let start = now_ns();
    match mode {
        Mode::Unpaced => (0..events).for_each(|_| publish(0)),
        Mode::Batched(n) => {
            let mut sent = 0;
            while sent < events {
                let k = (events - sent).min(n as u64) as usize;
                match producer.try_batch_publish(k, |slots| slots.for_each(|e| fill(e, 0))) {
                    Ok(_) => sent += k as u64,
                    Err(_) => std::thread::yield_now(),
                }
            }
        }
        Mode::Paced(rate) => {
            let pacer = Pacer::new(rate);
            (0..events).for_each(|i| publish(pacer.wait_for(i)));
        }
    }
    while done.load(Ordering::Acquire) < events {
        std::thread::yield_now();
    }
    let elapsed = now_ns() - start;
    let histogram = rx.recv().expect("publisher sends its histogram");
    (events as f64 * 1e9 / elapsed as f64, histogram)
}

/// Runs the raw disruptor contender: four consumer threads, or two
/// (journaller+replicator, BLP+publisher) when `paired`.
pub fn measure(args: &PipelineArgs, paired: bool) -> Measured {
    Measured::from_runs(args, true, |events, mode| run(args, paired, events, mode))
}
