//! A payments host embedding Keel: a durable ledger node built from a
//! configuration, typed clients on several threads (blocking and async),
//! a two-phase transfer, a linked chain, an idempotent retry, lookups, and a
//! clean shutdown. Run it twice: the second run recovers the first from the
//! journal (accounts then report `exists`).
//!
//! Run: `cargo run --release -p keel-node --example embed -- [DATA_DIR] [CONFIG.toml]`

use keel_ledger::commands::{command_type, event_results};
use keel_ledger::{
    account_flags, transfer_flags, Account, CallOptions, CreateTransferResult, Transfer,
};
use keel_node::config::NodeConfig;
use keel_node::node::LedgerNode;

const USD: u32 = 840;
const CUSTOMER: u16 = 1;
const SETTLEMENT: u16 = 2;

fn transfer(id: u128, debit: u128, credit: u128, amount: u64) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: USD,
        code: 1,
        ..Transfer::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "keel-data-embed".to_owned());
    let mut config = match args.next() {
        Some(path) => NodeConfig::from_file(path.as_ref())?,
        None => NodeConfig::default(),
    };
    config.journal.data_dir = dir.into();
    config.ledger.accounts_max = 1 << 12;
    config.ledger.transfers_max = 1 << 16;
    let node = LedgerNode::start_ledger(&config)?;
    println!(
        "recovered {} journal records in {:?}",
        node.recovery().records,
        node.recovery().elapsed
    );

    // Account 1 is the settlement account; 2..=9 are customers who may not overdraw.
    let mut client = node.client();
    let accounts: Vec<Account> = (1..=9u128)
        .map(|id| Account {
            id,
            ledger: USD,
            code: if id == 1 { SETTLEMENT } else { CUSTOMER },
            flags: if id == 1 {
                0
            } else {
                account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
            },
            ..Account::default()
        })
        .collect();
    let (_, results) = client.create_accounts(&accounts, CallOptions::default())?;
    println!("create_accounts: {:?}", results.codes());
    let run = u128::from(node.recovery().records) << 32;
    let funding: Vec<Transfer> = (2..=8u128)
        .map(|id| transfer(run | id, 1, id, 10_000))
        .collect();
    client.create_transfers(&funding, CallOptions::default())?;

    // Three threads pay each other, async, keeping a few commands in flight.
    std::thread::scope(|s| {
        for t in 0..3u128 {
            let mut client = node.client();
            s.spawn(move || {
                let mut in_flight = Vec::new();
                for i in 0..100u128 {
                    let id = run | (t + 1) << 20 | (i + 100);
                    let payment = transfer(id, 2 + t, 5 + t, 50);
                    let options = CallOptions {
                        correlation_id: i as u64,
                        idempotency_key: 0,
                    };
                    in_flight.push(client.create_transfers_async(&[payment], options).unwrap());
                    if in_flight.len() == 8 {
                        for pending in in_flight.drain(..) {
                            let ack = futures::executor::block_on(pending).unwrap();
                            assert!(
                                event_results(command_type::CREATE_TRANSFERS, &ack.outcome)
                                    .unwrap()
                                    .codes()[0]
                                    == 0
                            );
                        }
                    }
                }
                for pending in in_flight {
                    futures::executor::block_on(pending).unwrap();
                }
            });
        }
    });

    // Two-phase: reserve 300, then post 250 (the rest is released).
    let hold = Transfer {
        flags: transfer_flags::PENDING,
        timeout: 60,
        ..transfer(run | 1 << 30, 8, 1, 300)
    };
    let post = Transfer {
        flags: transfer_flags::POST_PENDING_TRANSFER,
        pending_id: hold.id,
        ..transfer(run | 1 << 30 | 1, 0, 0, 250)
    };
    client.create_transfers(&[hold], CallOptions::default())?;
    client.create_transfers(&[post], CallOptions::default())?;

    // A linked chain that cannot complete: nothing of it is applied.
    let chain = [
        Transfer {
            flags: transfer_flags::LINKED,
            ..transfer(run | 2 << 30, 2, 9, 1)
        },
        transfer(run | 2 << 30 | 1, 9, 2, 1_000_000), // account 9 has no funds
    ];
    let (_, results) = client.create_transfers(&chain, CallOptions::default())?;
    let names: Vec<_> = results
        .codes()
        .iter()
        .map(|&c| CreateTransferResult::from_u8(c).unwrap().name())
        .collect();
    println!("linked chain: {names:?}");

    // An idempotent retry: the same key returns the first outcome.
    let keyed = CallOptions {
        correlation_id: 99,
        idempotency_key: run | 0xabc,
    };
    let refund = transfer(run | 3 << 30, 1, 2, 5);
    let (first, _) = client.create_transfers(&[refund], keyed)?;
    let (retry, _) = client.create_transfers(&[refund], keyed)?;
    println!(
        "retry was a duplicate: {}",
        retry.duplicate && retry.outcome == first.outcome
    );

    for id in [1u128, 2, 8] {
        let b = client.lookup_account(id)?.expect("account exists");
        println!(
            "account {id}: debits {} (+{} pending), credits {} (+{} pending)",
            b.debits_posted, b.debits_pending, b.credits_posted, b.credits_pending
        );
    }
    let acks = node.engine().metrics().ack_latency_ns;
    println!(
        "{} acks: p50 {} µs, p99 {} µs",
        acks.len(),
        acks.value_at_quantile(0.5) / 1000,
        acks.value_at_quantile(0.99) / 1000
    );
    drop(client);
    let stopped = node.shutdown()?;
    println!(
        "{} commands this run; state hash {:016x}",
        stopped.commands,
        keel_core::StateMachine::state_hash(&stopped.state_machine)
    );
    Ok(())
}
