//! The ledger's state hash: a wrapping sum of one term per record.
//!
//! A sum is order independent and updatable in O(1): changing an account
//! subtracts its old term and adds its new one. So the hash depends only on
//! the ledger's content — the same accounts, transfers and pending states give
//! the same hash however they were reached — which is what a snapshot (issue
//! 5) needs to be checked against a replay. Terms are strong 64-bit mixes of
//! every field, so two different records collide only by chance (about
//! 2^-64): the hash proves replay determinism, it is not a MAC.

use crate::types::{Account, PendingState, Transfer};

const SEED: u64 = 0x6b65_656c_6c65_6467; // "keelledg"
const K: [u64; 4] = [
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
];

/// Multiplies into 128 bits and folds (wyhash's "mum").
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let m = u128::from(a).wrapping_mul(u128::from(b));
    (m as u64) ^ ((m >> 64) as u64)
}

/// Folds words into a well-mixed 64-bit value. Words are taken in pairs,
/// each pair keyed by its position and multiplied independently (so the
/// multiplications run in parallel), then the pair results are chained and
/// finished with one more multiply: position-sensitive, ~wyhash quality.
#[inline]
pub fn fold(words: &[u64]) -> u64 {
    let mut h = SEED ^ words.len() as u64;
    for (i, pair) in words.chunks(2).enumerate() {
        let b = pair.get(1).copied().unwrap_or(0);
        let key = K[i % 4].wrapping_add(i as u64);
        h = h.rotate_left(23) ^ mum(pair[0] ^ key, b ^ K[(i + 1) % 4]);
    }
    mum(h ^ K[0], h ^ K[3])
}

/// The hash of an account's immutable fields (identity, user data, ledger,
/// code, creation time): computed once at creation and kept with the account.
#[inline]
pub fn account_static_term(a: &Account) -> u64 {
    fold(&[
        a.id as u64,
        (a.id >> 64) as u64,
        a.user_data_128 as u64,
        (a.user_data_128 >> 64) as u64,
        a.user_data_64,
        u64::from(a.user_data_32) | u64::from(a.reserved) << 32,
        u64::from(a.ledger) | u64::from(a.code) << 32,
        a.timestamp,
    ])
}

/// The term of one account: its static term with the fields a transfer
/// changes (balances, flags). A balance change rehashes six words, not twelve.
#[inline]
pub fn account_term_with(static_term: u64, a: &Account) -> u64 {
    fold(&[
        static_term,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
        u64::from(a.flags),
    ])
}

/// The term of one account (every field).
#[inline]
pub fn account_term(a: &Account) -> u64 {
    account_term_with(account_static_term(a), a)
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

/// The state-hash term of a transfer id that failed with a transient code.
pub fn failed_term(id: u128) -> u64 {
    fold(&[id as u64, (id >> 64) as u64, 0xfa11_ed1d_0000_0001])
}
