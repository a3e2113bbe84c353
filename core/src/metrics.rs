//! Engine metrics, recorded without allocation (histograms are sized at start
//! and never resize) and read as a snapshot through [`crate::Engine::metrics`]:
//!
//! - per stage, the service time of one batch in 16 — every batch for a
//!   journaller that writes to a device (ns from taking the batch
//!   to releasing it: for the journaller this includes the write and sync);
//! - per command a caller waits for (blocking or async), the acknowledgement
//!   latency: sequencer timestamp (taken at submit) to the publisher taking
//!   the command's batch; detached commands are recorded in sampled batches
//!   only (one in 16), so a stream of them costs no clock read per batch;
//! - ring occupancy (published, not yet acknowledged), one publisher batch in 16.
//!
//! Reading metrics never delays the pipeline: a stage records its sampled
//! service time only if its histogram is free (a reader copying it makes
//! the stage skip that one sample), and the publisher buffers ack latencies
//! in its own `AckBuffer` and hands them over after each batch when the
//! lock is free — never while it completes callers or calls the event sink,
//! so a sink may read metrics. It waits for the lock only when its buffer
//! is full or it has nothing to publish (a reader holds it for one
//! histogram copy).

use std::sync::{Mutex, MutexGuard, TryLockError};

use hdrhistogram::Histogram;

use crate::constants::{
    ACK_BUFFER_VALUES, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_FIGURES, STAGE_COUNT,
};
use crate::error::StageName;

fn new_histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, LATENCY_SIGNIFICANT_FIGURES)
        .expect("static histogram bounds are valid")
}

fn lock(m: &Mutex<Histogram<u64>>) -> MutexGuard<'_, Histogram<u64>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lock if it is free now (None: a reader holds it).
fn try_lock(m: &Mutex<Histogram<u64>>) -> Option<MutexGuard<'_, Histogram<u64>>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The publisher's own buffer of ack latencies not yet in the shared
/// histogram (allocated at start; `ACK_BUFFER_VALUES` values).
#[derive(Debug)]
pub(crate) struct AckBuffer {
    values: Box<[u64]>,
    len: usize,
}

impl AckBuffer {
    pub(crate) fn new() -> Self {
        Self {
            values: vec![0; ACK_BUFFER_VALUES].into_boxed_slice(),
            len: 0,
        }
    }

    /// Room for a whole batch of values.
    pub(crate) fn has_room_for(&self, values: usize) -> bool {
        self.len + values <= self.values.len()
    }

    pub(crate) fn push(&mut self, latency_ns: u64) {
        assert!(self.len < self.values.len(), "flushed before each batch");
        self.values[self.len] = latency_ns;
        self.len += 1;
    }
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

    /// Records one sampled batch's service time for `stage` (skipped if a
    /// reader is copying the histogram right now).
    pub(crate) fn record_service(&self, stage: StageName, started_ns: u64, finished_ns: u64) {
        if let Some(mut h) = try_lock(&self.stage_service_ns[stage.index()]) {
            h.saturating_record(finished_ns.saturating_sub(started_ns).max(1));
        }
    }

    /// Moves the publisher's buffered ack latencies into the shared
    /// histogram: at once if the lock is free, else later (`wait` false), or
    /// waiting for it (`wait` true: the buffer is full, or at shutdown).
    pub(crate) fn flush_acks(&self, buffer: &mut AckBuffer, wait: bool) {
        if buffer.len == 0 {
            return;
        }
        let guard = match wait {
            true => Some(lock(&self.ack_latency_ns)),
            false => try_lock(&self.ack_latency_ns),
        };
        if let Some(mut h) = guard {
            for &v in &buffer.values[..buffer.len] {
                h.saturating_record(v.max(1));
            }
            buffer.len = 0;
        }
    }

    /// Records one sampled ring occupancy (skipped if a reader holds the lock).
    pub(crate) fn record_occupancy(&self, slots: u64) {
        if let Some(mut h) = try_lock(&self.ring_occupancy) {
            h.saturating_record(slots.max(1));
        }
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
    /// Batch service time per stage (ns; one batch in 16 is timed, every
    /// batch of a journaller that writes), indexed by [`StageName::index`].
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
