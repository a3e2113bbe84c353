//! `EtcdControl` and the `Controller` on a real etcd. Each test deletes its
//! cluster's keys at the end (the lease test's keys go with its leases).

use std::time::{Duration, Instant};

use keel_cluster::{ControlError, EtcdControl};
use keel_replication::CasOutcome;
use keel_replication::{
    ClusterView, Controller, ControllerAction, Message, Policy, Quorum, ShardConfig,
};

fn endpoint() -> String {
    std::env::var("KEEL_ETCD_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

async fn control(test: &str) -> EtcdControl {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let cluster = format!("test-{test}-{}-{nanos}", std::process::id());
    EtcdControl::connect(&endpoint(), &cluster)
        .await
        .unwrap_or_else(|e| panic!("{e} (run scripts/ensure-etcd.sh)"))
}

fn config(leader: u16) -> ShardConfig {
    ShardConfig {
        epoch: 1,
        leader,
        leader_incarnation: 1,
        replicas: vec![0, 1, 2],
        isr: vec![0, 1, 2],
        min_isr: 2,
        policy: Policy::Sync(Quorum::Followers(1)),
    }
}

#[tokio::test]
async fn bootstrap_writes_once_and_the_configuration_round_trips() {
    let etcd = control("bootstrap").await;
    assert!(matches!(
        etcd.config(0).await,
        Err(ControlError::NoConfig { shard: 0, .. })
    ));
    let (first, revision) = etcd.bootstrap(0, &config(0)).await.unwrap();
    assert_eq!(first, config(0));
    // A second bootstrap (another node starting) keeps what is there.
    let (again, same) = etcd.bootstrap(0, &config(1)).await.unwrap();
    assert_eq!((again, same), (config(0), revision));
    assert_eq!(
        etcd.delete_cluster().await.unwrap(),
        1,
        "tests leave no keys behind"
    );
    assert!(matches!(
        etcd.config(0).await,
        Err(ControlError::NoConfig { .. })
    ));
}

#[tokio::test]
async fn a_watch_delivers_each_write_made_after_the_read_it_starts_from() {
    let etcd = control("watch").await;
    let (current, revision) = etcd.bootstrap(0, &config(0)).await.unwrap();
    // Written between the read and the watch: still delivered.
    let mut second = current.clone();
    second.epoch = 2;
    let CasOutcome::Applied(second_revision) =
        etcd.cas_config(0, revision, None, &second).await.unwrap()
    else {
        panic!("the write was refused")
    };
    let mut watch = etcd.watch_config(0, revision).await.unwrap();
    let within = Duration::from_secs(5);
    let seen = tokio::time::timeout(within, watch.next()).await.unwrap();
    assert_eq!(
        seen.unwrap(),
        Some((second.clone(), second_revision as i64))
    );
    let mut third = second;
    third.epoch = 3;
    third.leader = 2;
    etcd.cas_config(0, second_revision as i64, None, &third)
        .await
        .unwrap();
    let (seen, _) = tokio::time::timeout(within, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen, third);
    etcd.delete_cluster().await.unwrap();
}

#[tokio::test]
async fn a_stale_revision_is_refused_and_one_of_two_racers_wins() {
    let etcd = control("cas").await;
    let (current, revision) = etcd.bootstrap(3, &config(0)).await.unwrap();
    let mut next = current.clone();
    next.epoch = 2;
    next.leader = 1;
    let (a, b) = tokio::join!(
        etcd.cas_config(3, revision, None, &next),
        etcd.cas_config(3, revision, None, &next)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, CasOutcome::Applied(_)))
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert!(outcomes.contains(&CasOutcome::Refused));
    let (stored, new_revision) = etcd.config(3).await.unwrap();
    assert_eq!(stored, next);
    assert!(new_revision > revision);
    assert_eq!(
        etcd.cas_config(3, revision, None, &current).await.unwrap(),
        CasOutcome::Refused
    );
    etcd.delete_cluster().await.unwrap();
}

#[tokio::test]
async fn a_node_is_live_exactly_while_its_lease_is() {
    let etcd = control("leases").await;
    let mut short = etcd.grant(2).await.unwrap();
    let long = etcd.grant(30).await.unwrap();
    etcd.register_node(1, 7, &short).await.unwrap();
    etcd.register_node(2, 4, &long).await.unwrap();
    etcd.keep_alive(&mut short, Duration::from_secs(1))
        .await
        .unwrap();
    let live = etcd.live_nodes().await.unwrap();
    assert_eq!(live.into_iter().collect::<Vec<_>>(), vec![(1, 7), (2, 4)]);
    // Node 1 stops renewing: its key goes when etcd expires the lease.
    let deadline = Instant::now() + Duration::from_secs(15);
    while etcd.live_nodes().await.unwrap().contains_key(&1) {
        assert!(
            Instant::now() < deadline,
            "lease of TTL {} s never expired",
            short.ttl_s()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        etcd.keep_alive(&mut short, Duration::from_secs(1)).await,
        Err(ControlError::LeaseExpired { .. })
    ));
    // Node 2 revokes on a clean stop: gone at once.
    etcd.revoke(&long).await.unwrap();
    assert!(etcd.live_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn one_controller_at_a_time_and_a_deposed_one_cannot_write() {
    let etcd = control("election").await;
    let (current, revision) = etcd.bootstrap(0, &config(0)).await.unwrap();
    let lease_a = etcd.grant(30).await.unwrap();
    let lease_b = etcd.grant(30).await.unwrap();
    let a = etcd
        .campaign("a", &lease_a)
        .await
        .unwrap()
        .expect("a wins an empty election");
    assert_eq!(etcd.campaign("b", &lease_b).await.unwrap(), None);
    assert_eq!(
        etcd.campaign("a", &lease_a).await.unwrap(),
        Some(a),
        "a still holds it"
    );
    // a loses its lease (paused past its TTL, say); b takes over.
    etcd.revoke(&lease_a).await.unwrap();
    let b = etcd
        .campaign("b", &lease_b)
        .await
        .unwrap()
        .expect("b wins once a is gone");
    assert_ne!(a, b);
    let mut next = current.clone();
    next.epoch = 2;
    assert_eq!(
        etcd.cas_config(0, revision, Some(a), &next).await.unwrap(),
        CasOutcome::Refused,
        "a deposed controller's write must be refused"
    );
    assert!(matches!(
        etcd.cas_config(0, revision, Some(b), &next).await.unwrap(),
        CasOutcome::Applied(_)
    ));
    etcd.delete_cluster().await.unwrap();
}

#[tokio::test]
async fn the_controller_fails_a_shard_over_through_etcd() {
    let etcd = control("failover").await;
    let (current, revision) = etcd.bootstrap(0, &config(0)).await.unwrap();
    let lease = etcd.grant(30).await.unwrap();
    // Nodes 1 and 2 are live; the leader, node 0, never registered (dead).
    etcd.register_node(1, 1, &lease).await.unwrap();
    etcd.register_node(2, 1, &lease).await.unwrap();
    let elected = etcd.campaign("c0", &lease).await.unwrap().expect("elected");
    let mut controller = Controller::new();
    let live = etcd.live_nodes().await.unwrap();
    let mut out = Vec::new();
    let view = ClusterView {
        config: &current,
        revision: revision as u64,
        live: &live,
    };
    controller.on_tick(view, &mut out);
    let sealed: Vec<u16> = out
        .iter()
        .map(|a| match a {
            ControllerAction::Send {
                to,
                message: Message::Seal { epoch: 2 },
            } => *to,
            other => panic!("expected seals at epoch 2, got {other:?}"),
        })
        .collect();
    assert_eq!(sealed, vec![1, 2]);
    // Both answer (sync(1) over two in-sync followers needs both); node 2's log is longer.
    for (node, last_seq) in [(1, 10), (2, 12)] {
        controller.on_message(
            node,
            Message::Sealed {
                epoch: 2,
                incarnation: 1,
                last_seq,
                last_epoch: 1,
            },
        );
    }
    out.clear();
    controller.on_tick(
        ClusterView {
            config: &current,
            revision: revision as u64,
            live: &live,
        },
        &mut out,
    );
    let [ControllerAction::Install {
        expected_revision,
        config: next,
    }] = &out[..]
    else {
        panic!("expected one install, got {out:?}");
    };
    assert_eq!((next.epoch, next.leader, next.isr.clone()), (2, 2, vec![2]));
    let outcome = etcd
        .cas_config(0, *expected_revision as i64, Some(elected), next)
        .await
        .unwrap();
    assert!(matches!(outcome, CasOutcome::Applied(_)));
    let (stored, stored_revision) = etcd.config(0).await.unwrap();
    assert_eq!(&stored, next);
    // With the new leader live, the controller has nothing more to do.
    out.clear();
    controller.on_tick(
        ClusterView {
            config: &stored,
            revision: stored_revision as u64,
            live: &live,
        },
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    etcd.delete_cluster().await.unwrap();
}
