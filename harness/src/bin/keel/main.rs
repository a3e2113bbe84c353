//! `keel`: the command line. `keel run` is Keel's main job on embedded
//! defaults: the pipeline running the built-in demo state machine under load.

#![forbid(unsafe_code)]

mod journal_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use keel_core::{EngineConfig, Fusion, Pinning, WaitStrategy};
use keel_harness::load::{self, percentiles, Durability, LoadConfig, LoadReport};
use keel_journal::SyncPolicy;

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
    /// Run the engine under load with the built-in demo state machine and
    /// print throughput and acknowledgement-latency percentiles.
    Run(RunArgs),
    /// Inspect, verify or dump a journal directory.
    #[command(subcommand)]
    Journal(JournalCommand),
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

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// fdatasync (O_DSYNC) per batch before the BLP sees it: group commit.
    Sync,
    /// Written to the OS per batch, synced every 10 ms.
    Async,
    /// Written to the OS only.
    Os,
    /// No journal at all.
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum FusionArg {
    Separate,
    Paired,
    Single,
}

#[derive(Clone, Copy, ValueEnum)]
enum WaitArg {
    BusySpin,
    SpinYield,
    Blocking,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Durability policy.
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityArg,
    /// Journal directory (recovered and replayed if it holds a journal).
    #[arg(long, default_value = "keel-data")]
    data_dir: PathBuf,
    /// Chain every journal record to the previous one with BLAKE3 (tamper evidence).
    #[arg(long)]
    chain: bool,
    /// Allow buffered I/O where direct I/O is unavailable (tmpfs). Development only:
    /// nothing written there survives a power cut.
    #[arg(long)]
    dev_allow_buffered_io: bool,
    /// Transfers to push.
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Submitting threads.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Async submissions each producer keeps in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Demo accounts.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Ring slots (power of two, >= 64).
    #[arg(long, default_value_t = 4096)]
    ring_slots: usize,
    /// Stage-to-thread mapping.
    #[arg(long, value_enum, default_value = "paired")]
    fusion: FusionArg,
    /// How idle stage threads wait.
    #[arg(long, value_enum, default_value = "blocking")]
    wait: WaitArg,
    /// Pin lane i to the i-th listed core id (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pin: Vec<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Commands::Run(args) => run(&args),
        Commands::Journal(command) => journal_cli::run(command),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    if args.dev_allow_buffered_io {
        eprintln!("WARNING: buffered I/O allowed for development: acknowledged commands may not survive a power cut");
    }
    let config = load_config(args);
    print_plan(&config);
    match load::run(&config) {
        Ok(report) => print_report(&report),
        Err(e) => {
            eprintln!("keel run failed: {e}");
            if matches!(
                e,
                load::LoadError::Storage(keel_journal::StorageError::NoDirectIo { .. })
            ) {
                eprintln!(
                    "hint: point --data-dir at a real disk, or for development only pass \
                     --dev-allow-buffered-io (or --durability none)"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The run's configuration from the command line.
fn load_config(args: &RunArgs) -> LoadConfig {
    let engine = EngineConfig {
        ring_slots: args.ring_slots,
        in_flight_max: (args.producers * args.window).max(args.ring_slots),
        fusion: match args.fusion {
            FusionArg::Separate => Fusion::Separate,
            FusionArg::Paired => Fusion::Paired,
            FusionArg::Single => Fusion::Single,
        },
        wait_strategy: match args.wait {
            WaitArg::BusySpin => WaitStrategy::BusySpin,
            WaitArg::SpinYield => WaitStrategy::spin_then_yield(),
            WaitArg::Blocking => WaitStrategy::default(),
        },
        pinning: match args.pin.is_empty() {
            true => Pinning::None,
            false => Pinning::Cores(args.pin.clone()),
        },
        ..EngineConfig::default()
    };
    let sync = match args.durability {
        DurabilityArg::Sync => Some(SyncPolicy::Sync),
        DurabilityArg::Async => Some(SyncPolicy::Async(std::time::Duration::from_millis(10))),
        DurabilityArg::Os => Some(SyncPolicy::None),
        DurabilityArg::None => None,
    };
    let durability = match sync {
        Some(sync) => Durability::Journal {
            dir: args.data_dir.clone(),
            sync,
            chain: args.chain,
            allow_buffered: args.dev_allow_buffered_io,
        },
        None => Durability::None,
    };
    LoadConfig {
        durability,
        transfers: args.transfers,
        producers: args.producers,
        window: args.window,
        accounts: args.accounts,
        engine,
        progress: !args.quiet,
    }
}

fn print_plan(config: &LoadConfig) {
    let durability = match &config.durability {
        Durability::None => "none".to_owned(),
        Durability::Journal { dir, sync, .. } => format!("{sync:?} journal in {}", dir.display()),
    };
    println!(
        "keel run: {} transfers from {} producers (window {}), {} accounts, ring {}, {:?} lanes, {:?}, durability {durability}",
        config.transfers,
        config.producers,
        config.window,
        config.accounts,
        config.engine.ring_slots,
        config.engine.fusion,
        config.engine.wait_strategy
    );
}

/// Prints the results; fails if the replay or the balance check fails.
fn print_report(report: &LoadReport) -> ExitCode {
    println!(
        "throughput   {:.0} transfers/s ({} commands in {:.2} s)",
        report.transfers_per_second,
        report.commands,
        report.elapsed.as_secs_f64()
    );
    println!("ack latency  {}", percentiles(&report.ack_latency_ns));
    println!("journal batch {}", percentiles(&report.journal_batch_ns));
    println!(
        "outcomes     {} applied, {} rejected (insufficient funds etc.)",
        report.applied, report.rejected
    );
    println!("state hash   {:016x}", report.state_hash);
    if let Some(journal) = &report.journal {
        let matches = journal.replayed_state_hash == report.state_hash;
        println!(
            "recovered    {} records replayed at start in {:.2} s{}",
            journal.recovered_records,
            journal.recovery.as_secs_f64(),
            journal.truncated.map_or(String::new(), |t| format!(
                " (torn tail cut: segment {} offset {}, {} bytes)",
                t.segment_id, t.offset, t.bytes
            ))
        );
        println!(
            "replay check {} records replayed from the journal in {:.2} s: state hash {:016x} {}",
            journal.records_at_end,
            journal.replay.as_secs_f64(),
            journal.replayed_state_hash,
            if matches { "matches" } else { "DIFFERS" }
        );
        if !matches {
            eprintln!("REPLAY MISMATCH: the journal does not reproduce the engine's state");
            return ExitCode::FAILURE;
        }
    }
    if report.total_balance != report.deposited {
        eprintln!(
            "INVARIANT VIOLATED: balances sum to {} but {} was deposited",
            report.total_balance, report.deposited
        );
        return ExitCode::FAILURE;
    }
    println!(
        "invariant    balances sum to the {} deposited: ok",
        report.deposited
    );
    ExitCode::SUCCESS
}
