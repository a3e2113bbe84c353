//! Helpers shared by the host-side integration tests.

use std::path::{Path, PathBuf};

/// The first (lowest-id) journal segment file in `dir` (a preallocated
/// spare may follow it).
pub fn first_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "keel"))
        .min()
        .unwrap()
}

/// A `u64` from the environment, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts `keel-crash-child` on `data` and `acks` (plus `extra` arguments)
/// and returns it with the first line it printed (`ready…` once serving).
pub fn spawn_crash_child(
    data: &Path,
    acks: &Path,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keel-crash-child"))
        .arg("--data-dir")
        .arg(data)
        .arg("--acks")
        .arg(acks)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    (child, ready)
}

/// Accounts `1..=n` on ledger 1, code 1, no flags.
pub fn accounts(n: u128) -> Vec<keel_ledger::Account> {
    (1..=n)
        .map(|id| keel_ledger::Account {
            id,
            ledger: 1,
            code: 1,
            ..keel_ledger::Account::default()
        })
        .collect()
}

/// A plain transfer of `amount` from account 1 to account 2.
pub fn transfer(id: u128, amount: u64) -> keel_ledger::Transfer {
    keel_ledger::Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount,
        ledger: 1,
        code: 1,
        ..keel_ledger::Transfer::default()
    }
}
