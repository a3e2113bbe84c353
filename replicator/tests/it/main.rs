//! The replication core driven from real journals: a follower written
//! from its leader's shipped entries is byte-identical, rolls included,
//! and the leader's commit point follows the follower's durable copy.

use std::path::Path;

use keel_core::{CommandHeader, CommandRef, Journaller};
use keel_journal::{IoMode, JournalConfig};
use keel_replication::{Message, Peer, Policy, Quorum, ShardConfig, Timing};
use keel_replicator::{Effects, Paths, ReplicaDriver};

fn paths(root: &Path, id: u16) -> Paths {
    let dir = root.join(format!("r{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    Paths {
        journal: dir.join("journal"),
        state: dir.join("replica.state"),
        divergent: dir.join("divergent"),
    }
}

fn journal_config() -> JournalConfig {
    JournalConfig {
        segment_size: 16 * 1024,
        write_buffer_bytes: 4096,
        ..JournalConfig::default()
    }
}

fn open(root: &Path, id: u16) -> ReplicaDriver {
    ReplicaDriver::open(
        id,
        Timing::default(),
        paths(root, id),
        journal_config(),
        IoMode::DirectSync,
    )
    .unwrap()
}

/// Delivers messages until none are left.
fn pump(drivers: &mut [ReplicaDriver], from: u16, effects: Effects) {
    let mut queue: Vec<(u16, Peer, Message)> = effects
        .messages
        .into_iter()
        .map(|(to, m)| (from, to, m))
        .collect();
    while let Some((from, to, message)) = queue.pop() {
        let Peer::Replica(to) = to else { continue };
        let driver = &mut drivers[usize::from(to) - 1];
        let out = driver.on_message(0, Peer::Replica(from), message).unwrap();
        queue.extend(out.messages.into_iter().map(|(t, m)| (to, t, m)));
    }
}

fn append_batch(driver: &mut ReplicaDriver, count: u64) {
    let journal = driver.journal_mut();
    let first = journal.next_sequence();
    for n in first..first + count {
        let payload = vec![n as u8; 40 + (n % 200) as usize];
        let header = CommandHeader {
            idempotency_key: 0,
            correlation_id: n,
            timestamp_ns: n,
            command_type: 1,
            schema_version: 1,
            tenant_id: 0,
            payload_len: payload.len() as u32,
            completion: u32::MAX,
            flags: 0,
        };
        journal
            .append(&CommandRef {
                sequence: n,
                header: &header,
                payload: &payload,
            })
            .unwrap();
    }
    journal.end_of_batch(first + count - 1).unwrap();
}

#[test]
fn a_follower_fed_by_the_core_is_byte_identical_and_gates_the_commit_point() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut drivers = vec![open(root.path(), 1), open(root.path(), 2)];
    let config = ShardConfig {
        epoch: 1,
        leader: 1,
        leader_incarnation: drivers[0].replica().incarnation(),
        replicas: vec![1, 2],
        isr: vec![1, 2],
        min_isr: 2,
        policy: Policy::Sync(Quorum::All),
    };
    let follower = drivers[1].on_config(0, &config, 1).unwrap();
    assert!(follower.messages.is_empty());
    let leader = drivers[0].on_config(0, &config, 1).unwrap();
    pump(&mut drivers, 1, leader);
    assert_eq!(
        drivers[0].committed_next(),
        1,
        "the EpochStart record committed"
    );
    let mut written = 1;
    for batch in 1..40 {
        append_batch(&mut drivers[0], batch);
        written += batch;
        let effects = drivers[0].absorb_local_writes().unwrap();
        assert!(
            drivers[0].committed_next() < written,
            "nothing commits before the follower has it"
        );
        let carried: u64 = effects
            .messages
            .iter()
            .map(|(_, m)| match m {
                Message::Append { entries, .. } => entries.len() as u64,
                _ => 0,
            })
            .sum();
        assert_eq!(carried, batch, "each record is shipped once");
        pump(&mut drivers, 1, effects);
        assert_eq!(drivers[0].committed_next(), written);
        assert_eq!(drivers[1].journal().next_sequence(), written);
    }
    assert!(
        drivers[0].journal().segment_id() > 3,
        "the run rolled segments"
    );
    for driver in &drivers {
        // The active segment's entries (16 KiB segments hold ~60 records
        // here) plus at most the one sealed before: not all 781.
        let held = driver.held_entries() as u64;
        assert!(held < written / 4, "{held} of {written} entries held");
    }
    drop(drivers);
    let leader_dir = root.path().join("r1/journal");
    let follower_dir = root.path().join("r2/journal");
    let mut segments = 0;
    for entry in std::fs::read_dir(&leader_dir).unwrap() {
        let name = entry.unwrap().file_name();
        if !name.to_string_lossy().ends_with(".keel") {
            continue;
        }
        let a = std::fs::read(leader_dir.join(&name)).unwrap();
        let b = std::fs::read(follower_dir.join(&name)).unwrap();
        assert!(a == b, "{name:?} differs");
        segments += 1;
    }
    assert!(segments > 3);
}

fn same_segments(root: &Path, a: u16, b: u16) -> usize {
    let a_dir = root.join(format!("r{a}/journal"));
    let b_dir = root.join(format!("r{b}/journal"));
    let mut segments = 0;
    for entry in std::fs::read_dir(&a_dir).unwrap() {
        let name = entry.unwrap().file_name();
        if !name.to_string_lossy().ends_with(".keel") {
            continue;
        }
        let x = std::fs::read(a_dir.join(&name)).unwrap();
        let y = std::fs::read(b_dir.join(&name)).unwrap();
        assert!(x == y, "{name:?} differs between r{a} and r{b}");
        segments += 1;
    }
    segments
}

#[test]
fn a_restarted_leader_serves_a_new_follower_from_its_segment_files() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Epoch 1: the leader alone (min_isr 1), many writes of many sizes.
    let mut leader = open(root.path(), 1);
    let alone = ShardConfig {
        epoch: 1,
        leader: 1,
        leader_incarnation: leader.replica().incarnation(),
        replicas: vec![1],
        isr: vec![1],
        min_isr: 1,
        policy: Policy::Sync(Quorum::All),
    };
    leader.on_config(0, &alone, 1).unwrap();
    let mut written = 1;
    for batch in 1..30 {
        append_batch(&mut leader, batch);
        written += batch;
        leader.absorb_local_writes().unwrap();
        assert_eq!(leader.committed_next(), written);
    }
    drop(leader);
    // It restarts (a new incarnation, nothing held in memory) and leads
    // epoch 2 with an empty follower: the follower's catch-up is read back
    // from the segment files, and both journals end byte-identical.
    let mut drivers = vec![open(root.path(), 1), open(root.path(), 2)];
    let config = ShardConfig {
        epoch: 2,
        leader: 1,
        leader_incarnation: drivers[0].replica().incarnation(),
        replicas: vec![1, 2],
        isr: vec![1, 2],
        min_isr: 2,
        policy: Policy::Sync(Quorum::All),
    };
    let held = drivers[0].held_entries() as u64;
    assert!(
        held < written / 4,
        "only the active segment in memory: {held} of {written}"
    );
    drivers[1].on_config(0, &config, 2).unwrap();
    let effects = drivers[0].on_config(0, &config, 2).unwrap();
    pump(&mut drivers, 1, effects);
    written += 1; // epoch 2's EpochStart
    for tick in 1..8 {
        if drivers[0].committed_next() == written {
            break;
        }
        // Heartbeats (50 ms) resend; the lag timeout (500 ms) never passes.
        let effects = drivers[0].on_tick(tick * 60).unwrap();
        assert!(effects.proposals.is_empty(), "{:?}", effects.proposals);
        pump(&mut drivers, 1, effects);
    }
    assert_eq!(drivers[0].committed_next(), written);
    assert_eq!(drivers[1].journal().next_sequence(), written);
    append_batch(&mut drivers[0], 7);
    written += 7;
    let effects = drivers[0].absorb_local_writes().unwrap();
    pump(&mut drivers, 1, effects);
    assert_eq!(drivers[0].committed_next(), written);
    drop(drivers);
    assert!(same_segments(root.path(), 1, 2) > 3);
}
