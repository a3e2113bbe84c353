//! [`Node`]: the embedding API. A host builds a node from a [`NodeConfig`];
//! the node opens (and recovers) the journal in the data directory, replays
//! it into the state machine and the idempotency window in one scan, and
//! starts the engine after the last journaled sequence. The host then
//! submits from as many threads as it likes (`Node::submitter`, or for the
//! ledger a [`keel_ledger::LedgerClient`] per thread) and finally shuts the
//! node down, getting the state machine back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{
    CommandRef, ConfigError, Engine, Journaller, Replicator, StageError, StateMachine, StopReason,
    Stopped, Submitter, Validator,
};
use keel_journal::{FsStorage, IoMode, Journal, TornTail};
use keel_ledger::{Ledger, LedgerClient, LedgerValidator};

use keel_codecs::SnapshotCodec;
use keel_journal::SnapshotStore;

use crate::config::{ConfigFileError, NodeConfig};
use crate::replay::Replayer;
use crate::replicated::{CommitPoint, Replication};
use crate::snapshot;
use crate::snapshotter::{SnapshotPolicy, Snapshotter};

/// The journaller a node runs: the file-system journal, or none.
#[derive(Debug)]
pub enum NodeJournal {
    /// Durability `none`.
    None,
    /// An O_DIRECT journal in the data directory.
    Fs(Box<Journal<FsStorage>>),
    /// A replicated leader's journal: a batch is released once the
    /// replication commit point passed it (ADR 0013).
    Replicated(Box<Journal<FsStorage>>, Arc<CommitPoint>),
}

impl Journaller for NodeJournal {
    #[inline]
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError> {
        match self {
            NodeJournal::None => Ok(()),
            NodeJournal::Fs(journal) | NodeJournal::Replicated(journal, _) => {
                journal.append(command)
            }
        }
    }

    #[inline]
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        match self {
            NodeJournal::None => Ok(()),
            NodeJournal::Fs(journal) => journal.end_of_batch(last_sequence),
            NodeJournal::Replicated(journal, commit) => {
                // Synced here; released once committed by the replicator
                // stage, so the next batch's write overlaps this one's wait.
                journal.end_of_batch(last_sequence)?;
                commit.notify();
                Ok(())
            }
        }
    }

    fn times_every_batch(&self) -> bool {
        !matches!(self, NodeJournal::None)
    }
}

/// The replicator stage a node runs: none, or a replicated leader's wait
/// for the replication commit point (the BLP is gated on it, so it applies
/// and the publisher acknowledges only committed records; ADR 0013).
#[derive(Debug)]
pub enum NodeReplicator {
    /// Not replicated.
    None,
    /// Waits until the commit point passed each batch.
    Commit(Arc<CommitPoint>),
}

impl Replicator for NodeReplicator {
    #[inline]
    fn append(&mut self, _command: &CommandRef<'_>) -> Result<(), StageError> {
        Ok(())
    }

    #[inline]
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        match self {
            NodeReplicator::None => Ok(()),
            NodeReplicator::Commit(commit) => {
                commit.wait_past(last_sequence)?;
                Ok(())
            }
        }
    }

    fn times_every_batch(&self) -> bool {
        matches!(self, NodeReplicator::Commit(_))
    }
}

/// What start-up recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot started from (its file and the sequence it covers), if any.
    pub snapshot: Option<(std::path::PathBuf, u64)>,
    /// Newer snapshots that were damaged or unusable and were skipped.
    pub warnings: Vec<String>,
    /// Journal records replayed (after the snapshot, if any).
    pub records: u64,
    /// The sequence the engine starts at (the journal's next record).
    pub next_sequence: u64,
    /// Time to scan and replay them.
    pub elapsed: Duration,
    /// A torn tail cut at open (a crash mid-write), if any.
    pub truncated: Option<TornTail>,
    /// The state hash after replay.
    pub state_hash: u64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A configuration value is invalid (names the option).
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The engine refused its configuration (names the option).
    #[error("engine config: {0}")]
    Engine(#[from] ConfigError),
    /// The data directory cannot hold a journal (e.g. no direct I/O).
    #[error(transparent)]
    Storage(#[from] keel_journal::StorageError),
    /// The journal could not be opened: corruption is reported with its
    /// segment, offset and sequence, and nothing is written.
    #[error(transparent)]
    JournalOpen(#[from] keel_journal::OpenError),
    /// A replicated node needs a journal: `journal.durability` is `none`.
    #[error("a replicated node needs a journal, but journal.durability is none")]
    ReplicatedWithoutJournal,
    /// The snapshot directory could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] keel_journal::SnapshotError),
    /// The engine had stopped (fail-stop) before a clean shutdown.
    #[error("engine stopped: {0}")]
    Stopped(#[from] StopReason),
    /// A format setting differs from the one the journal was created with
    /// (replaying it with another would reach another state).
    #[error(
        "config option `{option}` = {configured}, but the journal in {dir} was created with {on_disk}; \
         format settings cannot change between restarts"
    )]
    FormatSetting {
        /// The option, as `section.key`.
        option: &'static str,
        /// The journal's value.
        on_disk: u64,
        /// The configured value.
        configured: u64,
        /// The journal directory.
        dir: std::path::PathBuf,
    },
    /// Start-up failed after snapshots were skipped: the warnings say why
    /// each was unusable (e.g. every snapshot damaged and the journal's head
    /// already deleted).
    #[error("{source}{}", warnings.iter().map(|w| format!("\n  after skipping: {w}")).collect::<String>())]
    AfterSkippedSnapshots {
        /// Why each snapshot was skipped.
        warnings: Vec<String>,
        /// The failure.
        source: Box<NodeError>,
    },
    /// The snapshot's last command is not the journal's record at that
    /// sequence: the snapshot was taken from another history (e.g. before
    /// the journal was restored from a backup and continued differently).
    #[error(
        "the snapshot at sequence {sequence} does not belong to this journal's history: it holds record checksum {recorded:016x}, the journal has {found:016x}"
    )]
    SnapshotNotInJournal {
        /// The snapshot's sequence.
        sequence: u64,
        /// The checksum the snapshot recorded for record `sequence - 1`.
        recorded: u64,
        /// The checksum of the journal's record there.
        found: u64,
    },
    /// The journal does not continue the snapshot (records missing between).
    #[error(
        "the journal does not continue the snapshot: expected sequence {expected}, found {found}"
    )]
    JournalGap {
        /// The sequence the snapshot needs next.
        expected: u64,
        /// The journal's next record.
        found: u64,
    },
    /// The snapshot covers commands the journal does not hold: the journal
    /// lost acknowledged records, or belongs to another node.
    #[error("snapshot covers sequences below {snapshot} but the journal ends at {journal_next}")]
    SnapshotAhead {
        /// The snapshot's sequence.
        snapshot: u64,
        /// The journal's next sequence.
        journal_next: u64,
    },
}

/// Refuses ledger capacities or an idempotency window other than the ones
/// the journal was created with, naming the option (before the journal's
/// own, byte-level check).
fn check_format_settings(storage: &FsStorage, config: &NodeConfig) -> Result<(), NodeError> {
    // None: a new journal, none recorded yet (this start records them), or
    // a damaged manifest (the journal's open reports it).
    let Some(on_disk) = crate::config::recorded_settings(storage) else {
        return Ok(());
    };
    match on_disk.difference(&config.journal_settings()) {
        None => Ok(()),
        Some((option, on_disk, configured)) => Err(NodeError::FormatSetting {
            option,
            on_disk,
            configured,
            dir: config.journal.data_dir.clone(),
        }),
    }
}

/// Where recovery starts: a fresh state, or one restored from a snapshot.
#[derive(Debug)]
pub struct StartPoint<S> {
    /// The state machine.
    pub state_machine: S,
    /// The idempotency window (must have `engine.dedup_entries` capacity).
    pub dedup: keel_core::DedupTable,
    /// Every command below this sequence is in the state already.
    pub sequence: u64,
    /// The snapshot it came from, if any.
    pub snapshot: Option<std::path::PathBuf>,
    /// Warnings about skipped snapshots.
    pub warnings: Vec<String>,
    /// The checksum of the journal record at `sequence - 1` the snapshot
    /// recorded (0: none): recovery refuses a journal holding another one.
    pub last_record_checksum: u64,
}

impl<S> StartPoint<S> {
    /// Nothing applied yet: `state_machine` as built, an empty idempotency
    /// window of `dedup_entries` (the node's `engine.dedup_entries`).
    pub fn fresh(state_machine: S, dedup_entries: usize) -> Self {
        Self {
            state_machine,
            dedup: keel_core::DedupTable::with_capacity(dedup_entries),
            sequence: 0,
            snapshot: None,
            warnings: Vec::new(),
            last_record_checksum: 0,
        }
    }
}

/// A running engine with its journal.
#[derive(Debug)]
pub struct Node<S> {
    engine: Engine<S, NodeJournal, NodeReplicator>,
    recovery: Recovery,
    /// The journal's durable bound (None without a journal).
    status: Option<keel_journal::JournalStatus>,
    /// The shadow-replica snapshotter, when `[snapshot] every_*` is set.
    snapshotter: Option<Snapshotter>,
}

/// The reference node: the ledger.
pub type LedgerNode = Node<Ledger>;

impl<S: StateMachine> Node<S> {
    /// Recovers by replaying the whole journal into `state_machine`, and
    /// starts. `on_replayed(records)` is called every 65,536 replayed
    /// records (for a progress bar).
    pub fn start(
        config: &NodeConfig,
        state_machine: S,
        validator: impl Validator,
        on_replayed: &mut dyn FnMut(u64),
    ) -> Result<Self, NodeError> {
        let start = StartPoint::fresh(state_machine, config.engine.dedup_entries);
        Self::start_from(config, start, validator, on_replayed)
    }

    /// Recovers from `start` (e.g. a restored snapshot) plus the journal's
    /// records from `start.sequence` on, and starts.
    pub fn start_from(
        config: &NodeConfig,
        start: StartPoint<S>,
        validator: impl Validator,
        on_replayed: &mut dyn FnMut(u64),
    ) -> Result<Self, NodeError> {
        Self::start_inner(config, start, validator, on_replayed, None)
    }

    /// As [`Node::start_from`], as a replicated shard's leader: records
    /// carry `replication.epoch`, every write goes to
    /// `replication.observer`, and a batch is acknowledged (and applied)
    /// only once `replication.commit` has passed it. `start` is a fresh
    /// state ([`StartPoint::fresh`]: a full replay) or a follower's hot
    /// replica ([`crate::follower::HotReplica::take`]: only the records
    /// past it are replayed). Needs a journal (durability is not `none`).
    pub fn start_replicated(
        config: &NodeConfig,
        start: StartPoint<S>,
        validator: impl Validator,
        on_replayed: &mut dyn FnMut(u64),
        replication: Replication,
    ) -> Result<Self, NodeError> {
        Self::start_inner(config, start, validator, on_replayed, Some(replication))
    }

    fn start_inner(
        config: &NodeConfig,
        start: StartPoint<S>,
        validator: impl Validator,
        on_replayed: &mut dyn FnMut(u64),
        replication: Option<Replication>,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let started = Instant::now();
        let mut engine_config = config.engine_config();
        let replicator = match &replication {
            None => NodeReplicator::None,
            Some(replication) => {
                // Paired would hold the journaller while its lane's
                // replicator waits on the commit point.
                if engine_config.fusion == keel_core::Fusion::Paired {
                    engine_config.fusion = keel_core::Fusion::Gated;
                }
                NodeReplicator::Commit(Arc::clone(&replication.commit))
            }
        };
        let from = start.sequence;
        let mut replayer = Replayer::resume(start.state_machine, start.dedup, from)
            .with_last_record_checksum(start.last_record_checksum);
        // The record before `from`, read to check the snapshot belongs to
        // this history (None: from 0, or its segment was deleted).
        let mut before_from: Option<u64> = None;
        let (journal, truncated) = match config.journal_config() {
            None if replication.is_some() => return Err(NodeError::ReplicatedWithoutJournal),
            None => (NodeJournal::None, None),
            Some(mut journal_config) => {
                if let Some(replication) = &replication {
                    journal_config.epoch = replication.epoch;
                }
                let mode =
                    IoMode::for_policy(journal_config.sync, config.journal.dev_allow_buffered_io);
                let storage = FsStorage::open(&config.journal.data_dir, mode)?;
                check_format_settings(&storage, config)?;
                // From the record before `from`, to check the snapshot's binding.
                let scan_from = from.saturating_sub(1);
                let (journal, open) = Journal::open_replaying_from(
                    storage,
                    journal_config,
                    scan_from,
                    &mut |record| {
                        if from > 0 && record.header.sequence == from - 1 {
                            before_from = Some(record.checksum());
                        }
                        replayer.apply(record);
                        if replayer.records().is_multiple_of(1 << 16) {
                            on_replayed(replayer.records());
                        }
                    },
                )?;
                let journal = match replication {
                    None => NodeJournal::Fs(Box::new(journal)),
                    Some(Replication {
                        observer, commit, ..
                    }) => {
                        let mut journal = Box::new(journal);
                        journal.set_observer(observer);
                        NodeJournal::Replicated(journal, commit)
                    }
                };
                (journal, open.truncated)
            }
        };
        if let Some((expected, found)) = replayer.gap() {
            return Err(NodeError::JournalGap { expected, found });
        }
        let recorded = start.last_record_checksum;
        if let Some(found) = before_from.filter(|&c| recorded != 0 && c != recorded) {
            return Err(NodeError::SnapshotNotInJournal {
                sequence: from,
                recorded,
                found,
            });
        }
        let replayed = replayer.finish();
        let first_sequence = match &journal {
            NodeJournal::Fs(journal) | NodeJournal::Replicated(journal, _) => {
                journal.next_sequence()
            }
            NodeJournal::None => from,
        };
        let status = match &journal {
            NodeJournal::Fs(journal) | NodeJournal::Replicated(journal, _) => {
                Some(journal.status())
            }
            NodeJournal::None => None,
        };
        if first_sequence < from {
            return Err(NodeError::SnapshotAhead {
                snapshot: from,
                journal_next: first_sequence,
            });
        }
        let recovery = Recovery {
            snapshot: start.snapshot.map(|path| (path, from)),
            warnings: start.warnings,
            next_sequence: first_sequence,
            records: replayed.records,
            elapsed: started.elapsed(),
            truncated,
            state_hash: replayed.state_machine.state_hash(),
        };
        let engine = Engine::builder(
            keel_core::EngineConfig {
                first_sequence,
                ..engine_config
            },
            replayed.state_machine,
        )
        .journaller(journal)
        .replicator(replicator)
        .dedup(replayed.dedup)
        .validator(validator)
        .start()?;
        Ok(Self {
            engine,
            recovery,
            status,
            snapshotter: None,
        })
    }

    /// A submission handle for one host thread.
    pub fn submitter(&self) -> Submitter {
        self.engine.submitter()
    }

    /// The engine (metrics, pause/resume, progress counters).
    pub fn engine(&self) -> &Engine<S, NodeJournal, NodeReplicator> {
        &self.engine
    }

    /// What start-up recovered.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The journal's durable watermark (None without a journal).
    pub fn journal_status(&self) -> Option<keel_journal::JournalStatus> {
        self.status.clone()
    }

    /// The shadow-replica snapshotter, if one runs.
    pub fn snapshotter(&self) -> Option<&Snapshotter> {
        self.snapshotter.as_ref()
    }

    /// Drains every accepted command and stops (the snapshotter too);
    /// returns the state machine.
    ///
    /// Under `async` and `os` the journal is synced at the end, so a clean
    /// stop loses nothing to a later power cut. A journal waiting for disk
    /// space is given [`SHUTDOWN_SPACE_WAIT`] to get it; then it gives up, the
    /// engine stops (commands not yet journaled fail, none is acknowledged)
    /// and this returns the stop reason instead of hanging.
    pub fn shutdown(
        mut self,
    ) -> Result<Stopped<S, NodeJournal, NodeReplicator, keel_core::NoopSink>, StopReason> {
        let snapshotter = self.snapshotter.take();
        let watchdog = self.status.clone().map(SpaceWatchdog::start);
        let stopped = self.engine.shutdown();
        drop(watchdog);
        let stopped = stopped.and_then(|mut stopped| {
            if let NodeJournal::Fs(journal) | NodeJournal::Replicated(journal, _) =
                &mut stopped.journaller
            {
                let next = journal.next_sequence();
                journal.sync_all().map_err(|e| StopReason::StageFailed {
                    stage: keel_core::StageName::Journaller,
                    sequence: next.saturating_sub(1),
                    source: std::sync::Arc::new(e),
                })?;
            }
            Ok(stopped)
        });
        if let Some(snapshotter) = snapshotter {
            if let Err(e) = snapshotter.stop() {
                eprintln!("WARNING: snapshotter: {e}");
            }
        }
        stopped
    }
}

/// How long a shutdown waits for disk space before giving up.
pub const SHUTDOWN_SPACE_WAIT: Duration = Duration::from_secs(5);

/// During a shutdown: tells a journal stuck waiting for disk space to give
/// up once it has waited [`SHUTDOWN_SPACE_WAIT`]. Stops when dropped.
struct SpaceWatchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpaceWatchdog {
    fn start(status: keel_journal::JournalStatus) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                if status.out_of_space() && started.elapsed() >= SHUTDOWN_SPACE_WAIT {
                    status.abandon_waits();
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for SpaceWatchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl<S: StateMachine + SnapshotCodec> Node<S> {
    /// Recovers from the newest usable snapshot in the configured directory
    /// (falling back past damaged ones, with warnings) plus the journal's
    /// tail, or from `fresh()` and the whole journal; and starts.
    ///
    /// With `[snapshot] every_commands` or `every_seconds` set (and a
    /// journal), a [`Snapshotter`] then writes snapshots while serving.
    pub fn start_with_snapshots(
        config: &NodeConfig,
        snapshot_config: &S::Config,
        fresh: impl Fn() -> S + Clone + Send + 'static,
        validator: impl Validator + Clone,
        on_replayed: &mut dyn FnMut(u64),
    ) -> Result<Self, NodeError>
    where
        S::Config: Clone + Send + 'static,
    {
        config.validate()?;
        let started = Instant::now();
        let dedup_entries = config.engine.dedup_entries;
        let store = SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep)?;
        let journal_id = snapshot::journal_id_in(&config.journal.data_dir);
        let mut warnings = Vec::new();
        let mut below = u64::MAX;
        // Newest usable snapshot first; one the journal's history disowns
        // (SnapshotNotInJournal) is skipped like a damaged one.
        let mut node = loop {
            let (restored, skipped) = snapshot::load_newest::<S>(
                &store,
                snapshot_config,
                dedup_entries,
                below,
                journal_id,
            )?;
            warnings.extend(skipped);
            let start = match restored {
                Some(r) => StartPoint {
                    state_machine: r.state_machine,
                    dedup: r.dedup,
                    sequence: r.sequence,
                    snapshot: Some(r.path),
                    warnings: warnings.clone(),
                    last_record_checksum: r.last_record_checksum,
                },
                None => StartPoint {
                    warnings: warnings.clone(),
                    ..StartPoint::fresh(fresh(), dedup_entries)
                },
            };
            let path = start.snapshot.clone();
            match Self::start_from(config, start, validator.clone(), on_replayed) {
                Ok(node) => break node,
                Err(e @ NodeError::SnapshotNotInJournal { sequence, .. }) => {
                    let path = path.expect("only a snapshot is checked");
                    warnings.push(format!("snapshot {} skipped: {e}", path.display()));
                    below = sequence.saturating_sub(1);
                }
                Err(e) if warnings.is_empty() => return Err(e),
                Err(e) => {
                    return Err(NodeError::AfterSkippedSnapshots {
                        warnings,
                        source: Box::new(e),
                    })
                }
            }
        };
        let loading = started.elapsed();
        node.recovery.elapsed += loading;
        if let (Some(policy), Some(status)) = (SnapshotPolicy::from_config(config), &node.status) {
            node.snapshotter = Some(Snapshotter::spawn::<S>(
                config,
                snapshot_config.clone(),
                fresh,
                status.clone(),
                policy,
            ));
        }
        Ok(node)
    }

    /// Shuts down and writes a snapshot of the final state (covering every
    /// command the engine processed); returns what shutdown returns and the
    /// snapshot's path. Durability `none` writes no snapshot (nothing to
    /// continue from).
    #[allow(clippy::type_complexity)]
    pub fn shutdown_with_snapshot(
        self,
        config: &NodeConfig,
    ) -> Result<
        (
            Stopped<S, NodeJournal, NodeReplicator, keel_core::NoopSink>,
            Option<std::path::PathBuf>,
        ),
        NodeError,
    > {
        let stopped = self.shutdown()?;
        let (NodeJournal::Fs(journal) | NodeJournal::Replicated(journal, _)) = &stopped.journaller
        else {
            return Ok((stopped, None));
        };
        let store = SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep)?;
        let binding = snapshot::Binding {
            journal_id: journal.manifest().journal_id,
            last_record_checksum: journal.last_record_checksum(),
        };
        let path = snapshot::write(
            &store,
            binding,
            journal.next_sequence(),
            &stopped.state_machine,
            &stopped.dedup,
        )?;
        Ok((stopped, Some(path)))
    }
}

impl Node<Ledger> {
    /// Starts the ledger node described by `config` (newest snapshot plus
    /// the journal's tail, or the whole journal).
    pub fn start_ledger(config: &NodeConfig) -> Result<Self, NodeError> {
        let ledger_config = config.ledger_config();
        Self::start_with_snapshots(
            config,
            &ledger_config,
            move || Ledger::new(ledger_config),
            LedgerValidator,
            &mut |_| {},
        )
    }

    /// A typed ledger client for one host thread.
    pub fn client(&self) -> LedgerClient {
        LedgerClient::new(self.submitter())
    }
}
