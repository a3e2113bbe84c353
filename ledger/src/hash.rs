//! The ledger's state hash: a wrapping sum of one term per record.
//!
//! A sum is order independent and updatable in O(1): changing an account
//! subtracts its old term and adds its new one. So the hash depends only on
//! the ledger's content — the same accounts, transfers and pending states give
//! the same hash however they were reached — which is what a snapshot (issue
//! 5) needs to be checked against a replay. Terms are strong 64-bit mixes of
//! every field, so two different records collide only by chance (2^-64).

use crate::types::{Account, PendingState, Transfer};

const SEED: u64 = 0x6b65_656c_6c65_6467; // "keelledg"

/// Folds words into a well-mixed 64-bit value (a multiply-rotate chain with a
/// final avalanche).
#[inline]
pub fn fold(words: &[u64]) -> u64 {
    let mut h = SEED ^ (words.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(27);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The term of one account (every field).
#[inline]
pub fn account_term(a: &Account) -> u64 {
    fold(&[
        a.id as u64,
        (a.id >> 64) as u64,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
        a.user_data_128 as u64,
        (a.user_data_128 >> 64) as u64,
        a.user_data_64,
        u64::from(a.user_data_32) | u64::from(a.reserved) << 32,
        u64::from(a.ledger) | u64::from(a.code) << 32 | u64::from(a.flags) << 48,
        a.timestamp,
    ])
}

/// The term of one transfer in a pending state (every field).
#[inline]
pub fn transfer_term(t: &Transfer, state: PendingState) -> u64 {
    fold(&[
        t.id as u64,
        (t.id >> 64) as u64,
        t.debit_account_id as u64,
        (t.debit_account_id >> 64) as u64,
        t.credit_account_id as u64,
        (t.credit_account_id >> 64) as u64,
        t.amount,
        t.pending_id as u64,
        (t.pending_id >> 64) as u64,
        t.user_data_128 as u64,
        (t.user_data_128 >> 64) as u64,
        t.user_data_64,
        u64::from(t.user_data_32) | u64::from(t.timeout) << 32,
        u64::from(t.ledger) | u64::from(t.code) << 32 | u64::from(t.flags) << 48,
        t.timestamp,
        state as u64,
    ])
}
