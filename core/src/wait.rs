//! Wait strategies for idle stage threads and waiting callers, and the
//! park/notify protocol of the blocking strategy.
//!
//! # Parking protocol (checked by loom in `loom_models.rs`)
//!
//! An idle lane under [`WaitStrategy::Blocking`] does `sleeping.swap(true,
//! AcqRel)`, re-checks for work (an `Acquire` load of the cursors it waits on)
//! and parks only if there is none. Anyone who makes work visible (a producer
//! after publishing, a stage after releasing its cursor, the engine on stop)
//! does its `Release` store first and then `sleeping.swap(false, AcqRel)`,
//! unparking the lane if it saw `true`. Both sides use read-modify-writes on
//! `sleeping`, so whichever comes second in its modification order either
//! sees the other's flag or synchronises with its earlier cursor store: a
//! wake-up is never lost.

use std::time::Duration;

use crate::constants::{SPIN_ITERATIONS_DEFAULT, YIELD_ITERATIONS_DEFAULT};
use crate::sync::{thread, AtomicBool, Mutex, Ordering};

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
    /// Spin, then yield, then park until notified: idle threads cost no CPU.
    /// The default, for machines with fewer cores than threads.
    Blocking {
        /// Spin iterations before yielding.
        spins: u32,
        /// Yield iterations before parking.
        yields: u32,
    },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::Blocking {
            spins: SPIN_ITERATIONS_DEFAULT,
            yields: YIELD_ITERATIONS_DEFAULT,
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

impl WaitStrategy {
    pub(crate) fn action(self, round: u32) -> IdleAction {
        match self {
            Self::BusySpin => IdleAction::Spin,
            Self::SpinThenYield { spins } if round < spins => IdleAction::Spin,
            Self::SpinThenYield { .. } => IdleAction::Yield,
            Self::Blocking { spins, .. } if round < spins => IdleAction::Spin,
            Self::Blocking { spins, yields } if round < spins.saturating_add(yields) => {
                IdleAction::Yield
            }
            Self::Blocking { .. } => IdleAction::Park,
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

    /// Parks the registered (calling) thread unless `has_work` says there is
    /// work. `timeout` bounds the park (None: until notified).
    pub(crate) fn park_unless(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>) {
        self.sleeping.swap(true, Ordering::AcqRel);
        if has_work() {
            self.sleeping.store(false, Ordering::Relaxed);
            return;
        }
        match timeout {
            #[cfg(not(loom))]
            Some(t) => thread::park_timeout(t),
            #[cfg(loom)]
            Some(_) => thread::park(),
            None => thread::park(),
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Wakes the parked thread if it is (about to be) asleep. Call after the
    /// Release store that made the work visible.
    pub(crate) fn notify(&self) {
        if self.sleeping.swap(false, Ordering::AcqRel) {
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
