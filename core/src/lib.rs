//! Keel's engine core: an LMAX-style pipeline on the `disruptor` crate.
//!
//! Producers ([`Submitter`]) copy commands into pre-allocated ring slots; the
//! journaller and replicator stages process each batch in parallel; the
//! business-logic processor applies the batch to the [`StateMachine`] only
//! after both released it (log-first); the publisher completes callers and
//! feeds an [`EventSink`]. The core does no I/O of its own, reads no clock in
//! the BLP and allocates nothing per command after start.
//!
//! ```
//! use keel_core::{Command, CommandRef, Engine, EngineConfig, Outcome, StateMachine};
//!
//! struct Counter(u64);
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _c: &CommandRef<'_>, _o: &mut Outcome) { self.0 += 1; }
//!     fn state_hash(&self) -> u64 { self.0 }
//! }
//!
//! let engine = Engine::builder(EngineConfig::default(), Counter(0)).start().unwrap();
//! let mut submitter = engine.submitter();
//! let ack = submitter.submit(&Command::new(1, b"hello")).unwrap();
//! assert_eq!(ack.sequence, 0);
//! drop(submitter);
//! let stopped = engine.shutdown().unwrap();
//! assert_eq!(stopped.state_machine.0, 1);
//! ```

#![cfg_attr(loom, allow(dead_code))]

pub mod constants;
pub mod envelope;
pub mod outcome;
pub mod slot;
pub mod state_machine;
mod sync;

#[cfg(not(loom))]
pub mod apply;
#[cfg(not(loom))]
pub mod clock;
#[cfg(not(loom))]
pub mod completion;
#[cfg(loom)]
#[doc(hidden)]
pub mod completion;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
mod engine;
#[cfg(not(loom))]
pub mod error;
mod gate;
#[cfg(not(loom))]
pub mod idempotency;
#[cfg(not(loom))]
pub mod metrics;
#[cfg(not(loom))]
mod probe;
#[cfg(not(loom))]
pub mod quota;
#[cfg(not(loom))]
pub mod session;
#[cfg(not(loom))]
mod shared;
#[cfg(not(loom))]
pub mod stage;
#[cfg(not(loom))]
mod stages;
#[cfg(not(loom))]
mod submit;
pub mod wait;

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(not(loom))]
pub use crate::{
    apply::apply,
    clock::{Clock, ManualClock, SystemClock},
    config::{BackPressure, EngineConfig, Fusion, Pinning},
    engine::{Engine, EngineBuilder, LanePinning, MetricsHandle, Stopped},
    error::{ConfigError, StageName, StopReason, SubmitError},
    idempotency::DedupTable,
    metrics::MetricsSnapshot,
    session::{Registered, Registration, SessionTable, EPOCH_START, SESSION_REGISTER},
    stage::{
        EventSink, InMemoryJournaller, Journaller, NoopJournaller, NoopReplicator, NoopSink,
        Replicator, StageError,
    },
    submit::{PendingAck, Submitter},
};
pub use crate::{
    envelope::{Command, CommandHeader, CommandRef},
    outcome::{Ack, Outcome, ResultCode},
    slot::{Applied, Slot},
    state_machine::{AcceptAll, StateMachine, ValidationError, Validator},
    wait::WaitStrategy,
};
