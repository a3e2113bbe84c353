//! A replicated leader's journaller (ADR 0013, "The data path"): the
//! journal's writes go to the replication thread through an observer, and
//! the replicator stage releases a batch to the BLP only once the
//! replication commit point has passed it. Shipping overlaps the local
//! sync (the observer sees a write before it is synced), and the wait
//! overlaps the journaller's next write.
//!
//! The commit point is published by whoever drives the replication core
//! (`keel-cluster`'s node process); this crate knows only the two words
//! that join them, so an embedding host still needs no network code.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use keel_journal::Observer;

/// Spins before the wait yields, then yields before it sleeps.
const SPINS: u32 = 64;
const YIELDS: u32 = 256;
/// A sleeping wait re-checks this often.
const NAP: Duration = Duration::from_micros(20);

/// The replication commit point, shared by the replicator stage that waits on it
/// and the replication driver that advances it.
pub struct CommitPoint {
    /// Every journal sequence below this is committed.
    next: AtomicU64,
    /// Set when this node may no longer commit (fenced, resigned, shutting
    /// down): a waiting replicator stage fails its batch.
    lost: AtomicBool,
    /// Called after every local write and sync (wakes the driver).
    notify: Box<dyn Fn() + Send + Sync>,
    /// Nanoseconds the replicator stage waited per batch for the commit
    /// point (the local write and sync run meanwhile, on the journaller):
    /// what replication adds to an acknowledgement, at most. Recorded with
    /// `try_lock` (a batch that meets a reader is not recorded), so a
    /// metrics scrape never delays the pipeline.
    waits: Mutex<Histogram<u64>>,
}

impl std::fmt::Debug for CommitPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitPoint")
            .field("next", &self.next.load(Ordering::Relaxed))
            .field("lost", &self.lost.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a replicated batch was not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sequence {sequence} was not committed: this node lost its leadership (or is stopping)")]
pub struct LeadershipLost {
    /// The batch's last sequence.
    pub sequence: u64,
}

impl CommitPoint {
    /// A commit point at `next`; `notify` runs on the journaller thread
    /// after each batch is written and synced locally.
    pub fn new(next: u64, notify: Box<dyn Fn() + Send + Sync>) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(next),
            lost: AtomicBool::new(false),
            notify,
            waits: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds"),
            ),
        })
    }

    /// A copy of the commit-wait histogram (nanoseconds per batch).
    pub fn waits(&self) -> Histogram<u64> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every journal sequence below `next` is committed.
    pub fn advance(&self, next: u64) {
        self.next.fetch_max(next, Ordering::Release);
    }

    /// One past the last committed journal sequence.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Nothing more commits here: a waiting batch fails.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Whether [`CommitPoint::lose`] was called.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Waits until `sequence` is committed (spin, yield, then nap: the
    /// machine may have fewer cores than pipeline threads), and records how
    /// long that took.
    pub fn wait_past(&self, sequence: u64) -> Result<(), LeadershipLost> {
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            if self.next() > sequence {
                if let Ok(mut waits) = self.waits.try_lock() {
                    waits.saturating_record(started.elapsed().as_nanos() as u64);
                }
                return Ok(());
            }
            if self.is_lost() {
                return Err(LeadershipLost { sequence });
            }
            round = round.saturating_add(1);
            if round < SPINS {
                std::hint::spin_loop();
            } else if round < SPINS + YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(NAP);
            }
        }
    }

    pub(crate) fn notify(&self) {
        (self.notify)()
    }
}

/// What a node needs to run as a replicated leader.
pub struct Replication {
    /// The epoch the leader writes in (every record carries it).
    pub epoch: u32,
    /// Sees every journal write (the driver cuts it into entries).
    pub observer: Observer,
    /// Gates every batch.
    pub commit: Arc<CommitPoint>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("epoch", &self.epoch)
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_once_the_point_passes_and_fails_once_lost() {
        let point = CommitPoint::new(5, Box::new(|| {}));
        assert_eq!(point.wait_past(4), Ok(()));
        let waiter = {
            let point = Arc::clone(&point);
            std::thread::spawn(move || point.wait_past(9))
        };
        point.advance(10);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        // The point never moves back.
        point.advance(3);
        assert_eq!(point.next(), 10);
        let waiter = {
            let point = Arc::clone(&point);
            std::thread::spawn(move || point.wait_past(20))
        };
        point.lose();
        assert_eq!(waiter.join().unwrap(), Err(LeadershipLost { sequence: 20 }));
        // The two waits that returned were timed; the lost one was not.
        assert_eq!(point.waits().len(), 2);
    }
}
