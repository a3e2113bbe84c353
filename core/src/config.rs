//! Engine configuration: sizes, wait strategy, stage fusion, pinning and
//! back-pressure. Validated once at start; a bad value names its option.

use std::time::Duration;

use crate::constants::{DEDUP_ENTRIES_MAX, IN_FLIGHT_MAX, RING_SLOTS_MAX, RING_SLOTS_MIN};
use crate::error::ConfigError;
use crate::wait::WaitStrategy;

/// How the four stages map onto threads ("lanes"). Semantics are identical;
/// only the number of threads changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Four threads: journaller, replicator, BLP, publisher.
    Separate,
    /// Two threads: journaller+replicator, BLP+publisher. The default (2 cores).
    #[default]
    Paired,
    /// One thread runs all four stages in order.
    Single,
    /// Two threads: the journaller alone, and replicator+BLP+publisher. For
    /// a replicator that waits (a replication commit point): its wait for
    /// a batch overlaps the journaller's write and sync of the next one,
    /// where `Paired` would hold the journaller until the wait ends.
    Gated,
}

impl Fusion {
    /// Number of stage threads.
    pub fn lanes(self) -> usize {
        match self {
            Fusion::Separate => 4,
            Fusion::Paired | Fusion::Gated => 2,
            Fusion::Single => 1,
        }
    }
}

/// Core pinning of stage threads: configuration, never a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pinning {
    /// Let the OS schedule.
    #[default]
    None,
    /// Pin lane `i` to `cores[i]`. A core id the machine does not have is
    /// skipped (reported in [`crate::Engine::pinning`]); never a panic.
    Cores(Vec<usize>),
}

/// What a submitter does when the ring or the completion table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackPressure {
    /// Return [`crate::SubmitError::Busy`] at once.
    Fail,
    /// Wait (spin, then yield) up to this long, then return `Busy`.
    Wait(Duration),
}

impl Default for BackPressure {
    fn default() -> Self {
        Self::Wait(Duration::from_millis(100))
    }
}

/// Engine configuration. `Default` suits a 2-core development machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Ring slots (power of two in `RING_SLOTS_MIN..=RING_SLOTS_MAX`).
    pub ring_slots: usize,
    /// Commands whose callers may wait for their ack at once (completion cells).
    pub in_flight_max: usize,
    /// Idempotency window: keys remembered by the dedup table.
    pub dedup_entries: usize,
    /// How idle stage threads and waiting callers wait.
    pub wait_strategy: WaitStrategy,
    /// Stage-to-thread mapping.
    pub fusion: Fusion,
    /// Core pinning of the lanes.
    pub pinning: Pinning,
    /// Ring-full behaviour.
    pub back_pressure: BackPressure,
    /// Sequence of the first command of this run (recovery continues the log).
    pub first_sequence: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ring_slots: 4096,
            in_flight_max: 4096,
            dedup_entries: 1 << 16,
            wait_strategy: WaitStrategy::default(),
            fusion: Fusion::default(),
            pinning: Pinning::None,
            back_pressure: BackPressure::default(),
            first_sequence: 0,
        }
    }
}

impl EngineConfig {
    /// Checks every option; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option, value: String, expected| {
            Err(ConfigError {
                option,
                value,
                expected,
            })
        };
        if !self.ring_slots.is_power_of_two()
            || !(RING_SLOTS_MIN..=RING_SLOTS_MAX).contains(&self.ring_slots)
        {
            return bad(
                "ring_slots",
                self.ring_slots.to_string(),
                "a power of two between 64 and 1048576",
            );
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.in_flight_max) {
            return bad(
                "in_flight_max",
                self.in_flight_max.to_string(),
                "between 1 and 1048576",
            );
        }
        if !(1..=DEDUP_ENTRIES_MAX).contains(&self.dedup_entries) {
            return bad(
                "dedup_entries",
                self.dedup_entries.to_string(),
                "between 1 and 16777216",
            );
        }
        if let Pinning::Cores(cores) = &self.pinning {
            if cores.is_empty() {
                return bad(
                    "pinning",
                    "[]".into(),
                    "at least one core id, or no pinning",
                );
            }
        }
        if let BackPressure::Wait(d) = self.back_pressure {
            if d > Duration::from_secs(60) {
                return bad(
                    "back_pressure_wait",
                    format!("{d:?}"),
                    "at most 60 s (a bounded wait)",
                );
            }
        }
        Ok(())
    }

    /// A configuration for hosts with a spare core per stage thread.
    pub fn low_latency() -> Self {
        Self {
            wait_strategy: WaitStrategy::BusySpin,
            fusion: Fusion::Separate,
            ..Self::default()
        }
    }
}
