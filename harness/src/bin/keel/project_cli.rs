//! `keel project`: the MySQL projection sink as a long-lived process
//! (docs/projector.md, docs/operating.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use keel_harness::config::NodeConfig;
use keel_journal::{scan, FsStorage};
use keel_projector::{ProjectorConfig, ProjectorError, Status, TableSet, Timeouts, Until};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProjectArgs {
    #[command(subcommand)]
    action: Option<ProjectAction>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum ProjectAction {
    /// Follow the journal into the live tables (the default action).
    Run(RunArgs),
    /// Regenerate the projection from the whole journal into shadow tables,
    /// swap them in atomically (RENAME TABLE), then continue live.
    /// Resumable: an interrupted rebuild continues where it stopped.
    Rebuild(RebuildArgs),
    /// Print the checkpoints (live and rebuild) and the lag behind the journal.
    Status(Common),
}

#[derive(Args, Clone)]
struct Common {
    /// The node's journal directory.
    #[arg(long, default_value = "keel-data")]
    journal: PathBuf,
    /// Database URL (default: $MYSQL_URL, else mysql://root@127.0.0.1:3306/test).
    #[arg(long)]
    mysql_url: Option<String>,
    /// The node's configuration file: the ledger's capacities and the
    /// idempotency window must equal the engine's for replay to match.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Time limit per statement or commit, in ms (the driver has none).
    #[arg(long, default_value_t = 10_000)]
    statement_timeout_ms: u64,
    /// Time limit for connecting (TCP, handshake, session setup), in ms:
    /// raise it for a database behind a slow link.
    #[arg(long, default_value_t = 2_000)]
    connect_timeout_ms: u64,
}

impl Common {
    /// The database time limits these flags set.
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms.max(1)),
            statement: Duration::from_millis(self.statement_timeout_ms.max(1)),
        }
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Commands per MySQL transaction at most.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Stop once the journal is projected instead of following it.
    #[arg(long)]
    once: bool,
    /// Seconds between progress lines (checkpoint, rows/s, lag, breaker).
    #[arg(long, default_value_t = 5)]
    status_every: u64,
}

#[derive(Args, Clone)]
struct RebuildArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Drop an interrupted rebuild's tables and start over.
    #[arg(long)]
    restart: bool,
    /// Exit after the swap instead of continuing live.
    #[arg(long)]
    exit_after_swap: bool,
}

pub fn run(args: &ProjectArgs) -> ExitCode {
    init_logging();
    let result = match &args.action {
        None => follow(&args.run),
        Some(ProjectAction::Run(run)) => follow(run),
        Some(ProjectAction::Rebuild(rebuild)) => rebuild_then_follow(rebuild),
        Some(ProjectAction::Status(common)) => status(common),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Halted(message)) => {
            log::error!("{message}");
            ExitCode::from(crate::exit::FAILED)
        }
        Err(Failure::Setup(message)) => {
            log::error!("{message}");
            ExitCode::from(crate::exit::CANNOT_START)
        }
    }
}

enum Failure {
    /// The projection stopped: poison error, fenced, diverged, gap.
    Halted(String),
    /// Bad arguments, unreadable configuration or journal.
    Setup(String),
}

impl From<ProjectorError> for Failure {
    fn from(e: ProjectorError) -> Self {
        match e {
            ProjectorError::Journal(_) | ProjectorError::Process(_) => {
                Failure::Setup(e.to_string())
            }
            _ => Failure::Halted(e.to_string()),
        }
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

fn projector_config(args: &RunArgs) -> Result<ProjectorConfig, Failure> {
    let common = &args.common;
    let node = match &common.config {
        Some(path) => NodeConfig::from_file(path).map_err(|e| Failure::Setup(e.to_string()))?,
        None => NodeConfig::default(),
    };
    let url = common
        .mysql_url
        .clone()
        .unwrap_or_else(keel_projector::default_mysql_url);
    let mut config = ProjectorConfig::new(&common.journal, url);
    config.ledger = node.ledger_config();
    config.dedup_entries = node.engine.dedup_entries;
    config.batch_commands = args.batch.max(1);
    config.timeouts = common.timeouts();
    config.until = if args.once {
        Until::CaughtUp
    } else {
        Until::Stopped
    };
    if !common.journal.is_dir() {
        return Err(Failure::Setup(format!(
            "no journal directory at {}",
            common.journal.display()
        )));
    }
    Ok(config)
}

/// SIGINT and SIGTERM set the flag: the projector commits what it derived and exits.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

/// Logs progress every `every` seconds until `done`.
fn reporter(status: Arc<Status>, every: u64, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (Instant::now(), status.checkpoint.load(Ordering::Relaxed));
        while !done.load(Ordering::Relaxed) {
            let deadline = Instant::now() + Duration::from_secs(every.max(1));
            while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if done.load(Ordering::Relaxed) {
                break;
            }
            let checkpoint = status.checkpoint.load(Ordering::Relaxed);
            let seen = status.journal_next.load(Ordering::Relaxed);
            let rate = (checkpoint - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), checkpoint);
            let lag = status.lag_us.lock().expect("status");
            log::info!(
                "checkpoint {checkpoint}, journal read to {seen} (lag {} commands), {rate:.0} commands/s, lag p50 {} ms p99 {} ms, breaker {:?}, transient errors {}",
                seen.saturating_sub(checkpoint),
                lag.value_at_quantile(0.5) / 1_000,
                lag.value_at_quantile(0.99) / 1_000,
                status.breaker(),
                status.transient_errors.load(Ordering::Relaxed)
            );
        }
    })
}

fn follow(args: &RunArgs) -> Result<(), Failure> {
    let config = projector_config(args)?;
    let stop = stop_flag();
    let status = Arc::new(Status::default());
    let done = Arc::new(AtomicBool::new(false));
    let report = reporter(Arc::clone(&status), args.status_every, Arc::clone(&done));
    log::info!(
        "projecting {} into {}",
        config.journal_dir.display(),
        redact(&config.mysql_url)
    );
    let result = keel_projector::run(&config, &stop, &status);
    done.store(true, Ordering::Relaxed);
    let _ = report.join();
    let summary = result?;
    log::info!(
        "stopped at checkpoint {}: {} commands, {} rows in {:.1} s",
        summary.checkpoint,
        summary.commands,
        summary.rows,
        summary.elapsed.as_secs_f64()
    );
    Ok(())
}

fn rebuild_then_follow(args: &RebuildArgs) -> Result<(), Failure> {
    let config = projector_config(&args.run)?;
    let stop = stop_flag();
    let status = Arc::new(Status::default());
    let done = Arc::new(AtomicBool::new(false));
    let report = reporter(
        Arc::clone(&status),
        args.run.status_every,
        Arc::clone(&done),
    );
    let result = keel_projector::rebuild(&config, args.restart, &stop, &status);
    done.store(true, Ordering::Relaxed);
    let _ = report.join();
    match result? {
        None => {
            log::info!("rebuild interrupted; run it again to resume");
            return Ok(());
        }
        Some(summary) => log::info!(
            "rebuilt {} commands, {} rows in {:.1} s ({:.0} rows/s); swapped in",
            summary.commands,
            summary.rows,
            summary.elapsed.as_secs_f64(),
            summary.rows as f64 / summary.elapsed.as_secs_f64().max(1e-9)
        ),
    }
    if args.exit_after_swap || args.run.once {
        return Ok(());
    }
    follow(&args.run)
}

fn status(common: &Common) -> Result<(), Failure> {
    let url = common
        .mysql_url
        .clone()
        .unwrap_or_else(keel_projector::default_mysql_url);
    let storage = FsStorage::open_read_only(&common.journal)
        .map_err(|e| Failure::Setup(format!("{}: {e}", common.journal.display())))?;
    let mut sets = Vec::new();
    for (set, name) in [(TableSet::Live, "live"), (TableSet::Rebuild, "rebuild")] {
        // No database to ask is "cannot start" (3), not a halted projection.
        let found = keel_projector::checkpoint(&url, set, common.timeouts())
            .map_err(|e| Failure::Setup(e.to_string()))?;
        sets.push((name, found));
    }
    // One scan: the journal's end and the sequencer time of the last
    // record each checkpoint covers (lag in time as well as in commands).
    let wanted: Vec<u64> = sets
        .iter()
        .filter_map(|(_, c)| c.map(|c| c.next_sequence.wrapping_sub(1)))
        .collect();
    let mut times = std::collections::HashMap::new();
    let mut last_time = None;
    // A damaged journal still lets the checkpoints be shown.
    let (journal_next, damage) = match scan(&storage, &mut |r| {
        let (sequence, time) = (r.header.sequence, r.header.meta.timestamp_ns);
        if wanted.contains(&sequence) {
            times.insert(sequence, time);
        }
        last_time = Some(time);
    }) {
        Ok(report) => (Some(report.next_sequence), None),
        Err(e) => (None, Some(e.to_string())),
    };
    match (&journal_next, &damage) {
        (Some(next), _) => println!(
            "journal        {} (next sequence {next})",
            common.journal.display()
        ),
        (None, Some(e)) => println!("journal        {}: {e}", common.journal.display()),
        (None, None) => unreachable!("a scan either reports or fails"),
    }
    for (name, found) in sets {
        let Some(c) = found else {
            println!("{name:<14} none");
            continue;
        };
        let lag = match journal_next {
            Some(next) => {
                let commands = next.saturating_sub(c.next_sequence);
                let time = match (times.get(&c.next_sequence.wrapping_sub(1)), last_time) {
                    (Some(at), Some(last)) => format!(
                        ", {:.3} s of sequencer time",
                        last.saturating_sub(*at) as f64 / 1e9
                    ),
                    _ => String::new(),
                };
                format!("{commands} commands{time}")
            }
            None => "unknown".to_string(),
        };
        println!(
            "{name:<14} checkpoint {} (lag {lag}), schema version {}, writer {:016x}",
            c.next_sequence, c.schema_version, c.writer
        );
    }
    match damage {
        Some(e) => Err(Failure::Halted(format!("journal: {e}"))),
        None => Ok(()),
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
