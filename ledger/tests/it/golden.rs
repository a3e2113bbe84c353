//! Golden encodings: the bytes of every ledger schema are pinned. A change
//! that alters them fails here; a deliberate format change bumps the schema
//! version, keeps the old file and adds a migration. `KEEL_BLESS=1` rewrites
//! the files (only for a new schema version).

use std::path::PathBuf;

use keel_codecs::Rkyv;
use keel_ledger::commands::{self, AccountBalance, EventResults, TransferStatus};
use keel_ledger::{Account, Transfer};

fn golden(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KEEL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let pinned = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        bytes,
        &pinned[..],
        "{name} changed: bump its schema version"
    );
}

fn golden_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_account() -> Account {
    Account {
        id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        user_data_128: 0xaaaa,
        user_data_64: 0xbbbb,
        user_data_32: 0xcccc,
        ledger: 7,
        code: 42,
        flags: keel_ledger::account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Account::default()
    }
}

fn sample_transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 0x11,
        credit_account_id: 0x22,
        amount: 1_000_000,
        pending_id: 0,
        user_data_128: 0x33,
        user_data_64: 0x44,
        user_data_32: 0x55,
        timeout: 60,
        ledger: 7,
        code: 9,
        flags: keel_ledger::transfer_flags::PENDING | keel_ledger::transfer_flags::LINKED,
        timestamp: 0,
    }
}

#[test]
fn create_accounts_v1() {
    let mut buf = [0u8; 896];
    let len = commands::encode_create_accounts(&[sample_account()], &mut buf).unwrap();
    golden("create_accounts-v1.bin", &buf[..len]);
    let batch = Rkyv::access::<commands::CreateAccounts<'_>>(&buf[..len]).unwrap();
    assert_eq!(batch.accounts[0].to_native(), sample_account());
}

#[test]
fn create_transfers_v1() {
    let mut buf = [0u8; 896];
    let transfers = [sample_transfer(1), sample_transfer(2)];
    let len = commands::encode_create_transfers(&transfers, &mut buf).unwrap();
    golden("create_transfers-v1.bin", &buf[..len]);
    let batch = Rkyv::access::<commands::CreateTransfers<'_>>(&buf[..len]).unwrap();
    assert_eq!(batch.transfers[1].to_native(), transfers[1]);
}

#[test]
fn sharding_schemas_v1() {
    use keel_ledger::commands::{saga_kind, SagaRecord, WrongShard};
    use keel_ledger::routing::SlotTable;
    let mut buf = [0u8; 896];
    let ownership = SlotTable::even(3, 4, &[(7, 100, 200)])
        .unwrap()
        .ownership(2);
    let len = Rkyv::encode(&ownership, &mut buf).unwrap();
    golden("ownership-v1.bin", &buf[..len]);
    assert_eq!(
        Rkyv::decode::<keel_ledger::routing::Ownership>(&buf[..len]).unwrap(),
        ownership
    );
    let record = SagaRecord {
        kind: saga_kind::END,
        transfer: sample_transfer(9),
        debit_shard: 1,
        credit_shard: 3,
        outcome: 3,
        code: 22,
    };
    let len = Rkyv::encode(&record, &mut buf).unwrap();
    golden("saga_record-v1.bin", &buf[..len]);
    assert_eq!(Rkyv::decode::<SagaRecord>(&buf[..len]).unwrap(), record);
    let wrong = WrongShard {
        table_version: 3,
        fingerprint: ownership.fingerprint(),
    };
    let len = Rkyv::encode(&wrong, &mut buf).unwrap();
    golden("wrong_shard-v1.bin", &buf[..len]);
    assert_eq!(Rkyv::decode::<WrongShard>(&buf[..len]).unwrap(), wrong);
}

#[test]
fn a_full_batch_fits_a_slot_and_one_more_does_not() {
    let mut buf = [0u8; keel_core::constants::PAYLOAD_BYTES_MAX];
    let full = [sample_transfer(1); commands::TRANSFERS_PER_COMMAND_MAX];
    assert!(commands::encode_create_transfers(&full, &mut buf).is_ok());
    let over = [sample_transfer(1); commands::TRANSFERS_PER_COMMAND_MAX + 1];
    assert!(commands::encode_create_transfers(&over, &mut buf).is_err());
}

#[test]
fn lookup_and_results() {
    let mut buf = [0u8; 64];
    let len = commands::encode_lookup(0xfeed, &mut buf).unwrap();
    golden("lookup-v1.bin", &buf[..len]);
    let results = EventResults {
        count: 3,
        codes: [0, 1, 55, 0, 0, 0, 0, 0, 0],
    };
    let len = Rkyv::encode(&results, &mut buf).unwrap();
    golden("event_results-v2.bin", &buf[..len]);
    assert_eq!(Rkyv::decode::<EventResults>(&buf[..len]).unwrap(), results);
    assert_eq!(results.encode_direct()[..], buf[..len]);
    // Version 1 (Keel's earlier numbers) still reads, translated by the
    // command type: its 55 was `exceeds_credits` (54 now) for transfers;
    // account codes kept their numbers up to 21.
    let v1 = golden_bytes("event_results-v1.bin");
    let mut outcome = keel_core::Outcome::default();
    outcome.set(keel_core::ResultCode(1), &v1);
    let transfers = commands::event_results(commands::command_type::CREATE_TRANSFERS, &outcome);
    assert_eq!(
        transfers.unwrap().codes(),
        [
            0,
            1,
            keel_ledger::CreateTransferResult::exceeds_credits as u8
        ]
    );
    let accounts = commands::event_results(commands::command_type::CREATE_ACCOUNTS, &outcome);
    assert_eq!(accounts.unwrap().codes(), [0, 1, 55]);
    let balance = AccountBalance {
        debits_pending: 1,
        debits_posted: 2,
        credits_pending: 3,
        credits_posted: 4,
        flags: 5,
    };
    let len = Rkyv::encode(&balance, &mut buf).unwrap();
    golden("account_balance-v1.bin", &buf[..len]);
    let status = TransferStatus {
        amount: 6,
        timestamp: 7,
        pending_state: 2,
        flags: 8,
    };
    let len = Rkyv::encode(&status, &mut buf).unwrap();
    golden("transfer_status-v1.bin", &buf[..len]);
    assert_eq!(Rkyv::decode::<TransferStatus>(&buf[..len]).unwrap(), status);
}

#[test]
fn a_corrupt_or_oversized_snapshot_is_refused_with_a_typed_error() {
    use keel_ledger::{Ledger, LedgerConfig, RestoreError};
    let config = LedgerConfig {
        accounts_max: 4,
        transfers_max: 4,
        prefault: false,
    };
    let mut ledger = Ledger::new(config);
    let mut payload = [0u8; 896];
    let second = Account {
        id: 2,
        ..sample_account()
    };
    let len = commands::encode_create_accounts(&[sample_account(), second], &mut payload).unwrap();
    let header = keel_core::CommandHeader {
        command_type: commands::command_type::CREATE_ACCOUNTS,
        schema_version: 1,
        payload_len: len as u32,
        timestamp_ns: 5,
        ..Default::default()
    };
    let command = keel_core::CommandRef {
        sequence: 0,
        header: &header,
        payload: &payload[..len],
    };
    keel_core::apply(
        &mut ledger,
        &mut keel_core::DedupTable::with_capacity(1),
        &command,
    );
    let bytes = ledger.encode_snapshot();
    let restored = Ledger::restore_snapshot(config, &bytes).unwrap();
    assert_eq!(restored.account(sample_account().id).unwrap().ledger, 7);
    let small = LedgerConfig {
        accounts_max: 1,
        transfers_max: 4,
        prefault: false,
    };
    assert_eq!(
        Ledger::restore_snapshot(small, &bytes).unwrap_err(),
        RestoreError::Capacity {
            table: "accounts",
            found: 2,
            capacity: 1
        }
    );
    assert!(matches!(
        Ledger::restore_snapshot(config, &bytes[..bytes.len() - 3]),
        Err(RestoreError::Decode(_))
    ));
    let mut newer = bytes.clone();
    newer[2] = 9;
    assert!(matches!(
        Ledger::restore_snapshot(config, &newer),
        Err(RestoreError::Decode(
            keel_codecs::DecodeError::NewerVersion { .. }
        ))
    ));
}

/// A small ledger with every kind of record: two accounts, a posted
/// transfer, a pending one with a timeout, at fixed timestamps.
fn small_ledger() -> keel_ledger::Ledger {
    let mut ledger = keel_ledger::Ledger::new(keel_ledger::LedgerConfig {
        accounts_max: 4,
        transfers_max: 4,
        prefault: false,
    });
    let mut dedup = keel_core::DedupTable::with_capacity(1);
    let mut payload = [0u8; 896];
    let open = Account {
        flags: 0,
        ..sample_account()
    };
    let accounts = [open, Account { id: 2, ..open }];
    let len = commands::encode_create_accounts(&accounts, &mut payload).unwrap();
    let run = |ledger: &mut keel_ledger::Ledger,
               dedup: &mut keel_core::DedupTable,
               kind,
               bytes: &[u8],
               at| {
        let header = keel_core::CommandHeader {
            command_type: kind,
            schema_version: 1,
            payload_len: bytes.len() as u32,
            timestamp_ns: at,
            ..Default::default()
        };
        let command = keel_core::CommandRef {
            sequence: 0,
            header: &header,
            payload: bytes,
        };
        keel_core::apply(ledger, dedup, &command);
    };
    run(
        &mut ledger,
        &mut dedup,
        commands::command_type::CREATE_ACCOUNTS,
        &payload[..len],
        1_000,
    );
    let mut posted = sample_transfer(10);
    posted.debit_account_id = 2;
    posted.credit_account_id = sample_account().id;
    posted.flags = 0;
    posted.timeout = 0;
    posted.amount = 5;
    let mut pending = posted;
    pending.id = 11;
    pending.flags = keel_ledger::transfer_flags::PENDING;
    pending.timeout = 60;
    let len = commands::encode_create_transfers(&[posted, pending], &mut payload).unwrap();
    run(
        &mut ledger,
        &mut dedup,
        commands::command_type::CREATE_TRANSFERS,
        &payload[..len],
        2_000,
    );
    ledger
}

#[test]
fn ledger_snapshot() {
    let ledger = small_ledger();
    assert_eq!(ledger.transfers_len(), 2);
    let bytes = ledger.encode_snapshot();
    golden("ledger_snapshot-v3.bin", &bytes);
    // The pinned bytes of every version restore to the same state (every
    // later build must): version 1 has no failed ids, and this ledger none;
    // version 2 no ownership, and this ledger is not sharded.
    use keel_core::StateMachine;
    for version in [
        "ledger_snapshot-v1.bin",
        "ledger_snapshot-v2.bin",
        "ledger_snapshot-v3.bin",
    ] {
        let pinned = golden_bytes(version);
        let restored = keel_ledger::Ledger::restore_snapshot(ledger.config(), &pinned).unwrap();
        assert_eq!(restored.state_hash(), ledger.state_hash(), "{version}");
        assert_eq!(
            restored.transfer(11).unwrap().1,
            keel_ledger::PendingState::Pending
        );
        assert!(restored.failed_transfer_ids().is_empty());
    }
}
