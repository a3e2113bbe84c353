//! Random command sequences through the real ledger and the reference model:
//! identical per-event results and identical final state, the ledger's
//! invariants after every command, and a replay of the same commands reaching
//! the same state hash. `PROPTEST_CASES` raises the case count locally.

use std::collections::BTreeMap;

use keel_core::StateMachine;
use keel_ledger::{account_flags as af, transfer_flags as tf, Account, Ledger, Transfer};
use proptest::prelude::*;

use crate::model::Model;
use crate::support::Harness;

#[derive(Debug, Clone)]
enum Op {
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    /// Imported events whose `timestamp` holds how far (ns) before the
    /// command's clock they claim to be (`resolve` makes it absolute).
    ImportedAccounts(Vec<Account>),
    ImportedTransfers(Vec<Transfer>),
    /// Advance the clock (ms) before the next command.
    Wait(u64),
}

const ACCOUNTS_MAX: u32 = 10;
const TRANSFERS_MAX: u32 = 48;

fn account() -> impl Strategy<Value = Account> {
    let flags = prop_oneof![
        6 => Just(0u16),
        2 => Just(af::DEBITS_MUST_NOT_EXCEED_CREDITS),
        2 => Just(af::CREDITS_MUST_NOT_EXCEED_DEBITS),
        1 => Just(af::LINKED),
        1 => Just(af::CLOSED),
        1 => Just(af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ];
    (
        0u128..=12,
        flags,
        prop_oneof![8 => Just(1u32), 1 => Just(2u32), 1 => Just(0u32)],
    )
        .prop_map(|(id, flags, ledger)| Account {
            id,
            ledger,
            code: 1,
            flags,
            ..Account::default()
        })
}

fn transfer() -> impl Strategy<Value = Transfer> {
    let kind = prop_oneof![
        5 => Just(0u16),
        3 => Just(tf::PENDING),
        2 => Just(tf::POST_PENDING_TRANSFER),
        2 => Just(tf::VOID_PENDING_TRANSFER),
        1 => Just(tf::BALANCING_DEBIT),
        1 => Just(tf::BALANCING_CREDIT),
        1 => Just(tf::PENDING | tf::CLOSING_DEBIT),
        1 => Just(tf::PENDING | tf::CLOSING_CREDIT),
        1 => Just(tf::CLOSING_DEBIT),
    ];
    // Small amounts hit balance limits exactly; huge ones hit overflow checks.
    // AMOUNT_MAX posts a whole pending amount.
    let amount = prop_oneof![
        6 => 0u64..20,
        3 => 0u64..1_000,
        1 => Just(u64::MAX - 5),
        1 => Just(u64::MAX),
    ];
    (
        1u128..=60,
        0u128..=11,
        0u128..=11,
        amount,
        kind,
        any::<bool>(),
        0u32..=3,
        0u128..=60,
        // Zero user data on a post or void inherits the pending transfer's.
        prop_oneof![2 => Just(0u64), 1 => 1u64..=3],
    )
        .prop_map(
            |(id, debit, credit, amount, kind, linked, timeout, pending_id, user_data)| {
                let post_or_void =
                    kind & (tf::POST_PENDING_TRANSFER | tf::VOID_PENDING_TRANSFER) != 0;
                Transfer {
                    id,
                    debit_account_id: if post_or_void { 0 } else { debit },
                    credit_account_id: if post_or_void { 0 } else { credit },
                    amount,
                    pending_id: if post_or_void { pending_id } else { 0 },
                    timeout: if kind & tf::PENDING != 0 { timeout } else { 0 },
                    ledger: if post_or_void { 0 } else { 1 },
                    code: if post_or_void { 0 } else { 1 },
                    flags: kind | if linked { tf::LINKED } else { 0 },
                    user_data_128: u128::from(user_data),
                    user_data_64: user_data * 10,
                    user_data_32: (user_data % 2) as u32,
                    ..Transfer::default()
                }
            },
        )
}

/// Imported events (migrating history): how far before the command's clock
/// each claims to be — up to 2 ms, so some follow the previous command's
/// events (1 ms earlier), some regress, some collide, some (0) would not be
/// in the past; `u64::MAX` stands for timestamp 0. Now and then one event
/// is not imported.
fn imported_timestamp() -> impl Strategy<Value = (bool, u64)> {
    (
        prop_oneof![9 => Just(true), 1 => Just(false)],
        prop_oneof![8 => 0u64..2_000_000, 1 => 0u64..8, 1 => Just(u64::MAX)],
    )
}

/// `op` with imported offsets made absolute against `now_ns`.
fn resolve(op: &Op, now_ns: u64) -> Op {
    let at = |offset: u64| match offset {
        u64::MAX => 0,
        offset => now_ns.saturating_sub(offset),
    };
    match op {
        Op::ImportedAccounts(events) => Op::Accounts(
            events
                .iter()
                .map(|a| Account {
                    timestamp: if a.flags & af::IMPORTED != 0 {
                        at(a.timestamp)
                    } else {
                        0
                    },
                    ..*a
                })
                .collect(),
        ),
        Op::ImportedTransfers(events) => Op::Transfers(
            events
                .iter()
                .map(|t| Transfer {
                    timestamp: if t.flags & tf::IMPORTED != 0 {
                        at(t.timestamp)
                    } else {
                        0
                    },
                    ..*t
                })
                .collect(),
        ),
        Op::Accounts(a) => Op::Accounts(a.clone()),
        Op::Transfers(t) => Op::Transfers(t.clone()),
        Op::Wait(ms) => Op::Wait(*ms),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop::collection::vec(account(), 1..=9).prop_map(Op::Accounts),
        6 => prop::collection::vec(transfer(), 1..=7).prop_map(Op::Transfers),
        1 => (0u64..2_500).prop_map(Op::Wait),
        1 => prop::collection::vec((account(), imported_timestamp()), 1..=9).prop_map(|events| {
            Op::ImportedAccounts(
                events
                    .into_iter()
                    .map(|(a, (imported, timestamp))| match imported {
                        true => Account { flags: a.flags | af::IMPORTED, timestamp, ..a },
                        false => a,
                    })
                    .collect(),
            )
        }),
        1 => prop::collection::vec((transfer(), imported_timestamp()), 1..=7).prop_map(|events| {
            Op::ImportedTransfers(
                events
                    .into_iter()
                    .map(|(t, (imported, timestamp))| match imported {
                        true => Transfer { flags: t.flags | tf::IMPORTED, timestamp, ..t },
                        false => t,
                    })
                    .collect(),
            )
        }),
    ]
}

/// Invariants of any reachable ledger state.
fn check_invariants(ledger: &Ledger) {
    let mut per_ledger: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for a in ledger.accounts() {
        let sums = per_ledger.entry(a.ledger).or_default();
        sums[0] += u128::from(a.debits_pending);
        sums[1] += u128::from(a.credits_pending);
        sums[2] += u128::from(a.debits_posted);
        sums[3] += u128::from(a.credits_posted);
        if a.flags & af::DEBITS_MUST_NOT_EXCEED_CREDITS != 0 {
            assert!(
                a.debits_pending + a.debits_posted <= a.credits_posted,
                "{a:?}"
            );
        }
        if a.flags & af::CREDITS_MUST_NOT_EXCEED_DEBITS != 0 {
            assert!(
                a.credits_pending + a.credits_posted <= a.debits_posted,
                "{a:?}"
            );
        }
    }
    for (ledger_id, [dp, cp, dpo, cpo]) in per_ledger {
        assert_eq!(
            dp, cp,
            "pending debits and credits differ on ledger {ledger_id}"
        );
        assert_eq!(
            dpo, cpo,
            "posted debits and credits differ on ledger {ledger_id}"
        );
    }
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash());
}

fn run(ops: &[Op]) -> Harness {
    let mut h = Harness::new(ACCOUNTS_MAX, TRANSFERS_MAX);
    let mut model = Model::new(ACCOUNTS_MAX as usize, TRANSFERS_MAX as usize);
    for op in ops {
        match &resolve(op, h.now_ns) {
            Op::Accounts(accounts) => {
                let expected = model.create_accounts(accounts, h.now_ns);
                assert_eq!(h.accounts(accounts), expected, "{accounts:?}");
            }
            Op::Transfers(transfers) => {
                let expected = model.create_transfers(transfers, h.now_ns);
                assert_eq!(h.transfers(transfers), expected, "{transfers:?}");
            }
            Op::Wait(ms) => h.now_ns += ms * 1_000_000,
            Op::ImportedAccounts(_) | Op::ImportedTransfers(_) => unreachable!("resolved"),
        }
        check_invariants(&h.ledger);
    }
    let accounts: Vec<Account> = h.ledger.accounts().copied().collect();
    let mut expected: Vec<Account> = model.accounts.values().copied().collect();
    let mut actual = accounts.clone();
    expected.sort_by_key(|a| a.id);
    actual.sort_by_key(|a| a.id);
    assert_eq!(actual, expected);
    for (t, state) in h.ledger.transfers() {
        let (e, expected_state, _) = model.transfers[&t.id];
        assert_eq!((*t, state), (e, expected_state));
    }
    assert_eq!(h.ledger.transfers_len(), model.transfers.len());
    h
}

/// Applies one op; returns the per-event codes (empty for a wait).
fn step(h: &mut Harness, op: &Op) -> Vec<u8> {
    match &resolve(op, h.now_ns) {
        Op::Accounts(accounts) => h.accounts(accounts),
        Op::Transfers(transfers) => h.transfers(transfers),
        Op::Wait(ms) => {
            h.now_ns += ms * 1_000_000;
            Vec::new()
        }
        Op::ImportedAccounts(_) | Op::ImportedTransfers(_) => unreachable!("resolved"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_ledger_matches_the_reference_model(ops in prop::collection::vec(op(), 1..40)) {
        let first = run(&ops);
        // Replay: the same commands give the same state hash.
        let second = run(&ops);
        prop_assert_eq!(first.ledger.state_hash(), second.ledger.state_hash());
    }

    #[test]
    fn a_restored_snapshot_continues_exactly_like_the_original(
        ops in prop::collection::vec(op(), 2..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let at = cut.index(ops.len());
        let mut original = Harness::new(ACCOUNTS_MAX, TRANSFERS_MAX);
        for op in &ops[..at] {
            step(&mut original, op);
        }
        let bytes = original.ledger.encode_snapshot();
        let config = original.ledger.config();
        let restored = Ledger::restore_snapshot(config, &bytes).unwrap();
        prop_assert_eq!(restored.state_hash(), original.ledger.state_hash());
        prop_assert_eq!(restored.recompute_state_hash(), restored.state_hash());
        let mut copy = Harness::with_ledger(restored, original.sequence, original.now_ns);
        for op in &ops[at..] {
            prop_assert_eq!(step(&mut copy, op), step(&mut original, op));
        }
        prop_assert_eq!(copy.ledger.state_hash(), original.ledger.state_hash());
        let history = |h: &Harness, id| h.ledger.account_transfers(id).map(|t| t.id).collect::<Vec<_>>();
        for id in 0..12 {
            prop_assert_eq!(history(&copy, id), history(&original, id));
        }
    }
}
