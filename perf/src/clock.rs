//! One monotonic clock for every contender, and the pacing that corrects for
//! coordinated omission: latency is measured from each event's *intended*
//! send time, so a stalled producer cannot hide the stall.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Monotonic ns since the first call.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Intended send times at a fixed rate.
#[derive(Debug)]
pub struct Pacer {
    start_ns: u64,
    interval_ns: f64,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Self {
            start_ns: now_ns(),
            interval_ns: 1e9 / rate as f64,
        }
    }

    /// Waits (spinning, yielding to others) until event `i`'s intended time
    /// and returns it.
    pub fn wait_for(&self, i: u64) -> u64 {
        let intended = self.start_ns + (i as f64 * self.interval_ns) as u64;
        while now_ns() < intended {
            std::thread::yield_now();
        }
        intended
    }
}

/// A latency histogram with the bounds every contender uses.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}
