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
use keel_harness::projection::StartProjection;
use keel_harness::replay::replay;
use keel_harness::traffic::{self, TrafficConfig};
use keel_journal::FsStorage;
use keel_ledger::{Ledger, LedgerConfig};
use keel_projector::{ProjectorConfig, ProjectorError, SinkError, Status, TableSet, Until};

use crate::proxy::{server_address, Mode, Proxy};
use mysql_async::prelude::Queryable;

const LEDGER: LedgerConfig = LedgerConfig {
    accounts_max: 1 << 10,
    transfers_max: 1 << 16,
    prefault: false,
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
    let storage = FsStorage::open_read_only(dir).unwrap();
    let (replayed, _) = replay(&storage, Ledger::new(LEDGER), DEDUP).unwrap();
    replayed.state_machine
}

fn journal_len(dir: &Path) -> u64 {
    let storage = FsStorage::open_read_only(dir).unwrap();
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

/// Runs a following projector on its own thread until `stop`.
fn spawn_projector(
    config: ProjectorConfig,
    stop: Arc<AtomicBool>,
    status: Arc<Status>,
) -> std::thread::JoinHandle<Result<keel_projector::Summary, ProjectorError>> {
    std::thread::spawn(move || keel_projector::run(&config, &stop, &status))
}

/// Waits until the projector's checkpoint reaches `sequence`; returns how long it took.
fn wait_for_checkpoint(status: &Status, sequence: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while status.checkpoint.load(Ordering::Relaxed) < sequence {
        assert!(
            start.elapsed() < limit,
            "checkpoint stuck at {} (want {sequence}); last error {:?}",
            status.checkpoint.load(Ordering::Relaxed),
            status.last_error.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn outages_through_a_proxy_lose_nothing() {
    let url = fresh_database("outage");
    let proxy = Proxy::start(server_address(&url));
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &proxy.url(&url));
    config.until = Until::Stopped;
    config.batch_commands = 20;
    config.timeouts = keel_projector::Timeouts {
        connect: Duration::from_millis(500),
        statement: Duration::from_millis(700),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Status::default());
    let mut start_ns = 1_700_000_000_000_000_000u64;
    let mut append = |seed: u64| {
        start_ns += 10_000_000_000_000;
        traffic::write(dir.path(), &traffic(seed, 500, start_ns)).unwrap()
    };
    let head = append(1);
    let runner = spawn_projector(config, Arc::clone(&stop), Arc::clone(&status));
    wait_for_checkpoint(&status, head, Duration::from_secs(30));

    for (round, mode) in [
        Mode::Cut,
        Mode::HalfOpen,
        Mode::Delay(Duration::from_millis(900)),
    ]
    .into_iter()
    .enumerate()
    {
        proxy.set(mode);
        let head = append(10 + round as u64); // written while the database is unreachable
        std::thread::sleep(Duration::from_millis(1_500));
        proxy.set(Mode::Pass);
        let resumed = wait_for_checkpoint(&status, head, Duration::from_secs(30));
        // Back within about two seconds of the server returning (the
        // back-off cap is 1 s; a half-open wait ends at a 0.7 s timeout).
        assert!(
            resumed < Duration::from_millis(3_000),
            "{mode:?}: resumed after {resumed:?}"
        );
    }
    let errors = status.transient_errors.load(Ordering::Relaxed);
    assert!(
        errors >= 3,
        "every outage was seen ({errors} transient errors)"
    );
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap().unwrap();
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}

#[test]
fn kill_9_mid_transaction_leaves_no_duplicate_and_no_gap() {
    let url = fresh_database("kill");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    traffic::write(&journal, &traffic(21, 20_000, 1_700_000_000_000_000_000)).unwrap();
    let keel = |once: bool| {
        let mut command = keel_project(dir.path(), &url, &["--batch", "10"]);
        command.env("RUST_LOG", "warn").stdout(Stdio::null());
        if once {
            command.arg("--once");
        }
        command
    };
    let mut rng = 0x5eed_u64;
    let mut checkpoints = Vec::new();
    for _ in 0..6 {
        let mut child = keel(false).spawn().unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (rng >> 33) % 300)); // the kill moment
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let checkpoint = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
            .unwrap()
            .map_or(0, |c| c.next_sequence);
        checkpoints.push(checkpoint);
    }
    assert!(
        checkpoints.windows(2).all(|w| w[0] <= w[1]),
        "checkpoints never go back: {checkpoints:?}"
    );
    let end = journal_len(&journal);
    assert!(
        checkpoints.iter().filter(|&&c| c > 0 && c < end).count() >= 3,
        "kills landed mid-projection: {checkpoints:?} of {end}"
    );
    let status = keel(true).status().unwrap();
    assert!(status.success());
    assert_projection_equals_journal(&url, &journal, TableSet::Live);
}

#[test]
fn a_stale_second_writer_is_fenced() {
    use keel_projector::{Batch, Deriver, Sink, Timeouts};
    let url = fresh_database("fence");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(3, 50, 1_700_000_000_000_000_000)).unwrap();
    // Two batches derived from the journal: [0, 20) and [20, 40).
    let storage = FsStorage::open_read_only(dir.path()).unwrap();
    let mut deriver = Deriver::new(LEDGER, DEDUP);
    let mut batches = vec![Batch::starting_at(0)];
    keel_journal::read_records(&storage, 0, 39, &mut |record| {
        if batches.last().unwrap().len() == 20 {
            let last = batches.last_mut().unwrap();
            deriver.seal(last, false);
            batches.push(Batch::starting_at(20));
        }
        deriver.derive(record, batches.last_mut().unwrap()).unwrap();
    })
    .unwrap();
    deriver.seal(batches.last_mut().unwrap(), false);
    runtime().block_on(async {
        let mut a = Sink::connect(&url, TableSet::Live, Timeouts::default())
            .await
            .unwrap();
        let mut b = Sink::connect(&url, TableSet::Live, Timeouts::default())
            .await
            .unwrap();
        a.ensure_schema().await.unwrap();
        b.ensure_schema().await.unwrap();
        // Both start at checkpoint 0; A commits first.
        assert!(a.commit(&batches[0], 0xa, true).await.unwrap());
        // B, stale, tries the same batch: fenced, and writes nothing.
        match b.commit(&batches[0], 0xb, true).await {
            Err(SinkError::Fenced {
                expected: 0,
                found: 20,
                writer: 0xa,
            }) => {}
            other => panic!("stale writer not fenced: {other:?}"),
        }
        // A's retry of a commit of unknown outcome is recognised as done.
        assert!(!a.commit(&batches[0], 0xa, true).await.unwrap());
        assert!(a.commit(&batches[1], 0xa, true).await.unwrap());
        // B, still behind, stays fenced.
        assert!(matches!(
            b.commit(&batches[1], 0xb, true).await,
            Err(SinkError::Fenced { found: 40, .. })
        ));
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        let commands: u64 = conn
            .query_first("SELECT COUNT(*) FROM keel_commands")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(commands, 40, "B wrote nothing");
    });
}

/// `SHOW CREATE TABLE` of every table of the live set.
fn table_definitions(url: &str) -> Vec<String> {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        let mut out = Vec::new();
        for table in keel_projector::schema::TABLES {
            let row: Option<(String, String)> = conn
                .query_first(format!("SHOW CREATE TABLE {table}"))
                .await
                .unwrap();
            // The auto-increment and table options do not matter here.
            out.push(row.unwrap().1.split("\n)").next().unwrap().to_string());
        }
        out
    })
}

fn checksums(url: &str) -> Vec<(String, Option<u64>)> {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        conn.query("CHECKSUM TABLE keel_accounts, keel_transfers, keel_commands")
            .await
            .unwrap()
    })
}

#[test]
fn an_interrupted_rebuild_resumes_equals_live_and_swaps_in() {
    let url = fresh_database("rebuild");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(5, 6_000, 1_700_000_000_000_000_000)).unwrap();
    let config = config(dir.path(), &url);
    project(&config).unwrap();
    let live = checksums(&url);
    let definitions = table_definitions(&url);

    // A rebuild stopped part-way (after its first committed batch) ...
    let mut small = config.clone();
    small.batch_commands = 10;
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Status::default());
    let watcher = {
        let (stop, status) = (Arc::clone(&stop), Arc::clone(&status));
        std::thread::spawn(move || {
            while status.checkpoint.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let first = keel_projector::rebuild(&small, false, &stop, &status).unwrap();
    watcher.join().unwrap();
    assert!(first.is_none(), "stopped before the swap");
    let partial = keel_projector::checkpoint(&url, TableSet::Rebuild, Default::default())
        .unwrap()
        .unwrap();
    assert!(partial.next_sequence > 0 && partial.next_sequence < journal_len(dir.path()));
    assert_eq!(
        checksums(&url),
        live,
        "the live tables are untouched meanwhile"
    );

    // ... resumes from its own checkpoint, then swaps in.
    let resumed = keel_projector::rebuild(
        &config,
        false,
        &AtomicBool::new(false),
        &Arc::new(Status::default()),
    )
    .unwrap()
    .unwrap();
    assert_eq!(resumed.started_at, partial.next_sequence);
    assert!(
        keel_projector::checkpoint(&url, TableSet::Rebuild, Default::default())
            .unwrap()
            .is_none(),
        "the rebuild set became the live set"
    );
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
    assert_eq!(checksums(&url), live, "rebuilt = live, row for row");
    assert_eq!(
        table_definitions(&url),
        definitions,
        "same tables and indexes"
    );

    // Live projection continues on the swapped-in tables.
    traffic::write(dir.path(), &traffic(6, 500, 1_800_000_000_000_000_000)).unwrap();
    project(&config).unwrap();
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}

/// The remedy the docs name for a hand-damaged projection: a rebuild
/// swaps in even when live tables were dropped (and after a swap that was
/// interrupted before it dropped the retired set).
#[test]
fn a_rebuild_replaces_live_tables_that_were_dropped() {
    let url = fresh_database("rebuild_dropped");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(7, 300, 1_700_000_000_000_000_000)).unwrap();
    let config = config(dir.path(), &url);
    project(&config).unwrap();
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        conn.query_drop("DROP TABLE keel_transfers").await.unwrap();
        // A leftover of a swap interrupted before its drop.
        conn.query_drop("CREATE TABLE keel_accounts__retired (x INT)")
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
    });
    let rebuilt = keel_projector::rebuild(
        &config,
        false,
        &AtomicBool::new(false),
        &Arc::new(Status::default()),
    )
    .unwrap();
    assert!(rebuilt.is_some(), "the rebuild swapped in");
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}

#[test]
fn schema_versions_migrate_forward_and_refuse_newer() {
    let url = fresh_database("schema");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(9, 300, 1_700_000_000_000_000_000)).unwrap();
    // A set at version 1, as an older build left it.
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        for sql in TableSet::Live.migration(0) {
            conn.query_drop(sql).await.unwrap();
        }
        conn.query_drop(
            "INSERT INTO keel_projection (name, schema_version, next_sequence, state_hash, writer) VALUES ('ledger', 1, 0, 0, 0)",
        )
        .await
        .unwrap();
    });
    let config = config(dir.path(), &url);
    project(&config).unwrap();
    let index: Option<String> = runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        conn.query_first("SELECT index_name FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'keel_commands' AND index_name = 'by_time'")
            .await
            .unwrap()
    });
    assert_eq!(
        index.as_deref(),
        Some("by_time"),
        "migrated to version 2 online"
    );
    let checkpoint = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.schema_version, keel_projector::SCHEMA_VERSION);
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);

    // A crash between a step and its version bump: the step runs again
    // (the index exists already) and the version is recorded.
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        conn.query_drop("UPDATE keel_projection SET schema_version = 1")
            .await
            .unwrap();
    });
    project(&config).unwrap();
    let checkpoint = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.schema_version, keel_projector::SCHEMA_VERSION);

    // A newer schema than this build: refused, nothing written.
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        conn.query_drop("UPDATE keel_projection SET schema_version = 99")
            .await
            .unwrap();
    });
    match project(&config) {
        Err(ProjectorError::Halted(SinkError::Poison(message))) => {
            assert!(message.contains("newer than this build"), "{message}")
        }
        other => panic!("a newer schema must be refused: {other:?}"),
    }
}

#[test]
fn a_poison_error_halts_without_skipping() {
    let url = fresh_database("poison");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(11, 300, 1_700_000_000_000_000_000)).unwrap();
    let config = config(dir.path(), &url);
    project(&config).unwrap();
    let before = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap();
    // Someone alters the projection by hand: a column the projector writes is gone.
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        conn.query_drop("ALTER TABLE keel_commands DROP COLUMN tenant_id")
            .await
            .unwrap();
    });
    traffic::write(dir.path(), &traffic(12, 100, 1_800_000_000_000_000_000)).unwrap();
    match project(&config) {
        Err(ProjectorError::Halted(SinkError::Server { code, message })) => {
            assert_eq!(code, 1054, "unknown column: {message}");
            assert!(
                message.contains("tenant_id"),
                "names the problem: {message}"
            )
        }
        other => panic!("a poison error must halt: {other:?}"),
    }
    let after = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(after, before, "nothing skipped, nothing half-written");
}

#[test]
fn the_read_api_answers_from_the_projection() {
    use keel_projector::ProjectionReader;
    let url = fresh_database("reads");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(13, 2_000, 1_700_000_000_000_000_000)).unwrap();
    project(&config(dir.path(), &url)).unwrap();
    let ledger = replayed(dir.path());
    let mut reader = ProjectionReader::connect(&url).unwrap();
    assert_eq!(reader.checkpoint().unwrap(), journal_len(dir.path()));
    for account in ledger.accounts().take(10) {
        assert_eq!(reader.account(account.id).unwrap(), Some(*account));
        // The whole history, newest first, paged 7 at a time.
        let mut history = Vec::new();
        let mut before = u64::MAX;
        loop {
            let page = reader.account_history(account.id, before, 7).unwrap();
            let Some(last) = page.last() else { break };
            before = last.transfer.timestamp;
            history.extend(page.iter().map(|p| p.transfer));
        }
        let expected: Vec<_> = ledger.account_transfers(account.id).copied().collect();
        assert_eq!(history, expected, "history of account {}", account.id);
    }
    assert_eq!(reader.account(u128::MAX - 1).unwrap(), None);
    for (t, state) in ledger.transfers().step_by(97) {
        let found = reader.transfer(t.id).unwrap().unwrap();
        assert_eq!((found.transfer, found.state), (*t, state));
    }
    let range = reader.transfers_between(100, 200).unwrap();
    assert!(!range.is_empty());
    assert!(range
        .windows(2)
        .all(|w| (w[0].sequence, w[0].event) < (w[1].sequence, w[1].event)));
    assert!(range.iter().all(|p| (100..200).contains(&p.sequence)));
}

#[test]
fn another_process_projects_only_what_the_journal_vouches_for() {
    let url = fresh_database("vouch");
    let dir = tempfile::tempdir().unwrap();
    // Group commits of 16 records: each batch's records carry the previous
    // batch's end as `synced_next`, so the last batch is vouched by nothing.
    let end = traffic::write(dir.path(), &traffic(17, 1_000, 1_700_000_000_000_000_000)).unwrap();
    let last_batch = match end % 16 {
        0 => 16,
        n => n,
    };
    let mut config = config(dir.path(), &url);
    config.until = Until::Stopped;
    config.settle = Duration::from_secs(3_600);
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Status::default());
    let runner = spawn_projector(config.clone(), Arc::clone(&stop), Arc::clone(&status));
    wait_for_checkpoint(&status, end - last_batch, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status.checkpoint.load(Ordering::Relaxed),
        end - last_batch,
        "the unvouched last group commit is held back"
    );
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap().unwrap();

    // A journal that stays still for `settle` is taken as synced.
    config.settle = Duration::from_millis(50);
    config.until = Until::CaughtUp;
    project(&config).unwrap();
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}

/// `keel project …` against `url`, with the test's ledger sizes.
fn keel_project(dir: &Path, url: &str, args: &[&str]) -> Command {
    let node_config = dir.join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "[ledger]\naccounts_max = {}\ntransfers_max = {}\n[engine]\ndedup_entries = {DEDUP}\n",
            LEDGER.accounts_max, LEDGER.transfers_max
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.arg("project").args(args);
    command
        .arg("--journal")
        .arg(dir.join("journal"))
        .args(["--mysql-url", url]);
    if args.first() != Some(&"status") {
        command.arg("--config").arg(&node_config);
    }
    command
}

#[test]
fn a_corrupt_journal_halts_the_projection_at_the_bad_record() {
    let url = fresh_database("corrupt");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    traffic::write(&journal, &traffic(19, 3_000, 1_700_000_000_000_000_000)).unwrap();
    // One byte flipped in the middle of the first segment.
    let segment = crate::support::first_segment(&journal);
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = 300_000;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let output = keel_project(dir.path(), &url, &["--once"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "halts: {stderr}");
    assert!(
        stderr.contains("journal corrupt") && stderr.contains("segment 1 at offset"),
        "names the place: {stderr}"
    );
    // Everything before the bad record is projected, nothing after it.
    let checkpoint = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap()
        .next_sequence;
    assert!(checkpoint > 0, "the records before it are projected");
    assert!(
        stderr.contains(&format!("expected sequence {checkpoint}")),
        "stopped exactly there: checkpoint {checkpoint}, {stderr}"
    );
}

#[test]
fn the_cli_follows_reports_rebuilds_and_stops_gracefully() {
    let url = fresh_database("cli");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let end = traffic::write(&journal, &traffic(23, 2_000, 1_700_000_000_000_000_000)).unwrap();

    // Follow until SIGTERM: commits what it has, exits 0.
    let child = keel_project(dir.path(), &url, &["--status-every", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .ok()
        .flatten()
        .is_none_or(|c| c.next_sequence < end)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "follows the journal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "graceful stop: {stderr}");
    assert!(
        stderr.contains(&format!("stopped at checkpoint {end}")),
        "{stderr}"
    );

    let status = keel_project(dir.path(), &url, &["status"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("checkpoint {end} (lag 0 commands, 0.000 s")),
        "{stdout}"
    );
    assert!(stdout.contains("rebuild        none"), "{stdout}");

    let rebuild = keel_project(dir.path(), &url, &["rebuild", "--exit-after-swap"])
        .output()
        .unwrap();
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert_projection_equals_journal(&url, &journal, TableSet::Live);

    // A journal directory that is not there: exit 3, said plainly.
    let missing = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "project",
            "--once",
            "--journal",
            "/nonexistent/keel",
            "--mysql-url",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no journal directory"));
}

#[test]
fn of_two_projectors_started_together_one_is_fenced() {
    let url = fresh_database("two");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(dir.path(), &traffic(29, 3_000, 1_700_000_000_000_000_000)).unwrap();
    let mut config = config(dir.path(), &url);
    config.batch_commands = 50;
    // Create the tables first so both start from the same checkpoint 0.
    keel_projector::checkpoint(&url, TableSet::Live, Default::default()).unwrap();
    runtime().block_on(async {
        let mut sink = keel_projector::Sink::connect(&url, TableSet::Live, Default::default())
            .await
            .unwrap();
        sink.ensure_schema().await.unwrap();
    });
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || project(&config))
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let fenced = results
        .iter()
        .filter(|r| matches!(r, Err(ProjectorError::Halted(SinkError::Fenced { .. }))))
        .count();
    assert_eq!(fenced, 1, "exactly one is fenced: {results:?}");
    assert!(results.iter().any(|r| r.is_ok()));
    assert_projection_equals_journal(&url, dir.path(), TableSet::Live);
}

#[test]
fn a_projector_behind_a_node_holds_retention_and_equals_its_state() {
    use keel_harness::config::NodeConfig;
    use keel_harness::node::LedgerNode;
    use keel_ledger::{CallOptions, Transfer};

    let url = fresh_database("node");
    // The database is away at first: the projector lags from sequence 0.
    let proxy = Proxy::start(server_address(&url));
    proxy.set(Mode::Cut);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.path().to_path_buf();
    config.journal.segment_size_mib = 1;
    config.journal.write_buffer_kib = 256;
    config.journal.keep_segments = 2; // would delete what the projector needs
    config.ledger.accounts_max = LEDGER.accounts_max;
    config.ledger.transfers_max = LEDGER.transfers_max;
    config.engine.dedup_entries = DEDUP;
    let node = LedgerNode::start_ledger(&config).unwrap();
    let projection = node.start_projection(&config, &proxy.url(&url)).unwrap();
    let mut client = node.client();
    client
        .create_accounts(&crate::support::accounts(9), CallOptions::default())
        .unwrap();
    let mut id = 1_000u128;
    for _ in 0..4_000 {
        let transfers: Vec<Transfer> = (0..7)
            .map(|i| {
                id += 1;
                Transfer {
                    id,
                    debit_account_id: 1 + (id % 9),
                    credit_account_id: 1 + ((id + 1 + i) % 9),
                    amount: 1 + (id % 100) as u64,
                    ledger: 1,
                    code: 1,
                    user_data_128: u128::MAX - id, // large payloads: more segments
                    ..Transfer::default()
                }
            })
            .collect();
        client
            .create_transfers(&transfers, CallOptions::default())
            .unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "keel")
        })
        .count();
    assert!(
        segments > 3,
        "the hold kept every segment ({segments}) despite keep_segments = 2"
    );

    // The database comes back: the projector starts from sequence 0.
    proxy.set(Mode::Pass);
    let durable = node.journal_status().unwrap().durable_next();
    let summary = projection.finish(durable, Duration::from_secs(60)).unwrap();
    assert_eq!(
        summary.checkpoint, durable,
        "caught up from the first segment"
    );
    drop(client);
    let stopped = node.shutdown().unwrap();
    let ledger = stopped.state_machine;
    let mut reader = keel_projector::ProjectionReader::connect(&url).unwrap();
    for account in ledger.accounts() {
        assert_eq!(reader.account(account.id).unwrap(), Some(*account));
    }
    let checkpoint = keel_projector::checkpoint(&url, TableSet::Live, Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint.state_hash,
        ledger.state_hash(),
        "the engine's own state"
    );
}

/// A database behind a slow link (700 ms per chunk, so a login takes
/// seconds): the fixed 2 s connect limit never connected; the limit is a
/// setting (`--connect-timeout-ms`).
#[test]
fn a_slow_link_needs_and_gets_a_longer_connect_timeout() {
    let url = fresh_database("slow_link");
    let dir = tempfile::tempdir().unwrap();
    traffic::write(
        &dir.path().join("journal"),
        &traffic(29, 10, 1_700_000_000_000_000_000),
    )
    .unwrap();
    // No database to ask is "cannot start" (3), not a halted projection (1).
    let (server, _) = url.rsplit_once('/').unwrap();
    let missing = format!("{server}/keel_test_no_such_database");
    let absent = keel_project(dir.path(), &missing, &["status"])
        .output()
        .unwrap();
    assert_eq!(
        absent.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&absent.stderr)
    );
    let proxy = Proxy::start(server_address(&url));
    proxy.set(Mode::Delay(Duration::from_millis(700)));
    let slow = proxy.url(&url);
    let default = keel_project(dir.path(), &slow, &["status"])
        .output()
        .unwrap();
    assert_eq!(
        default.status.code(),
        Some(3),
        "connected within 2 s through a 700 ms-per-chunk link? {}",
        String::from_utf8_lossy(&default.stderr)
    );
    let patient = keel_project(
        dir.path(),
        &slow,
        &["status", "--connect-timeout-ms", "60000"],
    )
    .output()
    .unwrap();
    assert_eq!(
        patient.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&patient.stderr)
    );
}
