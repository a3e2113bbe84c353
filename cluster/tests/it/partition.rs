//! Network partitions on real `keel-cluster node` processes: each node runs
//! as its own user, and an nft rule drops every packet a node sends (by the
//! sending socket's uid) and every packet from its listening ports, so it
//! reaches neither etcd, nor its peers, nor clients — while the test and the
//! other nodes still reach each other.
//!
//! A cut-off leader steps down on its own before its lease can expire at
//! etcd (exit 5), the others elect a new leader and a client rides on; a
//! cut-off follower leaves the in-sync set while writes go on. Healed and
//! restarted, each rejoins, and every acknowledged transfer is on every
//! replica exactly once. Needs root (nft; `scripts/ensure-etcd.sh`
//! installs it); without root the test says so and skips.

use std::process::Command;
use std::time::Duration;

use super::failover::{
    credits, send_transfers, shard_with_accounts, stop_and_compare, Shard, NODES, ONE_SHARD,
};

/// Users the nodes run as (node `id` runs as `UID_BASE + id`).
const UID_BASE: u32 = 61_000;

/// An nft table dropping everything one node sends; removed on drop.
struct Cut {
    table: String,
}

impl Cut {
    fn off(uid: u32, ports: [u16; 3]) -> Cut {
        let table = format!("keel_partition_{}_{uid}", std::process::id());
        let ports = ports.map(|p| p.to_string()).join(", ");
        let rules = format!(
            "table inet {table} {{\n\
             \tchain out {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\tmeta skuid {uid} drop\n\
             \t\ttcp sport {{ {ports} }} drop\n\
             \t}}\n\
             }}\n"
        );
        nft(&["-f", "-"], Some(&rules));
        Cut { table }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        nft(&["delete", "table", "inet", &self.table], None);
    }
}

fn nft(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nft: {e} (scripts/ensure-etcd.sh installs nftables)"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "nft {args:?}: {status}");
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn log_of(shard: &Shard, id: u16) -> String {
    shard
        .logs()
        .split("--- node ")
        .find(|part| part.starts_with(&format!("{id} ")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_cut_off_leader_steps_down_and_a_cut_off_follower_leaves_the_in_sync_set() {
    if !is_root() {
        eprintln!("SKIPPED: the partition test needs root (nft rules)");
        return;
    }
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let (mut shard, first, mut rider) = shard_with_accounts("partition", |shard| {
        for id in NODES {
            shard.run_as(id, UID_BASE + u32::from(id));
        }
    });
    let mut acknowledged: u64 = 0;
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);

    // The leader is cut off from everything. It cannot renew its lease, so
    // it steps down on its own before etcd can expire it (exit 5), and the
    // two others, an in-sync majority, elect a new leader without it.
    let old = first.leader;
    let cut = Cut::off(UID_BASE + u32::from(old), shard.ports(old));
    let code = shard.exit_code(old, Duration::from_secs(15));
    assert_eq!(code, 5, "the cut-off leader steps down\n{}", shard.logs());
    assert!(
        log_of(&shard, old).contains("lease lost"),
        "it says why\n{}",
        shard.logs()
    );
    let second = shard.await_config("a new leader without the cut-off one", |c| {
        c.epoch > first.epoch && c.leader != old
    });
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);
    drop(cut);
    shard.start(old);
    shard.await_config("the old leader back in sync", |c| {
        c.epoch == second.epoch && c.isr.len() == 3
    });
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);

    // A follower is cut off: writes go on (sync:1 needs one follower, the
    // other is there), it leaves the in-sync set, and steps down itself.
    let follower = NODES.into_iter().find(|&id| id != second.leader).unwrap();
    let cut = Cut::off(UID_BASE + u32::from(follower), shard.ports(follower));
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);
    shard.await_config("the cut-off follower out of the in-sync set", |c| {
        c.epoch == second.epoch && !c.isr.contains(&follower)
    });
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);
    let code = shard.exit_code(follower, Duration::from_secs(15));
    assert_eq!(code, 5, "the cut-off follower stops\n{}", shard.logs());
    drop(cut);
    shard.start(follower);
    shard.await_config("the follower back in sync", |c| {
        c.epoch == second.epoch && c.isr.len() == 3
    });
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);

    assert_eq!(
        credits(&mut rider, &|| shard.logs()),
        u128::from(acknowledged),
        "every acknowledged transfer applied exactly once"
    );
    drop(rider);
    stop_and_compare(&mut shard, acknowledged);
}
