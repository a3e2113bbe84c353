//! State shared by the engine handle, its submitters and its stage threads:
//! the admission gate, stop flags, completion cells, parkers and metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::clock::Clock;
use crate::completion::CompletionCell;
use crate::config::{EngineConfig, Fusion};
use crate::constants::STAGE_COUNT;
use crate::error::{StageName, StopReason};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::wait::Parker;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    /// Admission of submitters (pause, shutdown). Each hot word has its own
    /// cache line: producers, lanes and admin threads write them at different
    /// rates and must not false-share.
    pub(crate) gate: CachePadded<Gate>,
    /// One past the highest published ring sequence.
    pub(crate) published_next: CachePadded<AtomicU64>,
    /// Per stage: one past the highest ring sequence it has released.
    pub(crate) stage_next: [CachePadded<AtomicU64>; STAGE_COUNT],
    /// Stage threads must exit now (failure, or shutdown after draining).
    pub(crate) halt: AtomicBool,
    /// Set once no ack will ever be delivered again; waiting callers are woken.
    pub(crate) stopped: AtomicBool,
    pub(crate) stop_reason: Mutex<Option<StopReason>>,
    pub(crate) cells: Box<[CompletionCell]>,
    pub(crate) free_cells: ArrayQueue<u32>,
    pub(crate) parkers: Box<[Parker]>,
    /// The lane each stage runs on (by fusion), for targeted wake-ups.
    lane_of: [usize; STAGE_COUNT],
    pub(crate) metrics: Metrics,
    pub(crate) clock: Box<dyn Clock>,
}

impl Shared {
    pub(crate) fn new(config: EngineConfig, clock: Box<dyn Clock>) -> Self {
        let cells: Box<[CompletionCell]> = (0..config.in_flight_max)
            .map(|_| CompletionCell::new())
            .collect();
        let free_cells = ArrayQueue::new(config.in_flight_max);
        for i in 0..config.in_flight_max {
            free_cells
                .push(i as u32)
                .expect("free list sized to the cells");
        }
        let parkers = (0..config.fusion.lanes()).map(|_| Parker::new()).collect();
        let lane_of = match config.fusion {
            Fusion::Separate => [0, 1, 2, 3],
            Fusion::Paired => [0, 0, 1, 1],
            Fusion::Single => [0, 0, 0, 0],
            Fusion::Gated => [0, 1, 1, 1],
        };
        Self {
            metrics: Metrics::new(config.ring_slots),
            config,
            gate: CachePadded::new(Gate::new()),
            published_next: CachePadded::new(AtomicU64::new(0)),
            stage_next: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            halt: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
            cells,
            free_cells,
            parkers,
            lane_of,
            clock,
        }
    }

    /// The sequencer clock (timestamps and metrics; never read by the BLP's state machine).
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Producers: wakes the lanes of the first stages after a publish.
    pub(crate) fn notify_published(&self) {
        if self.config.wait_strategy.parks() {
            let journal = self.lane_of[StageName::Journaller.index()];
            let replica = self.lane_of[StageName::Replicator.index()];
            self.parkers[journal].notify();
            if replica != journal {
                self.parkers[replica].notify();
            }
        }
    }

    /// Returns a completion cell to the free list.
    pub(crate) fn free_cell(&self, index: u32) {
        self.cells[index as usize].reset();
        self.free_cells
            .push(index)
            .expect("free list never holds more than the cells");
    }

    /// The reason the engine stopped, if it did.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fail-stop (or final stop): records the first reason, closes the gate,
    /// halts the lanes and wakes every waiting caller with `EngineStopped`.
    pub(crate) fn stop(&self, reason: StopReason) {
        {
            let mut slot = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        self.gate.close();
        self.halt.store(true, Ordering::SeqCst);
        self.stopped.store(true, Ordering::SeqCst);
        self.notify_all_lanes();
        for cell in self.cells.iter() {
            cell.wake();
        }
    }

    fn notify_all_lanes(&self) {
        for parker in self.parkers.iter() {
            parker.notify();
        }
    }

    /// Records that `stage` released every sequence below `next`, and wakes
    /// the lane of the stage that waits for it (unless that is this lane).
    pub(crate) fn stage_released(&self, stage: StageName, next: u64) {
        self.stage_next[stage.index()].store(next, Ordering::Release);
        let waiter = match stage {
            StageName::Journaller | StageName::Replicator => StageName::BusinessLogic,
            StageName::BusinessLogic => StageName::Publisher,
            StageName::Publisher => return,
        };
        let lane = self.lane_of[waiter.index()];
        if self.config.wait_strategy.parks() && lane != self.lane_of[stage.index()] {
            self.parkers[lane].notify();
        }
    }
}
