//! `keel-perf`: benchmarks with in-run baselines. Never part of `cargo test`.
//!
//! `keel-perf pipeline` runs the same diamond (producer → journaller ∥
//! replicator → BLP → publisher, trivial work per stage) three ways in one
//! process — the Keel engine, a raw `disruptor` pipeline and a
//! crossbeam-channel pipeline — and reports throughput and paced,
//! coordinated-omission-corrected latency percentiles as ratios to the raw ring.

#![forbid(unsafe_code)]

mod channel;
mod clock;
mod journal;
mod keel;
mod ledger;
mod network;
mod prealloc;
mod projector;
mod raw;
mod replication;
mod report;
mod shards;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keel-perf", about = "Keel benchmarks with in-run baselines")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Keel pipeline vs raw disruptor vs crossbeam channels.
    Pipeline(PipelineArgs),
    /// The durable journal vs raw direct+dsync writes of the same sizes.
    Journal(journal::JournalArgs),
    /// What preparing the next segment costs a durable write meanwhile.
    Prealloc(prealloc::PreallocArgs),
    /// The ledger's goals: BLP cost, replay rate, durable throughput, low-load latency.
    Ledger(ledger::LedgerArgs),
    /// The MySQL projector's goals: catch-up, rebuild, steady state, lag,
    /// against a LOAD DATA reference on the same server.
    Projector(projector::ProjectorArgs),
    /// The network face's goals: loopback echo, `keel bench --connect` vs the
    /// embedded main job (plain and TLS), paced end-to-end latency.
    Network(network::NetworkArgs),
    /// What replication costs a client: three `keel-cluster` replicas
    /// (`sync:1`, `async`) against one `keel serve`, same run.
    Replication(replication::ReplicationArgs),
    /// A sharded node: throughput with 1, 2, 4 shards against one shard,
    /// single- vs cross-shard (saga) transfer latency.
    Shards(shards::ShardsArgs),
}

/// Options of `keel-perf pipeline`.
#[derive(clap::Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Events per throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Paced rate for the latency runs (events/s).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Events per latency run (after warm-up).
    #[arg(long, default_value_t = 300_000)]
    pub latency_events: u64,
    /// Repetitions; the median run of each contender is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run only contenders whose name contains this text (the raw baselines always run).
    #[arg(long)]
    pub only: Option<String>,
    /// Commands per batch in the batch-throughput run.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Ring slots / channel capacity.
    #[arg(long, default_value_t = 4096)]
    pub ring_slots: usize,
}

impl PipelineArgs {
    /// Paced events sent before recording starts (a tenth of the recorded ones).
    pub fn warmup(&self) -> u64 {
        self.latency_events / 10
    }
}

/// How a run sends its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As fast as possible, one event per publish.
    Unpaced,
    /// As fast as possible, this many events per publish.
    Batched(usize),
    /// One event per publish at this rate (events/s), latency recorded.
    Paced(u64),
}

/// One contender's measurements.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Events per second in the throughput run.
    pub throughput: f64,
    /// Events per second publishing in batches (None: the contender has no batch publish).
    pub batch_throughput: Option<f64>,
    /// Intended-send-to-final-stage latency at the paced rate (ns).
    pub latency_ns: hdrhistogram::Histogram<u64>,
}

impl Measured {
    /// Runs a contender: unpaced for throughput, batched (if it can), then
    /// paced at `args.rate` (with warm-up) for latency. `run(events, mode)`
    /// returns events per second and the latency histogram.
    pub fn from_runs(
        args: &PipelineArgs,
        batches: bool,
        run: impl Fn(u64, Mode) -> (f64, hdrhistogram::Histogram<u64>),
    ) -> Self {
        let (throughput, _) = run(args.events, Mode::Unpaced);
        let batch_throughput = batches.then(|| run(args.events, Mode::Batched(args.batch)).0);
        let (_, latency_ns) = run(args.latency_events + args.warmup(), Mode::Paced(args.rate));
        Self {
            throughput,
            batch_throughput,
            latency_ns,
        }
    }
}

fn main() {
    match Cli::parse().command {
        Commands::Pipeline(args) => report::pipeline(&args),
        Commands::Journal(args) => journal::run(&args),
        Commands::Prealloc(args) => prealloc::run(&args),
        Commands::Ledger(args) => ledger::run(&args),
        Commands::Projector(args) => projector::run(&args),
        Commands::Network(args) => network::run(&args),
        Commands::Replication(args) => replication::run(&args),
        Commands::Shards(args) => shards::run(&args),
    }
}
