//! `keel-crash-child`: the process the kill -9 crash loop kills (a test
//! fixture, not part of the operator's `keel` binary).
//! It starts a ledger node (newest snapshot + journal), then submits batches
//! of transfers forever with `sync` durability and appends every
//! acknowledged transfer's id and result code to the acknowledgement file —
//! only after the ack, so the file is what a client was promised. Small
//! segments (1 MiB) make kills land near segment rolls.
//!
//! With `--shards N` it runs a sharded node instead (ADR 0014): it first
//! resumes the sagas the previous kill left open, then submits batches of
//! single- and cross-shard transfers (`<id> <code> <debit> <credit>` per
//! acknowledged transfer), and now and then abandons a saga after a seeded
//! step, as a driver dying alone would (`<id> a <debit> <credit>`),
//! resuming those with `recover_sagas` while it runs. Some accounts may
//! not go negative and some credits name accounts that do not exist, so
//! refusals on either side (and their compensation) are killed too.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use keel_harness::config::NodeConfig;
use keel_harness::load::{plain_accounts, XorShift};
use keel_harness::node::LedgerNode;
use keel_harness::sharded::ShardedNode;
use keel_ledger::{CallOptions, Transfer};

/// Options of `keel-crash-child`.
#[derive(clap::Parser)]
struct CrashChildArgs {
    /// Journal directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Acknowledgement file (appended: `<transfer id> <result code>` per line).
    #[arg(long)]
    acks: PathBuf,
    /// Run a sharded node of this many shards.
    #[arg(long)]
    shards: Option<usize>,
}

fn main() -> ExitCode {
    let args = <CrashChildArgs as clap::Parser>::parse();
    let served = match args.shards {
        Some(shards) => serve_sharded(&args, shards),
        None => serve(&args),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel crash-child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A kill can cut the previous run's last write short (a write crossing a
/// page boundary stops at a pending SIGKILL): drop that partial line, or
/// this run's first line would be appended to it and read as one garbled
/// acknowledgement (CI saw one).
fn drop_partial_line(path: &std::path::Path) -> std::io::Result<()> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
    }
    Ok(())
}

/// Accounts of the sharded workload.
const SHARDED_ACCOUNTS: u64 = 24;

fn serve_sharded(args: &CrashChildArgs, shards: usize) -> Result<(), Box<dyn std::error::Error>> {
    let node = ShardedNode::start(&NodeConfig::sharded_crash_loop(
        args.data_dir.clone(),
        shards,
    ))?;
    // Every start journals an ownership check on every shard, so shard 0's
    // next sequence grows from run to run: ids stay unique.
    let nonce = u128::from(node.shards()[0].recovery().next_sequence + 1);
    let resumed = node.recover_sagas()?;
    drop_partial_line(&args.acks)?;
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.acks)?;
    let mut client = node.client(0);
    // Every fourth account may not go negative, so some transfers and
    // sagas are refused on the debit side.
    let mut accounts = plain_accounts(SHARDED_ACCOUNTS as u32);
    for a in accounts.iter_mut().filter(|a| a.id % 4 == 0) {
        a.flags = keel_ledger::account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    }
    client.create_accounts(&accounts)?;
    println!("ready (resumed {} sagas)", resumed.resumed);
    std::io::stdout().flush()?;
    let mut rng = XorShift(nonce as u64 | 1);
    let mut next = move |n: u64| rng.next_u64() % n;
    let mut line = String::new();
    for batch in 0u128.. {
        line.clear();
        let mut transfer = |i: u128| {
            let debit = 1 + u128::from(next(SHARDED_ACCOUNTS));
            let n = u128::from(SHARDED_ACCOUNTS);
            let credit = match next(16) {
                // An account that does not exist: refused on the credit side.
                0 => n + 1 + u128::from(next(3)),
                _ => 1 + (debit + u128::from(next(SHARDED_ACCOUNTS - 1))) % n, // never debit
            };
            Transfer {
                id: (nonce << 64) | (batch * 8 + i + 1),
                debit_account_id: debit,
                credit_account_id: credit,
                amount: 1 + next(9),
                ledger: 1,
                code: 1,
                ..Transfer::default()
            }
        };
        let transfers: Vec<Transfer> = (0..7).map(&mut transfer).collect();
        let abandoned = (batch % 8 == 7).then(|| transfer(7));
        let codes = client.create_transfers(&transfers)?;
        for (t, code) in transfers.iter().zip(&codes) {
            let (d, c) = (t.debit_account_id, t.credit_account_id);
            line.push_str(&format!("{} {code} {d} {c}\n", t.id));
        }
        if let Some(t) = abandoned {
            if client.shard_of(t.debit_account_id) != client.shard_of(t.credit_account_id) {
                let steps = 1 + (batch / 8 % 4) as u8;
                client.transfer_cross_abandoned(&t, steps)?;
                let (d, c) = (t.debit_account_id, t.credit_account_id);
                line.push_str(&format!("{} a {d} {c}\n", t.id));
            }
        }
        // One write per acknowledged call: a kill loses at most the record
        // of acks not yet written, never invents one.
        acks.write_all(line.as_bytes())?;
        if batch % 64 == 63 {
            node.recover_sagas()?;
        }
    }
    Ok(())
}

fn serve(args: &CrashChildArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = NodeConfig::crash_loop(args.data_dir.clone());
    let node = LedgerNode::start_ledger(&config)?;
    // Ids are unique across restarts: the journal only grows.
    let nonce = u128::from(node.recovery().next_sequence + 1);
    drop_partial_line(&args.acks)?;
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.acks)?;
    let mut client = node.client();
    client.create_accounts(&plain_accounts(8), CallOptions::default())?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    for batch in 0u128.. {
        let transfers: Vec<Transfer> = (0..7u128)
            .map(|i| {
                let n = batch * 7 + i;
                Transfer {
                    id: (nonce << 64) | (n + 1),
                    debit_account_id: 1 + n % 8,
                    credit_account_id: 1 + (n + 1) % 8,
                    amount: 1,
                    ledger: 1,
                    code: 1,
                    ..Transfer::default()
                }
            })
            .collect();
        let (_, results) = client.create_transfers(&transfers, CallOptions::default())?;
        line.clear();
        for (t, code) in transfers.iter().zip(results.codes()) {
            line.push_str(&format!("{} {code}\n", t.id));
        }
        // One write per acknowledged command: a kill loses at most the
        // record of acks not yet written, never invents one.
        acks.write_all(line.as_bytes())?;
    }
    Ok(())
}
