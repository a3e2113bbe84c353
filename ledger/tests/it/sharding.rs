//! A ledger that is one shard of several: ownership is journaled state,
//! and a command naming another shard's account is refused whole.

use keel_codecs::Rkyv;
use keel_core::StateMachine;
use keel_ledger::commands::{self, command_type, outcome_code, saga_kind, SagaRecord};
use keel_ledger::routing::{clearing_account_id, SlotTable};
use keel_ledger::{Ledger, Transfer};

use crate::support::{account, transfer, Harness};

fn install(h: &mut Harness, table: &SlotTable, shard: u16) -> keel_core::Outcome {
    let mut buf = [0u8; 896];
    let len = Rkyv::encode(&table.ownership(shard), &mut buf).unwrap();
    h.raw(command_type::SET_OWNERSHIP, &buf[..len])
}

/// The first `n` ids (from 1) that `table` places on `shard`.
fn ids_on(table: &SlotTable, shard: u16, n: usize) -> Vec<u128> {
    (1..)
        .filter(|&id| table.shard(0, id) == shard)
        .take(n)
        .collect()
}

fn create_accounts_outcome(h: &mut Harness, ids: &[u128]) -> keel_core::Outcome {
    let accounts: Vec<_> = ids.iter().map(|&id| account(id, 0)).collect();
    let mut buf = [0u8; 896];
    let len = commands::encode_create_accounts(&accounts, &mut buf).unwrap();
    h.raw(command_type::CREATE_ACCOUNTS, &buf[..len])
}

#[test]
fn a_command_naming_another_shards_account_is_refused_whole() {
    let table = SlotTable::even(7, 2, &[]).unwrap();
    let mut h = Harness::new(64, 64);
    assert_eq!(install(&mut h, &table, 0).code, outcome_code::OK);
    let mine = ids_on(&table, 0, 3);
    let theirs = ids_on(&table, 1, 1)[0];

    let refused = create_accounts_outcome(&mut h, &[mine[0], theirs]);
    assert_eq!(refused.code, outcome_code::WRONG_SHARD);
    assert_eq!(commands::wrong_shard(&refused).unwrap().table_version, 7);
    assert_eq!(h.ledger.accounts_len(), 0, "nothing of the batch applied");

    assert_eq!(
        h.accounts(&mine.iter().map(|&id| account(id, 0)).collect::<Vec<_>>()),
        vec![0; 3]
    );
    let mut buf = [0u8; 896];
    let len =
        commands::encode_create_transfers(&[transfer(50, mine[0], theirs, 1)], &mut buf).unwrap();
    let refused = h.raw(command_type::CREATE_TRANSFERS, &buf[..len]);
    assert_eq!(refused.code, outcome_code::WRONG_SHARD);
    assert!(h.ledger.transfer(50).is_none());
    assert_eq!(h.transfers(&[transfer(51, mine[0], mine[1], 1)]), vec![0]);

    let len = commands::encode_lookup(theirs, &mut buf).unwrap();
    assert_eq!(
        h.raw(command_type::LOOKUP_ACCOUNT, &buf[..len]).code,
        outcome_code::WRONG_SHARD
    );
    let len = commands::encode_lookup(mine[2], &mut buf).unwrap();
    assert_eq!(
        h.raw(command_type::LOOKUP_ACCOUNT, &buf[..len]).code,
        outcome_code::OK
    );
}

#[test]
fn clearing_accounts_are_their_owners_whatever_the_slots() {
    let table = SlotTable::even(1, 3, &[]).unwrap();
    let mut h = Harness::new(64, 64);
    install(&mut h, &table, 1);
    let own = clearing_account_id(1, 2, 700);
    let other = clearing_account_id(2, 1, 700);
    let mut a = account(own, 0);
    a.ledger = 700;
    assert_eq!(h.accounts(&[a]), vec![0]);
    assert_eq!(
        create_accounts_outcome(&mut h, &[other]).code,
        outcome_code::WRONG_SHARD
    );
}

#[test]
fn version_0_asks_what_is_installed_and_changes_nothing() {
    let table = SlotTable::even(3, 2, &[]).unwrap();
    let mut h = Harness::new(64, 64);
    let mut probe = table.ownership(0);
    probe.table_version = 0;
    let probe_payload = {
        let mut buf = [0u8; 896];
        let len = Rkyv::encode(&probe, &mut buf).unwrap();
        buf[..len].to_vec()
    };
    let hash = h.ledger.state_hash();
    let none = h.raw(command_type::SET_OWNERSHIP, &probe_payload);
    assert_eq!(none.code, outcome_code::TABLE_NOT_NEWER);
    let body = commands::wrong_shard(&none).unwrap();
    assert_eq!((body.table_version, body.fingerprint), (0, 0));
    assert!(h.ledger.ownership().is_none());
    assert_eq!(h.ledger.state_hash(), hash);
    install(&mut h, &table, 0);
    let body = commands::wrong_shard(&h.raw(command_type::SET_OWNERSHIP, &probe_payload)).unwrap();
    assert_eq!(
        (body.table_version, body.fingerprint),
        (3, table.ownership(0).fingerprint())
    );
}

#[test]
fn only_a_newer_table_replaces_the_installed_one() {
    let v1 = SlotTable::even(1, 2, &[]).unwrap();
    let mut h = Harness::new(64, 64);
    install(&mut h, &v1, 0);
    let hash = h.ledger.state_hash();
    let stale = install(&mut h, &v1, 0);
    assert_eq!(stale.code, outcome_code::TABLE_NOT_NEWER);
    assert_eq!(
        h.ledger.state_hash(),
        hash,
        "a refused table changes nothing, clock included"
    );
    assert_eq!(commands::wrong_shard(&stale).unwrap().table_version, 1);

    // Version 2 gives every slot to shard 0: shard 1's ids become ours.
    let all = SlotTable::even(2, 1, &[]).unwrap();
    let theirs = ids_on(&v1, 1, 1)[0];
    assert_eq!(
        create_accounts_outcome(&mut h, &[theirs]).code,
        outcome_code::WRONG_SHARD
    );
    assert_eq!(install(&mut h, &all, 0).code, outcome_code::OK);
    assert_eq!(
        create_accounts_outcome(&mut h, &[theirs]).code,
        outcome_code::OK
    );
    assert_eq!(h.ledger.ownership().unwrap().table_version, 2);
}

#[test]
fn ownership_is_in_the_state_hash_and_survives_a_snapshot() {
    let table = SlotTable::even(4, 2, &[(9, 100, 200)]).unwrap();
    let mut sharded = Harness::new(64, 64);
    let mut plain = Harness::new(64, 64);
    let before = sharded.ledger.state_hash();
    install(&mut sharded, &table, 1);
    plain.raw(command_type::SAGA_RECORD, &saga_payload()); // the same clock step
    assert_ne!(sharded.ledger.state_hash(), before);
    assert_ne!(sharded.ledger.state_hash(), plain.ledger.state_hash());
    let ids = ids_on(&table, 1, 4);
    sharded.accounts(&ids.iter().map(|&id| account(id, 0)).collect::<Vec<_>>());

    let bytes = sharded.ledger.encode_snapshot();
    let restored = Ledger::restore_snapshot(sharded.ledger.config(), &bytes).unwrap();
    assert_eq!(restored.state_hash(), sharded.ledger.state_hash());
    assert_eq!(restored.recompute_state_hash(), restored.state_hash());
    assert_eq!(restored.ownership(), sharded.ledger.ownership());
    let mut again = Harness::with_ledger(restored, sharded.sequence, sharded.now_ns);
    let theirs = ids_on(&table, 0, 1)[0];
    assert_eq!(
        create_accounts_outcome(&mut again, &[theirs]).code,
        outcome_code::WRONG_SHARD
    );
}

fn saga_payload() -> Vec<u8> {
    let record = SagaRecord {
        kind: saga_kind::BEGIN,
        transfer: Transfer {
            id: 77,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 5,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        },
        debit_shard: 0,
        credit_shard: 1,
        outcome: 0,
        code: 0,
    };
    let mut buf = [0u8; 896];
    let len = Rkyv::encode(&record, &mut buf).unwrap();
    buf[..len].to_vec()
}

#[test]
fn a_saga_record_is_answered_ok_and_changes_nothing_but_the_clock() {
    let mut h = Harness::new(8, 8);
    let hash = h.ledger.state_hash();
    assert_eq!(
        h.raw(command_type::SAGA_RECORD, &saga_payload()).code,
        outcome_code::OK
    );
    assert_eq!(h.ledger.transfers_len(), 0);
    assert_ne!(h.ledger.state_hash(), hash, "the clock advanced");
    assert_eq!(
        h.raw(command_type::SAGA_RECORD, &[1, 2, 3]).code,
        outcome_code::MALFORMED
    );
    assert_eq!(
        h.raw(command_type::SET_OWNERSHIP, &[1, 2, 3]).code,
        outcome_code::MALFORMED
    );
}
