//! `keel-perf ledger`: the ledger's four goals, each with a baseline measured
//! in the same run.
//!
//! - **blp**: business-logic cost per transfer (HDR over commands, divided by
//!   the transfers in each), against a naive `HashMap` ledger doing only the
//!   two balance updates on the same transfers.
//! - **replay**: transfers per second rebuilt from a journal of generated
//!   traffic, page cache warm and cold, against a scan of the same journal
//!   that only verifies records (the floor a replay cannot beat).
//! - **durable**: the main job's transfers per second with `sync` group
//!   commit, against the raw device's 1 MiB `O_DIRECT|O_DSYNC` bandwidth
//!   expressed in transfers at the journal's bytes per transfer.
//! - **latency**: one transfer at a time at a low paced rate with `sync`,
//!   acknowledgement latency from the intended send time, against one raw
//!   direct+dsync write of the journal's block size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_core::{apply, CommandHeader, CommandRef, DedupTable, Journaller};
use keel_harness::config::{NodeConfig, WaitArg};
use keel_harness::load::{self, LoadConfig};
use keel_harness::node::LedgerNode;
use keel_harness::replay::Replayer;
use keel_journal::{read_records, FsStorage, IoMode, Journal, JournalConfig, Storage, SyncPolicy};
use keel_ledger::commands::{self, command_type};
use keel_ledger::{Account, CallOptions, Ledger, LedgerConfig, Transfer};

use crate::clock::{histogram, now_ns, Pacer};
use crate::journal::{fresh, median, raw_bandwidth, raw_latency};

/// Options of `keel-perf ledger`.
#[derive(clap::Args, Clone, Debug)]
pub struct LedgerArgs {
    /// Directory on the disk to measure (fresh subdirectories are used and removed).
    #[arg(long, default_value = "target/keel-perf-ledger")]
    pub dir: PathBuf,
    /// Accounts the transfers move between.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u32,
    /// Transfers applied in the BLP measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub blp_transfers: u64,
    /// Transfers in the journal the replay measurement rebuilds.
    #[arg(long, default_value_t = 10_000_000)]
    pub replay_transfers: u64,
    /// Transfers pushed in the durable-throughput measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub durable_transfers: u64,
    /// Transfers sent one at a time in the latency measurement.
    #[arg(long, default_value_t = 3_000)]
    pub latency_transfers: u64,
    /// Paced rate of the latency measurement (transfers/s).
    #[arg(long, default_value_t = 500)]
    pub latency_rate: u64,
    /// Repetitions (the median run is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run only the measurements whose name contains this (blp, replay, durable, latency).
    #[arg(long)]
    pub only: Option<String>,
}

const LEDGER: u32 = 1;

fn transfer(id: u128, debit: u128, credit: u128, amount: u64) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

/// Accounts `1..=accounts` in batches of one command each.
fn account_batches(accounts: u32) -> Vec<Vec<Account>> {
    let ids: Vec<u128> = (1..=u128::from(accounts)).collect();
    ids.chunks(commands::ACCOUNTS_PER_COMMAND_MAX)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&id| Account {
                    id,
                    ledger: LEDGER,
                    code: 1,
                    ..Account::default()
                })
                .collect()
        })
        .collect()
}

/// Deterministic traffic between accounts `1..=accounts`.
struct Traffic {
    state: u64,
    accounts: u64,
    next_id: u128,
}

impl Traffic {
    fn new(accounts: u32, first_id: u128) -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            accounts: u64::from(accounts),
            next_id: first_id,
        }
    }

    fn next(&mut self) -> Transfer {
        let mut r = || {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state
        };
        let debit = 1 + r() % self.accounts;
        let credit = 1 + (debit + r() % (self.accounts - 1)) % self.accounts;
        let amount = 1 + r() % 1_000;
        self.next_id += 1;
        transfer(self.next_id, u128::from(debit), u128::from(credit), amount)
    }
}

/// Applies encoded commands to a ledger the way the BLP does.
struct Driver {
    ledger: Ledger,
    dedup: DedupTable,
    sequence: u64,
    payload: [u8; keel_core::constants::PAYLOAD_BYTES_MAX],
}

impl Driver {
    fn new(accounts: u32, transfers_max: u64) -> Self {
        let mut driver = Self {
            ledger: Ledger::new(LedgerConfig {
                accounts_max: accounts + 1,
                transfers_max: transfers_max as u32,
                prefault: false,
            }),
            dedup: DedupTable::with_capacity(1),
            sequence: 0,
            payload: [0; keel_core::constants::PAYLOAD_BYTES_MAX],
        };
        for batch in account_batches(accounts) {
            let len = commands::encode_create_accounts(&batch, &mut driver.payload).unwrap();
            driver.apply(command_type::CREATE_ACCOUNTS, len);
        }
        driver
    }

    fn encode(&mut self, transfers: &[Transfer]) -> usize {
        commands::encode_create_transfers(transfers, &mut self.payload).unwrap()
    }

    #[inline]
    fn apply(&mut self, kind: u16, len: usize) {
        let payload = self.payload;
        self.apply_payload(kind, &payload[..len], None);
    }

    /// Applies one command as the BLP does, first handing the next one (if
    /// any) to `prefetch`.
    #[inline]
    fn apply_payload(&mut self, kind: u16, payload: &[u8], ahead: Option<&[u8]>) {
        let header = |len: usize, sequence: u64| CommandHeader {
            command_type: kind,
            schema_version: keel_ledger::commands::schema_version(kind),
            payload_len: len as u32,
            timestamp_ns: sequence + 1,
            ..CommandHeader::default()
        };
        if let Some(ahead) = ahead {
            let h = header(ahead.len(), self.sequence + 1);
            keel_core::StateMachine::prefetch(
                &self.ledger,
                &CommandRef {
                    sequence: self.sequence + 1,
                    header: &h,
                    payload: ahead,
                },
            );
        }
        let h = header(payload.len(), self.sequence);
        let command = CommandRef {
            sequence: self.sequence,
            header: &h,
            payload,
        };
        let applied = apply(&mut self.ledger, &mut self.dedup, &command);
        debug_assert!(applied.outcome.code.is_ok());
        self.sequence += 1;
    }
}

/// The median cost of an empty timed region (two `Instant::now` calls),
/// subtracted from every BLP sample of both contenders.
fn timer_overhead_ns() -> u64 {
    let mut h = histogram();
    for _ in 0..100_000 {
        let start = Instant::now();
        h.saturating_record(start.elapsed().as_nanos() as u64);
    }
    h.value_at_quantile(0.5)
}

/// BLP ns per transfer, commands of `batch` transfers: (keel, naive baseline).
fn blp(args: &LedgerArgs, batch: usize) -> (Histogram<u64>, Histogram<u64>) {
    let timer = timer_overhead_ns();
    let block_transfers = keel_core::constants::STAGE_BATCH_MAX * batch as u64;
    let mut driver = Driver::new(args.accounts, args.blp_transfers + block_transfers + 64);
    let mut traffic = Traffic::new(args.accounts, 1 << 64);
    let mut keel = histogram();
    let mut transfers = vec![Transfer::default(); batch];
    // Commands are encoded a block at a time (untimed) and applied in order
    // with a one-command lookahead, as the BLP takes a batch from the ring.
    let block = keel_core::constants::STAGE_BATCH_MAX as usize;
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(block);
    let mut applied = 0;
    while applied < args.blp_transfers {
        encoded.clear();
        for _ in 0..block {
            transfers.iter_mut().for_each(|t| *t = traffic.next());
            let len = driver.encode(&transfers);
            encoded.push(driver.payload[..len].to_vec());
        }
        for (i, payload) in encoded.iter().enumerate() {
            let ahead = encoded.get(i + 1).map(Vec::as_slice);
            let start = Instant::now();
            driver.apply_payload(command_type::CREATE_TRANSFERS, payload, ahead);
            let ns = (start.elapsed().as_nanos() as u64).saturating_sub(timer);
            keel.saturating_record((ns / batch as u64).max(1));
        }
        applied += (block * batch) as u64;
    }
    // Baseline: the two balance updates and nothing else, same traffic, same timing.
    let mut naive: HashMap<u128, (u64, u64)> = (1..=u128::from(args.accounts))
        .map(|id| (id, (0, 0)))
        .collect();
    let mut traffic = Traffic::new(args.accounts, 1 << 64);
    let mut baseline = histogram();
    let mut applied = 0;
    while applied < args.blp_transfers {
        transfers.iter_mut().for_each(|t| *t = traffic.next());
        let start = Instant::now();
        for t in &transfers {
            naive.get_mut(&t.debit_account_id).expect("exists").0 += t.amount;
            naive.get_mut(&t.credit_account_id).expect("exists").1 += t.amount;
        }
        let ns = (start.elapsed().as_nanos() as u64).saturating_sub(timer);
        baseline.saturating_record((ns / batch as u64).max(1));
        applied += batch as u64;
    }
    std::hint::black_box(&naive);
    (keel, baseline)
}

/// Writes a journal of `transfers` transfers (7 per record) after the accounts.
pub(crate) fn write_journal(dir: &Path, accounts: u32, transfers: u64) {
    let storage = FsStorage::open(dir, IoMode::DirectSync).expect("journal storage");
    let config = JournalConfig {
        sync: SyncPolicy::None,
        write_buffer_bytes: 4 << 20,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(storage, config).expect("open journal").0;
    let mut driver = Driver::new(1, 1); // only for its payload buffer
    let mut sequence = 0u64;
    let mut append = |journal: &mut Journal<FsStorage>, kind: u16, payload: &[u8]| {
        let header = CommandHeader {
            command_type: kind,
            schema_version: keel_ledger::commands::schema_version(kind),
            payload_len: payload.len() as u32,
            timestamp_ns: 1_000 + sequence,
            ..CommandHeader::default()
        };
        journal
            .append(&CommandRef {
                sequence,
                header: &header,
                payload,
            })
            .expect("append");
        if sequence % 4096 == 4095 {
            journal.end_of_batch(sequence).expect("write");
        }
        sequence += 1;
    };
    for batch in account_batches(accounts) {
        let len = commands::encode_create_accounts(&batch, &mut driver.payload).unwrap();
        append(
            &mut journal,
            command_type::CREATE_ACCOUNTS,
            &driver.payload[..len],
        );
    }
    let mut traffic = Traffic::new(accounts, 1 << 64);
    let mut batch = [Transfer::default(); commands::TRANSFERS_PER_COMMAND_MAX];
    let mut written = 0;
    while written < transfers {
        let n = (transfers - written).min(batch.len() as u64) as usize;
        batch[..n].iter_mut().for_each(|t| *t = traffic.next());
        let len = driver.encode(&batch[..n]);
        append(
            &mut journal,
            command_type::CREATE_TRANSFERS,
            &driver.payload[..len],
        );
        written += n as u64;
    }
    journal.end_of_batch(sequence - 1).expect("write");
}

/// Drops the page cache (needs root: `sync` then `/proc/sys/vm/drop_caches`).
/// Returns false where that is not allowed; the cold run is then skipped.
fn drop_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// One replay of the journal in `dir`: (transfers/s, verify-only scan transfers/s).
fn replay(dir: &Path, args: &LedgerArgs) -> (f64, f64) {
    let storage = FsStorage::open(dir, IoMode::DirectSync).expect("journal storage");
    let start = Instant::now();
    let mut records = 0u64;
    read_records(&storage, 0, u64::MAX, &mut |_| records += 1).expect("scan");
    let scan = start.elapsed();
    let config = LedgerConfig {
        accounts_max: args.accounts + 1,
        transfers_max: (args.replay_transfers + 64) as u32,
        prefault: false,
    };
    // Allocating (and prefaulting) the ledger is start-up, not replay.
    let mut replayer = Replayer::new(Ledger::new(config), 1);
    let start = Instant::now();
    read_records(&storage, 0, u64::MAX, &mut |r| replayer.apply(r)).expect("replay");
    let replayed = replayer.finish();
    let elapsed = start.elapsed();
    assert_eq!(
        replayed.state_machine.transfers_len() as u64,
        args.replay_transfers
    );
    let rate = |d: Duration| args.replay_transfers as f64 / d.as_secs_f64();
    (rate(elapsed), rate(scan))
}

/// Durable main-job throughput (transfers/s) and journal bytes per transfer.
fn durable(dir: &Path, args: &LedgerArgs) -> (f64, f64) {
    let mut node = NodeConfig::default();
    node.journal.data_dir = dir.to_path_buf();
    node.ledger.transfers_max = (args.durable_transfers + u64::from(args.accounts) + 64) as u32;
    let config = LoadConfig {
        node,
        transfers: args.durable_transfers,
        progress: false,
        ..LoadConfig::default()
    };
    let report = load::run(&config).expect("main job");
    assert_eq!(
        report.restart.expect("durable").state_hash,
        report.state_hash
    );
    let storage = FsStorage::open(dir, IoMode::DirectSync).expect("journal storage");
    let scan = read_records(&storage, 0, 0, &mut |_| {}).expect("scan");
    let bytes: u64 = scan.segments.iter().map(|s| s.data_end).sum();
    let total_transfers = args.durable_transfers + u64::from(args.accounts);
    (
        report.transfers_per_second,
        bytes as f64 / total_transfers as f64,
    )
}

/// Paced single-transfer acknowledgement latency with `sync`.
fn latency(dir: &Path, args: &LedgerArgs, wait: WaitArg) -> Histogram<u64> {
    let mut config = NodeConfig::default();
    config.engine.wait_strategy = wait;
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = args.accounts + 1;
    config.ledger.transfers_max = (args.latency_transfers * 2 + 64) as u32;
    let node = LedgerNode::start_ledger(&config).expect("node");
    let mut client = node.client();
    let accounts: Vec<Account> = (1..=2u128)
        .map(|id| Account {
            id,
            ledger: LEDGER,
            code: 1,
            ..Account::default()
        })
        .collect();
    client
        .create_accounts(&accounts, CallOptions::default())
        .expect("accounts");
    let warmup = args.latency_transfers / 10;
    let pacer = Pacer::new(args.latency_rate);
    let mut h = histogram();
    for i in 0..args.latency_transfers + warmup {
        let intended = pacer.wait_for(i);
        let t = transfer(u128::from(i) + 100, 1, 2, 1);
        let (_, results) = client
            .create_transfers(&[t], CallOptions::default())
            .expect("transfer");
        assert_eq!(results.codes(), [0]);
        if i >= warmup {
            h.saturating_record(now_ns() - intended);
        }
    }
    drop(client);
    node.shutdown().expect("shutdown");
    h
}

fn wants(args: &LedgerArgs, name: &str) -> bool {
    args.only.as_deref().is_none_or(|only| name.contains(only))
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `keel-perf ledger`.
pub fn run(args: &LedgerArgs) {
    println!("| measure | baseline | keel | ratio | goal |");
    println!("|---|---:|---:|---:|---|");
    if wants(args, "blp") {
        for batch in [1, commands::TRANSFERS_PER_COMMAND_MAX] {
            let (mut keel, mut base) = (histogram(), histogram());
            for _ in 0..args.runs {
                let (k, b) = blp(args, batch);
                keel.add(k).expect("same bounds");
                base.add(b).expect("same bounds");
            }
            for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
                let (b, k) = (base.value_at_quantile(q), keel.value_at_quantile(q));
                println!(
                    "| BLP ns per transfer, {batch} per command, {name} (baseline: HashMap balance updates) | {b} | {k} | {:.2} | p50 < 100 ns |",
                    k as f64 / b as f64
                );
            }
        }
    }
    if wants(args, "replay") {
        let dir = fresh(&args.dir, "replay");
        eprintln!("writing a journal of {} transfers", args.replay_transfers);
        write_journal(&dir, args.accounts, args.replay_transfers);
        let (mut warm, mut cold, mut scan) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let (w, s) = replay(&dir, args);
            warm.push(w);
            scan.push(s);
            if drop_cache() {
                cold.push(replay(&dir, args).0);
            }
        }
        let (warm, scan) = (median(warm), median(scan));
        println!(
            "| replay, page cache warm, M transfers/s (baseline: verify-only scan) | {:.2} | {:.2} | {:.2} | ≥ 5 M/s |",
            scan / 1e6,
            warm / 1e6,
            warm / scan
        );
        match cold.is_empty() {
            true => println!("| replay, page cache cold | - | skipped: dropping the page cache needs root | - | reported |"),
            false => {
                let cold = median(cold);
                println!(
                    "| replay, page cache cold, M transfers/s (baseline: warm scan) | {:.2} | {:.2} | {:.2} | reported |",
                    scan / 1e6,
                    cold / 1e6,
                    cold / scan
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let block = FsStorage::open(fresh(&args.dir, "probe"), IoMode::DirectSync)
        .expect("direct I/O on the bench directory")
        .block_size() as usize;
    if wants(args, "durable") {
        let (mut keel, mut raw) = (Vec::new(), Vec::new());
        let mut bytes_per_transfer = 0.0;
        for _ in 0..args.runs {
            let (rate, bytes) = durable(&fresh(&args.dir, "durable"), args);
            keel.push(rate);
            bytes_per_transfer = bytes;
            let mib_s = raw_bandwidth(&fresh(&args.dir, "raw"), 256, block);
            raw.push(mib_s * (1 << 20) as f64 / bytes);
        }
        let (keel, raw) = (median(keel), median(raw));
        println!(
            "| durable (sync) transfers/s, main job (baseline: raw 1 MiB direct+dsync writes at {bytes_per_transfer:.0} B/transfer) | {raw:.0} | {keel:.0} | {:.2} | ≥ 1,000,000/s |",
            keel / raw
        );
    }
    if wants(args, "latency") {
        let (mut blocking, mut spin_yield, mut raw) = (histogram(), histogram(), histogram());
        for _ in 0..args.runs {
            blocking
                .add(latency(
                    &fresh(&args.dir, "latency"),
                    args,
                    WaitArg::Blocking,
                ))
                .expect("same bounds");
            spin_yield
                .add(latency(
                    &fresh(&args.dir, "latency"),
                    args,
                    WaitArg::SpinYield,
                ))
                .expect("same bounds");
            raw.add(raw_latency(
                &fresh(&args.dir, "raw"),
                args.latency_transfers as usize,
                block,
            ))
            .expect("same bounds");
        }
        for (wait, keel) in [
            ("blocking (default)", &blocking),
            ("spin-yield", &spin_yield),
        ] {
            for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                println!(
                    "| one transfer, sync, {} /s paced, {wait} wait, ack {name} µs (baseline: one {block} B direct+dsync write) | {:.0} | {:.0} | {:.2} | p99 < 600 µs |",
                    args.latency_rate,
                    us(&raw, q),
                    us(keel, q),
                    us(keel, q) / us(&raw, q)
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&args.dir);
}
