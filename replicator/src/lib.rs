//! The replicator binding (ADR 0013, "The data path"): [`ReplicaDriver`]
//! drives the sans-I/O [`keel_replication::Replica`] from a real journal.
//!
//! - On a leader, the journal's own writes (`Journal::set_observer`) are cut
//!   into one entry per record ([`chunk`]) and proposed; the core's `Ship`
//!   actions are answered from those bytes, rounded up to whole writes, so a
//!   follower only ever writes what its leader wrote, where it wrote it.
//! - On a follower, shipped entries are written with `Journal::write_shipped`
//!   at the leader's segment and offset, segment rolls included: the two
//!   journals are byte-identical (checked by the tests with `cmp`).
//! - A new leader's `EpochStart` is a real journal record of the
//!   engine-reserved type [`keel_core::EPOCH_START`] (replay skips it).
//! - The accepted epoch and the incarnation are persisted in a state file
//!   (tmp → fsync → rename → fsync dir) before the next action runs.
//!
//! Core sequences are journal sequences + 1 (the core counts from 1).
//! What the driver does not do yet is listed in ADR 0013 ("Not yet"): the
//! transport, the engine's replicator stage, and reading entries a
//! follower lacks back from disk (the driver keeps the entries it has seen
//! since it opened).

#![forbid(unsafe_code)]

pub mod chunk;
mod held;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keel_core::{CommandHeader, CommandRef, Journaller, EPOCH_START};
use keel_journal::{
    cut_from, FsStorage, IoMode, Journal, JournalConfig, JournalStatus, Observer, OpenError,
    ShipError, Written,
};
use keel_replication::{
    Action, CasOutcome, ConfigProposal, Epoch, EpochLog, Incarnation, Message, NodeId, Peer,
    ProposeError, Replica, Seq, ShardConfig, Timing,
};

use crate::chunk::{Chunk, ChunkError, Chunker};
use crate::held::Held;
pub use crate::state::{ReplicaState, StateError};

/// Why the driver stopped (fail-stop: the node restarts in a new incarnation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The journal could not be opened or reopened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The data directory cannot hold a journal.
    #[error(transparent)]
    Storage(#[from] keel_journal::StorageError),
    /// A local write or sync failed.
    #[error("journal: {0}")]
    Journal(#[from] keel_core::StageError),
    /// A shipped write did not continue this journal.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// An entry or a leader's write did not decode.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Cutting a divergent suffix failed.
    #[error(transparent)]
    Cut(#[from] keel_journal::CutError),
    /// The replica's state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The journal and the core disagree on a sequence (a bug, or a journal
    /// written behind the driver's back).
    #[error("the journal wrote sequence {journal} where the replication core expected {core}")]
    Diverged {
        /// The journal's sequence (core numbering).
        journal: Seq,
        /// The core's.
        core: Seq,
    },
    /// A local write could not be proposed (this replica is not leading,
    /// or too few replicas are in sync): it is written but never
    /// committed here; a later leader's log decides whether it stays.
    #[error("journal sequence {sequence} was written but not proposed: {source}")]
    NotProposed {
        /// The record's sequence (core numbering).
        sequence: Seq,
        /// Why the core refused it.
        source: ProposeError,
    },
    /// This replica handed its journal to the engine as leader and is now
    /// asked to act as a follower (sealed, cut or written to): it must
    /// restart, in a new incarnation, as a follower.
    #[error("the leader was deposed (it was asked to {wanted} a journal the engine owns)")]
    Deposed {
        /// What the core asked for.
        wanted: &'static str,
    },
    /// A segment file could not be read (to serve followers from it).
    #[error("reading {path}: {source}")]
    ReadSegment {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A leader asked for an entry the driver no longer holds.
    #[error("entry {seq} is neither in memory nor in a sealed segment file")]
    NotHeld {
        /// The entry.
        seq: Seq,
    },
}

/// What a driver step produced for the outside world.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to send.
    pub messages: Vec<(Peer, Message)>,
    /// Configuration changes to make in etcd by compare-and-swap; report
    /// each with [`ReplicaDriver::on_config_result`].
    pub proposals: Vec<ConfigProposal>,
    /// Set when the replica resigned: put this incarnation in its etcd key.
    pub resigned: Option<Incarnation>,
}

/// Where a driver keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The journal directory.
    pub journal: PathBuf,
    /// The replica's state file (accepted epoch, incarnation).
    pub state: PathBuf,
    /// Where cut divergent records are kept for audit.
    pub divergent: PathBuf,
}

type Observed = Arc<Mutex<Vec<Chunk>>>;

/// Wakes whoever drives the replica after a local write was observed.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One replica: the core, its journal and what joins them.
pub struct ReplicaDriver {
    replica: Replica,
    journal: Option<Journal<FsStorage>>,
    /// Set once the journal was handed to the engine (a leader's): its
    /// durable bound.
    engine_journal: Option<JournalStatus>,
    released: bool,
    config: JournalConfig,
    mode: IoMode,
    paths: Paths,
    block: u64,
    /// Entries to ship: the active segment's, in memory; older ones read
    /// back from their sealed segment file.
    held: Held,
    /// Cut from the leader's own writes, not yet proposed.
    observed: Observed,
    observe_error: Arc<Mutex<Option<ChunkError>>>,
    /// A follower's record bytes not yet ending a block: (segment, offset, bytes).
    pending: Option<(u64, u64, Vec<u8>)>,
    state: ReplicaState,
    commit: Seq,
}

impl std::fmt::Debug for ReplicaDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaDriver")
            .field("id", &self.replica.id())
            .field("role", &self.replica.role())
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

impl ReplicaDriver {
    /// Opens (and recovers) the journal at `paths.journal`, reads the
    /// state file, bumps and persists the incarnation (a restarted replica
    /// never resumes an old epoch as leader), and rebuilds the core's epoch
    /// log from the journal's records.
    pub fn open(
        id: NodeId,
        timing: Timing,
        paths: Paths,
        config: JournalConfig,
        mode: IoMode,
    ) -> Result<Self, DriverError> {
        let mut state = ReplicaState::load(&paths.state)?;
        state.incarnation += 1;
        state.store(&paths.state)?;
        let (journal, log) = open_journal(&paths.journal, &config, mode)?;
        let held = Held::open(
            &paths.journal,
            journal.manifest().block_size as usize,
            journal.segment_id(),
            journal.next_sequence(),
        )?;
        let durable = journal.status().durable_next();
        let block = u64::from(journal.manifest().block_size);
        let accepted = state.accepted_epoch.max(log.last_epoch());
        let replica = Replica::new(id, state.incarnation, timing, accepted, log, durable);
        let mut driver = Self {
            replica,
            journal: Some(journal),
            engine_journal: None,
            released: false,
            config,
            mode,
            paths,
            block,
            held,
            observed: Arc::default(),
            observe_error: Arc::default(),
            pending: None,
            state,
            commit: 0,
        };
        driver.install_observer();
        Ok(driver)
    }

    fn install_observer(&mut self) {
        let observer = self.observer(Arc::new(|| {}));
        self.j().set_observer(observer);
    }

    /// An observer for a journal whose writes this driver proposes: it
    /// cuts each write into entries and calls `wake`.
    pub fn observer(&self, wake: Wake) -> Observer {
        let observed = Arc::clone(&self.observed);
        let error = Arc::clone(&self.observe_error);
        let mut chunker = Chunker::new();
        Box::new(move |w: Written<'_>| {
            {
                let mut out = observed.lock().expect("observer lock");
                if let Err(e) = chunker.split(w, &mut out) {
                    error.lock().expect("observer lock").get_or_insert(e);
                }
            }
            wake();
        })
    }

    /// Closes the journal so the engine can open it (a leader, after its
    /// `EpochStart` is written): from now on the driver proposes what the
    /// engine's journal writes (install [`ReplicaDriver::observer`] on it)
    /// and reads its durability from [`ReplicaDriver::attach`]. Anything
    /// that needs the journal (a seal, a cut, a follower write) is then
    /// [`DriverError::Deposed`].
    pub fn release_journal(&mut self) {
        self.journal = None;
        self.released = true;
    }

    /// The durable bound of the engine's journal (after
    /// [`ReplicaDriver::release_journal`]).
    pub fn attach(&mut self, status: JournalStatus) {
        self.engine_journal = Some(status);
    }

    /// The epoch records are written in (a new leader's, after its
    /// `EpochStart`).
    pub fn writing_epoch(&self) -> u32 {
        self.config.epoch
    }

    /// The local journal's durable bound (journal numbering).
    fn durable(&self) -> u64 {
        match (&self.journal, &self.engine_journal) {
            (Some(journal), _) => journal.status().durable_next(),
            (None, Some(status)) => status.durable_next(),
            (None, None) => 0,
        }
    }

    /// The local journal, unless the engine owns it.
    fn local(&mut self, wanted: &'static str) -> Result<&mut Journal<FsStorage>, DriverError> {
        if self.released {
            return Err(DriverError::Deposed { wanted });
        }
        Ok(self.j())
    }

    /// The core.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The journal (a leader's host appends to it, then calls
    /// [`ReplicaDriver::absorb_local_writes`]).
    pub fn journal_mut(&mut self) -> &mut Journal<FsStorage> {
        self.journal
            .as_mut()
            .expect("the journal is open between steps")
    }

    /// The journal.
    pub fn journal(&self) -> &Journal<FsStorage> {
        self.journal
            .as_ref()
            .expect("the journal is open between steps")
    }

    fn j(&mut self) -> &mut Journal<FsStorage> {
        self.journal_mut()
    }

    /// Entries held in memory to ship (bounded by about two segments).
    pub fn held_entries(&self) -> usize {
        self.held.len()
    }

    /// The commit point, in journal numbering: every journal sequence below
    /// it is committed (a leader acknowledges, the BLP may apply).
    pub fn committed_next(&self) -> u64 {
        self.commit
    }

    /// Proposes what the leader's journal wrote since the last call, and
    /// reports its durability.
    pub fn absorb_local_writes(&mut self) -> Result<Effects, DriverError> {
        if let Some(e) = self.observe_error.lock().expect("observer lock").take() {
            return Err(e.into());
        }
        let chunks = std::mem::take(&mut *self.observed.lock().expect("observer lock"));
        let mut actions = Vec::new();
        for chunk in chunks {
            match self.replica.propose(chunk.data.clone(), &mut actions) {
                Ok(seq) if seq == chunk.sequence + 1 => {
                    self.held.insert(seq, chunk.data, chunk.ends_block);
                }
                Ok(seq) => {
                    return Err(DriverError::Diverged {
                        journal: chunk.sequence + 1,
                        core: seq,
                    })
                }
                // Written locally but not proposable: the engine stops
                // (fail-stop); the record is never acknowledged here, and a
                // later leader's log decides whether it stays.
                Err(source) => {
                    return Err(DriverError::NotProposed {
                        sequence: chunk.sequence + 1,
                        source,
                    })
                }
            }
        }
        let durable = self.durable();
        self.replica.on_synced(durable, &mut actions);
        self.perform(actions)
    }

    /// A message from a peer.
    pub fn on_message(
        &mut self,
        now: u64,
        from: Peer,
        message: Message,
    ) -> Result<Effects, DriverError> {
        let mut actions = Vec::new();
        self.replica.on_message(now, from, message, &mut actions);
        self.perform(actions)
    }

    /// A configuration read from etcd.
    pub fn on_config(
        &mut self,
        now: u64,
        config: &ShardConfig,
        revision: u64,
    ) -> Result<Effects, DriverError> {
        let mut actions = Vec::new();
        self.replica.on_config(now, config, revision, &mut actions);
        self.perform(actions)
    }

    /// How a proposed configuration change ended.
    pub fn on_config_result(&mut self, outcome: CasOutcome) -> Result<Effects, DriverError> {
        let mut actions = Vec::new();
        self.replica.on_config_result(outcome, &mut actions);
        self.perform(actions)
    }

    /// A timer tick.
    pub fn on_tick(&mut self, now: u64) -> Result<Effects, DriverError> {
        let mut actions = Vec::new();
        self.replica.on_tick(now, &mut actions);
        self.perform(actions)
    }

    fn perform(&mut self, actions: Vec<Action>) -> Result<Effects, DriverError> {
        let mut effects = Effects::default();
        // The last entry an `Append` of this call carried, per follower and
        // epoch. A write's records are proposed one by one, each `Ship` is
        // extended to the end of the write, so without this a write of n
        // records went out n(n+1)/2 times.
        let mut carried: BTreeMap<(NodeId, Epoch), Seq> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Write(entries) => {
                    for entry in entries {
                        if entry.data.is_empty() {
                            self.write_epoch_start(entry.seq, entry.epoch)?;
                        } else if matches!(
                            self.replica.role(),
                            keel_replication::Role::Follower { .. }
                        ) {
                            self.local("write a follower's entry to")?;
                            let ends = self.write_follower(&entry.data)?;
                            self.held.insert(entry.seq, entry.data, ends);
                        }
                        // A leader's own entries were written by its journal.
                    }
                    {
                        let mut more = Vec::new();
                        let durable = self.durable();
                        self.replica.on_synced(durable, &mut more);
                        queue.extend(more);
                    }
                }
                Action::Truncate { after } => {
                    self.local("cut")?;
                    self.truncate(after)?
                }
                Action::SyncAll => self
                    .local("sync (sealed)")?
                    .sync_all()
                    .map_err(|e| DriverError::Journal(Box::new(e) as keel_core::StageError))?,
                Action::PersistEpoch(epoch) => {
                    self.state.accepted_epoch = epoch;
                    self.state.store(&self.paths.state)?;
                }
                Action::Resign(incarnation) => {
                    self.state.incarnation = incarnation;
                    self.state.store(&self.paths.state)?;
                    effects.resigned = Some(incarnation);
                }
                Action::Send { to, message } => effects.messages.push((to, message)),
                Action::Ship {
                    to,
                    epoch,
                    prev_seq,
                    prev_epoch,
                    from,
                    through,
                    commit,
                } => {
                    let covered = carried.get(&(to, epoch)).copied().unwrap_or(0);
                    let (from, prev_seq, prev_epoch) = match from <= through {
                        true if through <= covered => continue,
                        true if from <= covered => (
                            covered + 1,
                            covered,
                            self.replica
                                .log()
                                .epoch_at(covered)
                                .expect("carried entries are in the log"),
                        ),
                        _ => (from, prev_seq, prev_epoch),
                    };
                    let entries = self.entries(from, through)?;
                    if let Some(last) = entries.last() {
                        carried.insert((to, epoch), last.seq);
                        self.replica.shipped(to, last.seq);
                    }
                    effects.messages.push((
                        Peer::Replica(to),
                        Message::Append {
                            epoch,
                            prev_seq,
                            prev_epoch,
                            entries,
                            commit,
                        },
                    ));
                }
                Action::Commit { seq } => self.commit = seq,
                Action::ProposeConfig(proposal) => effects.proposals.push(proposal),
            }
        }
        Ok(effects)
    }

    /// The entries `from..=through`, extended to the end of the write
    /// `through` is in, so a follower never holds half a write.
    fn entries(
        &mut self,
        from: Seq,
        through: Seq,
    ) -> Result<Vec<keel_replication::Entry>, DriverError> {
        let mut entries = Vec::new();
        if from > through {
            return Ok(entries);
        }
        let last = self.replica.log().last();
        let mut seq = from;
        loop {
            let epoch = self
                .replica
                .log()
                .epoch_at(seq)
                .expect("held entries are in the log");
            let (data, ends) = self.held.get(seq, last)?;
            let ends = *ends;
            entries.push(keel_replication::Entry {
                seq,
                epoch,
                data: data.clone(),
            });
            if (seq >= through && ends) || seq >= last {
                return Ok(entries);
            }
            seq += 1;
        }
    }

    fn write_epoch_start(&mut self, seq: Seq, epoch: u32) -> Result<(), DriverError> {
        let sequence = self.local("write an epoch start to")?.next_sequence();
        if sequence + 1 != seq {
            return Err(DriverError::Diverged {
                journal: sequence + 1,
                core: seq,
            });
        }
        // Records carry the writer's epoch: reopen stamped with the new one.
        if self.config.epoch != epoch {
            self.config.epoch = epoch;
            self.reopen()?;
        }
        let mut payload = [0u8; 6];
        payload[..4].copy_from_slice(&epoch.to_le_bytes());
        payload[4..].copy_from_slice(&self.replica.id().to_le_bytes());
        let header = CommandHeader {
            idempotency_key: 0,
            correlation_id: 0,
            timestamp_ns: 0,
            command_type: EPOCH_START,
            schema_version: 1,
            tenant_id: 0,
            payload_len: payload.len() as u32,
            completion: u32::MAX,
            flags: 0,
        };
        self.j().append(&CommandRef {
            sequence,
            header: &header,
            payload: &payload,
        })?;
        self.j().end_of_batch(sequence)?;
        let chunks = std::mem::take(&mut *self.observed.lock().expect("observer lock"));
        for chunk in chunks {
            if chunk.sequence + 1 != seq {
                return Err(DriverError::Diverged {
                    journal: chunk.sequence + 1,
                    core: seq,
                });
            }
            self.held.insert(seq, chunk.data, chunk.ends_block);
        }
        Ok(())
    }

    /// Writes one shipped entry; returns whether its record part ends a block.
    fn write_follower(&mut self, data: &[u8]) -> Result<bool, DriverError> {
        let parts = chunk::parts(data)?;
        if let Some(header) = parts.segment_header {
            let segment_id = parts.record.segment_id;
            self.j().write_shipped(Written {
                segment_id,
                offset: 0,
                bytes: header,
            })?;
        }
        let (segment_id, offset, bytes) = self
            .pending
            .get_or_insert_with(|| (parts.record.segment_id, parts.record.offset, Vec::new()));
        bytes.extend_from_slice(parts.bytes);
        let ends = (*offset + bytes.len() as u64).is_multiple_of(self.block);
        if ends {
            let (segment_id, offset) = (*segment_id, *offset);
            let (_, _, bytes) = self.pending.take().expect("pending above");
            self.j().write_shipped(Written {
                segment_id,
                offset,
                bytes: &bytes,
            })?;
        }
        Ok(ends)
    }

    /// Cuts every entry after `after` (core numbering) from the journal,
    /// keeping the cut records in the divergent directory.
    fn truncate(&mut self, after: Seq) -> Result<(), DriverError> {
        self.pending = None;
        self.reopen_with(|paths| {
            let storage = FsStorage::open(&paths.journal, IoMode::DirectSync)?;
            cut_from(&storage, after, &paths.divergent)?;
            Ok(())
        })?;
        // The cut may reach into a sealed segment, which is then written
        // again: hold what the journal now ends with.
        let journal = self.journal();
        self.held = Held::open(
            &self.paths.journal,
            self.block as usize,
            journal.segment_id(),
            journal.next_sequence(),
        )?;
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), DriverError> {
        self.reopen_with(|_| Ok(()))
    }

    /// Closes the journal, runs `between`, and opens it again.
    fn reopen_with(
        &mut self,
        between: impl FnOnce(&Paths) -> Result<(), DriverError>,
    ) -> Result<(), DriverError> {
        drop(self.journal.take());
        between(&self.paths)?;
        let (journal, _) = open_journal(&self.paths.journal, &self.config, self.mode)?;
        self.journal = Some(journal);
        self.install_observer();
        Ok(())
    }
}

/// Opens the journal and rebuilds the core's epoch log from its records.
fn open_journal(
    dir: &Path,
    config: &JournalConfig,
    mode: IoMode,
) -> Result<(Journal<FsStorage>, EpochLog), DriverError> {
    let mut log = EpochLog::new();
    let (journal, _) = Journal::open_replaying_from(
        FsStorage::open(dir, mode)?,
        config.clone(),
        0,
        &mut |record| log.append(record.header.sequence + 1, record.header.epoch),
    )?;
    Ok((journal, log))
}
