//! loom models of every synchronisation protocol Keel writes itself. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p keel-core --lib --release`.
//!
//! Each model uses the shipping types (`ResultCell`, `CompletionCell`,
//! `Parker`); the disruptor's cursors are modelled as Release/Acquire atomics,
//! which is what the crate uses.

use std::sync::Arc as StdArc;
use std::task::{Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::completion::{CellPoll, CompletionCell};
use crate::gate::Gate;
use crate::outcome::{Ack, Outcome, ResultCode};
use crate::slot::{Applied, ResultCell};
use crate::wait::Parker;

fn ack(code: u32) -> Ack {
    Ack {
        sequence: 7,
        correlation_id: 9,
        outcome: Outcome::code(ResultCode(code)),
        duplicate: false,
        latency_ns: 0,
    }
}

/// BLP writes the result, releases its cursor; the publisher reads after an
/// Acquire load; the producer reuses the slot after the publisher's cursor.
#[test]
fn slot_result_hand_off() {
    loom::model(|| {
        let cell = Arc::new(ResultCell::new());
        let blp_cursor = Arc::new(AtomicU64::new(0));
        let publisher_cursor = Arc::new(AtomicU64::new(0));

        let blp = {
            let (cell, blp_cursor) = (cell.clone(), blp_cursor.clone());
            thread::spawn(move || {
                let applied = Applied {
                    outcome: Outcome::code(ResultCode(42)),
                    duplicate: false,
                    executed: true,
                };
                // SAFETY: single writer; the reader waits for the cursor below.
                unsafe { cell.write(applied) };
                blp_cursor.store(1, Ordering::Release);
            })
        };
        let publisher = {
            let (cell, blp_cursor, publisher_cursor) =
                (cell.clone(), blp_cursor.clone(), publisher_cursor.clone());
            thread::spawn(move || {
                while blp_cursor.load(Ordering::Acquire) < 1 {
                    thread::yield_now();
                }
                // SAFETY: the Acquire load above saw the BLP's release.
                let applied = unsafe { cell.read() };
                assert_eq!(applied.outcome.code, ResultCode(42));
                publisher_cursor.store(1, Ordering::Release);
            })
        };
        // The producer claims the slot's next lap only after the publisher.
        while publisher_cursor.load(Ordering::Acquire) < 1 {
            thread::yield_now();
        }
        // SAFETY: the publisher released the slot; no stage reads it now.
        unsafe { cell.write(Applied::default()) };
        blp.join().unwrap();
        publisher.join().unwrap();
    });
}

struct FlagWaker(AtomicBool);

impl Wake for FlagWaker {
    fn wake(self: StdArc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A caller that polls while the publisher completes is never left without
/// either the ack or a wake-up.
#[test]
fn completion_no_lost_wakeup() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let stopped = Arc::new(AtomicBool::new(false));
        cell.arm();
        let publisher = {
            let cell = cell.clone();
            thread::spawn(move || assert!(!cell.complete(ack(5))))
        };
        let flag = StdArc::new(FlagWaker(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let first = cell.poll(&waker, &stopped);
        publisher.join().unwrap();
        match first {
            Some(CellPoll::Ready(a)) => assert_eq!(a, ack(5)),
            Some(CellPoll::Stopped) => panic!("not stopped"),
            None => {
                assert!(flag.0.load(Ordering::SeqCst), "wake-up lost");
                assert_eq!(cell.poll(&waker, &stopped), Some(CellPoll::Ready(ack(5))));
            }
        }
    });
}

/// A caller that gives up while the publisher completes: exactly one side
/// frees the cell.
#[test]
fn completion_abandon_frees_once() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        cell.arm();
        let publisher = {
            let cell = cell.clone();
            thread::spawn(move || cell.complete(ack(1)))
        };
        let caller_frees = cell.abandon();
        let publisher_frees = publisher.join().unwrap();
        assert!(
            caller_frees ^ publisher_frees,
            "freed {caller_frees} {publisher_frees}"
        );
    });
}

/// Fail-stop: a caller waiting on a cell that will never complete either
/// sees `stopped` or is woken by the stopper.
#[test]
fn completion_stop_wakes_waiter() {
    loom::model(|| {
        let cell = Arc::new(CompletionCell::new());
        let stopped = Arc::new(AtomicBool::new(false));
        cell.arm();
        let stopper = {
            let (cell, stopped) = (cell.clone(), stopped.clone());
            thread::spawn(move || {
                stopped.store(true, Ordering::SeqCst);
                cell.wake();
            })
        };
        let flag = StdArc::new(FlagWaker(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let first = cell.poll(&waker, &stopped);
        stopper.join().unwrap();
        match first {
            Some(CellPoll::Stopped) => {}
            Some(CellPoll::Ready(_)) => panic!("nothing completed the cell"),
            None => {
                assert!(flag.0.load(Ordering::SeqCst), "stop wake-up lost");
                assert_eq!(cell.poll(&waker, &stopped), Some(CellPoll::Stopped));
            }
        }
    });
}

/// Blocking wait strategy: a lane that parks when idle is always woken by a
/// producer that published after the lane's last check.
#[test]
fn parker_no_lost_wakeup() {
    loom::model(|| {
        let parker = Arc::new(Parker::new());
        let cursor = Arc::new(AtomicU64::new(0));
        let lane = {
            let (parker, cursor) = (parker.clone(), cursor.clone());
            thread::spawn(move || {
                parker.register_current();
                while cursor.load(Ordering::Acquire) == 0 {
                    parker.park_unless(|| cursor.load(Ordering::Acquire) != 0);
                }
            })
        };
        cursor.store(1, Ordering::Release);
        parker.notify();
        lane.join().unwrap();
    });
}

/// Admission gate: a drain that saw zero submitters after pausing sees the
/// published sequence of every submitter that was admitted, and a submitter
/// that was refused published nothing.
#[test]
fn gate_drain_sees_every_admitted_publish() {
    loom::model(|| {
        let gate = Arc::new(Gate::new());
        let published = Arc::new(AtomicU64::new(0));
        let submitter = {
            let (gate, published) = (gate.clone(), published.clone());
            thread::spawn(move || match gate.enter() {
                Ok(_admission) => {
                    published.fetch_max(1, Ordering::AcqRel);
                    true
                }
                Err(_) => false,
            })
        };
        gate.pause();
        while !gate.empty() {
            thread::yield_now();
        }
        let seen = published.load(Ordering::Acquire);
        let admitted = submitter.join().unwrap();
        if admitted {
            assert_eq!(seen, 1, "drain finished before an admitted publish");
        } else {
            assert_eq!(published.load(Ordering::Acquire), 0);
        }
    });
}
