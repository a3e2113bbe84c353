//! `keel`: the command line. `keel run` is Keel's main job on embedded
//! defaults: a ledger node on a durable journal under load, then a restart
//! from the journal that must reach the same state hash.

#![forbid(unsafe_code)]

mod bench_cli;
mod client_cli;
mod connect_args;
mod exit;
mod journal_cli;
mod project_cli;
mod replay_cli;
mod serve_cli;
mod shards_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use keel_harness::config::{ConfigFileError, Durability, FusionArg, NodeConfig, WaitArg};
use keel_harness::load::{self, percentiles, LoadConfig, LoadReport};
use keel_harness::node::NodeError;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: an LMAX-style transaction engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a ledger node under load: create and fund accounts, push transfers
    /// from several threads, print throughput and acknowledgement-latency
    /// percentiles, then restart from the journal and check the state hash.
    Run(RunArgs),
    /// Inspect, verify or dump a journal directory.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Rebuild the ledger from a journal (optionally from a snapshot), read
    /// only: to a sequence or a time, verify against snapshots, write a
    /// snapshot. Exit 0 ok; 1 corrupt journal (location printed); 2
    /// verification found a divergence; 3 cannot read.
    Replay(replay_cli::ReplayArgs),
    /// The MySQL projection sink: follow the journal into MySQL tables
    /// (default), `rebuild` them from the journal, or print `status`.
    /// Exit 0 ok; 1 the projection halted (poison error, fenced, diverged);
    /// 3 cannot start (arguments, configuration, journal).
    Project(project_cli::ProjectArgs),
    /// A ledger node on the network: recover, listen for clients (Keel's
    /// framed protocol, docs/protocol.md), serve until SIGTERM/SIGINT, then
    /// drain and exit 0. Exit 78 bad configuration; 3 cannot start.
    Serve(serve_cli::ServeArgs),
    /// Print a new random bearer token and the BLAKE3 hash that goes in
    /// `[[server.principals]] token_blake3`.
    Token,
    /// Write development TLS certificates: a new CA (`ca.pem`), a node
    /// certificate (`node.pem`, `node.key`) and client certificates for
    /// mutual TLS, and print the `[server.tls]` and principal lines to use.
    /// For trying TLS out; production uses the operator's own PKI.
    Cert(serve_cli::CertArgs),
    /// The main job over the network: N sessions (default 100) push
    /// transfers to a running node (`--connect`), flat out or paced;
    /// end-to-end latency percentiles (corrected for coordinated omission
    /// when paced), throughput, and an exactly-once check of the balances.
    /// With `--serve DIR` it runs `keel serve` itself and checks a restart's
    /// state hash after. Exit 0 ok; 1 a check failed; 3 cannot start.
    Bench(bench_cli::BenchArgs),
    /// Create and look up accounts and transfers on a running node:
    /// `-c "statements"` or a prompt (`help` prints the syntax). Exit 0 ok;
    /// 1 a statement failed (refused, its outcome unknown, or, from piped
    /// input, did not parse); 3 cannot connect; 64 a `-c` statement does not parse.
    Client(client_cli::ClientArgs),
    /// The main job on a sharded node (`[shards]`, ADR 0014): accounts
    /// spread over N shards by slot, transfers of which a share cross
    /// shards (sagas), the money check (balances sum to 0, clearing
    /// accounts net to 0, nothing pending) and a restart that reaches every
    /// shard's state hash again. Exit 0 ok; 1 a check failed; 3 cannot
    /// start; 4 stopped by a signal; 78 bad configuration.
    Shards(shards_cli::ShardsArgs),
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Segments, sequence ranges, sizes and health.
    Inspect {
        /// Journal directory.
        dir: PathBuf,
    },
    /// Full checksum and position check of every record. Exit 0: healthy;
    /// 1: corrupt (prints segment, offset, sequence); 2: torn tail present
    /// (cut on next open); 3: cannot read.
    Verify {
        /// Journal directory.
        dir: PathBuf,
    },
    /// Print records, human-readable.
    Dump {
        /// Journal directory.
        dir: PathBuf,
        /// First sequence.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last sequence (inclusive).
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Node configuration file (TOML; see docs/keel.example.toml). Flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Durability policy (default sync: group commit, O_DIRECT|O_DSYNC).
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// Journal directory (recovered and replayed if it holds a journal; default keel-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Chain every journal record to the previous one with BLAKE3 (tamper evidence).
    #[arg(long)]
    chain: bool,
    /// Allow buffered I/O where direct I/O is unavailable (tmpfs). Development only:
    /// nothing written there survives a power cut.
    #[arg(long)]
    dev_allow_buffered_io: bool,
    /// Ring slots (power of two, >= 64).
    #[arg(long)]
    ring_slots: Option<usize>,
    /// Stage-to-thread mapping.
    #[arg(long, value_enum)]
    fusion: Option<FusionArg>,
    /// How idle stage threads wait.
    #[arg(long, value_enum)]
    wait: Option<WaitArg>,
    /// Pin lane i to the i-th listed core id (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pin: Vec<usize>,
    /// Transfers to push.
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Submitting threads.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Async commands each producer keeps in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Transfers per command (1..=7; a command is one journal record).
    #[arg(long, default_value_t = 7)]
    batch: usize,
    /// Accounts (the first funds the others).
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Attach the MySQL projector behind the node for the run (URL; without
    /// one: $MYSQL_URL, else mysql://root@127.0.0.1:3306/test) and report
    /// its lag.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    project: Option<String>,
    /// Pace the transfers at this many per second (default: flat out).
    #[arg(long)]
    rate: Option<u64>,
    /// Write a snapshot at shutdown (the restart check then starts from it).
    #[arg(long)]
    snapshot: bool,
    /// While serving, snapshot every N commands (shadow snapshotter; 0: off).
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Sync,
    Async,
    Os,
    None,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async,
            DurabilityArg::Os => Durability::Os,
            DurabilityArg::None => Durability::None,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { exit::USAGE } else { exit::OK });
        }
    };
    match cli.command {
        Commands::Run(args) => run(&args),
        Commands::Journal(command) => journal_cli::run(command),
        Commands::Replay(args) => replay_cli::run(&args),
        Commands::Project(args) => project_cli::run(&args),
        Commands::Serve(args) => serve_cli::serve(&args),
        Commands::Token => serve_cli::token(),
        Commands::Cert(args) => serve_cli::cert(&args),
        Commands::Bench(args) => bench_cli::bench(&args),
        Commands::Client(args) => client_cli::client(&args),
        Commands::Shards(args) => shards_cli::run(&args),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    // The attached projector's outages and halts (`--project`) go to stderr.
    let env = env_logger::Env::default().default_filter_or("warn");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keel run: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    stop_on_signals(&config.stop);
    if config.node.journal.dev_allow_buffered_io {
        eprintln!("WARNING: buffered I/O allowed for development: acknowledged commands may not survive a power cut");
    }
    print_plan(&config);
    match load::run(&config) {
        Ok(report) if report.interrupted => {
            let _ = print_report(&report);
            eprintln!("keel run: stopped by a signal after a clean drain");
            ExitCode::from(exit::INTERRUPTED)
        }
        Ok(report) => print_report(&report),
        Err(e) => {
            eprintln!("keel run failed: {e}");
            let storage = match &e {
                load::LoadError::Node(NodeError::Storage(s)) => Some(s),
                _ => None,
            };
            if let Some(keel_journal::StorageError::NoDirectIo { .. }) = storage {
                eprintln!(
                    "hint: point --data-dir at a real disk, or for development only pass \
                     --dev-allow-buffered-io (or --durability none)"
                );
            }
            match (storage, &e) {
                (Some(_), _) => ExitCode::from(exit::CANNOT_START),
                (_, load::LoadError::Node(NodeError::FormatSetting { .. }))
                | (
                    _,
                    load::LoadError::Node(NodeError::JournalOpen(
                        keel_journal::OpenError::FormatMismatch { .. },
                    )),
                ) => ExitCode::from(exit::CONFIG),
                _ => ExitCode::from(exit::FAILED),
            }
        }
    }
}

/// First SIGINT/SIGTERM: set `stop` (the job stops pushing, drains, stops
/// cleanly and reports). A second one exits at once.
fn stop_on_signals(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(exit::FORCED),
            std::sync::Arc::clone(stop),
        );
        let _ = signal_hook::flag::register(signal, std::sync::Arc::clone(stop));
    }
}

/// The run's configuration: the file (or defaults), then the flags.
fn load_config(args: &RunArgs) -> Result<LoadConfig, ConfigFileError> {
    let mut node = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(durability) = args.durability {
        node.journal.durability = durability.durability();
    }
    if let Some(dir) = &args.data_dir {
        node.journal.data_dir = dir.clone();
    }
    node.journal.chain |= args.chain;
    node.snapshot.on_shutdown |= args.snapshot;
    if let Some(n) = args.snapshot_every {
        node.snapshot.every_commands = n;
    }
    node.journal.dev_allow_buffered_io |= args.dev_allow_buffered_io;
    if let Some(slots) = args.ring_slots {
        node.engine.ring_slots = slots;
    }
    if let Some(fusion) = args.fusion {
        node.engine.fusion = fusion;
    }
    if let Some(wait) = args.wait {
        node.engine.wait_strategy = wait;
    }
    if !args.pin.is_empty() {
        node.engine.pin_cores = args.pin.clone();
    }
    node.engine.in_flight_max = node.engine.in_flight_max.max(args.producers * args.window);
    node.validate()?;
    Ok(LoadConfig {
        node,
        transfers: args.transfers,
        producers: args.producers,
        window: args.window,
        batch: args.batch,
        accounts: args.accounts,
        progress: !args.quiet,
        project_to: args.project.as_ref().map(|url| match url.is_empty() {
            true => keel_projector::default_mysql_url(),
            false => url.clone(),
        }),
        rate: args.rate.filter(|&r| r > 0),
        stop: std::sync::Arc::default(),
    })
}

fn print_plan(config: &LoadConfig) {
    let node = &config.node;
    let durability = match node.journal.durability {
        Durability::None => "none".to_owned(),
        d => format!("{d:?} journal in {}", node.journal.data_dir.display()),
    };
    println!(
        "keel run: ledger, {} transfers in commands of {} from {} producers (window {}), {} accounts, ring {}, {:?} lanes, {:?} wait, durability {durability}",
        config.transfers,
        config.batch,
        config.producers,
        config.window,
        config.accounts,
        node.engine.ring_slots,
        node.engine.fusion,
        node.engine.wait_strategy,
    );
}

/// Prints the results; fails if the restart or the balance check fails.
fn print_report(report: &LoadReport) -> ExitCode {
    let r = &report.recovery;
    for warning in r
        .warnings
        .iter()
        .chain(report.restart.iter().flat_map(|r| &r.warnings))
    {
        eprintln!("WARNING: {warning}");
    }
    println!(
        "recovered    {}{} journal records replayed at start in {:.2} s{}",
        r.snapshot
            .as_ref()
            .map_or(String::new(), |(path, sequence)| format!(
                "snapshot {} (sequence {sequence}) + ",
                path.display()
            )),
        r.records,
        r.elapsed.as_secs_f64(),
        r.truncated.map_or(String::new(), |t| format!(
            " (torn tail cut: segment {} offset {}, {} bytes)",
            t.segment_id, t.offset, t.bytes
        ))
    );
    println!(
        "throughput   {:.0} transfers/s ({} commands in this run; transfer phase {:.2} s)",
        report.transfers_per_second,
        report.commands,
        report.elapsed.as_secs_f64()
    );
    println!(
        "ack latency  {} per command, from submit",
        percentiles(&report.ack_latency_ns)
    );
    if let Some(intended) = &report.intended_latency_ns {
        println!(
            "paced        {} per command, from its intended send time (coordinated omission corrected)",
            percentiles(intended)
        );
    }
    println!("journal batch {}", percentiles(&report.journal_batch_ns));
    println!("BLP batch    {}", percentiles(&report.blp_batch_ns));
    if report.snapshots_while_serving > 0 {
        println!(
            "snapshots    {} written while serving by the shadow snapshotter",
            report.snapshots_while_serving
        );
    }
    let results: Vec<String> = report
        .transfer_results
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(code, n)| format!("{} {n}", load::transfer_result_name(code)))
        .collect();
    println!("results      {}", results.join(", "));
    let (debits, credits) = report.posted_debits_credits;
    if debits != credits {
        eprintln!("INVARIANT VIOLATED: posted debits {debits} != posted credits {credits}");
        return ExitCode::FAILURE;
    }
    println!("invariant    posted debits = posted credits = {debits}: ok");
    println!("state hash   {:016x}", report.state_hash);
    if let Some(path) = &report.snapshot {
        println!("snapshot     written at shutdown: {}", path.display());
    }
    // A projection asked for and not delivered fails the run, after the
    // restart check has been reported.
    let mut projected = true;
    if let Some(p) = &report.projection {
        match &p.result {
            Ok(summary) if summary.checkpoint < p.at_load_end => {
                eprintln!(
                    "projection   NOT CAUGHT UP: {} of {} commands in MySQL {:.0} s after the load (its warnings above say why); the next run or `keel project` continues",
                    summary.checkpoint,
                    p.at_load_end,
                    p.catch_up.as_secs_f64()
                );
                projected = false;
            }
            Ok(summary) => println!(
                "projection   {} of {} commands in MySQL when the load ended, all {} {:.2} s later; lag p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                p.during_load,
                p.at_load_end,
                summary.checkpoint,
                p.catch_up.as_secs_f64(),
                p.lag_us.value_at_quantile(0.5) as f64 / 1e3,
                p.lag_us.value_at_quantile(0.99) as f64 / 1e3,
                p.lag_us.max() as f64 / 1e3,
            ),
            Err(e) => {
                eprintln!("projection   FAILED: {e}");
                projected = false;
            }
        }
    }
    let verdict = match projected {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    };
    let Some(restart) = &report.restart else {
        println!("restart      skipped: durability none keeps no journal");
        return verdict;
    };
    let matches = restart.state_hash == report.state_hash;
    let rate = match restart.snapshot {
        Some(_) => String::new(),
        None => format!(
            " ({:.1} M transfers/s)",
            report.restart_transfers as f64 / restart.elapsed.as_secs_f64() / 1e6
        ),
    };
    println!(
        "restart      {}{} records ({} transfers) recovered in {:.2} s{rate}: state hash {:016x} {}",
        restart
            .snapshot
            .as_ref()
            .map_or(String::new(), |(_, sequence)| format!("snapshot at {sequence} + ")),
        restart.records,
        report.restart_transfers,
        restart.elapsed.as_secs_f64(),
        restart.state_hash,
        if matches { "matches" } else { "DIFFERS" }
    );
    if !matches {
        eprintln!("RESTART MISMATCH: the journal does not reproduce the engine's state");
        return ExitCode::FAILURE;
    }
    verdict
}
