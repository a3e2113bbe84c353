//! `keel-perf projector`: the MySQL projection sink's goals against a
//! reference measured on the same server in the same run.
//!
//! - **reference**: one `LOAD DATA LOCAL INFILE` of the same transfer rows
//!   into a table of `keel_transfers`' columns with only its primary key:
//!   the fastest this server takes these rows.
//! - **catch-up**: a journal of N transfers (7 per command, main-job shape)
//!   projected from checkpoint 0 into the live tables: transfers (events)/s.
//! - **rebuild**: the same journal into the shadow tables, index build and
//!   swap included: ledger rows/s.
//! - **steady**: the main job paced above the goal rate with the projector
//!   attached in-process; events projected per second while it runs.
//! - **lag**: the main job paced at 10k transfers/s with the projector
//!   attached: sequencer timestamp → MySQL commit per command; the same run
//!   without the projector is the baseline for acknowledgement latency.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use keel_harness::config::NodeConfig;
use keel_harness::load::{self, LoadConfig};
use keel_journal::{FsStorage, JournalTail};
use keel_ledger::LedgerConfig;
use keel_projector::{Batch, Deriver, ProjectorConfig, Status, Until};
use mysql_async::prelude::Queryable as _;

use crate::journal::fresh;
use crate::ledger::write_journal;

/// Options of `keel-perf projector`.
#[derive(clap::Args, Clone, Debug)]
pub struct ProjectorArgs {
    /// Directory for the journals (fresh subdirectories are used and removed).
    #[arg(long, default_value = "target/keel-perf-projector")]
    pub dir: PathBuf,
    /// Database server (a database `keel_perf` is created there and dropped).
    #[arg(long)]
    pub mysql_url: Option<String>,
    /// Transfers in the catch-up and rebuild journal.
    #[arg(long, default_value_t = 500_000)]
    pub transfers: u64,
    /// Accounts.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u32,
    /// Offered rate of the steady-state run (transfers/s; above the goal).
    #[arg(long, default_value_t = 100_000)]
    pub steady_rate: u64,
    /// Seconds of the steady-state run.
    #[arg(long, default_value_t = 10)]
    pub steady_seconds: u64,
    /// Rate of the lag run (transfers/s).
    #[arg(long, default_value_t = 10_000)]
    pub lag_rate: u64,
    /// Seconds of each lag run.
    #[arg(long, default_value_t = 10)]
    pub lag_seconds: u64,
    /// Lag runs with and without the projector, alternated; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run only the measurements whose name contains this (reference always runs).
    #[arg(long)]
    pub only: Option<String>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh database `name` on the server of `base`; returns its URL.
fn fresh_database(base: &str, name: &str) -> String {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(base)
            .await
            .unwrap_or_else(|e| panic!("database at {base}: {e}"));
        conn.query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop");
        conn.query_drop(format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        conn.disconnect().await.expect("disconnect");
    });
    let (server, _) = base.rsplit_once('/').expect("URL ends in /database");
    format!("{server}/{name}")
}

fn drop_database(base: &str, name: &str) {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(base).await.expect("connect");
        conn.query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop");
    });
}

/// The transfer rows of the journal in `dir`, tab-separated, as the
/// projector derives them.
fn transfer_rows(dir: &Path, ledger: LedgerConfig) -> (Vec<u8>, u64) {
    let storage = FsStorage::open_read_only(dir).expect("journal");
    let mut deriver = Deriver::new(ledger, 65_536);
    let mut batch = Batch::starting_at(0);
    JournalTail::new(&storage, 0)
        .poll(u64::MAX, &mut |record| {
            deriver.derive(record, &mut batch).expect("no gap")
        })
        .expect("read");
    let text = keel_projector::sink::transfers_tsv(&batch.transfers);
    (text.into_bytes(), batch.transfers.len() as u64)
}

/// Rows/s of one `LOAD DATA LOCAL INFILE` of `rows` into a primary-key-only
/// table of the transfers' columns.
fn reference(url: &str, rows: Vec<u8>, count: u64) -> f64 {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await.expect("connect");
        conn.query_drop(
            "CREATE TABLE reference_rows (
                sequence BIGINT UNSIGNED NOT NULL, event TINYINT UNSIGNED NOT NULL,
                id DECIMAL(39,0) UNSIGNED NOT NULL, debit_account_id DECIMAL(39,0) UNSIGNED NOT NULL,
                credit_account_id DECIMAL(39,0) UNSIGNED NOT NULL, amount BIGINT UNSIGNED NOT NULL,
                pending_id DECIMAL(39,0) UNSIGNED NOT NULL, user_data_128 DECIMAL(39,0) UNSIGNED NOT NULL,
                user_data_64 BIGINT UNSIGNED NOT NULL, user_data_32 INT UNSIGNED NOT NULL,
                timeout INT UNSIGNED NOT NULL, ledger INT UNSIGNED NOT NULL, code SMALLINT UNSIGNED NOT NULL,
                flags SMALLINT UNSIGNED NOT NULL, timestamp BIGINT UNSIGNED NOT NULL,
                pending_state TINYINT UNSIGNED NOT NULL, PRIMARY KEY (sequence, event)
            ) ENGINE=InnoDB",
        )
        .await
        .expect("create");
        let data = bytes::Bytes::from(rows);
        conn.set_infile_handler(async move {
            Ok(keel_projector::sink::infile_stream(data))
        });
        let start = Instant::now();
        conn.query_drop("LOAD DATA LOCAL INFILE 'rows' INTO TABLE reference_rows")
            .await
            .expect("load data");
        let elapsed = start.elapsed();
        let loaded: u64 = conn
            .query_first("SELECT COUNT(*) FROM reference_rows")
            .await
            .expect("count")
            .expect("row");
        assert_eq!(loaded, count);
        count as f64 / elapsed.as_secs_f64()
    })
}

fn projector_config(dir: &Path, url: &str, ledger: LedgerConfig) -> ProjectorConfig {
    let mut config = ProjectorConfig::new(dir, url);
    config.ledger = ledger;
    config.until = Until::CaughtUp;
    config
}

fn wants(args: &ProjectorArgs, name: &str) -> bool {
    args.only.as_deref().is_none_or(|only| name.contains(only))
}

/// A node for the paced main-job runs.
fn paced(
    dir: &Path,
    rate: u64,
    seconds: u64,
    accounts: u32,
    project_to: Option<String>,
) -> load::LoadReport {
    let transfers = rate * seconds;
    let mut node = NodeConfig::default();
    node.journal.data_dir = dir.to_path_buf();
    node.ledger.accounts_max = accounts + 1;
    node.ledger.transfers_max = (transfers + u64::from(accounts) + 64) as u32;
    let config = LoadConfig {
        node,
        transfers,
        accounts,
        progress: false,
        project_to,
        rate: Some(rate),
        ..LoadConfig::default()
    };
    load::run(&config).expect("main job")
}

/// `keel-perf projector`.
pub fn run(args: &ProjectorArgs) {
    let base = args
        .mysql_url
        .clone()
        .unwrap_or_else(keel_projector::default_mysql_url);
    let db = "keel_perf";
    let journal = fresh(&args.dir, "journal");
    write_journal(&journal, args.accounts, args.transfers);
    let ledger = LedgerConfig {
        accounts_max: args.accounts + 1,
        transfers_max: (args.transfers + 64) as u32,
        prefault: false,
    };
    let (rows, count) = transfer_rows(&journal, ledger);
    let url = fresh_database(&base, db);
    let reference = reference(&url, rows, count);

    println!("| measure | reference | keel | ratio | goal |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| LOAD DATA rows/s, {count} transfer rows, primary key only (reference) | {reference:.0} | | | ~240k here |"
    );
    let ratio = |x: f64| x / reference;
    if wants(args, "catch") {
        let url = fresh_database(&base, db);
        let summary = keel_projector::run(
            &projector_config(&journal, &url, ledger),
            &AtomicBool::new(false),
            &Arc::new(Status::default()),
        )
        .expect("catch-up");
        let rate = count as f64 / summary.elapsed.as_secs_f64();
        println!(
            "| catch-up: transfers (events)/s into the live tables, {} commands | {reference:.0} | {rate:.0} | {:.2} | >= 55k events/s |",
            summary.commands,
            ratio(rate)
        );
    }
    if wants(args, "rebuild") {
        let url = fresh_database(&base, db);
        let summary = keel_projector::rebuild(
            &projector_config(&journal, &url, ledger),
            true,
            &AtomicBool::new(false),
            &Arc::new(Status::default()),
        )
        .expect("rebuild")
        .expect("not stopped");
        let rate = count as f64 / summary.elapsed.as_secs_f64();
        println!(
            "| rebuild: ledger rows/s into shadow tables, indexes and swap included | {reference:.0} | {rate:.0} | {:.2} | >= 200k rows/s |",
            ratio(rate)
        );
    }
    if wants(args, "steady") {
        let url = fresh_database(&base, db);
        let dir = fresh(&args.dir, "steady");
        let report = paced(
            &dir,
            args.steady_rate,
            args.steady_seconds,
            args.accounts,
            Some(url),
        );
        let p = report.projection.expect("projection");
        let summary = p.result.expect("projector");
        // Commands are 7 transfers (the accounts' setup commands are few).
        let during = p.during_load as f64 * 7.0 / report.elapsed.as_secs_f64();
        let overall = summary.checkpoint as f64 * 7.0 / (report.elapsed + p.catch_up).as_secs_f64();
        println!(
            "| steady: events/s projected while the engine ran at {} transfers/s for {:.1} s ({} of {} commands in MySQL at its end; all {:.2} s later) | {reference:.0} | {during:.0} | {:.2} | >= 48k events/s |",
            args.steady_rate,
            report.elapsed.as_secs_f64(),
            p.during_load,
            p.at_load_end,
            p.catch_up.as_secs_f64(),
            ratio(during)
        );
        println!(
            "| steady: events/s over the run and its catch-up | {reference:.0} | {overall:.0} | {:.2} | |",
            ratio(overall)
        );
    }
    if wants(args, "lag") {
        // Alternate runs without and with the projector; report medians.
        let (mut lag, mut ack_without, mut ack_with) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            let without = paced(
                &fresh(&args.dir, "alone"),
                args.lag_rate,
                args.lag_seconds,
                args.accounts,
                None,
            );
            let url = fresh_database(&base, db);
            let with = paced(
                &fresh(&args.dir, "with"),
                args.lag_rate,
                args.lag_seconds,
                args.accounts,
                Some(url),
            );
            let p = with.projection.expect("projection");
            p.result.expect("projector");
            let q = |h: &hdrhistogram::Histogram<u64>| {
                [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
            };
            lag.push(q(&p.lag_us));
            ack_without.push(q(&without.ack_latency_ns));
            ack_with.push(q(&with.ack_latency_ns));
        }
        let median = |runs: &[[u64; 3]], i: usize| {
            let mut v: Vec<u64> = runs.iter().map(|r| r[i]).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let ms = |us: u64| us as f64 / 1e3;
        println!(
            "| lag at {} transfers/s: sequencer timestamp → MySQL commit, p50 / p99 / max (ms), median of {} runs | | {:.1} / {:.1} / {:.1} | | p99 < 100 ms |",
            args.lag_rate,
            args.runs,
            ms(median(&lag, 0)),
            ms(median(&lag, 1)),
            ms(median(&lag, 2))
        );
        for (name, i) in [("p50", 0), ("p99", 1)] {
            let (a, b) = (median(&ack_without, i), median(&ack_with, i));
            let ratios: Vec<String> = ack_without
                .iter()
                .zip(&ack_with)
                .map(|(w, p)| format!("{:.2}", p[i] as f64 / w[i] as f64))
                .collect();
            println!(
                "| engine ack latency {name} at {} transfers/s, µs (reference: no projector), median of {} runs (per-run ratios {}) | {:.1} | {:.1} | {:.2} | unchanged |",
                args.lag_rate,
                args.runs,
                ratios.join(", "),
                a as f64 / 1e3,
                b as f64 / 1e3,
                b as f64 / a as f64
            );
        }
    }
    drop_database(&base, db);
    let _ = std::fs::remove_dir_all(&args.dir);
}
