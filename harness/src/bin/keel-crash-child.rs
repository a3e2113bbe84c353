//! `keel-crash-child`: the process the kill -9 crash loop kills (a test
//! fixture, not part of the operator's `keel` binary).
//! It starts a ledger node (newest snapshot + journal), then submits batches
//! of transfers forever with `sync` durability and appends every
//! acknowledged transfer's id and result code to the acknowledgement file —
//! only after the ack, so the file is what a client was promised. Small
//! segments (1 MiB) make kills land near segment rolls.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use keel_harness::config::NodeConfig;
use keel_harness::node::LedgerNode;
use keel_ledger::{Account, CallOptions, Transfer};

/// Options of `keel-crash-child`.
#[derive(clap::Parser)]
struct CrashChildArgs {
    /// Journal directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Acknowledgement file (appended: `<transfer id> <result code>` per line).
    #[arg(long)]
    acks: PathBuf,
}

fn main() -> ExitCode {
    let args = <CrashChildArgs as clap::Parser>::parse();
    match serve(&args) {
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
    let accounts: Vec<Account> = (1..=8u128)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        })
        .collect();
    client.create_accounts(&accounts, CallOptions::default())?;
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
