//! kill -9 of a real `keel run` process at seeded moments: after each kill
//! the journal recovers (a torn tail is cut, nothing corrupt is accepted)
//! and the next run's full replay reaches the engine's state hash.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use keel_harness::config::NodeConfig;
use keel_journal::{read_records, FsStorage, IoMode, Journal};

fn keel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel"))
}

#[test]
fn killed_mid_run_then_recovers_with_a_matching_replay() {
    let seed: u64 = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let mut rng = seed;
    let mut records_before = 0;
    for kill in 0..4 {
        let mut child = keel()
            .args(["run", "--quiet", "--transfers", "2000000", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The plan line is printed once the journal is open and recovered.
        let mut plan = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut plan)
            .unwrap();
        assert!(plan.starts_with("keel run:"), "seed {seed}: {plan}");
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 200 + (rng >> 33) % 800;
        std::thread::sleep(Duration::from_millis(delay_ms)); // the kill moment, not synchronisation
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Recovery must accept the journal and never lose what a previous
        // recovery already saw.
        let storage = FsStorage::open(&data, IoMode::DirectSync).unwrap();
        let journal_config = NodeConfig::default().journal_config().unwrap();
        let (journal, report) = Journal::open(storage, journal_config)
            .unwrap_or_else(|e| panic!("seed {seed}, kill {kill} after {delay_ms} ms: {e}"));
        let records = journal.next_sequence();
        assert!(
            records >= records_before,
            "seed {seed}, kill {kill}: records went backwards"
        );
        assert_eq!(records, report.scan.records());
        records_before = records;
        drop(journal);
        let storage = FsStorage::open_read_only(&data).unwrap();
        let mut count = 0;
        read_records(&storage, 0, u64::MAX, &mut |_| count += 1).unwrap();
        assert_eq!(count, records);
    }
    // A clean run on top: it replays everything and the final replay check matches.
    let output = keel()
        .args(["run", "--quiet", "--transfers", "2000", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "seed {seed}: {stdout}");
    assert!(stdout.contains("matches"), "seed {seed}: {stdout}");
}
