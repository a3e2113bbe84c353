//! What independent testing broke on the host side (issue 11): durability
//! policies ignored by the node, no data-directory lock, foreign snapshots
//! adopted, format settings changing under a journal, `keel run` killed by
//! SIGTERM, exit codes that collided, a panic on a closed pipe.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use keel_harness::config::{Durability, NodeConfig};
use keel_harness::node::{LedgerNode, NodeError};
use keel_ledger::{CallOptions, Transfer};

use crate::support::accounts;

fn node_config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = 64;
    config.ledger.transfers_max = 4096;
    config
}

/// Open flags (octal, from /proc/self/fdinfo) of every descriptor of this
/// process open for writing on a segment file under `dir`.
fn segment_write_flags(dir: &Path) -> Vec<i32> {
    let mut flags = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd = entry.unwrap().file_name();
        let Ok(target) = std::fs::read_link(Path::new("/proc/self/fd").join(&fd)) else {
            continue;
        };
        if !target.starts_with(dir) || target.extension().is_none_or(|e| e != "keel") {
            continue;
        }
        let info =
            std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)).unwrap_or_default();
        let Some(line) = info.lines().find(|l| l.starts_with("flags:")) else {
            continue;
        };
        let value = i32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap();
        if value & libc::O_ACCMODE != libc::O_RDONLY {
            flags.push(value);
        }
    }
    flags
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

#[test]
fn each_durability_policy_opens_the_journal_as_documented() {
    for (durability, dsync) in [
        (Durability::Sync, true),
        (Durability::Async, false),
        (Durability::Os, false),
    ] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut config = node_config(dir.path());
        config.journal.durability = durability;
        let node = LedgerNode::start_ledger(&config).unwrap();
        let mut client = node.client();
        client
            .create_accounts(&accounts(2), CallOptions::default())
            .unwrap();
        let flags = segment_write_flags(dir.path());
        assert!(!flags.is_empty(), "{durability:?}: no segment open");
        for f in flags {
            assert_ne!(f & libc::O_DIRECT, 0, "{durability:?}: not O_DIRECT");
            assert_eq!(
                f & libc::O_DSYNC != 0,
                dsync,
                "{durability:?}: O_DSYNC {}",
                f & libc::O_DSYNC != 0
            );
        }
        let status = node.journal_status().unwrap();
        node.shutdown().unwrap();
        // A clean stop syncs whatever the policy.
        assert_eq!(status.durable_next(), status.written_next());
    }
}

#[test]
fn a_second_node_on_a_directory_in_use_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = node_config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    match LedgerNode::start_ledger(&config) {
        Err(NodeError::Storage(keel_journal::StorageError::Locked { pid, .. })) => {
            assert_eq!(pid, Some(std::process::id()))
        }
        other => panic!("a second writer started: {other:?}"),
    }
    node.shutdown().unwrap();
    LedgerNode::start_ledger(&config)
        .unwrap()
        .shutdown()
        .unwrap();
}

#[test]
fn another_journals_snapshot_is_refused_with_a_warning() {
    let a = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let b = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let run = |dir: &Path, transfers: u128| {
        let config = node_config(dir);
        let node = LedgerNode::start_ledger(&config).unwrap();
        let mut client = node.client();
        client
            .create_accounts(&accounts(2), CallOptions::default())
            .unwrap();
        for id in 1..=transfers {
            client
                .create_transfers(&[transfer(id)], CallOptions::default())
                .unwrap();
        }
        node.shutdown_with_snapshot(&config).unwrap().1.unwrap()
    };
    run(a.path(), 3);
    let foreign = run(b.path(), 20);
    // Snapshots are financial data: owner-only, like the journal.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&foreign), 0o600);
    assert_eq!(mode(foreign.parent().unwrap()), 0o700);
    // B's snapshot (newer than any of A's) copied into A's directory.
    std::fs::copy(
        &foreign,
        a.path()
            .join("snapshots")
            .join(foreign.file_name().unwrap()),
    )
    .unwrap();
    let node = LedgerNode::start_ledger(&node_config(a.path())).unwrap();
    let recovery = node.recovery().clone();
    assert!(
        recovery
            .warnings
            .iter()
            .any(|w| w.contains("belongs to journal")),
        "{:?}",
        recovery.warnings
    );
    let (path, _) = recovery.snapshot.expect("A's own snapshot is used");
    assert_ne!(path.file_name(), foreign.file_name());
    let mut client = node.client();
    let credited = client.lookup_account(2).unwrap().unwrap().credits_posted;
    assert_eq!(credited, 3, "A's state, not B's");
    node.shutdown().unwrap();
}

#[test]
fn ledger_capacities_and_window_cannot_change_under_a_journal() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = node_config(dir.path());
    LedgerNode::start_ledger(&config)
        .unwrap()
        .shutdown()
        .unwrap();
    let mut other = config.clone();
    other.ledger.transfers_max = 8192;
    match LedgerNode::start_ledger(&other) {
        Err(NodeError::FormatSetting {
            option,
            on_disk,
            configured,
            ..
        }) => assert_eq!(
            (option, on_disk, configured),
            ("ledger.transfers_max", 4096, 8192)
        ),
        other => panic!("changed capacity accepted: {other:?}"),
    }
    let mut other = config.clone();
    other.engine.dedup_entries = 1024;
    assert!(matches!(
        LedgerNode::start_ledger(&other),
        Err(NodeError::FormatSetting {
            option: "engine.dedup_entries",
            ..
        })
    ));
}

#[test]
fn capacities_larger_than_memory_are_refused_naming_the_option() {
    let err = NodeConfig::from_toml("[ledger]\naccounts_max = 4294967294\n").unwrap_err();
    assert!(err.to_string().contains("ledger.accounts_max"), "{err}");
}

fn keel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel"))
}

#[test]
fn keel_run_stops_gracefully_on_sigterm_and_reports() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    // Bounded: at most 2M transfers (~300 MB of journal) if no signal came.
    let mut child = keel()
        .args([
            "run",
            "--quiet",
            "--transfers",
            "2000000",
            "--accounts",
            "100",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--snapshot", "--rate", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap(); // the plan line: running
                                          // Wait until the journal holds transfers, then ask it to stop.
    while std::fs::read_dir(&data)
        .map(|d| d.count() < 3)
        .unwrap_or(true)
    {
        std::thread::yield_now();
    }
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "stdout: {rest}");
    assert!(rest.contains("written at shutdown"), "{rest}");
    assert!(rest.contains("matches"), "{rest}");
}

#[test]
fn exit_codes_follow_the_one_table() {
    let code = |cmd: &mut Command| cmd.output().unwrap().status.code();
    assert_eq!(
        code(keel().args(["journal", "verify", "--bogus"])),
        Some(64)
    );
    assert_eq!(code(keel().args(["journal", "verify", "/etc"])), Some(3));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[engine]\nring_slots = 3\n").unwrap();
    assert_eq!(code(keel().arg("run").arg("--config").arg(&bad)), Some(78));
    // A chained journal restarted without --chain: refused, not unchained.
    let chained = dir.path().join("chained");
    let small = ["--quiet", "--transfers", "70", "--accounts", "10"];
    let run = |chain: bool| {
        let mut cmd = keel();
        cmd.arg("run").args(small).arg("--data-dir").arg(&chained);
        if chain {
            cmd.arg("--chain");
        }
        cmd.output().unwrap()
    };
    assert_eq!(run(true).status.code(), Some(0));
    let unchained = run(false);
    assert_eq!(unchained.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&unchained.stderr).contains("`chain`"));
    // A journal to dump into a pipe closed after the first line.
    let data = dir.path().join("data");
    let mut config = node_config(&data);
    config.journal.durability = Durability::Sync;
    let node = LedgerNode::start_ledger(&config).unwrap();
    let mut client = node.client();
    client
        .create_accounts(&accounts(2), CallOptions::default())
        .unwrap();
    for id in 1..=200 {
        client
            .create_transfers(&[transfer(id)], CallOptions::default())
            .unwrap();
    }
    node.shutdown().unwrap();
    let mut dump = keel()
        .args(["journal", "dump"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(dump.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // then the pipe closes
    let out = dump.wait_with_output().unwrap();
    assert!(first.starts_with("seq 0"), "{first}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A snapshot of the same journal (same id) but another history: the
/// journal was restored from a backup and continued with other commands.
/// The snapshot's last record checksum disowns it; recovery falls back.
#[test]
fn a_snapshot_of_another_history_of_the_same_journal_is_refused() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = root.path().join("data");
    let config = node_config(&data);
    let transfers = |ids: std::ops::RangeInclusive<u128>, amount: u64| {
        let node = LedgerNode::start_ledger(&config).unwrap();
        let mut client = node.client();
        client
            .create_accounts(&accounts(2), CallOptions::default())
            .unwrap();
        for id in ids {
            let t = Transfer {
                amount,
                ..transfer(id)
            };
            client
                .create_transfers(&[t], CallOptions::default())
                .unwrap();
        }
        node
    };
    let copy_journal = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    };
    transfers(1..=3, 1).shutdown().unwrap();
    let backup = root.path().join("backup");
    copy_journal(&data, &backup);
    // History A: three more transfers of 1, and a snapshot of it.
    let (_, snapshot) = transfers(4..=6, 1).shutdown_with_snapshot(&config).unwrap();
    let snapshot = snapshot.unwrap();
    let kept = root.path().join("kept.keel-snap");
    std::fs::rename(&snapshot, &kept).unwrap();
    // The journal restored from the backup, continued as history B.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    copy_journal(&backup, &data);
    let node = transfers(4..=9, 5);
    let mut client = node.client();
    let expected = client.lookup_account(2).unwrap().unwrap().credits_posted;
    drop(client);
    node.shutdown().unwrap();
    std::fs::rename(&kept, &snapshot).unwrap();
    // Same journal id, other record at the snapshot's sequence - 1.
    let node = LedgerNode::start_ledger(&config).unwrap();
    let recovery = node.recovery().clone();
    assert!(recovery.snapshot.is_none(), "{recovery:?}");
    assert!(
        recovery
            .warnings
            .iter()
            .any(|w| w.contains("does not belong to this journal's history")),
        "{:?}",
        recovery.warnings
    );
    let mut client = node.client();
    assert_eq!(
        client.lookup_account(2).unwrap().unwrap().credits_posted,
        expected,
        "history B's state, from a full replay"
    );
    assert_eq!(expected, 3 + 6 * 5);
}
