//! Multi-producer submission: [`Submitter`] validates a command on the
//! calling thread, admits it through the gate, copies it into a claimed ring
//! slot and waits for its ack — blocking ([`Submitter::submit`]) or async
//! ([`Submitter::submit_async`] returns a [`PendingAck`] future). Neither
//! allocates per command.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use disruptor::{MultiProducer, Producer, SingleConsumerBarrier};

use crate::completion::{CellPoll, NO_COMPLETION};
use crate::config::BackPressure;
use crate::constants::{PAYLOAD_BYTES_MAX, SPIN_ITERATIONS_DEFAULT};
use crate::envelope::{Command, CommandHeader, FLAG_SESSION};
use crate::error::{StopReason, SubmitError};
use crate::gate::{Admission, Refused};
use crate::outcome::Ack;
use crate::session::{Registration, SESSION_REGISTER};
use crate::shared::Shared;
use crate::slot::Slot;
use crate::state_machine::Validator;
use crate::wait::{IdleAction, Idler};

/// A submission handle. Clone one per submitting thread; each clone is a
/// producer on the shared multi-producer ring.
pub struct Submitter {
    producer: MultiProducer<Slot, SingleConsumerBarrier>,
    shared: Arc<Shared>,
    validator: Arc<dyn Validator>,
}

impl Clone for Submitter {
    fn clone(&self) -> Self {
        Self {
            producer: self.producer.clone(),
            shared: Arc::clone(&self.shared),
            validator: Arc::clone(&self.validator),
        }
    }
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").finish_non_exhaustive()
    }
}

impl Submitter {
    pub(crate) fn new(
        producer: MultiProducer<Slot, SingleConsumerBarrier>,
        shared: Arc<Shared>,
        validator: Arc<dyn Validator>,
    ) -> Self {
        Self {
            producer,
            shared,
            validator,
        }
    }

    /// Submits a command and blocks until it is applied (under the
    /// journaller's durability policy) and acknowledged.
    pub fn submit(&mut self, command: &Command<'_>) -> Result<Ack, SubmitError> {
        let (index, _sequence) = self.publish(command, true)?;
        self.wait_ack(index)
    }

    /// Submits a command and returns a future of its ack. The command is
    /// sequenced before this returns; the future only waits.
    pub fn submit_async(&mut self, command: &Command<'_>) -> Result<PendingAck, SubmitError> {
        let (index, sequence) = self.publish(command, true)?;
        Ok(PendingAck {
            shared: Arc::clone(&self.shared),
            index,
            sequence,
            finished: false,
        })
    }

    /// Submits a command nobody waits for; returns its sequence. Its outcome
    /// reaches only the event sink.
    pub fn submit_detached(&mut self, command: &Command<'_>) -> Result<u64, SubmitError> {
        self.publish(command, false).map(|(_, sequence)| sequence)
    }

    fn validate(&self, command: &Command<'_>) -> Result<(), SubmitError> {
        if command.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(SubmitError::PayloadTooLarge {
                len: command.payload.len(),
                max: PAYLOAD_BYTES_MAX,
            });
        }
        match command.command_type {
            0 => return Err(SubmitError::ReservedCommandType),
            SESSION_REGISTER if command.session || command.idempotency_key != 0 => {
                return Err(SubmitError::SessionKey)
            }
            SESSION_REGISTER => {}
            0xFF00.. => return Err(SubmitError::ReservedCommandType),
            _ => {}
        }
        if command.schema_version == 0 {
            return Err(SubmitError::ReservedSchemaVersion);
        }
        let key = command.idempotency_key;
        if command.session && ((key >> 64) as u64 == 0 || key as u64 == 0) {
            return Err(SubmitError::SessionKey);
        }
        if command.command_type == SESSION_REGISTER {
            // The engine's own command: the host's validator never sees it.
            return match Registration::decode(command.payload) {
                Some(_) => Ok(()),
                None => Err(SubmitError::BadRegistration),
            };
        }
        self.validator
            .validate(command)
            .map_err(|e| SubmitError::Rejected { code: e.code })
    }

    fn stopped(&self) -> SubmitError {
        stopped(&self.shared)
    }

    /// Validates, admits, takes a completion cell (if wanted) and publishes.
    /// Returns the cell index (or `NO_COMPLETION`) and the sequence.
    fn publish(&mut self, command: &Command<'_>, wait: bool) -> Result<(u32, u64), SubmitError> {
        self.validate(command)?;
        let shared = &*self.shared;
        let _admission = admit(shared)?;
        let deadline = BackoffDeadline::new(shared.config.back_pressure);
        let index = match wait {
            true => with_back_pressure(shared, &deadline, || take_cell(shared))?,
            false => NO_COMPLETION,
        };
        let producer = &mut self.producer;
        let published = with_back_pressure(shared, &deadline, || {
            producer
                .try_publish(|slot| fill(slot, command, shared.now_ns(), index))
                .ok()
        });
        let ring_sequence = match published {
            Ok(sequence) => sequence as u64,
            Err(e) => {
                if index != NO_COMPLETION {
                    shared.free_cell(index);
                }
                return Err(e);
            }
        };
        published_through(shared, ring_sequence);
        Ok((index, shared.config.first_sequence + ring_sequence))
    }

    /// Submits several commands nobody waits for as one claim on the ring:
    /// one admission, one clock read and one publish for the whole batch,
    /// which is how a host that reads commands in bursts (a network read, a
    /// file) gets the ring's batch throughput. All commands are validated
    /// first; if any is refused, none is sequenced. Command `i` gets the
    /// sequencer timestamp `t + i`. Returns the first command's sequence.
    pub fn submit_batch_detached(&mut self, commands: &[Command<'_>]) -> Result<u64, SubmitError> {
        if commands.is_empty() || commands.len() > self.shared.config.ring_slots {
            return Err(SubmitError::BatchSize {
                len: commands.len(),
                max: self.shared.config.ring_slots,
            });
        }
        commands.iter().try_for_each(|c| self.validate(c))?;
        let shared = &*self.shared;
        let _admission = admit(shared)?;
        let deadline = BackoffDeadline::new(shared.config.back_pressure);
        let producer = &mut self.producer;
        let last = with_back_pressure(shared, &deadline, || {
            producer
                .try_batch_publish(commands.len(), |slots| {
                    let now = shared.now_ns();
                    for (i, (slot, command)) in slots.zip(commands).enumerate() {
                        fill(slot, command, now + i as u64, NO_COMPLETION);
                    }
                })
                .ok()
        })? as u64;
        published_through(shared, last);
        Ok(shared.config.first_sequence + last + 1 - commands.len() as u64)
    }

    /// Waits for the ack in cell `index`: spin/yield per the wait strategy,
    /// then park. The thread's waker is created on its first blocking submit
    /// (one allocation per thread, never per command).
    fn wait_ack(&self, index: u32) -> Result<Ack, SubmitError> {
        let shared = &*self.shared;
        let cell = &shared.cells[index as usize];
        let mut idler = Idler::new(shared.config.wait_strategy);
        THREAD_WAKER.with(|waker| {
            while !shared.stopped.load(Ordering::Relaxed) {
                if let Some(ack) = cell.try_take() {
                    shared.free_cell(index);
                    return Ok(ack);
                }
                match idler.next() {
                    IdleAction::Spin => std::hint::spin_loop(),
                    IdleAction::Yield => std::thread::yield_now(),
                    IdleAction::Park => break,
                }
            }
            loop {
                match cell.poll(waker, &shared.stopped) {
                    Some(CellPoll::Ready(ack)) => {
                        shared.free_cell(index);
                        return Ok(ack);
                    }
                    Some(CellPoll::Stopped) => return Err(self.stopped()),
                    None => std::thread::park(),
                }
            }
        })
    }
}

/// Copies a command into a claimed slot.
fn fill(slot: &mut Slot, command: &Command<'_>, timestamp_ns: u64, completion: u32) {
    slot.header = CommandHeader {
        idempotency_key: command.idempotency_key,
        correlation_id: command.correlation_id,
        timestamp_ns,
        command_type: command.command_type,
        schema_version: command.schema_version,
        tenant_id: command.tenant_id,
        payload_len: command.payload.len() as u32,
        completion,
        flags: if command.session { FLAG_SESSION } else { 0 },
    };
    slot.payload[..command.payload.len()].copy_from_slice(command.payload);
    slot.result.reset();
}

/// Records that ring sequences up to `last` are published and wakes the first lanes.
fn published_through(shared: &Shared, last: u64) {
    shared.published_next.fetch_max(last + 1, Ordering::AcqRel);
    shared.notify_published();
}

/// Retries `attempt` while the ring (or the cell table) is full, per the
/// back-pressure policy: `Busy` when the wait is over, `EngineStopped` if the
/// engine stops meanwhile.
fn with_back_pressure<T>(
    shared: &Shared,
    deadline: &BackoffDeadline,
    mut attempt: impl FnMut() -> Option<T>,
) -> Result<T, SubmitError> {
    let mut round = 0;
    loop {
        if let Some(value) = attempt() {
            return Ok(value);
        }
        if shared.stopped.load(Ordering::Acquire) {
            return Err(stopped(shared));
        }
        if deadline.expired(round) {
            return Err(SubmitError::Busy);
        }
        deadline.backoff(&mut round);
    }
}

fn stopped(shared: &Shared) -> SubmitError {
    SubmitError::EngineStopped(shared.stop_reason().unwrap_or(StopReason::Shutdown))
}

/// Enters the gate, or says why not.
fn admit(shared: &Shared) -> Result<Admission<'_>, SubmitError> {
    shared.gate.enter().map_err(|refused| match refused {
        Refused::Closed => stopped(shared),
        Refused::Paused => SubmitError::Paused,
    })
}

/// Takes a free completion cell, if one is free.
fn take_cell(shared: &Shared) -> Option<u32> {
    let index = shared.free_cells.pop()?;
    shared.cells[index as usize].arm();
    Some(index)
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per submitting thread, created on its first blocking wait.
    static THREAD_WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// Bounded back-pressure wait: spin, then yield, until the configured wait
/// is over. The clock is read only once something is actually full.
struct BackoffDeadline {
    policy: BackPressure,
    until: std::cell::Cell<Option<Instant>>,
}

impl BackoffDeadline {
    fn new(policy: BackPressure) -> Self {
        Self {
            policy,
            until: std::cell::Cell::new(None),
        }
    }

    fn expired(&self, round: u32) -> bool {
        let wait = match self.policy {
            BackPressure::Fail => return true,
            BackPressure::Wait(wait) => wait,
        };
        // Read the clock on the first full attempt, then every 64 rounds.
        match self.until.get() {
            None => {
                self.until.set(Some(Instant::now() + wait));
                false
            }
            Some(until) => round % 64 == 63 && Instant::now() >= until,
        }
    }

    fn backoff(&self, round: &mut u32) {
        if *round < SPIN_ITERATIONS_DEFAULT {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        *round = round.wrapping_add(1);
    }
}

/// The ack of a command submitted with [`Submitter::submit_async`]. Dropping
/// it before completion is allowed: the command still runs, the ack is
/// discarded.
#[derive(Debug)]
pub struct PendingAck {
    shared: Arc<Shared>,
    index: u32,
    sequence: u64,
    finished: bool,
}

impl PendingAck {
    /// The sequence the command was given.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl Future for PendingAck {
    type Output = Result<Ack, SubmitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.finished, "PendingAck polled after completion");
        let cell = &self.shared.cells[self.index as usize];
        match cell.poll(cx.waker(), &self.shared.stopped) {
            None => Poll::Pending,
            Some(CellPoll::Ready(ack)) => {
                self.finished = true;
                self.shared.free_cell(self.index);
                Poll::Ready(Ok(ack))
            }
            Some(CellPoll::Stopped) => {
                self.finished = true;
                let reason = self.shared.stop_reason().unwrap_or(StopReason::Shutdown);
                Poll::Ready(Err(SubmitError::EngineStopped(reason)))
            }
        }
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        if !self.finished && self.shared.cells[self.index as usize].abandon() {
            self.shared.free_cell(self.index);
        }
    }
}
