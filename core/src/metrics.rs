//! Engine metrics, recorded without allocation (histograms are sized at start
//! and never resize) and read as a snapshot through [`crate::Engine::metrics`]:
//!
//! - per stage, the service time of one batch in 16 (ns from taking the batch
//!   to releasing it: for the journaller this includes the write and sync);
//! - per command a caller waits for (blocking or async), the acknowledgement
//!   latency: sequencer timestamp (taken at submit) to the publisher taking
//!   the command's batch; detached commands are recorded in sampled batches
//!   only (one in 16), so a stream of them costs no clock read per batch;
//! - ring occupancy (published, not yet acknowledged), one publisher batch in 16.
//!
//! Each stage thread locks only its own histogram, once per batch.

use std::sync::{Mutex, MutexGuard};

use hdrhistogram::Histogram;

use crate::constants::{LATENCY_NS_MAX, LATENCY_SIGNIFICANT_FIGURES, STAGE_COUNT};
use crate::error::StageName;

fn new_histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, LATENCY_SIGNIFICANT_FIGURES)
        .expect("static histogram bounds are valid")
}

fn lock(m: &Mutex<Histogram<u64>>) -> MutexGuard<'_, Histogram<u64>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's live metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    stage_service_ns: [Mutex<Histogram<u64>>; STAGE_COUNT],
    ack_latency_ns: Mutex<Histogram<u64>>,
    ring_occupancy: Mutex<Histogram<u64>>,
}

impl Metrics {
    pub(crate) fn new(ring_slots: usize) -> Self {
        Self {
            stage_service_ns: std::array::from_fn(|_| Mutex::new(new_histogram(LATENCY_NS_MAX))),
            ack_latency_ns: Mutex::new(new_histogram(LATENCY_NS_MAX)),
            ring_occupancy: Mutex::new(new_histogram(ring_slots as u64 * 2)),
        }
    }

    /// Records one batch's service time for `stage`.
    pub(crate) fn record_service(&self, stage: StageName, started_ns: u64, finished_ns: u64) {
        lock(&self.stage_service_ns[stage.index()])
            .saturating_record(finished_ns.saturating_sub(started_ns).max(1));
    }

    /// Locks the ack-latency histogram for a publisher batch.
    pub(crate) fn ack_latency(&self) -> MutexGuard<'_, Histogram<u64>> {
        lock(&self.ack_latency_ns)
    }

    pub(crate) fn record_occupancy(&self, slots: u64) {
        lock(&self.ring_occupancy).saturating_record(slots.max(1));
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            stage_service_ns: std::array::from_fn(|i| lock(&self.stage_service_ns[i]).clone()),
            ack_latency_ns: lock(&self.ack_latency_ns).clone(),
            ring_occupancy: lock(&self.ring_occupancy).clone(),
        }
    }
}

/// A copy of the engine's histograms at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Batch service time per stage (ns; one batch in 16 is timed), indexed by [`StageName::index`].
    pub stage_service_ns: [Histogram<u64>; STAGE_COUNT],
    /// Submit-to-acknowledgement latency (ns): every waited-for command, and
    /// detached commands of one publisher batch in 16.
    pub ack_latency_ns: Histogram<u64>,
    /// Ring occupancy (published but not yet acknowledged), one publisher batch in 16.
    pub ring_occupancy: Histogram<u64>,
}

impl MetricsSnapshot {
    /// One stage's batch service-time histogram.
    pub fn stage(&self, stage: StageName) -> &Histogram<u64> {
        &self.stage_service_ns[stage.index()]
    }
}
