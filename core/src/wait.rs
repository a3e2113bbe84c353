//! Wait strategies for idle stage threads and waiting callers, and the
//! park/notify protocol of the blocking strategy.
//!
//! # Parking protocol (checked by loom in `loom_models.rs`)
//!
//! An idle lane under [`WaitStrategy::Blocking`] stores `sleeping = true`,
//! issues a `SeqCst` fence, re-checks for work (loads of the cursors it waits
//! on) and parks only if there is none. Anyone who makes work visible (a
//! producer after publishing, a stage after releasing its cursor, the engine
//! on stop) does its store first, then a `SeqCst` fence, then loads
//! `sleeping` and unparks the lane if it is set. The two fences are ordered
//! in the single total order of `SeqCst` operations: if the notifier's fence
//! comes first, the lane's re-check sees the new work; if the lane's comes
//! first, the notifier sees `sleeping`. A wake-up is never lost, and the
//! common case (nobody asleep) costs the notifier one fence and one plain
//! load, no read-modify-write on a shared line.

use std::time::Duration;

use crate::constants::{SPIN_ITERATIONS_DEFAULT, YIELD_BEFORE_PARK_DEFAULT};
use crate::sync::{fence, thread, AtomicBool, Mutex, Ordering};

/// How idle stage threads (and callers waiting for their ack) wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin forever: lowest latency, one core per thread. For pinned hosts
    /// with a spare core per stage thread.
    BusySpin,
    /// Spin `spins` times, then `yield_now` between checks: gives the core
    /// away when another thread wants it but never sleeps.
    SpinThenYield {
        /// Spin iterations before yielding.
        spins: u32,
    },
    /// Spin, then yield for up to `yield_for`, then park until notified
    /// (phased back-off): a steadily loaded engine never pays a wake-up, an
    /// idle one costs no CPU. The default, for machines with fewer cores than
    /// threads.
    Blocking {
        /// Spin iterations before yielding.
        spins: u32,
        /// How long an idle thread keeps yielding before it parks.
        yield_for: Duration,
    },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::Blocking {
            spins: SPIN_ITERATIONS_DEFAULT,
            yield_for: YIELD_BEFORE_PARK_DEFAULT,
        }
    }
}

impl WaitStrategy {
    /// Spin-then-yield with the default spin count.
    pub fn spin_then_yield() -> Self {
        Self::SpinThenYield {
            spins: SPIN_ITERATIONS_DEFAULT,
        }
    }

    /// Whether waiters may park and therefore need notifications.
    pub fn parks(self) -> bool {
        matches!(self, Self::Blocking { .. })
    }
}

/// What an idle waiter should do on its `round`-th consecutive idle check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleAction {
    Spin,
    Yield,
    Park,
}

/// Phased back-off state of one waiting thread: which [`IdleAction`] its
/// next idle check takes. Reset it whenever work was found.
#[derive(Debug)]
pub(crate) struct Idler {
    strategy: WaitStrategy,
    round: u32,
    yielding_since: Option<std::time::Instant>,
}

impl Idler {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Self {
            strategy,
            round: 0,
            yielding_since: None,
        }
    }

    /// Work was found: start the next idle phase from spinning again.
    pub(crate) fn reset(&mut self) {
        self.round = 0;
        self.yielding_since = None;
    }

    /// The action for the next consecutive idle check.
    pub(crate) fn next(&mut self) -> IdleAction {
        let round = self.round;
        self.round = self.round.saturating_add(1);
        match self.strategy {
            WaitStrategy::BusySpin => IdleAction::Spin,
            WaitStrategy::SpinThenYield { spins } if round < spins => IdleAction::Spin,
            WaitStrategy::SpinThenYield { .. } => IdleAction::Yield,
            WaitStrategy::Blocking { spins, .. } if round < spins => IdleAction::Spin,
            WaitStrategy::Blocking { yield_for, .. } => {
                // Read the clock only every 16 yields.
                if !round.is_multiple_of(16) {
                    return IdleAction::Yield;
                }
                let since = *self
                    .yielding_since
                    .get_or_insert_with(std::time::Instant::now);
                match since.elapsed() >= yield_for {
                    true => IdleAction::Park,
                    false => IdleAction::Yield,
                }
            }
        }
    }
}

/// One parkable thread (a lane, or a caller waiting on something other than a
/// completion cell): its `sleeping` flag and its handle.
#[derive(Debug)]
pub(crate) struct Parker {
    sleeping: AtomicBool,
    thread: Mutex<Option<thread::Thread>>,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Self {
            sleeping: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    /// Registers the calling thread as the one that parks here.
    pub(crate) fn register_current(&self) {
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
    }

    /// Parks the registered (calling) thread until notified, unless
    /// `has_work` says there is work.
    pub(crate) fn park_unless(&self, has_work: impl Fn() -> bool) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if has_work() {
            self.sleeping.store(false, Ordering::Relaxed);
            return;
        }
        thread::park();
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Wakes the parked thread if it is (about to be) asleep. Call after the
    /// store that made the work visible.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            if let Some(t) = self
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t.unpark();
            }
        }
    }
}
