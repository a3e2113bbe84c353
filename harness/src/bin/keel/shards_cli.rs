//! `keel shards`: the main job on a sharded node (`keel_harness::sharded_load`).

use std::path::PathBuf;
use std::process::ExitCode;

use keel_harness::config::NodeConfig;
use keel_harness::load::percentiles;
use keel_harness::sharded::ShardedNodeError;
use keel_harness::sharded_load::{self, ShardedLoadConfig, ShardedLoadError};
use keel_ledger::CreateTransferResult;

use crate::exit;
use crate::DurabilityArg;

/// Options of `keel shards`.
#[derive(clap::Args)]
pub struct ShardsArgs {
    /// Node configuration file (TOML; `[shards]` and the node sections). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shards (`shards.count`; default 2 unless the file says).
    #[arg(long)]
    shards: Option<usize>,
    /// Directory holding `shard-<i>/` (default keel-shards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Durability policy of every shard's journal.
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// Allow buffered I/O where direct I/O is unavailable (tmpfs). Development only.
    #[arg(long)]
    dev_allow_buffered_io: bool,
    /// Transfers to push.
    #[arg(long, default_value_t = 200_000)]
    transfers: u64,
    /// Submitting threads.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Transfers per call (split by shard into commands of 7).
    #[arg(long, default_value_t = 56)]
    batch: usize,
    /// Accounts over all shards.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Percentage of transfers between accounts of two shards (sagas).
    #[arg(long, default_value_t = 10)]
    cross_percent: u32,
}

fn config(args: &ShardsArgs) -> Result<ShardedLoadConfig, String> {
    let mut node = match &args.config {
        Some(path) => NodeConfig::from_file(path).map_err(|e| e.to_string())?,
        None => {
            let mut node = NodeConfig::default();
            node.journal.data_dir = PathBuf::from("keel-shards");
            node.shards.count = 2;
            node
        }
    };
    if let Some(n) = args.shards {
        node.shards.count = n;
    }
    if let Some(dir) = &args.data_dir {
        node.journal.data_dir = dir.clone();
    }
    if let Some(d) = args.durability {
        node.journal.durability = d.durability();
    }
    node.journal.dev_allow_buffered_io |= args.dev_allow_buffered_io;
    node.validate().map_err(|e| e.to_string())?;
    let per_shard_max = u64::from(node.ledger.accounts_max) * node.shards.count as u64;
    if args.accounts < 2 || u64::from(args.accounts) > per_shard_max / 2 {
        return Err(format!(
            "--accounts {}: expected 2..={} (half of ledger.accounts_max x shards: slots do not split evenly)",
            args.accounts,
            per_shard_max / 2
        ));
    }
    if args.producers == 0 || args.batch == 0 || args.cross_percent > 100 {
        return Err("--producers and --batch at least 1, --cross-percent 0..=100".into());
    }
    Ok(ShardedLoadConfig {
        node,
        transfers: args.transfers,
        producers: args.producers,
        batch: args.batch,
        accounts: args.accounts,
        cross_percent: args.cross_percent,
        stop: std::sync::Arc::default(),
    })
}

/// Runs `keel shards`.
pub fn run(args: &ShardsArgs) -> ExitCode {
    let config = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keel shards: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    crate::stop_on_signals(&config.stop);
    let node = &config.node;
    println!(
        "keel shards: {} shards in {}/shard-<i> ({:?}), {} accounts, {} transfers ({}% cross-shard) \
         in calls of {} from {} producers",
        node.shards.count,
        node.journal.data_dir.display(),
        node.journal.durability,
        config.accounts,
        config.transfers,
        config.cross_percent,
        config.batch,
        config.producers,
    );
    let report = match sharded_load::run(&config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("keel shards failed: {e}");
            let code = match e {
                ShardedLoadError::Start(ShardedNodeError::Config(_)) => exit::CONFIG,
                ShardedLoadError::Start(_) => exit::CANNOT_START,
                _ => exit::FAILED,
            };
            return ExitCode::from(code);
        }
    };
    let r = &report.recovered;
    println!(
        "start: {} sagas in the journals, {} left open by an earlier run resumed ({} committed)",
        r.begun, r.resumed, r.committed
    );
    let moved: u64 = report.results.iter().sum();
    println!(
        "transfers: {moved} in {:.2} s = {:.0}/s; {} crossed shards",
        report.elapsed.as_secs_f64(),
        report.transfers_per_second,
        report.cross
    );
    println!("call latency: {}", percentiles(&report.call_latency_ns));
    for (code, &n) in report.results.iter().enumerate().filter(|(_, &n)| n > 0) {
        let name = CreateTransferResult::from_u8(code as u8).map_or("?", |c| c.name());
        println!("  {name}: {n}");
    }
    println!(
        "transfers per shard (saga steps included): {:?}",
        report.per_shard_transfers
    );
    println!(
        "money check: sum of balances {}, clearing pairs {:?}, pending {}",
        report.total_net, report.clearing_pairs, report.pending
    );
    let restart = match report.hashes.0 == report.hashes.1 {
        true => "equal",
        false => "DIFFER",
    };
    println!(
        "restart: every shard's state hash {restart}: {:x?}",
        report.hashes.0
    );
    match (report.ok(), report.interrupted) {
        (false, _) => {
            eprintln!("keel shards: a check failed");
            ExitCode::from(exit::FAILED)
        }
        (true, true) => ExitCode::from(exit::INTERRUPTED),
        (true, false) => ExitCode::from(exit::OK),
    }
}
