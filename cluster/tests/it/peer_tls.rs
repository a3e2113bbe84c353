//! Replication links in mutual TLS: three `keel-cluster node`s whose peers
//! must present a certificate from the cluster's CA elect a leader with a
//! full in-sync set and acknowledge transfers; a connection without one —
//! here plain TCP carrying a well-formed `Append` of a far newer epoch, the
//! message that would make a follower fence its leader — is refused before
//! any of it is read, and the shard goes on as if it had not happened.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use keel_harness::devcert;
use keel_replication::{Message, Peer};

use super::failover::{send_transfers, shard_with_accounts, stop_and_compare, NODES, ONE_SHARD};

#[test]
fn peers_without_the_cluster_certificate_are_refused() {
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let certs_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let certs = devcert::generate(certs_dir.path(), &["localhost".into()], &[]).unwrap();
    // A full in-sync set needs the links to work.
    let (mut shard, first, mut rider) = shard_with_accounts("peertls", |shard| {
        shard.peer_tls(&certs.ca, &certs.node_cert, &certs.node_key)
    });
    let mut acknowledged: u64 = 0;
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);

    // An attacker on the network, without the CA's certificate.
    let follower = NODES.into_iter().find(|&id| id != first.leader).unwrap();
    let forged = Message::Append {
        epoch: first.epoch + 1_000,
        prev_seq: 0,
        prev_epoch: 0,
        entries: Vec::new(),
        commit: 0,
    };
    let mut frame = Vec::new();
    keel_cluster::transport::encode(
        0,
        Peer::Replica(first.leader),
        Peer::Replica(follower),
        &forged,
        &mut frame,
    );
    let mut attacker = TcpStream::connect(shard.replication(follower)).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = attacker.write_all(&frame);
    // The follower reads it as a TLS ClientHello, which it is not: closed.
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = attacker.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the connection was left open"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shard.logs().contains("replication connection from") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged\n{}",
            shard.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);
    let now = shard.config();
    assert_eq!(
        (now.epoch, now.leader, now.isr.len()),
        (first.epoch, first.leader, 3),
        "the forged append changed nothing\n{}",
        shard.logs()
    );
    drop(rider);
    stop_and_compare(&mut shard, acknowledged);
}
