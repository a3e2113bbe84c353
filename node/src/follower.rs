//! [`HotReplica`]: a follower's business-logic replica (ADR 0013, "The
//! node process"). A thread of its own applies the follower's journal, as
//! recovery would, but only below a bound its driver sets: the replication
//! commit point the follower has learned. A committed record is never cut
//! from any replica's log, so the replica never has to undo one. Outputs
//! are suppressed by construction: nothing is answered, it only rebuilds
//! state. On promotion [`HotReplica::take`] hands the state over as a
//! [`StartPoint`], and the engine replays only the records past it (the
//! uncommitted tail and the new epoch's `EpochStart`) instead of the whole
//! journal.
//!
//! No network code: the commit point comes from whoever drives replication
//! (`keel-cluster`), through [`HotReplica::advance`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use keel_core::StateMachine;
use keel_journal::{FsStorage, JournalTail};

use crate::node::StartPoint;
use crate::replay::Replayer;

/// How often the replica looks for a new bound when it has caught up.
const IDLE_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Shared {
    /// Apply records below this sequence (the commit point).
    limit: AtomicU64,
    /// Every record below this is applied.
    applied: AtomicU64,
    stop: AtomicBool,
    /// Why the replica stopped early (it then applies nothing more).
    failed: Mutex<Option<String>>,
}

/// A follower's state machine, kept current with the commit point on its
/// own thread.
pub struct HotReplica<S> {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Option<Replayer<S>>>>,
}

impl<S> std::fmt::Debug for HotReplica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotReplica")
            .field("limit", &self.shared.limit.load(Ordering::Relaxed))
            .field("applied", &self.shared.applied.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine + Send + 'static> HotReplica<S> {
    /// Starts applying the journal in `journal_dir` (read-only: the
    /// replication driver is its writer) onto `state_machine`, from
    /// sequence 0, with an idempotency window of `dedup_entries`.
    pub fn spawn(journal_dir: PathBuf, state_machine: S, dedup_entries: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keel-hot-replica".into())
            .spawn(move || {
                let mut replayer = Replayer::new(state_machine, dedup_entries);
                match follow(&journal_dir, &mut replayer, &inner) {
                    Ok(()) => Some(replayer),
                    Err(why) => {
                        *inner.failed.lock().expect("failure lock") = Some(why);
                        None
                    }
                }
            })
            .expect("spawn the hot replica thread");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Lets the replica apply every record below `commit_next` (a bound
    /// only moves forward).
    pub fn advance(&self, commit_next: u64) {
        self.shared.limit.fetch_max(commit_next, Ordering::AcqRel);
    }

    /// Every record below this sequence is applied: the replica's
    /// staleness is the commit point minus this.
    pub fn applied_next(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Why the replica stopped applying, if it did (a promotion then
    /// replays the journal in full).
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().expect("failure lock").clone()
    }

    /// Stops the thread and hands over its state: every command below the
    /// returned `sequence` applied, with the checksum of the record before
    /// it (the engine's recovery checks the journal still holds it). `Err`
    /// says why there is no usable state.
    pub fn take(mut self) -> Result<StartPoint<S>, String> {
        self.shared.stop.store(true, Ordering::Release);
        let thread = self.thread.take().expect("taken once");
        let replayer = match thread.join() {
            Ok(Some(replayer)) => replayer,
            Ok(None) => return Err(self.failure().unwrap_or_else(|| "stopped".into())),
            Err(_) => return Err("the hot replica thread panicked".into()),
        };
        let sequence = replayer.resume_point() + replayer.records();
        let last_record_checksum = replayer.last_record_checksum();
        let replayed = replayer.finish();
        Ok(StartPoint {
            state_machine: replayed.state_machine,
            dedup: replayed.dedup,
            sequence,
            snapshot: None,
            warnings: Vec::new(),
            last_record_checksum,
        })
    }
}

impl<S> Drop for HotReplica<S> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}

fn follow<S: StateMachine>(
    journal_dir: &std::path::Path,
    replayer: &mut Replayer<S>,
    shared: &Shared,
) -> Result<(), String> {
    let storage = FsStorage::open_read_only(journal_dir)
        .map_err(|e| format!("open {}: {e}", journal_dir.display()))?;
    let mut tail = JournalTail::new(&storage, 0);
    while !shared.stop.load(Ordering::Acquire) {
        let limit = shared.limit.load(Ordering::Acquire);
        let read = tail
            .poll(limit, &mut |record| replayer.apply(record))
            .map_err(|e| e.to_string())?;
        if let Some((expected, found)) = replayer.gap() {
            return Err(format!("journal gap: expected {expected}, found {found}"));
        }
        if read > 0 {
            // Applied up to the lookahead: the last record is held back
            // until the next one arrives or `finish`.
            shared
                .applied
                .store(tail.next_sequence().saturating_sub(1), Ordering::Release);
        } else {
            std::thread::sleep(IDLE_POLL);
        }
    }
    Ok(())
}
