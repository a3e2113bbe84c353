//! A payments host embedding a sharded Keel node: two shards in one
//! process, accounts placed by slot, a batch split across shards, a
//! cross-shard transfer run as a saga (and its status), a refused one that
//! releases its reservation, and a clean shutdown. Run it twice: the second
//! run recovers each shard from its journal (accounts report `exists`, the
//! same transfers answer `exists` or the same saga outcome).
//!
//! Run: `cargo run --release -p keel-node --example sharded -- [DATA_DIR] [CONFIG.toml]`

use keel_ledger::{account_flags, Account, CreateAccountResult, CreateTransferResult, Transfer};
use keel_node::config::NodeConfig;
use keel_node::sharded::ShardedNode;

const USD: u32 = 840;

fn account(id: u128, flags: u16) -> Account {
    Account {
        id,
        ledger: USD,
        code: 1,
        flags,
        ..Account::default()
    }
}

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
    let dir = args
        .next()
        .unwrap_or_else(|| "keel-data-sharded".to_owned());
    let mut config = match args.next() {
        Some(path) => NodeConfig::from_file(path.as_ref())?,
        None => {
            let mut config = NodeConfig::default();
            config.shards.count = 2;
            config
        }
    };
    config.journal.data_dir = dir.into();
    config.ledger.accounts_max = 1 << 12;
    config.ledger.transfers_max = 1 << 16;
    let node = ShardedNode::start(&config)?;
    // After a crash: finish what a dead caller left before serving.
    let recovered = node.recover_sagas()?;
    println!(
        "{} shards; {} open sagas resumed",
        node.shards().len(),
        recovered.resumed
    );

    // One client per thread, as one tenant.
    let mut client = node.client(0);
    // The operator (1) may go negative; customers may not.
    let mut accounts = vec![account(1, 0)];
    accounts.extend((2..=20).map(|id| account(id, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS)));
    let codes = client.create_accounts(&accounts)?;
    let created = codes
        .iter()
        .filter(|&&c| c == CreateAccountResult::ok as u8)
        .count();
    println!(
        "accounts: {created} created ({} already there)",
        codes.len() - created
    );
    for id in [1, 2, 3] {
        println!("  account {id} lives on shard {}", client.shard_of(id));
    }

    // Funding from the operator: one batch, split by shard; transfers whose
    // accounts are on two shards run as sagas inside the same call.
    let funding: Vec<Transfer> = (2..=20)
        .map(|id| transfer(100 + id, 1, id, 1_000))
        .collect();
    let codes = client.create_transfers(&funding)?;
    let crossing = funding
        .iter()
        .filter(|t| client.shard_of(t.debit_account_id) != client.shard_of(t.credit_account_id))
        .count();
    println!(
        "funding: {} ok of {} ({crossing} across shards)",
        count_ok(&codes),
        codes.len()
    );

    // A payment between two customers on different shards.
    let (a, b) = (2..=20)
        .flat_map(|a| (2..=20).map(move |b| (a, b)))
        .find(|&(a, b)| client.shard_of(a) != client.shard_of(b))
        .expect("customers on both shards");
    let payment = transfer(500, a, b, 250);
    println!("payment {a} -> {b}: {:?}", client.transfer_cross(&payment)?);
    println!("  its saga: {:?}", client.saga_status(&payment)?);
    // More than the payer has: refused on the debit side, nothing held.
    let too_much = transfer(501, a, b, 1_000_000);
    println!("too much: {:?}", client.transfer_cross(&too_much)?);
    let balance = client.lookup_account(a)?.expect("exists");
    println!(
        "account {a}: credits {} debits {} (pending {})",
        balance.credits_posted, balance.debits_posted, balance.debits_pending
    );
    if let Some((shard, status)) = client.lookup_transfer(102)? {
        println!("transfer 102: on shard {shard}, amount {}", status.amount);
    }

    drop(client);
    for (i, stopped) in node
        .shutdown()
        .map_err(|(i, e)| format!("shard {i}: {e}"))?
        .iter()
        .enumerate()
    {
        println!(
            "shard {i}: {} accounts, {} transfers (saga steps included)",
            stopped.state_machine.accounts_len(),
            stopped.state_machine.transfers_len()
        );
    }
    Ok(())
}

fn count_ok(codes: &[u8]) -> usize {
    codes
        .iter()
        .filter(|&&c| {
            c == CreateTransferResult::ok as u8 || c == CreateTransferResult::exists as u8
        })
        .count()
}
