//! Per-stage latency histograms and ring occupancy, recorded without
//! allocation (histograms are sized at start and never resize) and read as a
//! snapshot through [`crate::Engine::metrics`].
//!
//! A stage's latency is the time from submit to the moment that stage had
//! processed the command: the journaller's is the durable-append latency, the
//! publisher's the full acknowledgement latency.

use hdrhistogram::Histogram;

use crate::constants::{LATENCY_NS_MAX, LATENCY_SIGNIFICANT_FIGURES, STAGE_COUNT};
use crate::error::StageName;
use std::sync::Mutex;

fn new_histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, LATENCY_SIGNIFICANT_FIGURES)
        .expect("static histogram bounds are valid")
}

/// The engine's live metrics. Each stage thread locks its own histogram once
/// per batch; readers lock briefly to clone.
#[derive(Debug)]
pub(crate) struct Metrics {
    stage_latency_ns: [Mutex<Histogram<u64>>; STAGE_COUNT],
    ring_occupancy: Mutex<Histogram<u64>>,
}

impl Metrics {
    pub(crate) fn new(ring_slots: usize) -> Self {
        Self {
            stage_latency_ns: std::array::from_fn(|_| Mutex::new(new_histogram(LATENCY_NS_MAX))),
            ring_occupancy: Mutex::new(new_histogram(ring_slots as u64 * 2)),
        }
    }

    /// Locks one stage's histogram for a batch of records.
    pub(crate) fn stage(&self, stage: StageName) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.stage_latency_ns[stage.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_occupancy(&self, slots: u64) {
        self.ring_occupancy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(slots.max(1));
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            stage_latency_ns: std::array::from_fn(|i| {
                self.stage_latency_ns[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }),
            ring_occupancy: self
                .ring_occupancy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A copy of the engine's histograms at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Submit-to-stage latency (ns), indexed by [`StageName::index`].
    pub stage_latency_ns: [Histogram<u64>; STAGE_COUNT],
    /// Ring occupancy (published but not yet published-out slots), sampled per publisher batch.
    pub ring_occupancy: Histogram<u64>,
}

impl MetricsSnapshot {
    /// One stage's latency histogram.
    pub fn stage(&self, stage: StageName) -> &Histogram<u64> {
        &self.stage_latency_ns[stage.index()]
    }
}
