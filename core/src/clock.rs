//! The clock seam: the sequencer timestamp is read here on the submitting
//! thread, never in the business-logic processor.

use std::sync::atomic::{AtomicU64, Ordering};

/// Source of sequencer timestamps (ns since the Unix epoch).
pub trait Clock: Send + Sync + 'static {
    /// Current time in ns since the Unix epoch.
    fn now_ns(&self) -> u64;
}

/// Wall-clock time that never goes backwards: the real-time clock is read
/// once at creation, then advanced by the monotonic clock. One `clock_gettime`
/// per reading, and NTP steps cannot reorder timestamps within a run.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    anchor_unix_ns: u64,
    anchor: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemClock {
    /// Anchors the clock at the current real time.
    pub fn new() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            anchor_unix_ns: unix,
            anchor: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        self.anchor_unix_ns + self.anchor.elapsed().as_nanos() as u64
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        Self(AtomicU64::new(now_ns))
    }

    /// Sets the time.
    pub fn set(&self, now_ns: u64) {
        self.0.store(now_ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}
