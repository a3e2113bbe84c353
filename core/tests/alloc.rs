//! Zero allocations per command in steady state: a counting global allocator
//! over 1M commands through the full graph (blocking, async, detached and
//! batched submits from three threads, plus keyed ones), after a warm-up.

#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

use keel_core::{
    Command, CommandRef, Engine, EngineConfig, Outcome, ResultCode, StateMachine, SubmitError,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Sum(u64);

impl StateMachine for Sum {
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        self.0 = self.0.wrapping_add(u64::from(command.payload[0]));
        outcome.set(ResultCode::OK, &self.0.to_le_bytes());
    }
    fn state_hash(&self) -> u64 {
        self.0
    }
}

/// The detached producer keeps the ring full, so the others may wait out
/// their back-pressure bound: `Busy` is retryable, anything else is a failure.
fn retry_busy<T>(mut submit: impl FnMut() -> Result<T, SubmitError>) -> T {
    loop {
        match submit() {
            Ok(value) => return value,
            Err(SubmitError::Busy) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

const COMMANDS: u64 = 1_000_000;
const DETACHED: u64 = 900_000;
const BLOCKING: u64 = 50_000;
const ASYNC: u64 = 50_000;
const _: () = assert!(DETACHED + BLOCKING + ASYNC == COMMANDS);

#[test]
fn steady_state_allocates_nothing_per_command() {
    let config = EngineConfig {
        ring_slots: 1024,
        in_flight_max: 1024,
        ..EngineConfig::default()
    };
    let engine = Engine::builder(config, Sum(0)).start().unwrap();
    let start = Barrier::new(4);
    let mut key = 0u128;
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for kind in 0..3 {
            let mut submitter = engine.submitter();
            let start = &start;
            threads.push(s.spawn(move || {
                // Warm-up: first use creates the thread's waker and thread-locals.
                for _ in 0..1000 {
                    submitter.submit(&Command::new(1, &[1])).unwrap();
                    futures::executor::block_on(
                        submitter.submit_async(&Command::new(1, &[1])).unwrap(),
                    )
                    .unwrap();
                }
                start.wait();
                match kind {
                    0 => {
                        (0..DETACHED / 2).for_each(|_| {
                            retry_busy(|| submitter.submit_detached(&Command::new(1, &[1])));
                        });
                        let batch = [Command::new(1, &[1]); 50];
                        (0..DETACHED / 2 / 50).for_each(|_| {
                            retry_busy(|| submitter.submit_batch_detached(&batch));
                        });
                    }
                    1 => (0..BLOCKING).for_each(|_| {
                        let ack = retry_busy(|| submitter.submit(&Command::new(1, &[1])));
                        assert!(ack.outcome.code.is_ok());
                    }),
                    _ => (0..ASYNC).for_each(|_| {
                        let pending = retry_busy(|| submitter.submit_async(&Command::new(1, &[1])));
                        futures::executor::block_on(pending).unwrap();
                    }),
                }
            }));
        }
        // Idempotent commands go through the dedup table too.
        let mut submitter = engine.submitter();
        submitter.submit(&Command::new(1, &[0])).unwrap();
        start.wait();
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..1000 {
            key += 1;
            let mut command = Command::new(1, &[0]);
            command.idempotency_key = key;
            retry_busy(|| submitter.submit(&command));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        COUNTING.store(false, Ordering::SeqCst);
    });
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    let stopped = engine.shutdown().unwrap();
    assert_eq!(stopped.commands, 6000 + 1 + COMMANDS + 1000);
    assert_eq!(
        allocations, 0,
        "allocations during {COMMANDS} steady-state commands"
    );
}
