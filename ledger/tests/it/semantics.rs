//! One scenario per rule of the ledger's semantics.

use keel_ledger::commands::{self, command_type, outcome_code};
use keel_ledger::{
    account_flags as af, transfer_flags as tf, CreateAccountResult as A, CreateTransferResult as T,
    PendingState, Transfer, AMOUNT_MAX,
};

use crate::support::{account, transfer, Harness};

fn ok(n: usize) -> Vec<u8> {
    vec![0; n]
}

fn ledger_with_accounts(flags: &[u16]) -> Harness {
    let mut h = Harness::new(64, 256);
    let accounts: Vec<_> = flags
        .iter()
        .enumerate()
        .map(|(i, &f)| account(i as u128 + 1, f))
        .collect();
    assert_eq!(h.accounts(&accounts), ok(accounts.len()));
    h
}

#[test]
fn account_creation_checks_fields_and_is_idempotent() {
    let mut h = Harness::new(4, 4);
    let mut bad_balance = account(5, 0);
    bad_balance.credits_posted = 1;
    let results = h.accounts(&[
        account(1, 0),
        account(0, 0),
        account(u128::MAX, 0),
        account(
            2,
            af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ),
        account(3, 1 << 9),
        bad_balance,
        keel_ledger::Account {
            ledger: 0,
            ..account(6, 0)
        },
        account(1, 0),
        keel_ledger::Account {
            code: 11,
            ..account(1, 0)
        },
    ]);
    assert_eq!(
        results,
        [
            A::ok,
            A::id_must_not_be_zero,
            A::id_must_not_be_int_max,
            A::flags_are_mutually_exclusive,
            A::reserved_flag,
            A::credits_posted_must_be_zero,
            A::ledger_must_not_be_zero,
            A::exists,
            A::exists_with_different_code,
        ]
        .map(|c| c as u8)
    );
    assert_eq!(h.ledger.accounts_len(), 1);
    assert!(h.ledger.account(1).unwrap().timestamp > 0);
}

#[test]
fn a_full_accounts_table_is_a_rejection_not_growth() {
    let mut h = Harness::new(2, 4);
    let results = h.accounts(&[account(1, 0), account(2, 0), account(3, 0)]);
    assert_eq!(results, [0, 0, A::accounts_table_full as u8]);
    assert_eq!(h.ledger.accounts_len(), 2);
}

#[test]
fn a_transfer_moves_posted_balances() {
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[transfer(10, 1, 2, 300)]), ok(1));
    assert_eq!(h.account(1).debits_posted, 300);
    assert_eq!(h.account(2).credits_posted, 300);
    // A retry with the same fields changes nothing.
    assert_eq!(h.transfers(&[transfer(10, 1, 2, 300)]), [T::exists as u8]);
    assert_eq!(
        h.transfers(&[transfer(10, 1, 2, 301)]),
        [T::exists_with_different_amount as u8]
    );
    assert_eq!(h.account(1).debits_posted, 300);
}

#[test]
fn transfer_field_checks_come_in_order() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let mut other_ledger = account(3, 0);
    other_ledger.ledger = 2;
    assert_eq!(h.accounts(&[other_ledger]), ok(1));
    let cases: Vec<(Transfer, T)> = vec![
        (transfer(0, 1, 2, 1), T::id_must_not_be_zero),
        (transfer(11, 0, 2, 1), T::debit_account_id_must_not_be_zero),
        (transfer(11, 1, 0, 1), T::credit_account_id_must_not_be_zero),
        (transfer(11, 1, 1, 1), T::accounts_must_be_different),
        (transfer(11, 9, 2, 1), T::debit_account_not_found),
        (transfer(11, 1, 9, 1), T::credit_account_not_found),
        (transfer(11, 1, 3, 1), T::accounts_must_have_the_same_ledger),
        (
            Transfer {
                ledger: 2,
                ..transfer(11, 1, 2, 1)
            },
            T::transfer_must_have_the_same_ledger_as_accounts,
        ),
        (
            Transfer {
                timeout: 5,
                ..transfer(11, 1, 2, 1)
            },
            T::timeout_reserved_for_pending_transfer,
        ),
        (
            Transfer {
                flags: tf::PENDING | tf::POST_PENDING_TRANSFER,
                ..transfer(11, 1, 2, 1)
            },
            T::flags_are_mutually_exclusive,
        ),
        (
            Transfer {
                flags: tf::CLOSING_DEBIT,
                ..transfer(11, 1, 2, 1)
            },
            T::closing_transfer_must_be_pending,
        ),
        (
            Transfer {
                timestamp: 5,
                ..transfer(11, 1, 2, 1)
            },
            T::timestamp_must_be_zero,
        ),
    ];
    for (i, (t, expected)) in cases.into_iter().enumerate() {
        // A fresh id per case: an id that failed with a transient code
        // (an account not found) is `id_already_failed` from then on.
        let t = match t.id {
            11 => Transfer {
                id: 100 + i as u128,
                ..t
            },
            _ => t,
        };
        assert_eq!(h.transfers(&[t]), [expected as u8], "{t:?}");
    }
    assert_eq!(h.ledger.transfers_len(), 0);
}

#[test]
fn balance_limits_hold() {
    let mut h = ledger_with_accounts(&[
        af::DEBITS_MUST_NOT_EXCEED_CREDITS,
        0,
        af::CREDITS_MUST_NOT_EXCEED_DEBITS,
    ]);
    assert_eq!(
        h.transfers(&[transfer(1, 1, 2, 1)]),
        [T::exceeds_credits as u8]
    );
    assert_eq!(h.transfers(&[transfer(2, 2, 1, 100)]), ok(1));
    assert_eq!(h.transfers(&[transfer(3, 1, 2, 100)]), ok(1));
    assert_eq!(
        h.transfers(&[transfer(4, 1, 2, 1)]),
        [T::exceeds_credits as u8]
    );
    assert_eq!(
        h.transfers(&[transfer(5, 2, 3, 1)]),
        [T::exceeds_debits as u8]
    );
}

#[test]
fn two_phase_post_partial_and_void() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let pending = |id, amount| Transfer {
        flags: tf::PENDING,
        ..transfer(id, 1, 2, amount)
    };
    let post = |id, pending_id, amount| Transfer {
        flags: tf::POST_PENDING_TRANSFER,
        pending_id,
        ..transfer(id, 0, 0, amount)
    };
    let void = |id, pending_id| Transfer {
        flags: tf::VOID_PENDING_TRANSFER,
        pending_id,
        ..transfer(id, 0, 0, 0)
    };
    assert_eq!(h.transfers(&[pending(1, 100), pending(2, 50)]), ok(2));
    assert_eq!(h.account(1).debits_pending, 150);
    assert_eq!(
        h.transfers(&[post(3, 1, 101)]),
        [T::exceeds_pending_transfer_amount as u8]
    );
    assert_eq!(h.transfers(&[post(3, 1, 60)]), ok(1));
    let (a, b) = (h.account(1), h.account(2));
    assert_eq!((a.debits_pending, a.debits_posted), (50, 60));
    assert_eq!((b.credits_pending, b.credits_posted), (50, 60));
    assert_eq!(
        h.transfers(&[post(4, 1, 0)]),
        [T::pending_transfer_already_posted as u8]
    );
    assert_eq!(h.transfers(&[void(5, 2)]), ok(1));
    assert_eq!(h.account(1).debits_pending, 0);
    assert_eq!(
        h.transfers(&[void(6, 2)]),
        [T::pending_transfer_already_voided as u8]
    );
    assert_eq!(
        h.transfers(&[void(7, 99)]),
        [T::pending_transfer_not_found as u8]
    );
    assert_eq!(
        h.transfers(&[void(8, 3)]),
        [T::pending_transfer_not_pending as u8]
    );
    assert_eq!(h.ledger.transfer(1).unwrap().1, PendingState::Posted);
    assert_eq!(h.ledger.transfer(2).unwrap().1, PendingState::Voided);
}

#[test]
fn pending_transfers_expire_when_the_clock_passes_their_timeout() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let pending = Transfer {
        flags: tf::PENDING,
        timeout: 2,
        ..transfer(1, 1, 2, 70)
    };
    assert_eq!(h.transfers(&[pending]), ok(1));
    assert_eq!(h.account(1).debits_pending, 70);
    h.now_ns += 3_000_000_000;
    let post = Transfer {
        flags: tf::POST_PENDING_TRANSFER,
        pending_id: 1,
        ..transfer(2, 0, 0, 0)
    };
    assert_eq!(h.transfers(&[post]), [T::pending_transfer_expired as u8]);
    assert_eq!(h.account(1).debits_pending, 0);
    assert_eq!(h.account(2).credits_pending, 0);
    assert_eq!(h.ledger.transfer(1).unwrap().1, PendingState::Expired);
    assert_eq!(h.ledger.stats().expired, 1);
}

#[test]
fn a_linked_chain_fails_as_one() {
    let mut h = ledger_with_accounts(&[0, 0, af::DEBITS_MUST_NOT_EXCEED_CREDITS]);
    let linked = |t: Transfer| Transfer {
        flags: t.flags | tf::LINKED,
        ..t
    };
    let results = h.transfers(&[
        linked(transfer(1, 1, 2, 10)),
        linked(transfer(2, 2, 1, 5)),
        transfer(3, 3, 1, 1), // exceeds credits: the chain fails
        transfer(4, 1, 2, 7), // independent: applies
    ]);
    assert_eq!(
        results,
        [
            T::linked_event_failed as u8,
            T::linked_event_failed as u8,
            T::exceeds_credits as u8,
            0
        ]
    );
    assert_eq!(h.account(1).debits_posted, 7);
    assert_eq!(h.account(2).debits_posted, 0);
    assert!(h.ledger.transfer(1).is_none());
    assert_eq!(
        keel_core::StateMachine::state_hash(&h.ledger),
        h.ledger.recompute_state_hash()
    );
}

#[test]
fn a_chain_left_open_at_the_end_of_the_batch_fails() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let results = h.transfers(&[
        transfer(1, 1, 2, 10),
        Transfer {
            flags: tf::LINKED,
            ..transfer(2, 1, 2, 10)
        },
    ]);
    assert_eq!(results, [0, T::linked_event_chain_open as u8]);
    assert_eq!(h.account(1).debits_posted, 10);
}

/// TigerBeetle 0.17: in a chain left open whose first event already failed,
/// the failing event reports its own error, the middle ones
/// `linked_event_failed`, and the last one still `linked_event_chain_open`.
#[test]
fn a_failed_chain_left_open_ends_with_linked_event_chain_open() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let linked = |t: Transfer| Transfer {
        flags: tf::LINKED,
        ..t
    };
    let results = h.transfers(&[
        linked(transfer(1, 1, 1, 10)), // same account twice: fails
        linked(transfer(2, 1, 2, 10)),
        linked(transfer(3, 1, 2, 10)),
    ]);
    assert_eq!(
        results,
        [
            T::accounts_must_be_different as u8,
            T::linked_event_failed as u8,
            T::linked_event_chain_open as u8,
        ]
    );
    assert_eq!(
        h.account(1).debits_posted,
        0,
        "nothing of the chain applied"
    );
    let results = h.accounts(&[account(9, af::LINKED), account(1, af::LINKED)]);
    assert_eq!(
        results,
        [
            A::linked_event_failed as u8,
            A::linked_event_chain_open as u8
        ],
        "the open chain fails as a whole; its last event says why"
    );
}

#[test]
fn a_chain_may_create_and_post_a_pending_transfer() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let results = h.transfers(&[
        Transfer {
            flags: tf::PENDING | tf::LINKED,
            ..transfer(1, 1, 2, 10)
        },
        Transfer {
            flags: tf::POST_PENDING_TRANSFER,
            pending_id: 1,
            ..transfer(2, 0, 0, AMOUNT_MAX)
        },
    ]);
    assert_eq!(results, ok(2));
    assert_eq!(h.account(2).credits_posted, 10);
    assert_eq!(h.account(2).credits_pending, 0);
}

#[test]
fn balancing_transfers_cap_the_amount() {
    let mut h = ledger_with_accounts(&[af::DEBITS_MUST_NOT_EXCEED_CREDITS, 0]);
    assert_eq!(h.transfers(&[transfer(1, 2, 1, 40)]), ok(1));
    let sweep = Transfer {
        flags: tf::BALANCING_DEBIT,
        ..transfer(2, 1, 2, 1000)
    };
    assert_eq!(h.transfers(&[sweep]), ok(1));
    assert_eq!(h.ledger.transfer(2).unwrap().0.amount, 40);
    assert_eq!(h.account(1).debits_posted, 40);
}

#[test]
fn closing_transfers_close_and_voiding_reopens() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let closing = Transfer {
        flags: tf::PENDING | tf::CLOSING_DEBIT,
        ..transfer(1, 1, 2, 0)
    };
    assert_eq!(h.transfers(&[closing]), ok(1));
    assert_ne!(h.account(1).flags & af::CLOSED, 0);
    assert_eq!(
        h.transfers(&[transfer(2, 1, 2, 5)]),
        [T::debit_account_already_closed as u8]
    );
    let void = Transfer {
        flags: tf::VOID_PENDING_TRANSFER,
        pending_id: 1,
        ..transfer(3, 0, 0, 0)
    };
    assert_eq!(h.transfers(&[void]), ok(1));
    assert_eq!(h.account(1).flags & af::CLOSED, 0);
    // Open again, but id 2 failed on the closed account: it stays failed.
    assert_eq!(
        h.transfers(&[transfer(2, 1, 2, 5)]),
        [T::id_already_failed as u8]
    );
    assert_eq!(h.transfers(&[transfer(4, 1, 2, 5)]), ok(1));
}

#[test]
fn overflow_is_a_rejection() {
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[transfer(1, 1, 2, u64::MAX)]), ok(1));
    assert_eq!(
        h.transfers(&[transfer(2, 1, 2, 1)]),
        [T::overflows_debits_posted as u8]
    );
}

#[test]
fn lookups_read_through_the_log() {
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[transfer(1, 1, 2, 9)]), ok(1));
    let mut buf = [0u8; 64];
    let len = commands::encode_lookup(1, &mut buf).unwrap();
    let outcome = h.raw(command_type::LOOKUP_ACCOUNT, &buf[..len]);
    let balance = commands::account_balance(&outcome).unwrap().unwrap();
    assert_eq!(balance.debits_posted, 9);
    let outcome = h.raw(command_type::LOOKUP_TRANSFER, &buf[..len]);
    let status = commands::transfer_status(&outcome).unwrap().unwrap();
    assert_eq!(status.amount, 9);
    let len = commands::encode_lookup(77, &mut buf).unwrap();
    let outcome = h.raw(command_type::LOOKUP_ACCOUNT, &buf[..len]);
    assert_eq!(commands::account_balance(&outcome).unwrap(), None);
}

#[test]
fn malformed_commands_change_nothing() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let accounts: Vec<_> = h.ledger.accounts().copied().collect();
    for (kind, payload) in [
        (command_type::CREATE_TRANSFERS, &[1u8, 2, 3][..]),
        (99, &[][..]),
        (command_type::CREATE_ACCOUNTS, &[2, 0, 1, 0, 0, 0, 0, 0][..]),
    ] {
        assert_eq!(h.raw(kind, payload).code, outcome_code::MALFORMED);
    }
    // A valid batch with one stray byte between header and body still
    // validates as rkyv, but is not the canonical encoding: refused.
    let mut buf = [0u8; 896];
    let len = commands::encode_create_transfers(&[transfer(1, 1, 2, 1)], &mut buf).unwrap();
    let mut stray = buf[..4].to_vec();
    stray.push(0);
    stray.extend_from_slice(&buf[4..len]);
    assert_eq!(
        h.raw(command_type::CREATE_TRANSFERS, &stray).code,
        outcome_code::MALFORMED
    );
    assert_eq!(h.ledger.stats().malformed, 4);
    let after: Vec<_> = h.ledger.accounts().copied().collect();
    assert_eq!(after, accounts);
    assert_eq!(h.ledger.transfers_len(), 0);
}

#[test]
fn an_accounts_history_is_newest_first() {
    let mut h = ledger_with_accounts(&[0, 0, 0]);
    assert_eq!(
        h.transfers(&[
            transfer(1, 1, 2, 1),
            transfer(2, 3, 1, 1),
            transfer(3, 2, 3, 1)
        ]),
        ok(3)
    );
    let ids: Vec<u128> = h.ledger.account_transfers(1).map(|t| t.id).collect();
    assert_eq!(ids, [2, 1]);
    let ids: Vec<u128> = h.ledger.account_transfers(3).map(|t| t.id).collect();
    assert_eq!(ids, [3, 2]);
}

#[test]
fn timestamps_strictly_increase_even_when_the_clock_goes_back() {
    let mut h = ledger_with_accounts(&[0, 0]);
    h.now_ns = 5; // earlier than the accounts' commands
    assert_eq!(
        h.transfers(&[transfer(1, 1, 2, 1), transfer(2, 1, 2, 1)]),
        ok(2)
    );
    let t1 = h.ledger.transfer(1).unwrap().0.timestamp;
    let t2 = h.ledger.transfer(2).unwrap().0.timestamp;
    assert!(t1 > h.account(2).timestamp);
    assert_eq!(t2, t1 + 1);
}

/// TigerBeetle 0.17 (`create_account_exists` / `create_transfer_exists` in
/// `src/state_machine.zig`) compares every flag of a retry, `linked`
/// included: a retry that differs only in `linked` is
/// `exists_with_different_flags`, not `exists`.
#[test]
fn a_retry_differing_only_in_linked_is_exists_with_different_flags() {
    let mut h = ledger_with_accounts(&[0, 0]);
    // The same account again, now as a one-event chain closed by a second event.
    let linked_account = account(1, af::LINKED);
    assert_eq!(
        h.accounts(&[linked_account, account(9, 0)]),
        [
            A::exists_with_different_flags as u8,
            A::linked_event_failed as u8
        ]
    );
    assert_eq!(h.accounts(&[account(1, 0)]), [A::exists as u8]);

    assert_eq!(h.transfers(&[transfer(1, 1, 2, 10)]), ok(1));
    let linked_transfer = Transfer {
        flags: tf::LINKED,
        ..transfer(1, 1, 2, 10)
    };
    assert_eq!(
        h.transfers(&[linked_transfer, transfer(2, 1, 2, 1)]),
        [
            T::exists_with_different_flags as u8,
            T::linked_event_failed as u8
        ]
    );
    assert_eq!(h.transfers(&[transfer(1, 1, 2, 10)]), [T::exists as u8]);
}

/// TigerBeetle 0.17 (`create_transfer`): a pending transfer is checked
/// against the posted balances too (`overflows_debits_posted` at creation,
/// since it may be posted later), and `overflows_timeout` comes before the
/// balance limits.
#[test]
fn a_pending_transfer_is_checked_for_posted_overflow_and_the_timeout_before_limits() {
    let mut h = ledger_with_accounts(&[0, 0, af::DEBITS_MUST_NOT_EXCEED_CREDITS]);
    assert_eq!(h.transfers(&[transfer(1, 1, 2, u64::MAX - 5)]), ok(1));
    let pending = |id, dr, cr, amount| Transfer {
        flags: tf::PENDING,
        ..transfer(id, dr, cr, amount)
    };
    // Account 1 has u64::MAX - 5 posted debits: a pending 10 would overflow
    // them once posted.
    assert_eq!(
        h.transfers(&[pending(2, 1, 3, 10)]),
        [T::overflows_debits_posted as u8]
    );
    assert_eq!(
        h.transfers(&[pending(3, 3, 1, 10)]),
        [T::exceeds_credits as u8],
        "account 3 may not go below zero"
    );
    // Near the end of time, a pending transfer that both overdraws account 3
    // and whose deadline overflows: the timeout is reported, not the limit.
    h.now_ns = u64::MAX - 1_000_000_000_000;
    let late = Transfer {
        timeout: u32::MAX,
        ..pending(4, 3, 1, 10)
    };
    assert_eq!(h.transfers(&[late]), [T::overflows_timeout as u8]);
}

/// TigerBeetle 0.16+ (`create_account`, `create_transfer`): idempotence is
/// checked right after the id, before the other fields and the lookups, so
/// a retry is told how it differs from what exists rather than what is
/// wrong with it as a new event.
#[test]
fn idempotence_is_checked_right_after_the_id() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let mut retry = account(1, 0);
    retry.ledger = 0; // would be ledger_must_not_be_zero as a new account
    assert_eq!(
        h.accounts(&[retry]),
        [A::exists_with_different_ledger as u8]
    );
    assert_eq!(h.transfers(&[transfer(1, 1, 2, 10)]), ok(1));
    // As a new transfer: debit_account_not_found; as a retry: a different debit account.
    assert_eq!(
        h.transfers(&[transfer(1, 7, 2, 10)]),
        [T::exists_with_different_debit_account_id as u8]
    );
    // A different amount on a retry is named before the missing code.
    let t = Transfer {
        code: 0,
        ..transfer(1, 1, 2, 11)
    };
    assert_eq!(h.transfers(&[t]), [T::exists_with_different_amount as u8]);
}

/// TigerBeetle 0.17 (`post_or_void_pending_transfer`): voiding more than
/// the pending amount exceeds it; a post or void with a conflicting flag is
/// `flags_are_mutually_exclusive` before the pending transfer is looked up;
/// a balancing transfer's retry may not ask for less than was moved.
#[test]
fn post_and_void_rules_of_tigerbeetle_0_17() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let pending = Transfer {
        flags: tf::PENDING,
        ..transfer(1, 1, 2, 10)
    };
    assert_eq!(h.transfers(&[pending]), ok(1));
    let void = |id, amount| Transfer {
        flags: tf::VOID_PENDING_TRANSFER,
        pending_id: 1,
        ..transfer(id, 0, 0, amount)
    };
    assert_eq!(
        h.transfers(&[void(2, 11)]),
        [T::exceeds_pending_transfer_amount as u8]
    );
    assert_eq!(
        h.transfers(&[void(3, 9)]),
        [T::pending_transfer_has_different_amount as u8]
    );
    let closing_post = Transfer {
        flags: tf::POST_PENDING_TRANSFER | tf::CLOSING_DEBIT,
        pending_id: 99, // does not exist: the flags are checked first
        ..transfer(4, 0, 0, 0)
    };
    assert_eq!(
        h.transfers(&[closing_post]),
        [T::flags_are_mutually_exclusive as u8]
    );
    assert_eq!(h.transfers(&[void(5, 10)]), ok(1));

    // Balancing: account 2 has 0 posted debits, account 1 may be drained
    // only up to its credits; a retry asking for less than was moved differs.
    let mut h = ledger_with_accounts(&[0, 0, 0]);
    assert_eq!(h.transfers(&[transfer(1, 2, 1, 30)]), ok(1));
    let balancing = |amount| Transfer {
        flags: tf::BALANCING_DEBIT,
        ..transfer(2, 1, 3, amount)
    };
    assert_eq!(h.transfers(&[balancing(100)]), ok(1));
    assert_eq!(
        h.ledger.transfer(2).unwrap().0.amount,
        30,
        "capped at what account 1 holds"
    );
    assert_eq!(h.transfers(&[balancing(100)]), [T::exists as u8]);
    assert_eq!(h.transfers(&[balancing(30)]), [T::exists as u8]);
    assert_eq!(
        h.transfers(&[balancing(29)]),
        [T::exists_with_different_amount as u8]
    );
}

fn pending(id: u128, amount: u64, user_data: u64) -> Transfer {
    Transfer {
        flags: tf::PENDING,
        user_data_128: user_data.into(),
        user_data_64: user_data,
        user_data_32: user_data as u32,
        ..transfer(id, 1, 2, amount)
    }
}

fn post(id: u128, pending_id: u128, amount: u64) -> Transfer {
    Transfer {
        flags: tf::POST_PENDING_TRANSFER,
        pending_id,
        ..transfer(id, 0, 0, amount)
    }
}

#[test]
fn a_post_posts_its_amount_zero_posts_nothing_and_amount_max_posts_all() {
    // TigerBeetle 0.16+: "If the posted amount is less than the pending
    // transfer's amount, then only this amount is posted" (0 included);
    // AMOUNT_MAX or the pending amount posts all of it.
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[pending(1, 40, 0), pending(2, 40, 0)]), ok(2));
    assert_eq!(h.transfers(&[post(3, 1, 0), post(4, 2, AMOUNT_MAX)]), ok(2));
    let (dr, cr) = (h.account(1), h.account(2));
    assert_eq!((dr.debits_pending, dr.debits_posted), (0, 40));
    assert_eq!((cr.credits_pending, cr.credits_posted), (0, 40));
    assert_eq!(h.ledger.transfer(3).unwrap().0.amount, 0, "posted nothing");
    assert_eq!(h.ledger.transfer(4).unwrap().0.amount, 40, "posted all");
    assert_eq!(h.ledger.transfer(1).unwrap().1, PendingState::Posted);
    // Retries: AMOUNT_MAX stands for the pending amount; 0 for nothing.
    assert_eq!(h.transfers(&[post(4, 2, AMOUNT_MAX)]), [T::exists as u8]);
    assert_eq!(h.transfers(&[post(4, 2, 40)]), [T::exists as u8]);
    assert_eq!(h.transfers(&[post(3, 1, 0)]), [T::exists as u8]);
    assert_eq!(
        h.transfers(&[post(3, 1, 40)]),
        [T::exists_with_different_amount as u8]
    );
    assert_eq!(h.transfers(&[pending(5, 40, 0)]), ok(1));
    assert_eq!(
        h.transfers(&[post(6, 5, AMOUNT_MAX - 1)]),
        [T::exceeds_pending_transfer_amount as u8]
    );
}

#[test]
fn a_post_or_void_with_zero_user_data_inherits_the_pending_transfers() {
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[pending(1, 10, 7), pending(2, 10, 7)]), ok(2));
    let own = Transfer {
        user_data_64: 99,
        ..post(3, 1, AMOUNT_MAX)
    };
    let void = Transfer {
        flags: tf::VOID_PENDING_TRANSFER,
        ..post(4, 2, 0)
    };
    assert_eq!(h.transfers(&[own, void]), ok(2));
    let posted = h.ledger.transfer(3).unwrap().0;
    assert_eq!(
        (
            posted.user_data_128,
            posted.user_data_64,
            posted.user_data_32
        ),
        (7, 99, 7),
        "zero fields inherited, a set one kept"
    );
    let voided = h.ledger.transfer(4).unwrap().0;
    assert_eq!(
        (
            voided.user_data_128,
            voided.user_data_64,
            voided.user_data_32
        ),
        (7, 7, 7)
    );
    // A retry with zeros is the same transfer; naming the inherited value too.
    assert_eq!(h.transfers(&[void]), [T::exists as u8]);
    let explicit = Transfer {
        user_data_128: 7,
        ..void
    };
    assert_eq!(h.transfers(&[explicit]), [T::exists as u8]);
    let other = Transfer {
        user_data_32: 8,
        ..void
    };
    assert_eq!(
        h.transfers(&[other]),
        [T::exists_with_different_user_data_32 as u8]
    );
}

#[test]
fn a_deadline_passing_within_a_command_expires_the_pending_transfer_for_later_events() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let created_at = h.now_ns;
    let timed = Transfer {
        timeout: 1,
        ..pending(1, 10, 0)
    };
    assert_eq!(h.transfers(&[timed]), ok(1));
    // The next command starts 1 ns before the deadline: its first event
    // runs before it, its second at it.
    h.now_ns = created_at + 1_000_000_000 - 1;
    let results = h.transfers(&[transfer(2, 1, 2, 1), post(3, 1, AMOUNT_MAX)]);
    assert_eq!(results, [0, T::pending_transfer_expired as u8]);
    assert_eq!(h.account(2).credits_posted, 1, "only the first event ran");
    // The next command's start expires it and releases the reservation.
    assert_eq!(h.transfers(&[transfer(4, 1, 2, 1)]), ok(1));
    assert_eq!(h.ledger.transfer(1).unwrap().1, PendingState::Expired);
    assert_eq!(h.account(1).debits_pending, 0);
}

#[test]
fn a_closed_account_takes_only_a_void() {
    let mut h = ledger_with_accounts(&[0, 0]);
    let closing = Transfer {
        flags: tf::PENDING | tf::CLOSING_CREDIT,
        ..transfer(2, 1, 2, 0)
    };
    assert_eq!(h.transfers(&[pending(1, 10, 0), closing]), ok(2));
    assert_eq!(
        h.transfers(&[post(3, 1, AMOUNT_MAX)]),
        [T::credit_account_already_closed as u8]
    );
    let void = Transfer {
        flags: tf::VOID_PENDING_TRANSFER,
        ..post(4, 1, 0)
    };
    assert_eq!(
        h.transfers(&[void]),
        ok(1),
        "a void releases the reservation"
    );
    assert_eq!(h.account(1).debits_pending, 0);
}

#[test]
fn schema_version_1_commands_replay_under_the_rules_they_were_written_with() {
    // A journal written before TigerBeetle 0.17 parity: the same bytes at
    // schema version 1 keep Keel's earlier rules, so replay reproduces the
    // state acknowledged then.
    let mut h = ledger_with_accounts(&[0, 0]);
    h.schema_version = Some(1);
    let closing = Transfer {
        flags: tf::PENDING | tf::CLOSING_CREDIT,
        ..transfer(4, 1, 2, 0)
    };
    assert_eq!(
        h.transfers(&[pending(1, 40, 7), pending(2, 5, 0), closing]),
        ok(3)
    );
    assert_eq!(h.transfers(&[post(3, 1, 0), post(5, 2, 5)]), ok(2));
    let posted = h.ledger.transfer(3).unwrap().0;
    assert_eq!(posted.amount, 40, "version 1: amount 0 posts all");
    assert_eq!(
        posted.user_data_128, 0,
        "version 1: user data not inherited"
    );
    assert_eq!(
        h.account(2).credits_posted,
        45,
        "version 1: a post into a closed account"
    );
    // The validator accepts both versions and refuses others.
    use keel_core::Validator;
    let mut buf = [0u8; 896];
    let len = commands::encode_create_transfers(&[transfer(9, 1, 2, 1)], &mut buf).unwrap();
    let mut command = commands::command(command_type::CREATE_TRANSFERS, &buf[..len]);
    assert_eq!(command.schema_version, 2, "this build writes version 2");
    let validator = keel_ledger::LedgerValidator;
    for (version, accepted) in [(1, true), (2, true), (3, false), (0, false)] {
        command.schema_version = version;
        assert_eq!(
            validator.validate(&command).map_err(|e| e.code),
            if accepted {
                Ok(())
            } else {
                Err(keel_ledger::validation_code::UNKNOWN_SCHEMA_VERSION)
            },
            "schema version {version}"
        );
    }
}

fn imported_account(id: u128, timestamp: u64) -> keel_ledger::Account {
    keel_ledger::Account {
        flags: af::IMPORTED,
        timestamp,
        ..account(id, 0)
    }
}

fn imported(t: Transfer, timestamp: u64) -> Transfer {
    Transfer {
        flags: t.flags | tf::IMPORTED,
        timestamp,
        ..t
    }
}

#[test]
fn imported_accounts_keep_their_own_timestamps_in_order() {
    // TigerBeetle 0.17 (`flags.imported`): the whole batch is imported or
    // none of it; the timestamp is in (0, 2^63) and before the batch's; it
    // follows the newest account's and is no transfer's.
    let mut h = Harness::new(64, 256);
    assert_eq!(
        h.accounts(&[imported_account(1, 10), imported_account(2, 20)]),
        ok(2)
    );
    assert_eq!(h.account(1).timestamp, 10);
    assert_eq!(h.account(2).timestamp, 20);
    let results = h.accounts(&[
        imported_account(3, 20),
        imported_account(4, 0),
        imported_account(5, u64::MAX),
        account(6, 0),
        imported_account(7, 30),
    ]);
    assert_eq!(
        results,
        [
            A::imported_event_timestamp_must_not_regress as u8,
            A::imported_event_timestamp_out_of_range as u8,
            A::imported_event_timestamp_out_of_range as u8,
            A::imported_event_expected as u8,
            0,
        ]
    );
    let results = h.accounts(&[account(8, 0), imported_account(9, 40)]);
    assert_eq!(results, [0, A::imported_event_not_expected as u8]);
    let future = h.now_ns + 10_000_000;
    assert_eq!(
        h.accounts(&[imported_account(10, future)]),
        [A::imported_event_timestamp_must_not_advance as u8]
    );
    // A retry of an imported account is `exists`, checked before the order.
    assert_eq!(h.accounts(&[imported_account(1, 10)]), [A::exists as u8]);
    // Version 1 never knew the flag (nor a timestamp from the caller).
    h.schema_version = Some(1);
    assert_eq!(
        h.accounts(&[imported_account(11, 0)]),
        [A::reserved_flag as u8]
    );
    assert_eq!(
        h.accounts(&[imported_account(11, 50)]),
        [A::timestamp_must_be_zero as u8]
    );
}

#[test]
fn imported_transfers_postdate_their_accounts_and_follow_the_newest_transfer() {
    let mut h = Harness::new(64, 256);
    assert_eq!(
        h.accounts(&[imported_account(1, 10), imported_account(2, 20)]),
        ok(2)
    );
    let results = h.transfers(&[
        imported(transfer(1, 1, 2, 5), 20), // account 2's timestamp
        imported(transfer(2, 2, 1, 5), 15), // before account 2
        imported(transfer(3, 1, 2, 5), 15), // before account 2 (credit)
        imported(
            Transfer {
                flags: tf::PENDING,
                timeout: 1,
                ..transfer(4, 1, 2, 5)
            },
            25,
        ),
        imported(transfer(5, 1, 2, 5), 25),
    ]);
    assert_eq!(
        results,
        [
            T::imported_event_timestamp_must_not_regress as u8,
            T::imported_event_timestamp_must_postdate_debit_account as u8,
            T::imported_event_timestamp_must_postdate_credit_account as u8,
            T::imported_event_timeout_must_be_zero as u8,
            0,
        ]
    );
    assert_eq!(h.ledger.transfer(5).unwrap().0.timestamp, 25);
    assert_eq!(h.account(2).credits_posted, 5);
    // An imported two-phase transfer: pending, then posted, each with its own time.
    let pending = imported(
        Transfer {
            flags: tf::PENDING,
            ..transfer(6, 1, 2, 7)
        },
        30,
    );
    assert_eq!(h.transfers(&[pending]), ok(1));
    assert_eq!(
        h.transfers(&[imported(post(7, 6, AMOUNT_MAX), 29)]),
        [T::imported_event_timestamp_must_not_regress as u8]
    );
    assert_eq!(h.transfers(&[imported(post(7, 6, AMOUNT_MAX), 31)]), ok(1));
    assert_eq!(h.ledger.transfer(7).unwrap().0.timestamp, 31);
    assert_eq!(h.account(2).credits_posted, 12);
    // Regular events go on after imported ones, on the ledger's clock.
    assert_eq!(h.transfers(&[transfer(8, 1, 2, 1)]), ok(1));
    assert!(h.ledger.transfer(8).unwrap().0.timestamp > 31);
    assert_eq!(
        h.transfers(&[transfer(9, 1, 2, 1), imported(transfer(10, 1, 2, 1), 40)]),
        [0, T::imported_event_not_expected as u8]
    );
}

#[test]
fn an_empty_batch_is_a_command_with_no_results() {
    let mut h = ledger_with_accounts(&[0, 0]);
    assert_eq!(h.transfers(&[]), Vec::<u8>::new());
    assert_eq!(h.accounts(&[]), Vec::<u8>::new());
    let mut buf = [0u8; 64];
    let len = commands::encode_create_transfers(&[], &mut buf).unwrap();
    let command = commands::command(command_type::CREATE_TRANSFERS, &buf[..len]);
    assert_eq!(
        keel_core::Validator::validate(&keel_ledger::LedgerValidator, &command).map_err(|e| e.code),
        Ok(()),
        "accepted, as TigerBeetle accepts an empty batch"
    );
    assert_eq!(h.ledger.transfers_len(), 0);
}

#[test]
fn a_transfer_id_that_failed_transiently_can_never_succeed() {
    // TigerBeetle 0.17: an id whose transfer failed with a code that a
    // retry could pass (an account or pending transfer not found, limits,
    // closed accounts) is `id_already_failed` for ever, so a retry of an
    // unknown outcome never applies what its first attempt was refused.
    let mut h = ledger_with_accounts(&[af::DEBITS_MUST_NOT_EXCEED_CREDITS, 0]);
    assert_eq!(
        h.transfers(&[transfer(1, 1, 2, 10)]),
        [T::exceeds_credits as u8]
    );
    assert_eq!(h.transfers(&[transfer(9, 2, 1, 50)]), ok(1), "funds arrive");
    assert_eq!(
        h.transfers(&[transfer(1, 1, 2, 10)]),
        [T::id_already_failed as u8]
    );
    assert_eq!(h.transfers(&[transfer(2, 1, 2, 10)]), ok(1), "a new id");
    // A non-transient failure does not mark the id.
    assert_eq!(
        h.transfers(&[transfer(3, 1, 1, 10)]),
        [T::accounts_must_be_different as u8]
    );
    assert_eq!(h.transfers(&[transfer(3, 1, 2, 10)]), ok(1));
    // In a chain, only the event that failed with its own transient code.
    let chain = [
        Transfer {
            flags: tf::LINKED,
            ..transfer(4, 1, 2, 1)
        },
        transfer(5, 1, 7, 1), // no account 7
    ];
    assert_eq!(
        h.transfers(&chain),
        [
            T::linked_event_failed as u8,
            T::credit_account_not_found as u8
        ]
    );
    assert_eq!(h.transfers(&[transfer(4, 1, 2, 1)]), ok(1));
    assert_eq!(
        h.transfers(&[transfer(5, 1, 2, 1)]),
        [T::id_already_failed as u8]
    );
    assert_eq!(h.ledger.failed_transfer_ids(), [1, 5]);
    // Schema version 1 records nothing (and a journal of it replays so).
    h.schema_version = Some(1);
    assert_eq!(
        h.transfers(&[transfer(6, 1, 7, 1)]),
        [T::credit_account_not_found as u8]
    );
    assert_eq!(h.ledger.failed_transfer_ids(), [1, 5]);
}
