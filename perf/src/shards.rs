//! `keel-perf shards`: a sharded node's scaling and a cross-shard
//! transfer's cost (ADR 0014), each against a baseline in the same run.
//!
//! - **throughput**: single-shard transfers through `ShardedClient`s from
//!   several threads, flat out, with 1, 2 and 4 shards (each shard one
//!   lane: `fusion = single`, so a shard is one thread), under `sync` and
//!   under `none` (CPU only); the baseline is the same run with 1 shard.
//! - **latency**: at a low paced rate on 2 shards with `sync`, a
//!   single-shard transfer (the baseline) and a cross-shard transfer (a
//!   saga: four round trips, the first carrying the begin record), from
//!   the intended send time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_harness::config::{Durability, FusionArg, NodeConfig};
use keel_harness::load::{plain_accounts, XorShift};
use keel_harness::saga::SagaOutcome;
use keel_harness::sharded::{ShardedClient, ShardedNode};
use keel_ledger::Transfer;

use crate::clock::{histogram, now_ns, Pacer};

/// Options of `keel-perf shards`.
#[derive(clap::Args, Clone, Debug)]
pub struct ShardsArgs {
    /// Directory on the disk to measure (fresh subdirectories, removed after).
    #[arg(long, default_value = "target/keel-perf-shards")]
    pub dir: PathBuf,
    /// Accounts, over all shards.
    #[arg(long, default_value_t = 12_000)]
    pub accounts: u32,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Submitting threads in the throughput runs.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Transfers per call (split by shard into commands of 7).
    #[arg(long, default_value_t = 56)]
    pub batch: usize,
    /// Shard counts measured.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub shards: Vec<usize>,
    /// Transfers of each kind in the latency runs.
    #[arg(long, default_value_t = 2_000)]
    pub latency_transfers: u64,
    /// Paced rate of the latency runs (transfers/s).
    #[arg(long, default_value_t = 200)]
    pub latency_rate: u64,
    /// Run only the measurements whose name contains this (routing, throughput, cross, latency).
    #[arg(long)]
    pub only: Option<String>,
}

fn config(dir: &std::path::Path, shards: usize, durability: Durability) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.journal.durability = durability;
    config.engine.fusion = FusionArg::Single;
    config.ledger.accounts_max = 16_384;
    config.ledger.transfers_max = 1 << 23;
    config.shards.count = shards;
    config
}

fn transfer(id: u128, debit: u128, credit: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

/// Starts a node of `shards` shards in a fresh directory with the
/// accounts created; returns it and each shard's account ids.
fn start(
    args: &ShardsArgs,
    shards: usize,
    durability: Durability,
    name: &str,
) -> (ShardedNode, Vec<Vec<u128>>, PathBuf) {
    let dir = args.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let node = ShardedNode::start(&config(&dir, shards, durability)).expect("sharded node");
    let mut client = node.client(0);
    let accounts = plain_accounts(args.accounts);
    for chunk in accounts.chunks(900) {
        let codes = client.create_accounts(chunk).expect("accounts");
        assert!(codes.iter().all(|&c| c == 0));
    }
    let mut per_shard = vec![Vec::new(); shards];
    for a in &accounts {
        per_shard[usize::from(client.shard_of(a.id))].push(a.id);
    }
    (node, per_shard, dir)
}

/// CPU seconds so far of this process's threads whose name starts with
/// `prefix` (from /proc: clock ticks, so 10 ms resolution).
fn thread_cpu(prefix: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| {
            let path = t.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if !comm.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// What one throughput run measured.
struct Run {
    rate: f64,
    /// Lane (engine) CPU µs per transfer, over every shard.
    lane_us: f64,
    /// Producer (routing, client) CPU µs per transfer.
    producer_us: f64,
}

/// Single-shard transfers per second, flat out.
fn throughput(args: &ShardsArgs, shards: usize, durability: Durability, cross_percent: u64) -> Run {
    let name = format!("throughput-{shards}-{durability:?}-{cross_percent}");
    let (node, per_shard, dir) = start(args, shards, durability, &name);
    let per_shard = Arc::new(per_shard);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.producers)
        .map(|p| {
            let mut client: ShardedClient = node.client(0);
            let (per_shard, stop, done) = (per_shard.clone(), stop.clone(), done.clone());
            let batch = args.batch;
            let thread = std::thread::Builder::new().name(format!("producer-{p}"));
            thread
                .spawn(move || {
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((p as u64 + 1) * 0x2545_f491));
                    let mut n = 0u128;
                    let mut transfers = Vec::with_capacity(batch);
                    while !stop.load(Ordering::Relaxed) {
                        transfers.clear();
                        for _ in 0..batch {
                            let n_shards = per_shard.len() as u64;
                            let s1 = (rng.next_u64() % n_shards) as usize;
                            let ids = &per_shard[s1];
                            let d = ids[(rng.next_u64() % ids.len() as u64) as usize];
                            if n_shards > 1 && rng.next_u64() % 100 < cross_percent {
                                let s2 = (s1 + 1 + (rng.next_u64() % (n_shards - 1)) as usize)
                                    % n_shards as usize;
                                let other = &per_shard[s2];
                                let c = other[(rng.next_u64() % other.len() as u64) as usize];
                                n += 1;
                                transfers.push(transfer((p as u128) << 64 | n, d, c));
                                continue;
                            }
                            let mut c = ids[(rng.next_u64() % ids.len() as u64) as usize];
                            if c == d {
                                c = ids
                                    [(ids.iter().position(|&x| x == d).unwrap() + 1) % ids.len()];
                            }
                            n += 1;
                            transfers.push(transfer((p as u128) << 64 | n, d, c));
                        }
                        let codes = client.create_transfers(&transfers).expect("transfers");
                        let ok = codes.iter().filter(|&&c| c == 0).count();
                        done.fetch_add(ok as u64, Ordering::Relaxed);
                    }
                })
                .expect("spawn")
        })
        .collect();
    let (lanes0, producers0) = (thread_cpu("keel-lane"), thread_cpu("producer"));
    let done0 = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.seconds));
    let moved = (done.load(Ordering::Relaxed) - done0).max(1) as f64;
    let lane_us = (thread_cpu("keel-lane") - lanes0) / moved * 1e6;
    let producer_us = (thread_cpu("producer") - producers0) / moved * 1e6;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("producer");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    node.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        rate,
        lane_us,
        producer_us,
    }
}

/// Paced single- and cross-shard transfer latency on 2 shards, `sync`.
fn latency(args: &ShardsArgs) -> (Histogram<u64>, Histogram<u64>) {
    let (node, per_shard, dir) = start(args, 2, Durability::Sync, "latency");
    let mut client = node.client(0);
    let mut single = histogram();
    let mut cross = histogram();
    let mut rng = XorShift(7);
    let mut pick = |shard: usize| {
        let ids = &per_shard[shard];
        ids[(rng.next_u64() % ids.len() as u64) as usize]
    };
    // Interleaved, so both see the same disk and machine noise.
    let pacer = Pacer::new(args.latency_rate);
    for i in 0..args.latency_transfers * 2 {
        let intended = pacer.wait_for(i);
        let id = 1u128 << 100 | u128::from(i);
        if i % 2 == 0 {
            let (d, c) = (pick(0), pick(0));
            let c = if c == d { pick(0) } else { c };
            let codes = client
                .create_transfers(&[transfer(id, d, c)])
                .expect("single");
            assert!(codes[0] == 0 || d == c);
            let _ = single.record((now_ns() - intended).max(1));
        } else {
            let outcome = client
                .transfer_cross(&transfer(id, pick(0), pick(1)))
                .expect("saga");
            assert_eq!(outcome, SagaOutcome::Committed);
            let _ = cross.record((now_ns() - intended).max(1));
        }
    }
    node.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
    (single, cross)
}

/// The business-logic cost of the ownership check: the same create_transfers
/// commands applied (as the BLP does, `keel_core::apply`) to a ledger that
/// owns every slot of a 1-shard table and to one with no ownership (the
/// baseline); ns per transfer, the best of 5 interleaved repetitions.
fn routing_cost() -> (f64, f64) {
    use keel_core::{apply, CommandHeader, CommandRef, DedupTable};
    use keel_ledger::commands::{self, command_type};
    use keel_ledger::{Ledger, LedgerConfig};
    const ACCOUNTS: u32 = 10_000;
    const COMMANDS: usize = 20_000;
    let mut payload = [0u8; 896];
    let encode = |kind: u16, len: usize, seq: u64| CommandHeader {
        command_type: kind,
        schema_version: commands::schema_version(kind),
        payload_len: len as u32,
        timestamp_ns: seq + 1,
        ..CommandHeader::default()
    };
    let mut rng = XorShift(11);
    let batches: Vec<Vec<u8>> = (0..COMMANDS)
        .map(|c| {
            let transfers: Vec<Transfer> = (0..7u64)
                .map(|i| {
                    let d = 1 + u128::from(rng.next_u64() % u64::from(ACCOUNTS));
                    let c2 = 1 + (d % u128::from(ACCOUNTS));
                    transfer(1 + (c as u128) * 7 + u128::from(i), d, c2)
                })
                .collect();
            let len = commands::encode_create_transfers(&transfers, &mut payload).expect("fits");
            payload[..len].to_vec()
        })
        .collect();
    let table = keel_ledger::routing::SlotTable::even(1, 1, &[]).expect("table");
    let mut best = [f64::MAX; 2];
    for _ in 0..5 {
        for (which, owned) in [(1, true), (0, false)] {
            let mut ledger = Ledger::new(LedgerConfig {
                accounts_max: ACCOUNTS,
                transfers_max: (COMMANDS * 7) as u32 + 16,
                prefault: true,
            });
            let mut dedup = DedupTable::with_capacity(16);
            let mut seq = 0u64;
            let mut run = |ledger: &mut Ledger, kind: u16, bytes: &[u8]| {
                let header = encode(kind, bytes.len(), seq);
                let command = CommandRef {
                    sequence: seq,
                    header: &header,
                    payload: bytes,
                };
                seq += 1;
                apply(ledger, &mut dedup, &command);
            };
            if owned {
                let len =
                    commands::encode_ownership(&table.ownership(0), &mut payload).expect("fits");
                let bytes = payload[..len].to_vec();
                run(&mut ledger, command_type::SET_OWNERSHIP, &bytes);
            }
            for chunk in plain_accounts(ACCOUNTS).chunks(commands::ACCOUNTS_PER_COMMAND_MAX) {
                let len = commands::encode_create_accounts(chunk, &mut payload).expect("fits");
                let bytes = payload[..len].to_vec();
                run(&mut ledger, command_type::CREATE_ACCOUNTS, &bytes);
            }
            let started = Instant::now();
            for bytes in &batches {
                run(&mut ledger, command_type::CREATE_TRANSFERS, bytes);
            }
            let ns = started.elapsed().as_nanos() as f64 / (COMMANDS * 7) as f64;
            assert_eq!(
                ledger.transfers_len(),
                COMMANDS * 7,
                "every transfer applied"
            );
            best[which] = best[which].min(ns);
        }
    }
    (best[0], best[1])
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Runs the selected measurements and prints a report.
pub fn run(args: &ShardsArgs) {
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "keel-perf shards: {cores} cores, {} producers, {} transfers per call",
        args.producers, args.batch
    );
    if wanted("routing") {
        let (plain, owned) = routing_cost();
        println!(
            "routing: BLP cost per transfer {owned:.1} ns with the ownership check, \
             {plain:.1} ns without ({:.2}x, +{:.1} ns)",
            owned / plain,
            owned - plain
        );
    }
    if wanted("throughput") {
        for durability in [Durability::None, Durability::Sync] {
            let mut one = None;
            for &shards in &args.shards {
                let run = throughput(args, shards, durability, 0);
                let base = *one.get_or_insert(run.rate);
                let ideal = base * shards as f64;
                println!(
                    "throughput {durability:?} shards={shards}: {:>10.0} transfers/s  \
                     {:.2}x one shard, {:.2} of shards x one shard; CPU per transfer: \
                     lanes {:.2} µs, producers {:.2} µs",
                    run.rate,
                    run.rate / base,
                    run.rate / ideal,
                    run.lane_us,
                    run.producer_us,
                );
                if shards == 1 {
                    // Projection: a shard's lane can do 1/lane_us transfers
                    // per second of its own core; producers need producer_us each.
                    let per_shard = 1e6 / run.lane_us.max(1e-3);
                    println!(
                        "  projection ({durability:?}): one shard on its own core ~{per_shard:.0} transfers/s; \
                         a host with n cores for shards and n*{:.2} for producers: ~n x that, \
                         until the disk (sync) or memory bandwidth binds",
                        run.producer_us / run.lane_us.max(1e-3)
                    );
                }
            }
        }
    }
    if wanted("cross") {
        // Cross-shard throughput: sagas in the calls (each call's sagas run
        // together), against all-single-shard calls in the same run.
        let base = throughput(args, 2, Durability::Sync, 0).rate;
        for cross_percent in [10, 50, 100] {
            let rate = throughput(args, 2, Durability::Sync, cross_percent).rate;
            println!(
                "cross-shard throughput Sync shards=2 cross={cross_percent}%: {rate:>10.0} transfers/s, \
                 {:.2}x all single-shard ({base:.0}/s)",
                rate / base
            );
        }
    }
    if wanted("latency") {
        let (single, cross) = latency(args);
        for (name, h) in [("single-shard", &single), ("cross-shard (saga)", &cross)] {
            println!(
                "latency {name:<19} p50 {:>8.1} µs  p90 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>8.1}  (n={})",
                us(h, 0.5),
                us(h, 0.9),
                us(h, 0.99),
                us(h, 0.999),
                h.max() as f64 / 1e3,
                h.len()
            );
        }
        println!(
            "latency ratio cross/single: p50 {:.2}x, p99 {:.2}x (goal: <= 3x at low load)",
            us(&cross, 0.5) / us(&single, 0.5),
            us(&cross, 0.99) / us(&single, 0.99)
        );
    }
}
