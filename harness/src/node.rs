//! [`Node`]: the embedding API. A host builds a node from a [`NodeConfig`];
//! the node opens (and recovers) the journal in the data directory, replays
//! it into the state machine and the idempotency window in one scan, and
//! starts the engine after the last journaled sequence. The host then
//! submits from as many threads as it likes (`Node::submitter`, or for the
//! ledger a [`keel_ledger::LedgerClient`] per thread) and finally shuts the
//! node down, getting the state machine back.

use std::time::{Duration, Instant};

use keel_core::{
    CommandRef, ConfigError, Engine, Journaller, StageError, StateMachine, StopReason, Stopped,
    Submitter, Validator,
};
use keel_journal::{FsStorage, IoMode, Journal, TornTail};
use keel_ledger::{Ledger, LedgerClient, LedgerValidator};

use crate::config::{ConfigFileError, NodeConfig};
use crate::replay::Replayer;

/// The journaller a node runs: the file-system journal, or none.
#[derive(Debug)]
pub enum NodeJournal {
    /// Durability `none`.
    None,
    /// An O_DIRECT journal in the data directory.
    Fs(Box<Journal<FsStorage>>),
}

impl Journaller for NodeJournal {
    #[inline]
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError> {
        match self {
            NodeJournal::None => Ok(()),
            NodeJournal::Fs(journal) => journal.append(command),
        }
    }

    #[inline]
    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        match self {
            NodeJournal::None => Ok(()),
            NodeJournal::Fs(journal) => journal.end_of_batch(last_sequence),
        }
    }
}

/// What start-up recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Journal records replayed.
    pub records: u64,
    /// Time to scan and replay them.
    pub elapsed: Duration,
    /// A torn tail cut at open (a crash mid-write), if any.
    pub truncated: Option<TornTail>,
    /// The state hash after replay.
    pub state_hash: u64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
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
}

/// A running engine with its journal.
#[derive(Debug)]
pub struct Node<S> {
    engine: Engine<S, NodeJournal>,
    recovery: Recovery,
}

/// The reference node: the ledger.
pub type LedgerNode = Node<Ledger>;

impl<S: StateMachine> Node<S> {
    /// Recovers and starts. `on_replayed(records)` is called every 65,536
    /// replayed records (for a progress bar).
    pub fn start(
        config: &NodeConfig,
        state_machine: S,
        validator: impl Validator,
        on_replayed: &mut dyn FnMut(u64),
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let started = Instant::now();
        let engine_config = config.engine_config();
        let mut replayer = Replayer::new(state_machine, engine_config.dedup_entries);
        let (journal, truncated) = match config.journal_config() {
            None => (NodeJournal::None, None),
            Some(journal_config) => {
                let mode = match config.journal.dev_allow_buffered_io {
                    true => IoMode::BufferedDevelopment,
                    false => IoMode::DirectSync,
                };
                let storage = FsStorage::open(&config.journal.data_dir, mode)?;
                let (journal, open) =
                    Journal::open_replaying(storage, journal_config, &mut |record| {
                        replayer.apply(record);
                        if replayer.records() % (1 << 16) == 0 {
                            on_replayed(replayer.records());
                        }
                    })?;
                (NodeJournal::Fs(Box::new(journal)), open.truncated)
            }
        };
        let replayed = replayer.finish();
        let first_sequence = match &journal {
            NodeJournal::Fs(journal) => journal.next_sequence(),
            NodeJournal::None => 0,
        };
        let recovery = Recovery {
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
        .dedup(replayed.dedup)
        .validator(validator)
        .start()?;
        Ok(Self { engine, recovery })
    }

    /// A submission handle for one host thread.
    pub fn submitter(&self) -> Submitter {
        self.engine.submitter()
    }

    /// The engine (metrics, pause/resume, progress counters).
    pub fn engine(&self) -> &Engine<S, NodeJournal> {
        &self.engine
    }

    /// What start-up recovered.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Drains every accepted command and stops; returns the state machine.
    pub fn shutdown(
        self,
    ) -> Result<Stopped<S, NodeJournal, keel_core::NoopReplicator, keel_core::NoopSink>, StopReason>
    {
        self.engine.shutdown()
    }
}

impl Node<Ledger> {
    /// Starts the ledger node described by `config`.
    pub fn start_ledger(config: &NodeConfig) -> Result<Self, NodeError> {
        Self::start(
            config,
            Ledger::new(config.ledger_config()),
            LedgerValidator,
            &mut |_| {},
        )
    }

    /// A typed ledger client for one host thread.
    pub fn client(&self) -> LedgerClient {
        LedgerClient::new(self.submitter())
    }
}
