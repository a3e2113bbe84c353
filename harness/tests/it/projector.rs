//! The MySQL projection against the real server (`MYSQL_URL`, default the
//! local MariaDB): every test works in a database of its own, created fresh.
//!
//! - the projection equals the state replayed from the journal (every
//!   account field, every transfer row and its pending state, one audit row
//!   per command), resumed across runs;
//! - `kill -9` of `keel project` at random moments: no duplicate, no gap;
//! - outages through a TCP proxy (cut, delay, half-open): recovered, nothing lost;
//! - a stale second writer is fenced;
//! - a rebuild (interrupted, then resumed) equals the live projection and swaps in;
//! - schema versions: additive migration online, a newer schema refused,
//!   a poison error halts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::StateMachine;
use keel_harness::replay::replay;
use keel_harness::traffic::{self, TrafficConfig};
use keel_journal::{FsStorage, IoMode};
use keel_ledger::{Ledger, LedgerConfig};
use keel_projector::{ProjectorConfig, ProjectorError, SinkError, Status, TableSet, Until};
use mysql_async::prelude::Queryable;

const LEDGER: LedgerConfig = LedgerConfig {
    accounts_max: 1 << 10,
    transfers_max: 1 << 16,
};
const DEDUP: usize = 65_536;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database named after the test; returns its URL.
fn fresh_database(name: &str) -> String {
    let base = keel_projector::default_mysql_url();
    let db = format!("keel_test_{name}");
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&base)
            .await
            .unwrap_or_else(|e| panic!("MariaDB/MySQL at {base} (set MYSQL_URL): {e}"));
        conn.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
    });
    let (server, _) = base.rsplit_once('/').expect("URL ends in /database");
    format!("{server}/{db}")
}

fn config(dir: &Path, url: &str) -> ProjectorConfig {
    let mut config = ProjectorConfig::new(dir, url);
    config.ledger = LEDGER;
    config.dedup_entries = DEDUP;
    config.until = Until::CaughtUp;
    config.batch_commands = 100;
    config
}

fn project(config: &ProjectorConfig) -> Result<keel_projector::Summary, ProjectorError> {
    keel_projector::run(
        config,
        &AtomicBool::new(false),
        &Arc::new(Status::default()),
    )
}

fn replayed(dir: &Path) -> Ledger {
    let storage = FsStorage::open(dir, IoMode::BufferedDevelopment).unwrap();
    let (replayed, _) = replay(&storage, Ledger::new(LEDGER), DEDUP).unwrap();
    replayed.state_machine
}

fn journal_len(dir: &Path) -> u64 {
    let storage = FsStorage::open(dir, IoMode::BufferedDevelopment).unwrap();
    replay(&storage, Ledger::new(LEDGER), DEDUP)
        .unwrap()
        .0
        .records
}

type AccountRow = (String, u64, u64, u64, u64, u64);

/// Checks every projected table against the ledger replayed from the journal.
fn assert_projection_equals_journal(url: &str, dir: &Path, set: TableSet) {
    let ledger = replayed(dir);
    let commands = journal_len(dir);
    let s = set.suffix();
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        let checkpoint: u64 = conn
            .query_first(format!("SELECT next_sequence FROM keel_projection{s}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checkpoint, commands, "checkpoint = journal length");
        let hash: u64 = conn
            .query_first(format!("SELECT state_hash FROM keel_projection{s}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hash, ledger.state_hash(), "checkpoint state hash");

        // Audit: one row per command, no gap, no duplicate.
        let (count, min, max): (u64, Option<u64>, Option<u64>) = conn
            .query_first(format!(
                "SELECT COUNT(*), MIN(sequence), MAX(sequence) FROM keel_commands{s}"
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(count, commands, "one audit row per command");
        if commands > 0 {
            assert_eq!((min, max), (Some(0), Some(commands - 1)));
        }

        // Accounts: every field.
        let rows: Vec<AccountRow> = conn
            .query(format!(
                "SELECT CAST(id AS CHAR), debits_pending, debits_posted, credits_pending, credits_posted, flags FROM keel_accounts{s} ORDER BY id"
            ))
            .await
            .unwrap();
        let mut expected: Vec<AccountRow> = ledger
            .accounts()
            .map(|a| {
                (
                    a.id.to_string(),
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                    u64::from(a.flags),
                )
            })
            .collect();
        expected.sort_by_key(|r| r.0.parse::<u128>().unwrap());
        assert_eq!(rows, expected, "accounts");

        // Transfers: every row, with its pending state.
        let rows: Vec<(String, String, String, u64, u64, u8)> = conn
            .query(format!(
                "SELECT CAST(id AS CHAR), CAST(debit_account_id AS CHAR), CAST(credit_account_id AS CHAR), amount, timestamp, pending_state FROM keel_transfers{s}"
            ))
            .await
            .unwrap();
        let projected: BTreeMap<u128, (u128, u128, u64, u64, u8)> = rows
            .into_iter()
            .map(|(id, dr, cr, amount, ts, state)| {
                (
                    id.parse().unwrap(),
                    (dr.parse().unwrap(), cr.parse().unwrap(), amount, ts, state),
                )
            })
            .collect();
        let expected: BTreeMap<u128, (u128, u128, u64, u64, u8)> = ledger
            .transfers()
            .map(|(t, state)| {
                (
                    t.id,
                    (t.debit_account_id, t.credit_account_id, t.amount, t.timestamp, state as u8),
                )
            })
            .collect();
        assert_eq!(projected.len(), expected.len(), "transfer rows");
        assert!(projected == expected, "transfer rows differ");
        let sum: Option<String> = conn
            .query_first(format!("SELECT CAST(SUM(amount) AS CHAR) FROM keel_transfers{s}"))
            .await
            .unwrap()
            .unwrap();
        let total: u128 = ledger.transfers().map(|(t, _)| u128::from(t.amount)).sum();
        assert_eq!(sum.map_or(0, |s| s.parse::<u128>().unwrap()), total);
        conn.disconnect().await.unwrap();
    });
}

fn traffic(seed: u64, commands: u64, start_ns: u64) -> TrafficConfig {
    TrafficConfig {
        seed,
        commands,
        start_ns,
        ..TrafficConfig::default()
    }
}

#[test]
fn projection_equals_the_replayed_journal_and_resumes() {
    for bulk in [true, false] {
        equals_and_resumes(bulk);
    }
}

/// `bulk`: LOAD DATA for inserted rows, else multi-row INSERTs.
fn equals_and_resumes(bulk: bool) {
    let url = fresh_database(&format!("equals_{bulk}"));
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path, url: &str| ProjectorConfig {
        bulk_load: bulk,
        ..config(dir, url)
    };
    traffic::write(dir.path(), &traffic(7, 3_000, 1_700_000_000_000_000_000)).unwrap();
    let first = project(&config(dir.path(), &url)).unwrap();
    assert_eq!(first.started_at, 0);
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
    let ledger = replayed(dir.path());
    assert!(
        ledger.stats().expired > 0,
        "the traffic expires pending transfers"
    );

    // More traffic on the same journal: the next run resumes at the checkpoint.
    traffic::write(dir.path(), &traffic(8, 2_000, 1_800_000_000_000_000_000)).unwrap();
    let second = project(&config(dir.path(), &url)).unwrap();
    assert_eq!(second.started_at, first.checkpoint);
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}
