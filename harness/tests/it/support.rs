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
