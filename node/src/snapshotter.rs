//! [`Snapshotter`]: periodic and on-demand snapshots without stopping the
//! business-logic processor, by a shadow replica.
//!
//! The BLP's state lives on the BLP thread and is mutated in place; copying
//! it (1 M accounts, millions of transfers) would stall the BLP for
//! milliseconds, and a copy-on-write layout would tax every command. Instead
//! a thread of its own rebuilds a second copy of the state from the same
//! journal — the newest snapshot plus a tail that follows the durable prefix
//! (`JournalStatus::durable_next`) — and encodes *that* copy whenever a
//! snapshot is due (every N commands, every T seconds, or on request). The
//! BLP never waits for it: its stall is zero by construction; the price is a
//! second copy of the state in memory and the replay CPU (measured in
//! `docs/performance.md`). Because the replica is built by the same replay
//! code as recovery, every snapshot it writes is also a continuous check
//! that the journal replays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_codecs::SnapshotCodec;
use keel_core::StateMachine;
use keel_journal::{FsStorage, JournalStatus, JournalTail, SnapshotStore};

use crate::config::NodeConfig;
use crate::replay::Replayer;
use crate::snapshot;

/// When the snapshotter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After this many new commands (0: never by count).
    pub every_commands: u64,
    /// After this long with new commands (None: never by time).
    pub every: Option<Duration>,
}

impl SnapshotPolicy {
    /// The policy of `[snapshot]`; `None` when neither trigger is set.
    pub fn from_config(config: &NodeConfig) -> Option<Self> {
        let s = &config.snapshot;
        let every = (s.every_seconds > 0).then(|| Duration::from_secs(s.every_seconds));
        (s.every_commands > 0 || every.is_some()).then_some(Self {
            every_commands: s.every_commands,
            every,
        })
    }
}

/// Signals shared with the snapshotter thread.
#[derive(Debug, Default)]
struct Signals {
    stop: AtomicBool,
    requested: AtomicBool,
    written: AtomicU64,
    /// Sequence covered by the newest snapshot written.
    covered: AtomicU64,
    /// When it was written (ms since the Unix epoch; 0: none yet).
    written_at_unix_ms: AtomicU64,
}

/// A snapshotter's progress, readable from any thread (for metrics).
#[derive(Debug, Clone)]
pub struct SnapshotProgress(Arc<Signals>);

impl SnapshotProgress {
    /// Snapshots written so far.
    pub fn written(&self) -> u64 {
        self.0.written.load(Ordering::Acquire)
    }

    /// The sequence the newest written snapshot covers (0: none yet).
    pub fn covered(&self) -> u64 {
        self.0.covered.load(Ordering::Acquire)
    }

    /// When the newest snapshot was written, ms since the Unix epoch (0: none yet).
    pub fn written_at_unix_ms(&self) -> u64 {
        self.0.written_at_unix_ms.load(Ordering::Acquire)
    }
}

/// A running shadow-replica snapshotter.
#[derive(Debug)]
pub struct Snapshotter {
    signals: Arc<Signals>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// How often the snapshotter looks for new durable records when idle.
const IDLE_POLL: Duration = Duration::from_millis(5);

impl Snapshotter {
    /// Starts the thread: restore the newest snapshot (or `fresh()`), then
    /// follow the journal in `config.journal.data_dir` below `status`'s
    /// durable bound, writing snapshots per `policy`.
    pub fn spawn<S>(
        config: &NodeConfig,
        snapshot_config: S::Config,
        fresh: impl FnOnce() -> S + Send + 'static,
        status: JournalStatus,
        policy: SnapshotPolicy,
    ) -> Self
    where
        S: StateMachine + SnapshotCodec,
        S::Config: Send + 'static,
    {
        let signals = Arc::new(Signals::default());
        let config = config.clone();
        let shared = Arc::clone(&signals);
        let thread = std::thread::Builder::new()
            .name("keel-snapshotter".into())
            .spawn(move || {
                run::<S>(&config, &snapshot_config, fresh, &status, policy, &shared)
                    .map_err(|e| e.to_string())
            })
            .expect("spawn the snapshotter thread");
        Self {
            signals,
            thread: Some(thread),
        }
    }

    /// Asks for a snapshot of everything durable now (written within a poll).
    pub fn request(&self) {
        self.signals.requested.store(true, Ordering::Release);
    }

    /// Snapshots written so far.
    pub fn written(&self) -> u64 {
        self.signals.written.load(Ordering::Acquire)
    }

    /// A handle on its progress that outlives this borrow (for metrics).
    pub fn progress(&self) -> SnapshotProgress {
        SnapshotProgress(Arc::clone(&self.signals))
    }

    /// The sequence the newest written snapshot covers (0: none yet).
    pub fn covered(&self) -> u64 {
        self.signals.covered.load(Ordering::Acquire)
    }

    /// Stops the thread after it has read the durable records; returns its
    /// error if it failed.
    pub fn stop(mut self) -> Result<(), String> {
        self.signals.stop.store(true, Ordering::Release);
        match self.thread.take().expect("joined once").join() {
            Ok(result) => result,
            Err(_) => Err("the snapshotter thread panicked".into()),
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.signals.stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}

fn run<S: StateMachine + SnapshotCodec>(
    config: &NodeConfig,
    snapshot_config: &S::Config,
    fresh: impl FnOnce() -> S,
    status: &JournalStatus,
    policy: SnapshotPolicy,
    signals: &Signals,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep)?;
    let dedup_entries = config.engine.dedup_entries;
    let journal_id = snapshot::journal_id_in(&config.journal.data_dir);
    let (restored, _warnings) =
        snapshot::load_newest::<S>(&store, snapshot_config, dedup_entries, u64::MAX, journal_id)?;
    let mut replayer = match restored {
        Some(r) => Replayer::resume(r.state_machine, r.dedup, r.sequence)
            .with_last_record_checksum(r.last_record_checksum),
        None => Replayer::new(fresh(), dedup_entries),
    };
    release_covered(&store, status)?;
    let storage = FsStorage::open_read_only(&config.journal.data_dir)?;
    let mut tail = JournalTail::new(&storage, replayer_from(&replayer));
    let mut since = 0u64;
    let mut last = Instant::now();
    loop {
        let stopping = signals.stop.load(Ordering::Acquire);
        // Read no further than the next `every_commands` boundary, so a
        // snapshot falls every N commands however much one poll could read.
        let mut limit = status.durable_next();
        if policy.every_commands > 0 {
            let due_at = tail.next_sequence() + policy.every_commands.saturating_sub(since);
            limit = limit.min(due_at);
        }
        let read = tail.poll(limit, &mut |r| replayer.apply(r))?;
        if let Some((expected, found)) = replayer.gap() {
            return Err(format!("journal gap: expected {expected}, found {found}").into());
        }
        since += read;
        let due = (policy.every_commands > 0 && since >= policy.every_commands)
            || policy
                .every
                .is_some_and(|d| since > 0 && last.elapsed() >= d)
            || signals.requested.swap(false, Ordering::AcqRel);
        if due {
            replayer.flush();
            let sequence = tail.next_sequence();
            let binding = snapshot::Binding {
                journal_id: journal_id.unwrap_or(0),
                last_record_checksum: replayer.last_record_checksum(),
            };
            snapshot::write(
                &store,
                binding,
                sequence,
                replayer.state_machine(),
                replayer.dedup(),
            )?;
            signals.covered.store(sequence, Ordering::Release);
            release_covered(&store, status)?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            signals.written_at_unix_ms.store(now_ms, Ordering::Release);
            signals.written.fetch_add(1, Ordering::AcqRel);
            since = 0;
            last = Instant::now();
        }
        if stopping {
            return Ok(());
        }
        if read == 0 {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

/// Tells the journal that records below the oldest kept snapshot are
/// covered (deleted at its next roll under `Retention::CoveredBySnapshots`;
/// ignored otherwise). The oldest, not the newest: a damaged newest
/// snapshot falls back to an older one, whose tail must still exist.
fn release_covered(
    store: &SnapshotStore,
    status: &JournalStatus,
) -> Result<(), keel_journal::SnapshotError> {
    if let Some((oldest, _)) = store.list()?.last() {
        status.release_below(*oldest);
    }
    Ok(())
}

fn replayer_from<S: StateMachine>(replayer: &Replayer<S>) -> u64 {
    replayer.resume_point()
}
