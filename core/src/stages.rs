//! The four stage runners (journaller, replicator, BLP, publisher) on
//! `disruptor` event pollers, and the [`Lane`] abstraction that lets one
//! thread run one stage or several in pipeline order (stage fusion).
//!
//! Every runner holds its batch in a `ManuallyDrop<EventGuard>` and releases
//! it (advancing its cursor) only after the batch fully succeeded: an error
//! or a panic mid-batch leaves the cursor where it was, so a later stage can
//! never see a command an earlier stage did not finish (log-first).

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use disruptor::{EventPoller, MultiConsumerBarrier, MultiProducerBarrier, SingleConsumerBarrier};

use crate::apply::apply;
use crate::completion::NO_COMPLETION;
use crate::constants::STAGE_BATCH_MAX;
use crate::error::{StageName, StopReason};
use crate::idempotency::DedupTable;
use crate::outcome::Ack;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::stage::{EventSink, Journaller, Replicator, StageError};
use crate::state_machine::StateMachine;

thread_local! {
    /// The stage this thread is running, for attributing a panic.
    pub(crate) static CURRENT_STAGE: Cell<StageName> = const { Cell::new(StageName::Journaller) };
}

/// Whether a lane step did work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Progress,
    Idle,
}

/// One thread's worth of stages.
pub(crate) trait Lane: Send + 'static {
    /// Processes at most one batch per stage. An `Err` is fail-stop.
    fn step(&mut self, shared: &Shared) -> Result<Step, StopReason>;
    /// Whether a `step` would find work (used before parking).
    fn has_work(&self) -> bool;
}

/// Times one batch in [`SERVICE_SAMPLE_EVERY`]: a clock read costs as much as
/// a small batch's work, so timing every batch would slow the stages it
/// measures. Sampling keeps the histogram's shape at a sixteenth of the cost.
pub(crate) const SERVICE_SAMPLE_EVERY: u64 = 16;

fn sample_start(shared: &Shared, batches: &mut u64) -> Option<u64> {
    *batches += 1;
    (*batches % SERVICE_SAMPLE_EVERY == 1).then(|| shared.now_ns())
}

/// Times every batch of a stage whose batches cost a device write.
fn sample_start_durable(shared: &Shared, batches: &mut u64, every_batch: bool) -> Option<u64> {
    if every_batch {
        *batches += 1;
        return Some(shared.now_ns());
    }
    sample_start(shared, batches)
}

fn sample_finish(shared: &Shared, stage: StageName, started_ns: Option<u64>) {
    if let Some(started_ns) = started_ns {
        shared
            .metrics
            .record_service(stage, started_ns, shared.now_ns());
    }
}

fn failed(stage: StageName, sequence: u64, source: StageError) -> StopReason {
    StopReason::StageFailed {
        stage,
        sequence,
        source: Arc::from(source),
    }
}

/// Journaller runner: append every command of the batch, then `end_of_batch`
/// (write + sync per policy), then release.
pub(crate) struct JournalStage<J> {
    pub(crate) poller: EventPoller<Slot, MultiProducerBarrier>,
    pub(crate) journaller: J,
    pub(crate) next: u64,
    /// Batches taken so far (drives service-time sampling).
    pub(crate) batches: u64,
}

/// Replicator runner: same shape as the journaller, in parallel with it.
pub(crate) struct ReplicaStage<R> {
    pub(crate) poller: EventPoller<Slot, MultiProducerBarrier>,
    pub(crate) replicator: R,
    pub(crate) next: u64,
    /// Batches taken so far (drives service-time sampling).
    pub(crate) batches: u64,
}

/// Business-logic processor: gated on journaller and replicator.
pub(crate) struct BlpStage<S> {
    pub(crate) poller: EventPoller<Slot, MultiConsumerBarrier>,
    pub(crate) state_machine: S,
    pub(crate) dedup: DedupTable,
    pub(crate) next: u64,
    /// Batches taken so far (drives service-time sampling).
    pub(crate) batches: u64,
}

/// Publisher: completes callers and feeds the sink.
pub(crate) struct PublishStage<K> {
    pub(crate) poller: EventPoller<Slot, SingleConsumerBarrier>,
    pub(crate) sink: K,
    pub(crate) next: u64,
    /// Batches taken so far (drives service-time sampling).
    pub(crate) batches: u64,
    /// Ack latencies not yet in the shared histogram (no lock is held while
    /// callers are completed and the sink runs).
    pub(crate) acks: crate::metrics::AckBuffer,
}

macro_rules! durable_stage {
    ($runner:ident, $field:ident, $trait:ident, $name:expr) => {
        impl<T: $trait> Lane for $runner<T> {
            fn step(&mut self, shared: &Shared) -> Result<Step, StopReason> {
                let base = shared.config.first_sequence;
                let Ok(guard) = self.poller.poll() else {
                    return Ok(Step::Idle);
                };
                CURRENT_STAGE.with(|c| c.set($name));
                let every = self.$field.times_every_batch();
                let started_ns = sample_start_durable(shared, &mut self.batches, every);
                let mut guard = ManuallyDrop::new(guard);
                let mut next = self.next;
                for slot in &mut *guard {
                    let command = slot.command(base + next);
                    self.$field
                        .append(&command)
                        .map_err(|e| failed($name, base + next, e))?;
                    next += 1;
                }
                assert!(next > self.next, "a polled batch is never empty");
                self.$field
                    .end_of_batch(base + next - 1)
                    .map_err(|e| failed($name, base + next - 1, e))?;
                drop(ManuallyDrop::into_inner(guard));
                self.next = next;
                sample_finish(shared, $name, started_ns);
                shared.stage_released($name, next);
                Ok(Step::Progress)
            }

            fn has_work(&self) -> bool {
                self.poller.has_available()
            }
        }
    };
}

durable_stage!(JournalStage, journaller, Journaller, StageName::Journaller);
durable_stage!(ReplicaStage, replicator, Replicator, StageName::Replicator);

impl<S: StateMachine> Lane for BlpStage<S> {
    fn step(&mut self, shared: &Shared) -> Result<Step, StopReason> {
        let base = shared.config.first_sequence;
        let Ok(guard) = self.poller.take(STAGE_BATCH_MAX) else {
            return Ok(Step::Idle);
        };
        CURRENT_STAGE.with(|c| c.set(StageName::BusinessLogic));
        let started_ns = sample_start(shared, &mut self.batches);
        let mut guard = ManuallyDrop::new(guard);
        let mut next = self.next;
        let mut slots = (&mut *guard).peekable();
        while let Some(slot) = slots.next() {
            if let Some(ahead) = slots.peek() {
                self.state_machine.prefetch(&ahead.command(base + next + 1));
            }
            let applied = apply(
                &mut self.state_machine,
                &mut self.dedup,
                &slot.command(base + next),
            );
            // SAFETY: this thread is the BLP, the slot's only result writer,
            // and `next` is inside its current batch: the publisher cannot
            // read the cell until the guard below releases the BLP cursor
            // (slot.rs, hand-off protocol steps 2-3).
            unsafe { slot.result.write(applied) };
            next += 1;
        }
        drop(ManuallyDrop::into_inner(guard));
        self.next = next;
        sample_finish(shared, StageName::BusinessLogic, started_ns);
        shared.stage_released(StageName::BusinessLogic, next);
        Ok(Step::Progress)
    }

    fn has_work(&self) -> bool {
        self.poller.has_available()
    }
}

/// Completes the slot's caller (if one waits) and feeds the sink.
fn publish<K: EventSink>(
    sink: &mut K,
    shared: &Shared,
    slot: &Slot,
    sequence: u64,
    latency_ns: u64,
) {
    // SAFETY: this thread is the publisher, the slot's only result
    // reader; the poller handed out this slot only after an Acquire load
    // of the BLP cursor at or past it (slot.rs, protocol step 3).
    let applied = unsafe { slot.result.read() };
    let completion = slot.header.completion;
    if completion != NO_COMPLETION {
        let ack = Ack {
            sequence,
            correlation_id: slot.header.correlation_id,
            outcome: applied.outcome,
            duplicate: applied.duplicate,
            latency_ns,
        };
        if shared.cells[completion as usize].complete(ack) {
            shared.free_cell(completion);
        }
    }
    sink.on_applied(&slot.command(sequence), &applied);
}

/// Records ack latency for one publisher batch into the publisher's own
/// buffer: every command a caller waits for, and every command of a sampled
/// batch. The batch's acks complete within its processing, so one clock
/// read (taken lazily) is their common completion time; a batch of detached
/// commands outside the sample costs no clock read.
struct AckRecorder<'a> {
    sampled: bool,
    now_ns: Option<u64>,
    buffer: &'a mut crate::metrics::AckBuffer,
}

impl<'a> AckRecorder<'a> {
    fn new(sample_started_ns: Option<u64>, buffer: &'a mut crate::metrics::AckBuffer) -> Self {
        Self {
            sampled: sample_started_ns.is_some(),
            now_ns: sample_started_ns,
            buffer,
        }
    }

    /// Records the slot's ack latency where it is measured, and returns it
    /// (0 for a detached command outside the sample: nobody receives it).
    fn record(&mut self, shared: &Shared, slot: &Slot) -> u64 {
        if !self.sampled && slot.header.completion == NO_COMPLETION {
            return 0;
        }
        let now = *self.now_ns.get_or_insert_with(|| shared.now_ns());
        let latency = now.saturating_sub(slot.header.timestamp_ns);
        self.buffer.push(latency);
        latency
    }
}

impl<K: EventSink> Lane for PublishStage<K> {
    fn step(&mut self, shared: &Shared) -> Result<Step, StopReason> {
        let base = shared.config.first_sequence;
        let Ok(guard) = self.poller.take(STAGE_BATCH_MAX) else {
            // Nothing to publish: hand over what the last batch could not
            // (a reader held the lock then), or an idle engine would keep
            // those latencies until its next command.
            shared.metrics.flush_acks(&mut self.acks, true);
            return Ok(Step::Idle);
        };
        CURRENT_STAGE.with(|c| c.set(StageName::Publisher));
        let started_ns = sample_start(shared, &mut self.batches);
        let mut guard = ManuallyDrop::new(guard);
        let mut next = self.next;
        if !self.acks.has_room_for(STAGE_BATCH_MAX as usize) {
            shared.metrics.flush_acks(&mut self.acks, true);
        }
        let mut acks = AckRecorder::new(started_ns, &mut self.acks);
        for slot in &mut *guard {
            let latency_ns = acks.record(shared, slot);
            publish(&mut self.sink, shared, slot, base + next, latency_ns);
            next += 1;
        }
        self.sink.end_of_batch(base + next - 1);
        shared.metrics.flush_acks(&mut self.acks, false);
        drop(ManuallyDrop::into_inner(guard));
        self.next = next;
        if started_ns.is_some() {
            let published = shared
                .published_next
                .load(std::sync::atomic::Ordering::Relaxed);
            shared
                .metrics
                .record_occupancy(published.saturating_sub(next));
        }
        sample_finish(shared, StageName::Publisher, started_ns);
        shared.stage_released(StageName::Publisher, next);
        Ok(Step::Progress)
    }

    fn has_work(&self) -> bool {
        self.poller.has_available()
    }
}

impl<A: Lane, B: Lane> Lane for (A, B) {
    fn step(&mut self, shared: &Shared) -> Result<Step, StopReason> {
        let a = self.0.step(shared)?;
        let b = self.1.step(shared)?;
        Ok(if a == Step::Idle && b == Step::Idle {
            Step::Idle
        } else {
            Step::Progress
        })
    }

    fn has_work(&self) -> bool {
        self.0.has_work() || self.1.has_work()
    }
}
