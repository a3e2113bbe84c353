//! Snapshot + journal recovery: a node restarted from a snapshot and the
//! journal's tail reaches the state a full replay reaches, keeps its
//! idempotency window, falls back past a damaged snapshot with a warning;
//! and `keel replay` rebuilds, verifies and reports with its exit codes.

use std::path::Path;
use std::process::Command;

use keel_harness::config::NodeConfig;
use keel_harness::node::LedgerNode;
use keel_ledger::{CallOptions, LedgerClient, Transfer};

fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = 64;
    config.ledger.transfers_max = 4096;
    config
}

fn transfer(id: u128, debit: u128, credit: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount: id as u64 % 97 + 1,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

/// Some traffic: accounts once, then `n` transfers (keyed ones every 10th).
fn traffic(client: &mut LedgerClient, first: u128, n: u128) {
    client
        .create_accounts(&crate::support::accounts(8), CallOptions::default())
        .unwrap();
    for id in first..first + n {
        let options = CallOptions {
            correlation_id: id as u64,
            idempotency_key: if id % 10 == 0 { id << 32 } else { 0 },
        };
        let t = transfer(id, 1 + id % 8, 1 + (id + 3) % 8);
        client.create_transfers(&[t], options).unwrap();
    }
}

fn hash(node: LedgerNode) -> u64 {
    keel_core::StateMachine::state_hash(&node.shutdown().unwrap().state_machine)
}

#[test]
fn snapshot_plus_tail_equals_full_replay_and_keeps_the_window() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 100, 200);
    let (_, snapshot) = node.shutdown_with_snapshot(&config).unwrap();
    assert!(snapshot.unwrap().exists());

    // More traffic after the snapshot, including a retry of a key from before it.
    let node = LedgerNode::start_ledger(&config).unwrap();
    assert!(node.recovery().snapshot.is_some());
    assert_eq!(
        node.recovery().records,
        0,
        "the snapshot covered everything"
    );
    let mut client = node.client();
    traffic(&mut client, 1000, 100);
    let retry = CallOptions {
        correlation_id: 1,
        idempotency_key: 110 << 32,
    };
    let (ack, _) = client
        .create_transfers(&[transfer(99_999, 1, 2)], retry)
        .unwrap();
    assert!(ack.duplicate, "the window came back from the snapshot");
    assert!(client.lookup_transfer(99_999).unwrap().is_none());
    drop(client);
    let live = hash(node);

    // Snapshot + tail vs a full replay without any snapshot.
    let node = LedgerNode::start_ledger(&config).unwrap();
    assert!(node.recovery().records > 100);
    assert_eq!(node.recovery().state_hash, live);
    drop(node.shutdown().unwrap());
    let mut no_snapshots = config.clone();
    no_snapshots.snapshot.dir = dir.path().join("none");
    let node = LedgerNode::start_ledger(&no_snapshots).unwrap();
    assert!(node.recovery().snapshot.is_none());
    assert_eq!(node.recovery().state_hash, live);
    drop(node.shutdown().unwrap());
}

#[test]
fn a_damaged_newest_snapshot_falls_back_with_a_warning() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 100, 50);
    node.shutdown_with_snapshot(&config).unwrap();
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 200, 50);
    let (stopped, newest) = node.shutdown_with_snapshot(&config).unwrap();
    let live = keel_core::StateMachine::state_hash(&stopped.state_machine);
    drop(stopped);
    let newest = newest.unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();

    let node = LedgerNode::start_ledger(&config).unwrap();
    let recovery = node.recovery().clone();
    assert_eq!(recovery.warnings.len(), 1, "{:?}", recovery.warnings);
    assert!(
        recovery.warnings[0].contains("checksum"),
        "{:?}",
        recovery.warnings
    );
    assert_ne!(recovery.snapshot.as_ref().unwrap().0, newest);
    assert!(
        recovery.records >= 50,
        "a longer replay from the older snapshot"
    );
    assert_eq!(recovery.state_hash, live);
    drop(node.shutdown().unwrap());
}

fn keel(args: &[&str], dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("replay")
        .arg(dir)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[test]
fn keel_replay_rebuilds_verifies_and_reports_with_exit_codes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 100, 60);
    node.shutdown_with_snapshot(&config).unwrap();
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 500, 40);
    let live = hash(node);
    let capacities = dir.path().join("keel.toml");
    std::fs::write(
        &capacities,
        "[ledger]\naccounts_max = 64\ntransfers_max = 4096\n",
    )
    .unwrap();
    let cfg = capacities.to_str().unwrap();

    // Full replay, verified against the snapshot it passes: exit 0, same hash.
    let (code, out) = keel(&["--config", cfg, "--verify"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("state hash   {live:016x}")), "{out}");
    assert!(out.contains("verified     1 snapshot(s)"), "{out}");

    // To a sequence, written out, then resumed from that snapshot: same end.
    let out_file = dir.path().join("at-30.keel-snap");
    let (code, out) = keel(
        &[
            "--config",
            cfg,
            "--to-sequence",
            "30",
            "--snapshot-out",
            out_file.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("final        sequence 30"), "{out}");
    let (code, out) = keel(
        &["--config", cfg, "--snapshot", out_file.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("state hash   {live:016x}")), "{out}");

    // A snapshot whose recorded state disagrees with the journal: divergence, exit 2.
    // (The state at 30 written as if it covered sequence 20.)
    let store = keel_journal::SnapshotStore::open(config.snapshot_dir(), 8).unwrap();
    let loaded = keel_journal::snapshot::read_snapshot(&out_file).unwrap();
    let header = keel_journal::SnapshotHeader {
        sequence: 20,
        ..loaded.header
    };
    store.write(header, &loaded.body).unwrap();
    let (code, out) = keel(&["--config", cfg, "--verify"], dir.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("DIVERGED     at sequence 20"), "{out}");

    // A corrupt journal: exit 1 with the location; unreadable input: exit 3.
    let segment = crate::support::first_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[512 + 96 + 3] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let (code, out) = keel(&["--config", cfg], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("segment") && out.contains("offset"), "{out}");
    let (code, out) = keel(&[], &dir.path().join("missing"));
    assert_eq!(code, 3, "{out}");
    let (code, out) = keel(&["--to-time", "yesterday"], dir.path());
    assert_eq!(code, 3, "{out}");
}

#[test]
fn the_shadow_snapshotter_writes_while_serving_and_on_request() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path());
    config.snapshot.every_commands = 50;
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 100, 200);
    let snapshotter = node.snapshotter().unwrap();
    // Bounded wait for the replica to catch up with the durable prefix.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while snapshotter.written() < 3 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(snapshotter.written() >= 3, "every 50 of ~201 commands");
    // The replica may still be writing the last periodic one: wait until
    // no snapshot has appeared for 300 ms, so the count below is only the
    // on-demand one.
    let mut before = snapshotter.written();
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < std::time::Duration::from_millis(300) {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if snapshotter.written() != before {
            before = snapshotter.written();
            quiet_since = std::time::Instant::now();
        }
    }
    snapshotter.request();
    while snapshotter.written() == before && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(snapshotter.written(), before + 1, "an on-demand snapshot");
    let covered = snapshotter.covered();
    assert!(covered > 150, "{covered}");
    let live = hash(node);
    let node = LedgerNode::start_ledger(&config).unwrap();
    let (_, sequence) = node.recovery().snapshot.clone().unwrap();
    assert!(sequence >= covered);
    assert_eq!(node.recovery().state_hash, live);
    drop(node.shutdown().unwrap());
}

#[test]
fn segments_covered_by_the_oldest_kept_snapshot_are_deleted() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path());
    config.journal.segment_size_mib = 1;
    config.journal.write_buffer_kib = 256;
    config.ledger.transfers_max = 1 << 16;
    config.snapshot.every_commands = 300;
    config.snapshot.keep = 2;
    config.snapshot.drop_covered_segments = true;
    let segments = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".keel"))
            .collect();
        names.sort();
        names
    };
    let node = LedgerNode::start_ledger(&config).unwrap();
    let mut client = node.client();
    traffic(&mut client, 1, 0);
    // ~950 bytes per command of 7: about 1,100 commands per 1 MiB segment.
    for batch in 0..4_000u128 {
        let transfers: Vec<Transfer> = (0..7)
            .map(|i| transfer(1_000 + batch * 7 + i, 1 + i % 8, 1 + (i + 1) % 8))
            .collect();
        client
            .create_transfers(&transfers, CallOptions::default())
            .unwrap();
    }
    drop(client);
    let live = hash(node);
    let left = segments(dir.path());
    assert!(
        !left.contains(&"00000000000000000001.keel".to_owned()),
        "{left:?}"
    );

    // Recovery starts from a snapshot; a full replay is refused, not wrong.
    let node = LedgerNode::start_ledger(&config).unwrap();
    assert!(node.recovery().snapshot.is_some());
    assert_eq!(node.recovery().state_hash, live);
    drop(node.shutdown().unwrap());
    let mut no_snapshots = config.clone();
    no_snapshots.snapshot.dir = dir.path().join("none");
    no_snapshots.snapshot.drop_covered_segments = false;
    let error = LedgerNode::start_ledger(&no_snapshots)
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not continue"), "{error}");

    // Every snapshot damaged: the refusal says why each one was skipped.
    for entry in std::fs::read_dir(config.snapshot_dir()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    match LedgerNode::start_ledger(&config) {
        Err(e @ keel_harness::node::NodeError::AfterSkippedSnapshots { .. }) => {
            let text = e.to_string();
            assert!(text.contains("does not continue"), "{text}");
            assert!(text.contains("body checksum mismatch"), "{text}");
        }
        other => panic!("expected a refusal with the skipped snapshots: {other:?}"),
    }
}

#[test]
fn a_hot_replica_applies_only_below_its_bound_and_hands_over_what_a_full_replay_reaches() {
    use keel_harness::follower::HotReplica;
    use keel_harness::node::Node;
    use keel_ledger::{Ledger, LedgerValidator};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    traffic(&mut node.client(), 100, 200);
    let live = hash(node);

    let hot = HotReplica::spawn(
        dir.path().to_path_buf(),
        Ledger::new(config.ledger_config()),
        config.engine.dedup_entries,
    );
    hot.advance(60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hot.applied_next() < 59 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // It holds one record back for lookahead, and never passes the bound.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(hot.applied_next(), 59);
    hot.advance(40); // a bound never moves back
    let start = hot.take().unwrap();
    assert_eq!(start.sequence, 60);
    assert_ne!(start.last_record_checksum, 0);

    // The engine replays the rest onto it and reaches the live state.
    let node = Node::start_from(&config, start, LedgerValidator, &mut |_| {}).unwrap();
    let recovery = node.recovery().clone();
    assert_eq!(recovery.state_hash, live);
    assert_eq!(recovery.records + 60, recovery.next_sequence);
    drop(node.shutdown().unwrap());
}
