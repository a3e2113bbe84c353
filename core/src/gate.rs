//! The admission gate: lets pause and shutdown know when every admitted
//! command has been published.
//!
//! One word: bit 63 `CLOSED`, bit 62 `PAUSED`, the low bits count submitters
//! between admission and publish. A submitter enters with `fetch_add(1)` and
//! backs out if a flag was set; it leaves with `fetch_sub(1, Release)` after
//! it published and recorded the published sequence. `pause`/`close` set
//! their flag with a read-modify-write; once a drainer then sees a count of
//! zero (`Acquire`), every admitted submitter has left, and everything they
//! wrote before leaving is visible to it. Checked by loom
//! (`loom_models::gate_drain_sees_every_admitted_publish`).

use crate::sync::{AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;
const PAUSED: u64 = 1 << 62;
const SUBMITTERS: u64 = PAUSED - 1;

/// Why the gate refused entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Closed,
    Paused,
}

/// The gate word.
#[derive(Debug)]
pub(crate) struct Gate(AtomicU64);

/// A submitter's place inside the gate; leaving is dropping it.
#[derive(Debug)]
pub(crate) struct Admission<'a>(&'a AtomicU64);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Enters, unless the gate is closed or paused.
    pub(crate) fn enter(&self) -> Result<Admission<'_>, Refused> {
        let previous = self.0.fetch_add(1, Ordering::AcqRel);
        let admission = Admission(&self.0);
        if previous & CLOSED != 0 {
            return Err(Refused::Closed);
        }
        if previous & PAUSED != 0 {
            return Err(Refused::Paused);
        }
        Ok(admission)
    }

    /// Refuses new submitters for good.
    pub(crate) fn close(&self) {
        self.0.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Refuses new submitters until `resume`.
    pub(crate) fn pause(&self) {
        self.0.fetch_or(PAUSED, Ordering::AcqRel);
    }

    /// Admits submitters again after `pause`.
    pub(crate) fn resume(&self) {
        self.0.fetch_and(!PAUSED, Ordering::AcqRel);
    }

    /// Whether no submitter is between admission and publish.
    pub(crate) fn empty(&self) -> bool {
        self.0.load(Ordering::Acquire) & SUBMITTERS == 0
    }
}
