//! A sharded node (ADR 0014): routing by slot, batches split by shard,
//! cross-shard transfers as sagas (committed, refused, expired, abandoned
//! by a dead driver and finished by recovery, across a restart), tenant
//! quotas, and a table that cannot silently change.

use keel_harness::config::{NodeConfig, TenantSection};
use keel_harness::replay::replay;
use keel_harness::saga::{SagaOutcome, SagaSide, SagaStatus};
use keel_harness::sharded::{ShardError, ShardStopped, ShardedNode, ShardedNodeError};
use keel_harness::sharded_load::{self, audit, ShardedLoadConfig};
use keel_journal::FsStorage;
use keel_ledger::routing::{clearing_account_id, clearing_owner};
use keel_ledger::{account_flags, transfer_flags, Account, ClientError, CreateTransferResult};
use keel_ledger::{Ledger, Transfer};

use crate::support::accounts;

fn config(dir: &std::path::Path, shards: usize) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = 1024;
    config.ledger.transfers_max = 8192;
    config.shards.count = shards;
    config
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u64) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

/// Two account ids, the first on shard `a`, the second on shard `b`.
fn pair(client: &keel_harness::sharded::ShardedClient, a: u16, b: u16, ids: u128) -> (u128, u128) {
    let on = |s: u16, skip: usize| {
        (1..=ids)
            .filter(|&id| client.shard_of(id) == s)
            .nth(skip)
            .expect("an account on every shard")
    };
    (on(a, 0), on(b, if a == b { 1 } else { 0 }))
}

fn stop(node: ShardedNode) -> Vec<ShardStopped> {
    node.shutdown().unwrap()
}

#[test]
fn accounts_live_on_their_shard_and_a_mixed_batch_moves_money_exactly_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path(), 3);
    let node = ShardedNode::start(&config).unwrap();
    let mut client = node.client(0);
    assert_eq!(client.create_accounts(&accounts(60)).unwrap(), vec![0; 60]);
    for id in 1..=60 {
        let home = client.shard_of(id);
        for (s, shard) in node.shards().iter().enumerate() {
            match shard.client().lookup_account(id) {
                Ok(Some(_)) => assert_eq!(s, usize::from(home), "account {id}"),
                Err(ClientError::WrongShard { table_version, .. }) => {
                    assert_ne!(s, usize::from(home));
                    assert_eq!(table_version, 1);
                }
                other => panic!("account {id} on shard {s}: {other:?}"),
            }
        }
    }

    // A seeded batch of single- and cross-shard transfers, some refused.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut batch = Vec::new();
    let mut model = [0i128; 61];
    for id in 1..=200u128 {
        let debit = u128::from(next() % 60 + 1);
        let credit = u128::from(next() % 60 + 1);
        batch.push(transfer(1_000 + id, debit, credit, next() % 100 + 1));
    }
    let codes = client.create_transfers(&batch).unwrap();
    let mut cross = 0;
    for (t, &code) in batch.iter().zip(&codes) {
        if t.debit_account_id == t.credit_account_id {
            assert_eq!(code, CreateTransferResult::accounts_must_be_different as u8);
            continue;
        }
        assert_eq!(code, 0, "{t:?}");
        cross += usize::from(
            client.shard_of(t.debit_account_id) != client.shard_of(t.credit_account_id),
        );
        model[t.debit_account_id as usize] -= i128::from(t.amount);
        model[t.credit_account_id as usize] += i128::from(t.amount);
    }
    assert!(cross > 100, "{cross} of 200 cross shards");
    // The same batch again: every transfer is `exists`, every saga
    // answers its outcome again, nothing moves twice.
    let again = client.create_transfers(&batch).unwrap();
    for ((t, &first), &second) in batch.iter().zip(&codes).zip(&again) {
        let crosses = client.shard_of(t.debit_account_id) != client.shard_of(t.credit_account_id);
        match (first, crosses) {
            (0, false) => assert_eq!(second, CreateTransferResult::exists as u8),
            _ => assert_eq!(second, first, "{t:?}"),
        }
    }
    for id in 1..=60u128 {
        let b = client.lookup_account(id).unwrap().unwrap();
        assert_eq!(
            i128::from(b.credits_posted) - i128::from(b.debits_posted),
            model[id as usize]
        );
    }
    let single = batch
        .iter()
        .find(|t| {
            t.debit_account_id != t.credit_account_id
                && client.shard_of(t.debit_account_id) == client.shard_of(t.credit_account_id)
        })
        .unwrap();
    let (shard, status) = client.lookup_transfer(single.id).unwrap().unwrap();
    assert_eq!(shard, client.shard_of(single.debit_account_id));
    assert_eq!(status.amount, single.amount);

    let stopped = stop(node);
    let (total, pairs, pending) = audit(&stopped);
    assert_eq!(total, 0, "no money created or destroyed");
    assert!(
        pairs.iter().all(|&p| p == 0),
        "clearing pairs net to zero: {pairs:?}"
    );
    assert_eq!(pending, 0);
    // Each shard's state is its journal's replay, and a restart recovers it.
    let hashes: Vec<u64> = stopped
        .iter()
        .map(|s| keel_core::StateMachine::state_hash(&s.state_machine))
        .collect();
    for (i, hash) in hashes.iter().enumerate() {
        let shard_dir = config.for_shard(i).journal.data_dir;
        let storage = FsStorage::open_read_only(&shard_dir).unwrap();
        let (replayed, _) = replay(&storage, Ledger::new(config.ledger_config()), 1 << 16).unwrap();
        assert_eq!(
            keel_core::StateMachine::state_hash(&replayed.state_machine),
            *hash,
            "shard {i}"
        );
    }
    drop(stopped); // releases the journals' locks
    let node = ShardedNode::start(&config).unwrap();
    assert_eq!(node.recover_sagas().unwrap().resumed, 0, "every saga ended");
    let restarted: Vec<u64> = stop(node)
        .iter()
        .map(|s| keel_core::StateMachine::state_hash(&s.state_machine))
        .collect();
    assert_eq!(restarted, hashes);
}

#[test]
fn a_refused_side_releases_what_was_reserved() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = ShardedNode::start(&config(dir.path(), 2)).unwrap();
    let mut client = node.client(0);
    let (a, b) = pair(&client, 0, 1, 100);
    let (_, missing) = pair(&client, 0, 1, 100);
    let missing = (missing + 1..)
        .find(|&id| client.shard_of(id) == 1)
        .unwrap();
    let mut bounded = accounts(100).into_iter().find(|x| x.id == a).unwrap();
    bounded.flags = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let plain = accounts(100).into_iter().find(|x| x.id == b).unwrap();
    assert_eq!(
        client.create_accounts(&[bounded, plain]).unwrap(),
        vec![0, 0]
    );

    // The debit side has no funds: the reservation is refused.
    let outcome = client.transfer_cross(&transfer(1, a, b, 10)).unwrap();
    assert_eq!(
        outcome,
        SagaOutcome::Failed {
            side: SagaSide::Debit,
            code: CreateTransferResult::exceeds_credits
        }
    );
    // Funded, to an account that does not exist: the credit side refuses
    // and the reservation is voided.
    assert_eq!(
        client.transfer_cross(&transfer(2, b, a, 50)).unwrap(),
        SagaOutcome::Committed
    );
    let outcome = client.transfer_cross(&transfer(3, a, missing, 10)).unwrap();
    assert_eq!(
        outcome,
        SagaOutcome::Failed {
            side: SagaSide::Credit,
            code: CreateTransferResult::credit_account_not_found
        }
    );
    let balance = client.lookup_account(a).unwrap().unwrap();
    assert_eq!((balance.debits_pending, balance.credits_posted), (0, 50));
    assert_eq!(
        client.saga_status(&transfer(3, a, missing, 10)).unwrap(),
        SagaStatus::Aborted
    );
    assert_eq!(
        client.saga_status(&transfer(2, b, a, 50)).unwrap(),
        SagaStatus::Committed { settled: true }
    );

    // What a saga cannot honour is refused before anything is submitted.
    let mut pending = transfer(4, a, b, 1);
    pending.flags = transfer_flags::PENDING;
    assert!(matches!(
        client.create_transfers(&[pending]),
        Err(ShardError::CrossShardFlags { index: 0, .. })
    ));
    let (a2, same_shard) = pair(&client, 0, 0, 100);
    assert!(matches!(
        client.transfer_cross(&transfer(7, a2, same_shard, 1)),
        Err(ShardError::NotCrossShard { shard: 0 })
    ));
    assert!(matches!(
        client.transfer_cross(&pending),
        Err(ShardError::CrossShardFlags { index: 0, .. })
    ));
    let mut first = transfer(5, a2, a, 1);
    first.flags = transfer_flags::LINKED;
    assert!(matches!(
        client.create_transfers(&[first, transfer(6, a, b, 1)]),
        Err(ShardError::ChainSpansShards { index: 0 })
    ));
    let (total, pairs, pending) = audit(&stop(node));
    assert_eq!((total, pending), (0, 0));
    assert_eq!(pairs, vec![0]);
}

#[test]
fn a_saga_abandoned_after_any_step_is_finished_by_recovery_even_across_a_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path(), 2);
    let node = ShardedNode::start(&config).unwrap();
    let mut client = node.client(0);
    assert_eq!(
        client.create_accounts(&accounts(100)).unwrap(),
        vec![0; 100]
    );
    let (a, b) = pair(&client, 0, 1, 100);
    for steps in 1..=4u8 {
        let t = transfer(u128::from(steps), a, b, 10);
        assert_eq!(client.transfer_cross_abandoned(&t, steps).unwrap(), None);
        let status = client.saga_status(&t).unwrap();
        match steps {
            1 | 2 => assert_eq!(status, SagaStatus::InProgress, "after step {steps}"),
            _ => assert_eq!(
                status,
                SagaStatus::Committed {
                    settled: steps == 4
                }
            ),
        }
    }
    // Two are finished now, two after a restart.
    let report = node.recover_sagas().unwrap();
    assert_eq!((report.begun, report.resumed, report.committed), (4, 4, 4));
    let t5 = transfer(5, b, a, 3);
    let t6 = transfer(6, a, b, 4);
    assert_eq!(client.transfer_cross_abandoned(&t5, 1).unwrap(), None);
    assert_eq!(client.transfer_cross_abandoned(&t6, 3).unwrap(), None);
    drop(client);
    stop(node);

    let node = ShardedNode::start(&config).unwrap();
    let report = node.recover_sagas().unwrap();
    assert_eq!((report.resumed, report.committed), (2, 2));
    assert_eq!(node.recover_sagas().unwrap().resumed, 0);
    let mut client = node.client(0);
    for t in [t5, t6] {
        assert_eq!(
            client.saga_status(&t).unwrap(),
            SagaStatus::Committed { settled: true }
        );
    }
    let net_a = |c: &mut keel_harness::sharded::ShardedClient| {
        let x = c.lookup_account(a).unwrap().unwrap();
        i128::from(x.credits_posted) - i128::from(x.debits_posted)
    };
    assert_eq!(net_a(&mut client), -40 + 3 - 4);
    drop(client);
    let (total, pairs, pending) = audit(&stop(node));
    assert_eq!((total, pairs, pending), (0, vec![0], 0));
}

#[test]
fn a_reservation_that_expires_before_the_decision_aborts_the_saga() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path(), 2);
    config.shards.reserve_timeout_seconds = 1;
    let node = ShardedNode::start(&config).unwrap();
    let mut client = node.client(0);
    assert_eq!(
        client.create_accounts(&accounts(100)).unwrap(),
        vec![0; 100]
    );
    let (a, b) = pair(&client, 0, 1, 100);
    let t = transfer(1, a, b, 10);
    assert_eq!(client.transfer_cross_abandoned(&t, 2).unwrap(), None);
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    let report = node.recover_sagas().unwrap();
    assert_eq!((report.resumed, report.committed), (1, 0));
    assert_eq!(client.saga_status(&t).unwrap(), SagaStatus::Aborted);
    let retry = client.transfer_cross(&t).unwrap();
    assert_eq!(
        retry,
        SagaOutcome::Expired,
        "a retry answers the same outcome"
    );
    for id in [a, b] {
        let x = client.lookup_account(id).unwrap().unwrap();
        assert_eq!(
            (
                x.debits_pending,
                x.credits_pending,
                x.debits_posted,
                x.credits_posted
            ),
            (0, 0, 0, 0)
        );
    }
    drop(client);
    let (total, pairs, pending) = audit(&stop(node));
    assert_eq!((total, pairs, pending), (0, vec![0], 0));
}

#[test]
fn a_tenant_over_its_quota_is_throttled_before_the_ring() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path(), 2);
    config.shards.tenants = vec![TenantSection {
        id: 5,
        slots: Some([0, 512]),
        rate: Some(20),
        in_flight_max: None,
    }];
    let node = ShardedNode::start(&config).unwrap();
    let mut tenant = node.client(5);
    let mut admitted = 0;
    let retry_after = loop {
        match tenant.create_accounts(&[accounts(1000)[admitted]]) {
            Ok(codes) => {
                assert_eq!(codes, vec![0]);
                admitted += 1;
            }
            Err(ShardError::Throttled {
                tenant: 5,
                retry_after,
            }) => break retry_after,
            Err(e) => panic!("{e}"),
        }
        assert!(admitted < 100, "never throttled");
    };
    assert!((20..=22).contains(&admitted), "{admitted}");
    assert!(retry_after > std::time::Duration::ZERO);
    // Tenant 5's accounts are pinned to slots 0..512: all on shard 0.
    assert!((1..=admitted as u128).all(|id| tenant.shard_of(id) == 0));
    // Another tenant is not limited. (Account ids are one namespace
    // across tenants, as in TigerBeetle: its ids are other ones.)
    let mut other = node.client(6);
    let ids: Vec<Account> = accounts(1050).split_off(1000);
    assert_eq!(other.create_accounts(&ids).unwrap(), vec![0; 50]);
    stop(node);
}

#[test]
fn a_shard_refuses_to_start_under_another_table() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let two = config(dir.path(), 2);
    stop(ShardedNode::start(&two).unwrap());
    let three = config(dir.path(), 3);
    let error = ShardedNode::start(&three).unwrap_err();
    assert!(
        matches!(
            error,
            ShardedNodeError::TableChanged {
                shard: 0,
                installed: 1,
                configured: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("rebalancing"), "{error}");
    // A newer version of a table is not installed over the journal's
    // either: it would move slots without their accounts.
    let mut newer = config(dir.path(), 2);
    newer.shards.table_version = 2;
    let error = ShardedNode::start(&newer).unwrap_err();
    assert!(
        matches!(
            error,
            ShardedNodeError::TableChanged {
                installed: 1,
                configured: 2,
                ..
            }
        ),
        "{error}"
    );
    // The same table again is fine.
    stop(ShardedNode::start(&two).unwrap());
}

#[test]
fn clearing_accounts_are_created_on_their_owners_only() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = ShardedNode::start(&config(dir.path(), 2)).unwrap();
    let mut client = node.client(0);
    client.create_accounts(&accounts(100)).unwrap();
    let (a, b) = pair(&client, 1, 0, 100);
    assert_eq!(
        client.transfer_cross(&transfer(9, a, b, 1)).unwrap(),
        SagaOutcome::Committed
    );
    let stopped = stop(node);
    for (s, stop) in stopped.iter().enumerate() {
        let clearing: Vec<u128> = stop
            .state_machine
            .accounts()
            .map(|a| a.id)
            .filter(|&id| clearing_owner(id).is_some())
            .collect();
        assert_eq!(
            clearing,
            vec![clearing_account_id(s as u16, 1 - s as u16, 1)]
        );
    }
}

#[test]
fn the_sharded_main_job_passes_its_checks_twice_on_the_same_directories() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let job = ShardedLoadConfig {
        node: config(dir.path(), 3),
        transfers: 3_000,
        producers: 3,
        batch: 20,
        accounts: 300,
        cross_percent: 30,
        stop: Default::default(),
    };
    let first = sharded_load::run(&job).unwrap();
    assert!(first.ok(), "{first:?}");
    assert_eq!(first.results[0], 3_000, "every transfer ok");
    assert!((600..1_200).contains(&first.cross), "{}", first.cross);
    let second = sharded_load::run(&job).unwrap();
    assert!(second.ok(), "{second:?}");
    assert_eq!(second.recovered.begun, first.cross);
    assert_eq!(second.recovered.resumed, 0);
}

#[test]
fn the_background_recoverer_finishes_a_saga_whose_caller_died_without_a_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path(), 2);
    config.shards.saga_recovery_interval_ms = 50;
    config.shards.saga_recovery_age_ms = 300;
    let node = ShardedNode::start(&config).unwrap();
    let mut client = node.client(0);
    assert_eq!(
        client.create_accounts(&accounts(100)).unwrap(),
        vec![0; 100]
    );
    let (a, b) = pair(&client, 0, 1, 100);
    let abandoned = [transfer(1, a, b, 7), transfer(2, b, a, 2)];
    assert_eq!(
        client.transfer_cross_abandoned(&abandoned[0], 1).unwrap(),
        None
    );
    assert_eq!(
        client.transfer_cross_abandoned(&abandoned[1], 3).unwrap(),
        None
    );
    // A saga that completes normally is never touched.
    assert_eq!(
        client.transfer_cross(&transfer(3, a, b, 1)).unwrap(),
        SagaOutcome::Committed
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let settled = SagaStatus::Committed { settled: true };
    while abandoned
        .iter()
        .any(|t| client.saga_status(t).unwrap() != settled)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the recoverer did not finish them"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = node.recoverer_stats().unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.resumed.load(Relaxed), 2);
    assert_eq!(stats.committed.load(Relaxed), 2);
    assert_eq!(stats.errors.load(Relaxed), 0);
    drop(client);
    let (total, pairs, pending) = audit(&stop(node));
    assert_eq!((total, pairs, pending), (0, vec![0], 0));
}

#[test]
fn each_shard_snapshots_on_its_own_and_restarts_from_it_with_its_ownership() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path(), 2);
    config.snapshot.on_shutdown = true;
    let node = ShardedNode::start(&config).unwrap();
    let mut client = node.client(0);
    assert_eq!(
        client.create_accounts(&accounts(100)).unwrap(),
        vec![0; 100]
    );
    let batch: Vec<Transfer> = (1..=40u128)
        .map(|i| transfer(i, 1 + i % 100, 1 + (i * 7 + 3) % 100, 5))
        .collect();
    assert!(client
        .create_transfers(&batch)
        .unwrap()
        .iter()
        .all(|&c| c == 0));
    drop(client);
    let stopped = stop(node);
    let hashes: Vec<u64> = stopped
        .iter()
        .map(|s| keel_core::StateMachine::state_hash(&s.state_machine))
        .collect();
    drop(stopped);

    let node = ShardedNode::start(&config).unwrap();
    for (i, shard) in node.shards().iter().enumerate() {
        let recovery = shard.recovery();
        assert!(
            recovery.snapshot.is_some(),
            "shard {i} started from its snapshot"
        );
        assert_eq!(recovery.state_hash, hashes[i], "shard {i}");
        let dir = config.for_shard(i).snapshot_dir();
        assert!(
            dir.starts_with(dir_of_shard(&config, i)),
            "{}",
            dir.display()
        );
    }
    // The restored ownership still refuses the other shard's accounts.
    let theirs = (1..=100u128)
        .find(|&id| node.client(0).shard_of(id) == 1)
        .unwrap();
    assert!(matches!(
        node.shards()[0].client().lookup_account(theirs),
        Err(ClientError::WrongShard {
            table_version: 1,
            ..
        })
    ));
    stop(node);
}

fn dir_of_shard(config: &NodeConfig, i: usize) -> std::path::PathBuf {
    config.journal.data_dir.join(format!("shard-{i}"))
}

#[test]
fn keel_shards_runs_and_every_shard_is_a_journal_the_tools_read() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let keel = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let data_arg = data.to_str().unwrap();
    let job = [
        "shards",
        "--shards",
        "2",
        "--data-dir",
        data_arg,
        "--transfers",
        "3000",
        "--accounts",
        "200",
        "--cross-percent",
        "30",
    ];
    let (code, text) = keel(&job);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("money check: sum of balances 0, clearing pairs [0], pending 0"),
        "{text}"
    );
    assert!(text.contains("every shard's state hash equal"), "{text}");
    for shard in ["shard-0", "shard-1"] {
        let journal = data.join(shard);
        let (code, text) = keel(&["journal", "verify", journal.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{shard}: {text}");
        let (code, text) = keel(&["replay", journal.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{shard}: {text}");
    }
    // Another shard count over the same directories: refused, exit 3.
    let mut three = job;
    three[2] = "3";
    let (code, text) = keel(&three);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("(rebalancing) is not built"), "{text}");
}
