//! The engine: builds the disruptor graph (journaller ∥ replicator → BLP →
//! publisher), starts the lanes, and owns the lifecycle (pause, resume,
//! graceful shutdown, fail-stop).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use disruptor::{build_multi_producer, BusySpin};

use crate::clock::{Clock, SystemClock};
use crate::config::{EngineConfig, Fusion, Pinning};
use crate::error::{ConfigError, StageName, StopReason, SubmitError};
use crate::idempotency::DedupTable;
use crate::metrics::MetricsSnapshot;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::stage::{EventSink, Journaller, NoopJournaller, NoopReplicator, NoopSink, Replicator};
use crate::stages::{
    BlpStage, JournalStage, Lane, PublishStage, ReplicaStage, Step, CURRENT_STAGE,
};
use crate::state_machine::{AcceptAll, StateMachine, Validator};
use crate::submit::Submitter;
use crate::wait::{IdleAction, Idler};

/// Builds an [`Engine`]: a state machine plus pluggable stages.
#[derive(Debug)]
pub struct EngineBuilder<S, J = NoopJournaller, R = NoopReplicator, K = NoopSink> {
    config: EngineConfig,
    state_machine: S,
    journaller: J,
    replicator: R,
    sink: K,
    validator: Arc<dyn Validator>,
    clock: Box<dyn Clock>,
    dedup: Option<DedupTable>,
}

impl std::fmt::Debug for dyn Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator")
    }
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl<S: StateMachine> EngineBuilder<S> {
    /// Starts a builder with in-memory stages (durability `none`).
    pub fn new(config: EngineConfig, state_machine: S) -> Self {
        Self {
            config,
            state_machine,
            journaller: NoopJournaller,
            replicator: NoopReplicator,
            sink: NoopSink,
            validator: Arc::new(AcceptAll),
            clock: Box::new(SystemClock::new()),
            dedup: None,
        }
    }
}

impl<S: StateMachine, J: Journaller, R: Replicator, K: EventSink> EngineBuilder<S, J, R, K> {
    /// Uses `journaller` as the journaller stage.
    pub fn journaller<J2: Journaller>(self, journaller: J2) -> EngineBuilder<S, J2, R, K> {
        EngineBuilder {
            config: self.config,
            state_machine: self.state_machine,
            journaller,
            replicator: self.replicator,
            sink: self.sink,
            validator: self.validator,
            clock: self.clock,
            dedup: self.dedup,
        }
    }

    /// Uses `replicator` as the replicator stage.
    pub fn replicator<R2: Replicator>(self, replicator: R2) -> EngineBuilder<S, J, R2, K> {
        EngineBuilder {
            config: self.config,
            state_machine: self.state_machine,
            journaller: self.journaller,
            replicator,
            sink: self.sink,
            validator: self.validator,
            clock: self.clock,
            dedup: self.dedup,
        }
    }

    /// Sends applied events to `sink` on the publisher thread.
    pub fn event_sink<K2: EventSink>(self, sink: K2) -> EngineBuilder<S, J, R, K2> {
        EngineBuilder {
            config: self.config,
            state_machine: self.state_machine,
            journaller: self.journaller,
            replicator: self.replicator,
            sink,
            validator: self.validator,
            clock: self.clock,
            dedup: self.dedup,
        }
    }

    /// Runs `validator` on the submitting thread before sequencing.
    pub fn validator(mut self, validator: impl Validator) -> Self {
        self.validator = Arc::new(validator);
        self
    }

    /// Starts from a recovered idempotency window (part of the state, rebuilt
    /// by replay or a snapshot) instead of an empty one. Its capacity must
    /// equal `dedup_entries`, or replay and the live engine would evict
    /// differently.
    pub fn dedup(mut self, dedup: DedupTable) -> Self {
        self.dedup = Some(dedup);
        self
    }

    /// Reads sequencer timestamps from `clock`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Validates the configuration, allocates everything and starts the lanes.
    pub fn start(self) -> Result<Engine<S, J, R, K>, ConfigError> {
        self.config.validate()?;
        let config = self.config.clone();
        let dedup = match self.dedup {
            Some(d) if d.capacity() != config.dedup_entries => {
                return Err(ConfigError {
                    option: "dedup_entries",
                    value: config.dedup_entries.to_string(),
                    expected: "the capacity of the recovered idempotency window",
                });
            }
            Some(d) => d,
            None => DedupTable::with_capacity(config.dedup_entries),
        };
        let slots = config.ring_slots;
        let shared = Arc::new(Shared::new(self.config, self.clock));

        let builder = build_multi_producer(slots, Slot::default, BusySpin);
        let (journal_poller, builder) = builder.new_event_poller();
        let (replica_poller, builder) = builder.new_event_poller();
        let (blp_poller, builder) = builder.and_then().new_event_poller();
        let (publish_poller, builder) = builder.and_then().new_event_poller();
        let producer = builder.build();

        let journal = JournalStage {
            poller: journal_poller,
            journaller: self.journaller,
            next: 0,
            batches: 0,
        };
        let replica = ReplicaStage {
            poller: replica_poller,
            replicator: self.replicator,
            next: 0,
            batches: 0,
        };
        let blp = BlpStage {
            poller: blp_poller,
            state_machine: self.state_machine,
            dedup,
            next: 0,
            batches: 0,
        };
        let publish = PublishStage {
            poller: publish_poller,
            sink: self.sink,
            next: 0,
            batches: 0,
            acks: crate::metrics::AckBuffer::new(),
        };

        let pinning = plan_pinning(&config.pinning, config.fusion.lanes());
        let spawn = LaneSpawner {
            shared: &shared,
            pinning: &pinning,
        };
        let lanes = match config.fusion {
            Fusion::Separate => Lanes::Separate(
                spawn.lane(0, journal),
                spawn.lane(1, replica),
                spawn.lane(2, blp),
                spawn.lane(3, publish),
            ),
            Fusion::Paired => Lanes::Paired(
                spawn.lane(0, (journal, replica)),
                spawn.lane(1, (blp, publish)),
            ),
            Fusion::Single => Lanes::Single(spawn.lane(0, ((journal, replica), (blp, publish)))),
            Fusion::Gated => Lanes::Gated(
                spawn.lane(0, journal),
                spawn.lane(1, (replica, (blp, publish))),
            ),
        };
        let submitter = Submitter::new(producer, Arc::clone(&shared), self.validator);
        Ok(Engine {
            shared,
            submitter,
            lanes: Some(lanes),
            pinning,
        })
    }
}

type Handle<L> = JoinHandle<Option<L>>;

enum Lanes<S, J, R, K> {
    Separate(
        Handle<JournalStage<J>>,
        Handle<ReplicaStage<R>>,
        Handle<BlpStage<S>>,
        Handle<PublishStage<K>>,
    ),
    Paired(
        Handle<(JournalStage<J>, ReplicaStage<R>)>,
        Handle<(BlpStage<S>, PublishStage<K>)>,
    ),
    #[allow(clippy::type_complexity)]
    Gated(
        Handle<JournalStage<J>>,
        Handle<(ReplicaStage<R>, (BlpStage<S>, PublishStage<K>))>,
    ),
    #[allow(clippy::type_complexity)]
    Single(
        Handle<(
            (JournalStage<J>, ReplicaStage<R>),
            (BlpStage<S>, PublishStage<K>),
        )>,
    ),
}

type Parts<S, J, R, K> = (
    JournalStage<J>,
    ReplicaStage<R>,
    BlpStage<S>,
    PublishStage<K>,
);

impl<S, J, R, K> Lanes<S, J, R, K> {
    /// Joins every lane; `None` if any lane died (its stages are lost).
    fn join(self) -> Option<Parts<S, J, R, K>> {
        fn join<L>(handle: Handle<L>) -> Option<L> {
            handle.join().ok().flatten()
        }
        match self {
            Lanes::Separate(j, r, b, p) => {
                let (j, r, b, p) = (join(j), join(r), join(b), join(p));
                Some((j?, r?, b?, p?))
            }
            Lanes::Paired(jr, bp) => {
                let (jr, bp) = (join(jr), join(bp));
                let ((j, r), (b, p)) = (jr?, bp?);
                Some((j, r, b, p))
            }
            Lanes::Gated(j, rbp) => {
                let (j, rbp) = (join(j), join(rbp));
                let (j, (r, (b, p))) = (j?, rbp?);
                Some((j, r, b, p))
            }
            Lanes::Single(all) => join(all).map(|((j, r), (b, p))| (j, r, b, p)),
        }
    }
}

/// Which core each lane was pinned to (`None`: not pinned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanePinning {
    /// The core id requested for this lane, if any.
    pub requested: Option<usize>,
    /// Whether the machine has that core (the lane was pinned to it).
    pub pinned: bool,
}

fn plan_pinning(pinning: &Pinning, lanes: usize) -> Vec<LanePinning> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    (0..lanes)
        .map(|lane| {
            let requested = match pinning {
                Pinning::None => None,
                Pinning::Cores(cores) => cores.get(lane).copied(),
            };
            LanePinning {
                requested,
                pinned: requested.is_some_and(|c| available.contains(&c)),
            }
        })
        .collect()
}

struct LaneSpawner<'a> {
    shared: &'a Arc<Shared>,
    pinning: &'a [LanePinning],
}

impl LaneSpawner<'_> {
    fn lane<L: Lane>(&self, index: usize, lane: L) -> Handle<L> {
        let shared = Arc::clone(self.shared);
        let pin = self.pinning[index];
        std::thread::Builder::new()
            .name(format!("keel-lane-{index}"))
            .spawn(move || {
                if pin.pinned {
                    let core = core_affinity::CoreId {
                        id: pin.requested.expect("pinned lanes have a core"),
                    };
                    core_affinity::set_for_current(core);
                }
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| run_lane(lane, &shared, index)));
                match result {
                    Ok(lane) => lane,
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        let stage = CURRENT_STAGE.with(|c| c.get());
                        shared.stop(StopReason::StagePanicked { stage, message });
                        None
                    }
                }
            })
            .expect("spawning a lane thread")
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A lane thread's loop: step, idle per the wait strategy, exit on halt.
/// Returns the lane's stages on a clean exit, `None` after a stage error.
fn run_lane<L: Lane>(mut lane: L, shared: &Shared, index: usize) -> Option<L> {
    let parker = &shared.parkers[index];
    parker.register_current();
    let mut idler = Idler::new(shared.config.wait_strategy);
    loop {
        if shared.halt.load(Ordering::Acquire) {
            return Some(lane);
        }
        match lane.step(shared) {
            Ok(Step::Progress) => idler.reset(),
            Ok(Step::Idle) => match idler.next() {
                IdleAction::Spin => std::hint::spin_loop(),
                IdleAction::Yield => std::thread::yield_now(),
                IdleAction::Park => {
                    parker.park_unless(|| lane.has_work() || shared.halt.load(Ordering::Acquire));
                    idler.reset();
                }
            },
            Err(reason) => {
                shared.stop(reason);
                return None;
            }
        }
    }
}

/// What a cleanly shut-down engine hands back.
#[derive(Debug)]
pub struct Stopped<S, J, R, K> {
    /// The state machine after the last command.
    pub state_machine: S,
    /// The idempotency window (part of the state).
    pub dedup: DedupTable,
    /// The journaller stage.
    pub journaller: J,
    /// The replicator stage.
    pub replicator: R,
    /// The event sink.
    pub sink: K,
    /// Commands processed in this run.
    pub commands: u64,
    /// Final metrics.
    pub metrics: MetricsSnapshot,
}

/// A running engine. Submit through [`Engine::submitter`] handles (one per
/// thread); control it through `pause`, `resume` and `shutdown`.
pub struct Engine<S, J = NoopJournaller, R = NoopReplicator, K = NoopSink> {
    shared: Arc<Shared>,
    submitter: Submitter,
    lanes: Option<Lanes<S, J, R, K>>,
    pinning: Vec<LanePinning>,
}

impl<S, J, R, K> std::fmt::Debug for Engine<S, J, R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .field("stop_reason", &self.shared.stop_reason())
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> Engine<S> {
    /// Starts building an engine for `state_machine`.
    pub fn builder(config: EngineConfig, state_machine: S) -> EngineBuilder<S> {
        EngineBuilder::new(config, state_machine)
    }
}

impl<S, J, R, K> Engine<S, J, R, K> {
    /// A new submission handle (multi-producer: one per submitting thread).
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// A snapshot of the stage service times, ack latency and ring occupancy.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// A handle that reads the metrics from any thread, including from
    /// inside the event sink (reading never delays the pipeline).
    pub fn metrics_handle(&self) -> MetricsHandle {
        MetricsHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Commands released by `stage` so far in this run.
    pub fn processed(&self, stage: StageName) -> u64 {
        self.shared.stage_next[stage.index()].load(Ordering::Acquire)
    }

    /// Why the engine stopped, if it did.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.shared.stop_reason()
    }

    /// Where each lane was pinned.
    pub fn pinning(&self) -> &[LanePinning] {
        &self.pinning
    }

    /// Stops admitting commands (new submits get [`SubmitError::Paused`]) and
    /// returns once every admitted command was published.
    pub fn pause(&self) -> Result<(), SubmitError> {
        self.shared.gate.pause();
        self.drain()
    }

    /// Admits commands again after [`Engine::pause`].
    pub fn resume(&self) {
        self.shared.gate.resume();
    }

    /// Waits until no submitter is inside admission and the publisher has
    /// released everything published. Requires the gate to be paused or closed.
    fn drain(&self) -> Result<(), SubmitError> {
        let stopped = || {
            self.shared
                .stop_reason()
                .map_or(Ok(()), |r| Err(SubmitError::EngineStopped(r)))
        };
        let mut waiter = AdminWait::default();
        while !self.shared.gate.empty() {
            stopped()?;
            waiter.wait();
        }
        let target = self.shared.published_next.load(Ordering::Acquire);
        while self.processed(StageName::Publisher) < target {
            stopped()?;
            waiter.wait();
        }
        stopped()
    }

    /// Graceful shutdown: stops admitting, drains everything already
    /// submitted (every caller gets its ack), stops the lanes and hands the
    /// stages back. After a fail-stop it returns the stop reason instead.
    pub fn shutdown(mut self) -> Result<Stopped<S, J, R, K>, StopReason> {
        self.shared.gate.close();
        let drained = self.drain();
        let commands = self.processed(StageName::Publisher);
        self.shared.stop(StopReason::Shutdown);
        let parts = self.lanes.take().and_then(Lanes::join);
        if let Err(SubmitError::EngineStopped(reason)) = drained {
            return Err(reason);
        }
        let (journal, replica, blp, mut publish) =
            parts.ok_or_else(|| self.shared.stop_reason().unwrap_or(StopReason::Shutdown))?;
        self.shared.metrics.flush_acks(&mut publish.acks, true);
        Ok(Stopped {
            state_machine: blp.state_machine,
            dedup: blp.dedup,
            journaller: journal.journaller,
            replicator: replica.replicator,
            sink: publish.sink,
            commands,
            metrics: self.shared.metrics.snapshot(),
        })
    }
}

/// Reads an engine's metrics from any thread ([`Engine::metrics_handle`]).
#[derive(Clone)]
pub struct MetricsHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// A copy of the histograms now (ack latencies lag by at most the
    /// publisher's current batch).
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Commands released by `stage` so far in this run (an atomic load).
    pub fn processed(&self, stage: StageName) -> u64 {
        self.shared.stage_next[stage.index()].load(Ordering::Acquire)
    }
}

impl<S, J, R, K> Drop for Engine<S, J, R, K> {
    /// Dropping without `shutdown` halts at once: callers still waiting get
    /// `EngineStopped`.
    fn drop(&mut self) {
        if let Some(lanes) = self.lanes.take() {
            self.shared.stop(StopReason::Shutdown);
            let _ = lanes.join();
        }
    }
}

/// Spin, then yield, then sleep briefly: admin waits (pause, shutdown) only.
#[derive(Debug, Default)]
struct AdminWait {
    rounds: u32,
}

impl AdminWait {
    fn wait(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        match self.rounds {
            0..=64 => std::hint::spin_loop(),
            65..=1024 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}
