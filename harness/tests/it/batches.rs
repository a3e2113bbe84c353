//! Batches larger than one command through the embedding API: split at
//! chain boundaries, so a linked chain stays atomic and the joined results
//! are what one large batch gives; a chain too long for one command is
//! refused before anything is sent.

use keel_harness::node::LedgerNode;
use keel_ledger::commands::{self, split_batch, ChainTooLong};
use keel_ledger::{transfer_flags as tf, ClientError, CreateTransferResult as T, Transfer};

use crate::support::{accounts, transfer};

#[test]
fn split_batch_packs_whole_chains_into_commands() {
    let linked = |chains: &'static [usize]| move |i: usize| chains.contains(&i);
    assert_eq!(split_batch(0, 7, |_| false).unwrap(), vec![0..0]);
    assert_eq!(
        split_batch(15, 7, |_| false).unwrap(),
        vec![0..7, 7..14, 14..15]
    );
    // Events 5, 6, 7 are linked to the next: the chain 5..=8 is not cut.
    assert_eq!(
        split_batch(10, 7, linked(&[5, 6, 7])).unwrap(),
        vec![0..5, 5..10]
    );
    // An open chain at the end stays whole in the last command.
    assert_eq!(
        split_batch(9, 7, linked(&[6, 7, 8])).unwrap(),
        vec![0..6, 6..9]
    );
    assert_eq!(
        split_batch(9, 7, linked(&[0, 1, 2, 3, 4, 5, 6])),
        Err(ChainTooLong {
            first: 0,
            len: 8,
            max: 7
        })
    );
}

#[test]
fn a_large_batch_applies_per_event_and_keeps_each_chain_atomic() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&crate::network::node_config(dir.path())).unwrap();
    let mut client = node.client();
    let created = client.create_accounts_batch(&accounts(20), 1).unwrap();
    assert_eq!(created, vec![0; 20], "20 accounts in three commands");

    let linked = |t: Transfer| Transfer {
        flags: tf::LINKED,
        ..t
    };
    let mut batch: Vec<Transfer> = (1..=10).map(|id| transfer(id, 1)).collect();
    batch[5] = linked(batch[5]);
    batch[6] = linked(batch[6]);
    batch[7] = linked(Transfer {
        credit_account_id: batch[7].debit_account_id, // fails: same account
        ..batch[7]
    });
    let codes = client.create_transfers_batch(&batch, 2).unwrap();
    let failed = T::linked_event_failed as u8;
    assert_eq!(
        codes,
        [
            0,
            0,
            0,
            0,
            0,
            failed,
            failed,
            T::accounts_must_be_different as u8,
            failed,
            0
        ],
        "the chain 5..=8 failed as one, although it spans a 7-event boundary"
    );
    for id in 6..=9 {
        assert!(
            client.lookup_transfer(id).unwrap().is_none(),
            "transfer {id}"
        );
    }
    assert!(client.lookup_transfer(10).unwrap().is_some());

    let chain: Vec<Transfer> = (20..28).map(|id| linked(transfer(id, 1))).collect();
    match client.create_transfers_batch(&chain, 3) {
        Err(ClientError::ChainTooLong(e)) => assert_eq!((e.first, e.len), (0, 8)),
        other => panic!("a chain of 8: {other:?}"),
    }
    assert!(
        client.lookup_transfer(20).unwrap().is_none(),
        "nothing was sent"
    );
    assert_eq!(
        client.create_transfers_batch(&[], 4).unwrap(),
        Vec::<u8>::new(),
        "an empty batch"
    );
    assert_eq!(commands::TRANSFERS_PER_COMMAND_MAX, 7);
    drop(client);
    node.shutdown().unwrap();
}
