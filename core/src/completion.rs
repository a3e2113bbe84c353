//! Completion cells: how an acknowledgement travels from the publisher stage
//! back to the caller that submitted the command, blocking or async, without
//! a heap allocation per command.
//!
//! The engine pre-allocates `in_flight_max` cells and a lock-free free list of
//! their indices (`crossbeam_queue::ArrayQueue`, allocated once). A caller
//! takes an index before publishing, stores it in the slot header and waits on
//! that cell; the publisher completes the cell; whoever finishes last returns
//! the index to the free list.
//!
//! # Cell protocol (checked by loom in `loom_models.rs`)
//!
//! `state` moves `FREE → WAITING` (caller arms it before publishing, ordered by
//! the ring's Release publish), then:
//! - publisher: writes the ack, then `swap(DONE, AcqRel)`. If the previous
//!   state was `PARKED` it takes the waker under the lock and wakes it; if it
//!   was `ABANDONED` the publisher frees the cell.
//! - caller poll: `Acquire` load sees `DONE` → read the ack, free the cell.
//!   Otherwise store the waker under the lock, then CAS `WAITING → PARKED`; a
//!   CAS that observes `DONE` means the ack is ready now. Because the waker is
//!   stored before the CAS and the publisher takes it after its swap, a
//!   wake-up cannot be lost.
//! - caller drop before completion: `swap(ABANDONED)`; if it saw `DONE` the
//!   caller frees the cell, else the publisher will.
//! - fail-stop: the engine sets its `stopped` flag, then takes and wakes every
//!   stored waker under the lock; a caller checks `stopped` after storing its
//!   waker, so it either sees the flag or its waker is woken.

use std::task::Waker;

use crate::outcome::Ack;
use crate::sync::{AtomicBool, AtomicU32, Mutex, Ordering, UnsafeCell};

/// Slot header value meaning "no caller waits for this command".
pub const NO_COMPLETION: u32 = u32::MAX;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const PARKED: u32 = 2;
const DONE: u32 = 3;
const ABANDONED: u32 = 4;

/// What the caller's poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellPoll {
    /// The ack is here; the caller must free the cell.
    Ready(Ack),
    /// The engine stopped before the ack arrived; the cell was abandoned.
    Stopped,
}

/// One completion cell.
#[derive(Debug)]
pub(crate) struct CompletionCell {
    state: AtomicU32,
    /// Written only by the publisher before its `swap(DONE)`; read only by the
    /// caller after an `Acquire` load or CAS observed `DONE`.
    ack: UnsafeCell<Option<Ack>>,
    waker: Mutex<Option<Waker>>,
}

// SAFETY: `ack` is written by exactly one publisher before the Release half of
// its `swap(DONE)` and read by exactly one caller after the Acquire half of a
// load/CAS that observed `DONE` (module docs). Other fields are Sync already.
unsafe impl Sync for CompletionCell {}

impl CompletionCell {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU32::new(FREE),
            ack: UnsafeCell::new(None),
            waker: Mutex::new(None),
        }
    }

    /// Caller: arm a cell just taken from the free list.
    pub(crate) fn arm(&self) {
        let previous = self.state.swap(WAITING, Ordering::Relaxed);
        assert_eq!(previous, FREE, "armed a completion cell that was not free");
    }

    /// Publisher: deliver the ack. Returns true when the caller abandoned the
    /// cell and the publisher must free it.
    pub(crate) fn complete(&self, ack: Ack) -> bool {
        // SAFETY: the publisher is the single writer; the caller reads only
        // after observing DONE, which the swap below publishes with Release.
        self.ack.with_mut(|p| unsafe { *p = Some(ack) });
        let previous = self.state.swap(DONE, Ordering::AcqRel);
        match previous {
            WAITING => false,
            PARKED => {
                self.wake();
                false
            }
            ABANDONED => true,
            other => panic!("completed a cell in state {other}"),
        }
    }

    /// Caller: check for the ack, registering `waker` if it is not there yet.
    /// Returns `None` while pending.
    pub(crate) fn poll(&self, waker: &Waker, stopped: &AtomicBool) -> Option<CellPoll> {
        if let Some(ack) = self.try_take() {
            return Some(CellPoll::Ready(ack));
        }
        {
            let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(existing) if existing.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        match self
            .state
            .compare_exchange(WAITING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(PARKED) => {}
            Err(DONE) => return Some(CellPoll::Ready(self.take_done())),
            Err(other) => panic!("polled a cell in state {other}"),
        }
        if stopped.load(Ordering::SeqCst) {
            return Some(match self.abandon() {
                true => CellPoll::Ready(self.take_done()),
                false => CellPoll::Stopped,
            });
        }
        None
    }

    /// Caller: take the ack if it is there (no waker registered).
    pub(crate) fn try_take(&self) -> Option<Ack> {
        (self.state.load(Ordering::Acquire) == DONE).then(|| self.take_done())
    }

    /// Caller: give the cell up before completion. Returns true when the ack
    /// had already arrived, in which case the caller still owns the cell.
    pub(crate) fn abandon(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(PARKED) => self
                .state
                .compare_exchange(PARKED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_err(),
            Err(DONE) => true,
            Err(other) => panic!("abandoned a cell in state {other}"),
        }
    }

    /// Engine stop: wake whoever waits here.
    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resets a cell whose ack was consumed or abandoned, before it returns to the free list.
    pub(crate) fn reset(&self) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.state.store(FREE, Ordering::Release);
    }

    fn take_done(&self) -> Ack {
        // SAFETY: DONE was observed with Acquire, so the publisher's write
        // happened-before; the caller is the single reader.
        let ack = self.ack.with_mut(|p| unsafe { (*p).take() });
        ack.expect("a DONE completion cell holds an ack")
    }
}
