//! `keel`: the command line. `keel run` is Keel's main job on embedded
//! defaults: the pipeline running the built-in demo state machine under load.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use keel_core::{EngineConfig, Fusion, Pinning, WaitStrategy};
use keel_harness::load::{self, percentiles, LoadConfig};

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
    }
}

fn run(args: &RunArgs) -> ExitCode {
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
    let config = LoadConfig {
        transfers: args.transfers,
        producers: args.producers,
        window: args.window,
        accounts: args.accounts,
        engine,
        progress: !args.quiet,
    };
    println!(
        "keel run: {} transfers from {} producers (window {}), {} accounts, ring {}, {:?} lanes, {:?}, durability none",
        config.transfers,
        config.producers,
        config.window,
        config.accounts,
        config.engine.ring_slots,
        config.engine.fusion,
        config.engine.wait_strategy
    );
    let report = match load::run(&config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("keel run failed: {e}");
            return ExitCode::FAILURE;
        }
    };
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
