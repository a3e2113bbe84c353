//! The main job's load generator: funds the demo accounts, then pushes
//! transfers from several submitting threads, each keeping a window of async
//! submissions in flight, and reports throughput, acknowledgement latency
//! percentiles and the final state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_core::{
    Command, ConfigError, Engine, EngineConfig, StageName, StopReason, SubmitError, Submitter,
};
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig, SyncPolicy};

use crate::replay::{replay, Replayer};

use crate::demo::{encode, DemoAccounts, DEPOSIT, TRANSFER};

/// Where commands are journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// No journal (benchmarks).
    None,
    /// A journal in `dir` with the given sync policy; an existing journal is
    /// recovered and replayed first.
    Journal {
        /// The journal directory.
        dir: std::path::PathBuf,
        /// Sync policy.
        sync: SyncPolicy,
        /// Chain records with BLAKE3 (tamper evidence).
        chain: bool,
        /// Allow buffered I/O on file systems without direct I/O (development only).
        allow_buffered: bool,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Durability.
    pub durability: Durability,
    /// Transfers to push (after one deposit per account).
    pub transfers: u64,
    /// Submitting threads.
    pub producers: usize,
    /// Async submissions each producer keeps in flight.
    pub window: usize,
    /// Demo accounts.
    pub accounts: u32,
    /// Engine configuration.
    pub engine: EngineConfig,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            durability: Durability::None,
            transfers: 1_000_000,
            producers: 4,
            window: 64,
            accounts: 10_000,
            engine: EngineConfig::default(),
            progress: true,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Commands acknowledged (deposits and transfers).
    pub commands: u64,
    /// Wall time of the transfer phase.
    pub elapsed: Duration,
    /// Acknowledged transfers per second.
    pub transfers_per_second: f64,
    /// Submit-to-ack latency of every command, recorded by the engine (ns).
    pub ack_latency_ns: Histogram<u64>,
    /// Journaller batch service time (append + write + sync), ns.
    pub journal_batch_ns: Histogram<u64>,
    /// Transfers applied and rejected (insufficient funds etc.).
    pub applied: u64,
    /// Transfers rejected with a business code.
    pub rejected: u64,
    /// Sum of balances at the end (must equal the deposits).
    pub total_balance: u64,
    /// Sum of deposits.
    pub deposited: u64,
    /// The state machine's hash at the end.
    pub state_hash: u64,
    /// Journal recovery at start and the replay check at the end (durable runs).
    pub journal: Option<JournalReport>,
}

/// What the durable run did with its journal.
#[derive(Debug)]
pub struct JournalReport {
    /// Records found (and replayed) at start.
    pub recovered_records: u64,
    /// Time to recover and replay them.
    pub recovery: Duration,
    /// A torn tail cut at start, if any.
    pub truncated: Option<keel_journal::TornTail>,
    /// Records in the journal at the end.
    pub records_at_end: u64,
    /// The state hash a full replay of the journal gives at the end.
    pub replayed_state_hash: u64,
    /// Time of that replay.
    pub replay: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A submit failed with something other than a business rejection.
    #[error("submit failed: {0}")]
    Submit(#[from] SubmitError),
    /// The engine stopped during the run.
    #[error("engine stopped: {0}")]
    Stopped(#[from] StopReason),
    /// The journal directory could not be used.
    #[error(transparent)]
    Storage(#[from] keel_journal::StorageError),
    /// The journal could not be opened (corruption is reported with its location).
    #[error(transparent)]
    JournalOpen(#[from] keel_journal::OpenError),
    /// Replaying the journal failed.
    #[error("replaying the journal: {0}")]
    Replay(#[from] keel_journal::ScanError),
}

const DEPOSIT_AMOUNT: u64 = 1_000_000;

/// Runs the workload and shuts the engine down. With a journal, recovers
/// and replays it first, and at the end replays the whole journal again into
/// a fresh state machine to check it reaches the engine's state hash.
pub fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    match &config.durability {
        Durability::None => {
            let engine = Engine::builder(
                config.engine.clone(),
                DemoAccounts::new(config.accounts as usize),
            )
            .start()?;
            drive(config, engine, None, Baseline::default())
        }
        Durability::Journal {
            dir,
            sync,
            chain,
            allow_buffered,
        } => {
            let mode = match allow_buffered {
                true => IoMode::BufferedDevelopment,
                false => IoMode::DirectSync,
            };
            let started = Instant::now();
            let storage = FsStorage::open(dir, mode)?;
            let journal_config = JournalConfig {
                sync: *sync,
                chain: *chain,
                ..JournalConfig::default()
            };
            // Recovery and replay in one scan of the journal.
            let mut replayed = Replayer::new(
                DemoAccounts::new(config.accounts as usize),
                config.engine.dedup_entries,
            );
            let (journal, open) =
                Journal::open_replaying(storage, journal_config, &mut |r| replayed.apply(r))?;
            let recovery = JournalReport {
                recovered_records: replayed.records,
                recovery: started.elapsed(),
                truncated: open.truncated,
                records_at_end: 0,
                replayed_state_hash: 0,
                replay: Duration::ZERO,
            };
            let baseline = Baseline {
                applied: replayed.state_machine.applied(),
                rejected: replayed.state_machine.rejected(),
                total: replayed.state_machine.total(),
            };
            let engine_config = EngineConfig {
                first_sequence: journal.next_sequence(),
                ..config.engine.clone()
            };
            let engine = Engine::builder(engine_config, replayed.state_machine)
                .journaller(journal)
                .dedup(replayed.dedup)
                .start()?;
            let mut report = drive(config, engine, Some(recovery), baseline)?;
            let check = Instant::now();
            let storage = FsStorage::open(dir, mode)?;
            let (full, _) = replay(
                &storage,
                DemoAccounts::new(config.accounts as usize),
                config.engine.dedup_entries,
            )?;
            let journal = report
                .journal
                .as_mut()
                .expect("durable runs report their journal");
            journal.records_at_end = full.records;
            journal.replayed_state_hash = keel_core::StateMachine::state_hash(&full.state_machine);
            journal.replay = check.elapsed();
            Ok(report)
        }
    }
}

/// What the state held before this run's commands (recovered from the journal).
#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    applied: u64,
    rejected: u64,
    total: u64,
}

fn drive<J: keel_core::Journaller>(
    config: &LoadConfig,
    engine: Engine<DemoAccounts, J>,
    journal: Option<JournalReport>,
    baseline: Baseline,
) -> Result<LoadReport, LoadError> {
    let mut submitter = engine.submitter();
    for account in 0..config.accounts {
        let body = encode(0, account, DEPOSIT_AMOUNT);
        submit_retrying(|| submitter.submit_detached(&Command::new(DEPOSIT, &body)))?;
    }
    engine.pause()?;
    engine.resume();
    let deposits = engine.processed(StageName::Publisher);
    let bar = progress_bar(config);
    let start = Instant::now();
    let per_producer = config.transfers / config.producers as u64;
    let remainder = config.transfers % config.producers as u64;
    std::thread::scope(|s| -> Result<(), LoadError> {
        let threads: Vec<_> = (0..config.producers)
            .map(|p| {
                let submitter = engine.submitter();
                let count = per_producer + u64::from((p as u64) < remainder);
                s.spawn(move || produce(submitter, p as u64, count, config))
            })
            .collect();
        while !threads.iter().all(|t| t.is_finished()) {
            bar.set_position(engine.processed(StageName::Publisher) - deposits);
            std::thread::sleep(Duration::from_millis(50));
        }
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("producer thread panicked"))
    })?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    drop(submitter);
    let stopped = engine.shutdown()?;
    let accounts = &stopped.state_machine;
    Ok(LoadReport {
        journal,
        commands: stopped.commands,
        elapsed,
        transfers_per_second: config.transfers as f64 / elapsed.as_secs_f64(),
        ack_latency_ns: stopped.metrics.ack_latency_ns.clone(),
        journal_batch_ns: stopped.metrics.stage(StageName::Journaller).clone(),
        applied: accounts.applied() - deposits - baseline.applied,
        rejected: accounts.rejected() - baseline.rejected,
        total_balance: accounts.total(),
        deposited: DEPOSIT_AMOUNT * u64::from(config.accounts) + baseline.total,
        state_hash: keel_core::StateMachine::state_hash(accounts),
    })
}

fn progress_bar(config: &LoadConfig) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.transfers);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} transfers {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    bar
}

/// One producer: `count` transfers between pseudo-random accounts, with up
/// to `window` async submissions in flight.
fn produce(
    mut submitter: Submitter,
    producer: u64,
    count: u64,
    config: &LoadConfig,
) -> Result<(), LoadError> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ (producer + 1).wrapping_mul(0x9e37_79b9));
    let mut window = VecDeque::with_capacity(config.window);
    for i in 0..count {
        let debit = (rng.next() % u64::from(config.accounts)) as u32;
        let credit = (rng.next() % u64::from(config.accounts)) as u32;
        let amount = rng.next() % 2_000;
        let body = encode(debit, credit, amount);
        let mut command = Command::new(TRANSFER, &body);
        command.correlation_id = producer << 40 | i;
        if window.len() == config.window {
            let pending: keel_core::PendingAck = window.pop_front().expect("window is full");
            futures::executor::block_on(pending)?;
        }
        window.push_back(submit_retrying(|| submitter.submit_async(&command))?);
    }
    for pending in window {
        futures::executor::block_on(pending)?;
    }
    Ok(())
}

/// Retries `Busy` (back-pressure: the load generator outruns the engine on
/// purpose); any other error ends the run.
fn submit_retrying<T>(
    mut submit: impl FnMut() -> Result<T, SubmitError>,
) -> Result<T, SubmitError> {
    loop {
        match submit() {
            Err(SubmitError::Busy) => std::thread::yield_now(),
            other => return other,
        }
    }
}

/// A tiny deterministic generator for the workload (not for anything secret).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Formats the percentiles a latency report prints.
pub fn percentiles(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  (n={})",
        us(0.50),
        us(0.90),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}
