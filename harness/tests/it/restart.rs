//! The embedding API across restarts: a node recovers its ledger and its
//! idempotency window from the journal, so a command retried after a restart
//! with the same key returns the original outcome and is not applied twice.

use keel_harness::config::NodeConfig;
use keel_harness::node::LedgerNode;
use keel_ledger::{Account, CallOptions, LedgerClient};

use crate::support::transfer;

fn node_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = 16;
    config.ledger.transfers_max = 16;
    config
}

fn balance(client: &mut LedgerClient, id: u128) -> u64 {
    client.lookup_account(id).unwrap().unwrap().credits_posted
}

#[test]
fn a_retry_after_restart_is_a_duplicate_and_state_survives() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = node_config(dir.path());
    let keyed = CallOptions {
        correlation_id: 7,
        idempotency_key: 42,
    };

    let node = LedgerNode::start_ledger(&config).unwrap();
    let mut client = node.client();
    let accounts = [1, 2].map(|id| Account {
        id,
        ledger: 1,
        code: 1,
        ..Account::default()
    });
    let (_, results) = client
        .create_accounts(&accounts, CallOptions::default())
        .unwrap();
    assert_eq!(results.codes(), [0, 0]);
    let (first, results) = client
        .create_transfers(&[transfer(10, 100)], keyed)
        .unwrap();
    assert_eq!((first.correlation_id, results.codes()), (7, &[0u8][..]));
    drop(client);
    let hash = keel_core::StateMachine::state_hash(&node.shutdown().unwrap().state_machine);

    let node = LedgerNode::start_ledger(&config).unwrap();
    assert_eq!(node.recovery().records, 2);
    assert_eq!(node.recovery().state_hash, hash);
    let mut client = node.client();
    // Same key, even with another body: answered from the recovered window.
    let (retried, results) = client.create_transfers(&[transfer(11, 5)], keyed).unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.outcome, first.outcome);
    assert_eq!(results.codes(), [0]);
    assert_eq!(balance(&mut client, 2), 100, "applied once");
    assert!(client.lookup_transfer(11).unwrap().is_none());
    drop(client);
    node.shutdown().unwrap();
}

#[test]
fn a_bad_config_value_names_its_option() {
    let error = NodeConfig::from_toml("[engine]\nring_slots = 1000\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "config option `engine.ring_slots` = 1000: expected a power of two between 64 and 1048576"
    );
    let error = NodeConfig::from_toml("[journal]\ndurability = \"fast\"\n").unwrap_err();
    assert!(error.to_string().contains("durability"), "{error}");
    let error = NodeConfig::from_toml("[ledger]\naccounts = 5\n").unwrap_err();
    assert!(error.to_string().contains("accounts"), "{error}");
    let error = NodeConfig::from_toml("[journal]\nwrite_buffer_kib = 100\n").unwrap_err();
    assert!(
        error.to_string().contains("journal.write_buffer_kib"),
        "{error}"
    );
}

#[test]
fn the_example_config_file_is_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/keel.example.toml");
    assert_eq!(
        NodeConfig::from_file(path.as_ref()).unwrap(),
        NodeConfig::default()
    );
    // `[server]` is `keel serve`'s: the node ignores it, the server reads it.
    let mut table: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let server: keel_server::ServerConfig = table.remove("server").unwrap().try_into().unwrap();
    assert_eq!(server, keel_server::ServerConfig::default());
}

#[test]
fn a_corrupt_journal_refuses_to_start_and_says_where() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = node_config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    let mut client = node.client();
    for id in 1..=3 {
        let account = Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        };
        client
            .create_accounts(&[account], CallOptions::default())
            .unwrap();
    }
    drop(client);
    node.shutdown().unwrap();
    // Flip a byte inside the first record's payload (segment header 56 B, record header 96 B).
    let segment = crate::support::first_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[512 + 96 + 10] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let error = LedgerNode::start_ledger(&config).unwrap_err().to_string();
    assert!(
        error.contains("segment") && error.contains("offset"),
        "{error}"
    );
}
