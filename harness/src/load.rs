//! The main job: a ledger node on its embedded defaults under load.
//!
//! Phases: start (recover and replay the journal), create the accounts, fund
//! them from an operator account, push the transfers from several submitting
//! threads — each keeping a window of async commands in flight, each command
//! a batch of transfers — then shut down, restart from the journal and check
//! that the recovered state hash equals the one at shutdown.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_core::{PendingAck, StageName, StateMachine, StopReason, SubmitError};
use keel_ledger::commands::{self, EventResults};
use keel_ledger::{
    account_flags, Account, CallOptions, ClientError, CreateTransferResult, Ledger, LedgerClient,
    Transfer,
};

use crate::config::{Durability, NodeConfig};
use crate::node::{LedgerNode, Node, NodeError, Recovery};
use crate::projection::StartProjection;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The node (journal, engine, ledger capacities).
    pub node: NodeConfig,
    /// Transfers to push.
    pub transfers: u64,
    /// Submitting threads.
    pub producers: usize,
    /// Async commands each producer keeps in flight.
    pub window: usize,
    /// Transfers per command (1..=7).
    pub batch: usize,
    /// Accounts (the first is the operator account that funds the others).
    pub accounts: u32,
    /// Draw progress bars on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Attach a MySQL projector (this URL) behind the node for the run.
    pub project_to: Option<String>,
    /// Pace the transfers at this many per second in all (None: flat out).
    pub rate: Option<u64>,
    /// Set (e.g. by SIGTERM) to stop pushing: the run then drains, stops
    /// the node as usual (snapshot if asked), reports and checks the restart.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            node: NodeConfig::default(),
            transfers: 1_000_000,
            producers: 4,
            window: 32,
            batch: commands::TRANSFERS_PER_COMMAND_MAX,
            accounts: 10_000,
            progress: true,
            stop: std::sync::Arc::default(),
            project_to: None,
            rate: None,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// What start-up recovered.
    pub recovery: Recovery,
    /// Commands acknowledged in this run.
    pub commands: u64,
    /// Wall time of the transfer phase.
    pub elapsed: Duration,
    /// Transfers (events) acknowledged per second in the transfer phase.
    pub transfers_per_second: f64,
    /// Submit-to-ack latency per command (ns), recorded by the engine.
    pub ack_latency_ns: Histogram<u64>,
    /// Paced runs: latency per command from when it was meant to be sent
    /// (its lateness at submit plus its ack latency), ns: corrected for
    /// coordinated omission, unlike `ack_latency_ns`.
    pub intended_latency_ns: Option<Histogram<u64>>,
    /// Journaller batch service time (append + write + sync), ns.
    pub journal_batch_ns: Histogram<u64>,
    /// Business-logic processor batch service time (ns, one batch in 16):
    /// what a snapshot would stall if the BLP took it.
    pub blp_batch_ns: Histogram<u64>,
    /// The run was stopped early (`LoadConfig::stop`).
    pub interrupted: bool,
    /// Snapshots the shadow snapshotter wrote while serving.
    pub snapshots_while_serving: u64,
    /// Per-code counts of the transfer phase's results, indexed by code.
    pub transfer_results: Vec<u64>,
    /// Sums of posted debits and credits over every account at shutdown.
    pub posted_debits_credits: (u128, u128),
    /// The ledger's state hash at shutdown.
    pub state_hash: u64,
    /// The snapshot written at shutdown (`snapshot.on_shutdown`).
    pub snapshot: Option<std::path::PathBuf>,
    /// The restart from the journal (durable runs).
    pub restart: Option<Recovery>,
    /// Transfers in the ledger the restart rebuilt (durable runs).
    pub restart_transfers: u64,
    /// The projector behind the node (`project_to`).
    pub projection: Option<ProjectionReport>,
}

/// What the projector attached to the run did.
#[derive(Debug)]
pub struct ProjectionReport {
    /// Commands projected while transfers were pushed.
    pub during_load: u64,
    /// Commands in the journal when the load ended.
    pub at_load_end: u64,
    /// Time after the load until everything was projected.
    pub catch_up: Duration,
    /// Sequencer timestamp → MySQL commit, per command (µs).
    pub lag_us: Histogram<u64>,
    /// The projector's own summary (or why it stopped).
    pub result: Result<keel_projector::Summary, keel_projector::ProjectorError>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A call failed with something other than a business rejection.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The engine stopped during the run.
    #[error("engine stopped: {0}")]
    Stopped(#[from] StopReason),
    /// The projector could not start.
    #[error("projector: {0}")]
    Projection(String),
    /// The load configuration is out of range.
    #[error("load option `{option}`: expected {expected}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What is allowed.
        expected: &'static str,
    },
}

/// How long the main job waits for an attached projector to catch up
/// after the load (a database that is away must not hang the run).
const PROJECTION_CATCH_UP_MAX: Duration = Duration::from_secs(120);

/// Amount each account is funded with.
pub const FUNDING: u64 = 10_000;
/// The workload's ledger.
pub const LEDGER: u32 = 1;
/// The workload's account and transfer code.
pub const CODE: u16 = 1;
/// The operator account that funds every other one.
pub const OPERATOR: u128 = 1;

/// Runs the main job. See the module docs for the phases.
pub fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    validate(config)?;
    let replay_bar = bar(config, None, "replaying journal");
    let node = start(config, &replay_bar)?;
    replay_bar.finish_and_clear();
    let recovery = node.recovery().clone();
    let projection = match &config.project_to {
        Some(url) => Some(
            node.start_projection(&config.node, url)
                .map_err(|e| LoadError::Projection(e.to_string()))?,
        ),
        None => None,
    };
    setup_accounts(config, &node)?;
    if let Some(projection) = &projection {
        // The projector's start-up (connect, schema, the setup commands) is
        // not the transfer phase's lag: wait for it, then measure afresh.
        let setup_end = node.journal_status().map_or(0, |s| s.durable_next());
        let status = projection.status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while status.checkpoint.load(Ordering::Relaxed) < setup_end
            && !status.never_connected()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        status.lag_us.lock().expect("status").reset();
    }
    // Transfer ids are unique per run: the journal only grows.
    let (elapsed, transfer_results, intended) =
        push_transfers(config, &node, recovery.next_sequence)?;
    let projection = projection.map(|projection| {
        let during_load = projection.status().checkpoint.load(Ordering::Relaxed);
        let at_load_end = node.journal_status().map_or(0, |s| s.durable_next());
        let started = Instant::now();
        let status = std::sync::Arc::clone(projection.status());
        // A database never reached is not waited for at all.
        let result = match status.never_connected() {
            true => projection.stop(),
            false => projection.finish(at_load_end, PROJECTION_CATCH_UP_MAX),
        };
        let lag_us = status.lag_us.lock().expect("status").clone();
        ProjectionReport {
            during_load,
            at_load_end,
            catch_up: started.elapsed(),
            lag_us,
            result,
        }
    });
    let snapshots_while_serving = node.snapshotter().map_or(0, |s| s.written());
    let (stopped, snapshot) = match config.node.snapshot.on_shutdown {
        true => node.shutdown_with_snapshot(&config.node)?,
        false => (node.shutdown()?, None),
    };
    let ledger = &stopped.state_machine;
    let posted = ledger.accounts().fold((0u128, 0u128), |(d, c), a| {
        (
            d + u128::from(a.debits_posted),
            c + u128::from(a.credits_posted),
        )
    });
    let mut report = LoadReport {
        recovery,
        commands: stopped.commands,
        elapsed,
        transfers_per_second: transfer_results.iter().sum::<u64>() as f64 / elapsed.as_secs_f64(),
        interrupted: config.stop.load(Ordering::Relaxed),
        ack_latency_ns: stopped.metrics.ack_latency_ns.clone(),
        intended_latency_ns: config.rate.map(|_| intended),
        journal_batch_ns: stopped.metrics.stage(StageName::Journaller).clone(),
        blp_batch_ns: stopped.metrics.stage(StageName::BusinessLogic).clone(),
        snapshots_while_serving,
        transfer_results,
        posted_debits_credits: posted,
        state_hash: ledger.state_hash(),
        snapshot,
        restart: None,
        restart_transfers: 0,
        projection,
    };
    drop(stopped); // free this ledger before the restart allocates another
    if config.node.journal.durability != Durability::None {
        let (recovery, transfers) = restart(config)?;
        report.restart = Some(recovery);
        report.restart_transfers = transfers;
    }
    Ok(report)
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let invalid = |option, expected| Err(LoadError::Invalid { option, expected });
    if !(1..=commands::TRANSFERS_PER_COMMAND_MAX).contains(&config.batch) {
        return invalid("batch", "1..=7 transfers per command");
    }
    if config.accounts < 3 || config.accounts > config.node.ledger.accounts_max {
        return invalid("accounts", "at least 3 and at most ledger.accounts_max");
    }
    if config.producers == 0 || config.window == 0 {
        return invalid("producers/window", "at least 1");
    }
    Ok(())
}

/// Starts the ledger node: newest usable snapshot (if any) plus the journal.
fn start(config: &LoadConfig, bar: &ProgressBar) -> Result<LedgerNode, NodeError> {
    let ledger_config = config.node.ledger_config();
    Node::start_with_snapshots(
        &config.node,
        &ledger_config,
        move || Ledger::new(ledger_config),
        keel_ledger::LedgerValidator,
        &mut |records| bar.set_position(records),
    )
}

/// Restarts from the journal; returns what it recovered and the transfers in
/// the rebuilt ledger (the caller compares the hash with the shutdown hash).
fn restart(config: &LoadConfig) -> Result<(Recovery, u64), LoadError> {
    let bar = bar(config, None, "restart: replaying journal");
    let node = start(config, &bar)?;
    bar.finish_and_clear();
    let recovery = node.recovery().clone();
    let transfers = node.shutdown()?.state_machine.transfers_len() as u64;
    Ok((recovery, transfers))
}

/// Creates the accounts (a retry of an earlier run's gets `exists`) and funds
/// every account from the operator account.
fn setup_accounts(config: &LoadConfig, node: &LedgerNode) -> Result<(), LoadError> {
    let bar = bar(config, Some(u64::from(config.accounts)), "accounts");
    let mut client = node.client();
    let mut window = Window::new(config.window);
    let ids: Vec<u128> = (1..=u128::from(config.accounts)).collect();
    for chunk in ids.chunks(commands::ACCOUNTS_PER_COMMAND_MAX) {
        let accounts: Vec<Account> = chunk.iter().map(|&id| account(id)).collect();
        let pending =
            retry_busy(|| client.create_accounts_async(&accounts, CallOptions::default()))?;
        window.push(pending, None, |_, _| {})?;
        bar.inc(chunk.len() as u64);
    }
    for chunk in ids[1..].chunks(commands::TRANSFERS_PER_COMMAND_MAX) {
        let funding: Vec<Transfer> = chunk.iter().map(|&id| funding(id)).collect();
        let pending =
            retry_busy(|| client.create_transfers_async(&funding, CallOptions::default()))?;
        window.push(pending, None, |_, _| {})?;
    }
    window.drain(|_, _| {})?;
    bar.finish_and_clear();
    Ok(())
}

/// The operator's funding of account `id` (a fixed id: funded once per
/// journal, an earlier run's funding is answered `exists`).
pub fn funding(id: u128) -> Transfer {
    Transfer {
        id: 1 << 120 | id,
        debit_account_id: OPERATOR,
        credit_account_id: id,
        amount: FUNDING,
        ledger: LEDGER,
        code: CODE,
        ..Transfer::default()
    }
}

/// A transfer of 1..=2,000 between two distinct pseudo-random accounts of
/// `2..=accounts` (the operator, account 1, only funds).
pub fn random_transfer(rng: &mut XorShift, accounts: u32, id: u128) -> Transfer {
    let accounts = u64::from(accounts) - 1;
    let debit = 2 + rng.next_u64() % accounts;
    let credit = 2 + (debit - 2 + 1 + rng.next_u64() % (accounts - 1)) % accounts;
    Transfer {
        id,
        debit_account_id: u128::from(debit),
        credit_account_id: u128::from(credit),
        amount: 1 + rng.next_u64() % 2_000,
        ledger: LEDGER,
        code: CODE,
        ..Transfer::default()
    }
}

/// Even accounts may not go below zero; odd ones may (overdraft), so the
/// workload has both applied transfers and `exceeds_credits` rejections.
pub fn account(id: u128) -> Account {
    let flags = match id != OPERATOR && id.is_multiple_of(2) {
        true => account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        false => 0,
    };
    Account {
        id,
        ledger: LEDGER,
        code: CODE,
        flags,
        ..Account::default()
    }
}

/// The timed phase; returns its wall time and per-code result counts.
fn push_transfers(
    config: &LoadConfig,
    node: &LedgerNode,
    nonce: u64,
) -> Result<(Duration, Vec<u64>, Histogram<u64>), LoadError> {
    let bar = bar(config, Some(config.transfers), "transfers");
    let start = Instant::now();
    let producers = config.producers as u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (counts, intended) = std::thread::scope(|s| -> Result<_, LoadError> {
        if let Some(status) = node.journal_status() {
            let (done, dir) = (&done, &config.node.journal.data_dir);
            s.spawn(move || disk_space_monitor(&status, dir, done));
        }
        let threads: Vec<_> = (0..producers)
            .map(|p| {
                let client = node.client();
                let count =
                    config.transfers / producers + u64::from(p < config.transfers % producers);
                let bar = bar.clone();
                s.spawn(move || produce(client, config, nonce, p, count, &bar))
            })
            .collect();
        let mut counts = vec![0u64; 64];
        let mut intended = latency_histogram();
        let mut failed = None;
        for thread in threads {
            match thread.join().expect("producer thread panicked") {
                Ok((produced, latency)) => {
                    counts.iter_mut().zip(produced).for_each(|(c, p)| *c += p);
                    intended.add(&latency).expect("same bounds");
                }
                Err(e) => failed = Some(e),
            }
        }
        done.store(true, Ordering::Release);
        failed.map_or(Ok((counts, intended)), Err)
    })?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((elapsed, counts, intended))
}

/// One producer: `count` transfers between pseudo-random accounts, `batch`
/// per command, up to `window` commands in flight.
fn produce(
    mut client: LedgerClient,
    config: &LoadConfig,
    nonce: u64,
    producer: u64,
    count: u64,
    bar: &ProgressBar,
) -> Result<(Vec<u64>, Histogram<u64>), LoadError> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ (producer + 1).wrapping_mul(0x9e37_79b9));
    let mut window = Window::new(config.window);
    let mut counts = vec![0u64; 64];
    let mut intended = latency_histogram();
    let mut tally = |results: &EventResults, from_intended: Option<u64>| {
        for &code in results.codes() {
            counts[usize::from(code).min(63)] += 1;
        }
        if let Some(ns) = from_intended {
            intended.saturating_record(ns.max(1));
        }
    };
    let mut batch = [Transfer::default(); commands::TRANSFERS_PER_COMMAND_MAX];
    let mut sent = 0u64;
    let start = Instant::now();
    let per_producer = config.rate.map(|r| r as f64 / config.producers as f64);
    while sent < count && !config.stop.load(Ordering::Relaxed) {
        let due = per_producer.map(|rate| {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            pace(due);
            due
        });
        let n = (count - sent).min(config.batch as u64) as usize;
        for (i, t) in batch[..n].iter_mut().enumerate() {
            let id = u128::from(nonce + 1) << 64
                | u128::from(producer) << 48
                | u128::from(sent + i as u64 + 1);
            *t = random_transfer(&mut rng, config.accounts, id);
        }
        let options = CallOptions {
            correlation_id: producer << 48 | sent,
            idempotency_key: 0,
        };
        let pending = retry_busy(|| client.create_transfers_async(&batch[..n], options))?;
        // How late the command left: added to its ack latency, the latency
        // from when it was meant to be sent (coordinated omission).
        let late = due.map(|due| due.elapsed().as_nanos() as u64);
        window.push(pending, late, &mut tally)?;
        sent += n as u64;
        bar.inc(n as u64);
    }
    window.drain(&mut tally)?;
    Ok((counts, intended))
}

/// A latency histogram in ns (1 ns to 60 s, 3 significant figures).
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// Says on stderr, every 5 s, while the journal waits for disk space: the
/// node then holds every command (submitters get `Busy` and retry).
fn disk_space_monitor(
    status: &keel_journal::JournalStatus,
    dir: &std::path::Path,
    done: &std::sync::atomic::AtomicBool,
) {
    let mut said = Duration::ZERO;
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        match status.out_of_space_for() {
            Some(waited) if waited >= said + Duration::from_secs(5) || said.is_zero() => {
                eprintln!(
                    "WARNING: the journal in {} is waiting for disk space to create its next segment ({:.0} s so far); commands are held until space returns",
                    dir.display(),
                    waited.as_secs_f64()
                );
                said = waited.max(Duration::from_millis(1));
            }
            Some(_) => {}
            None => said = Duration::ZERO,
        }
    }
}

/// Waits until `due`: sleeps while far, yields when near.
fn pace(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        match due - now {
            left if left > Duration::from_micros(300) => {
                std::thread::sleep(left - Duration::from_micros(200))
            }
            _ => std::thread::yield_now(),
        }
    }
}

/// A bounded window of in-flight async commands, completed in order.
struct Window {
    /// In flight, each with how late it left (paced runs).
    pending: VecDeque<(PendingAck, Option<u64>)>,
    capacity: usize,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Self {
            pending: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a command in flight, first completing the oldest when full.
    /// `on_done` gets each completed command's results and, for a command
    /// that left `late` ns after it was due, its latency from that moment.
    fn push(
        &mut self,
        pending: PendingAck,
        late: Option<u64>,
        mut on_done: impl FnMut(&EventResults, Option<u64>),
    ) -> Result<(), LoadError> {
        if self.pending.len() == self.capacity {
            self.complete_one(&mut on_done)?;
        }
        self.pending.push_back((pending, late));
        Ok(())
    }

    fn drain(
        &mut self,
        mut on_done: impl FnMut(&EventResults, Option<u64>),
    ) -> Result<(), LoadError> {
        while !self.pending.is_empty() {
            self.complete_one(&mut on_done)?;
        }
        Ok(())
    }

    fn complete_one(
        &mut self,
        on_done: &mut impl FnMut(&EventResults, Option<u64>),
    ) -> Result<(), LoadError> {
        let (pending, late) = self.pending.pop_front().expect("not empty");
        let ack = futures::executor::block_on(pending).map_err(ClientError::from)?;
        let results =
            commands::event_results(commands::command_type::CREATE_TRANSFERS, &ack.outcome)
                .map_err(ClientError::from)?;
        on_done(&results, late.map(|late| late + ack.latency_ns));
        Ok(())
    }
}

/// Retries `Busy` (back-pressure: the load generator outruns the engine on
/// purpose); any other error ends the run.
fn retry_busy<T>(mut submit: impl FnMut() -> Result<T, ClientError>) -> Result<T, ClientError> {
    loop {
        match submit() {
            Err(ClientError::Submit(SubmitError::Busy)) => std::thread::yield_now(),
            other => return other,
        }
    }
}

fn bar(config: &LoadConfig, len: Option<u64>, phase: &'static str) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "{spinner} {prefix} {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {prefix} {pos} records {per_sec}",
        ),
    };
    bar.set_style(ProgressStyle::with_template(template).expect("static template"));
    bar.set_prefix(phase);
    bar
}

/// A tiny deterministic generator for the workload (not for anything secret).
/// Accounts `1..=n` on the workload's ledger and code, no flags.
pub fn plain_accounts(n: u32) -> Vec<Account> {
    (1..=u128::from(n))
        .map(|id| Account {
            id,
            ledger: LEDGER,
            code: CODE,
            ..Account::default()
        })
        .collect()
}

/// The workload's deterministic pseudo-random numbers (xorshift64).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The name of a transfer result code for reports.
pub fn transfer_result_name(code: usize) -> &'static str {
    CreateTransferResult::from_u8(code as u8).map_or("unknown", CreateTransferResult::name)
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
