//! A trivially correct reference ledger: `BTreeMap`s, a whole-model clone to
//! roll back a linked chain, and a full scan to expire pending transfers. It
//! shares no code with the real ledger (no index, no undo log, no heap, no
//! incremental hash), only the rules and their order.

use std::collections::BTreeMap;

use keel_ledger::{
    account_flags as af, transfer_flags as tf, Account, CreateAccountResult as A,
    CreateTransferResult as T, PendingState, Transfer,
};

#[derive(Debug, Clone)]
pub struct Model {
    pub accounts: BTreeMap<u128, Account>,
    /// id → (stored transfer, pending state, expiry deadline or 0).
    pub transfers: BTreeMap<u128, (Transfer, PendingState, u64)>,
    /// Ids of transfers that failed with a transient code.
    pub failed: std::collections::BTreeSet<u128>,
    accounts_max: usize,
    transfers_max: usize,
    last_timestamp: u64,
}

impl Model {
    pub fn new(accounts_max: usize, transfers_max: usize) -> Self {
        Self {
            accounts: BTreeMap::new(),
            transfers: BTreeMap::new(),
            failed: std::collections::BTreeSet::new(),
            accounts_max,
            transfers_max,
            last_timestamp: 0,
        }
    }

    /// The command's base timestamp, after expiring what it passed.
    fn begin(&mut self, now: u64, events: usize) -> u64 {
        let base = now.max(self.last_timestamp + 1);
        let due: Vec<u128> = self
            .transfers
            .iter()
            .filter(|(_, (_, s, at))| *s == PendingState::Pending && *at != 0 && *at <= base)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.release(id, PendingState::Expired);
        }
        self.last_timestamp = base + events.max(1) as u64 - 1;
        base
    }

    fn release(&mut self, id: u128, state: PendingState) {
        let (p, _, at) = self.transfers[&id];
        let dr = self.accounts.get_mut(&p.debit_account_id).unwrap();
        dr.debits_pending -= p.amount;
        if p.flags & tf::CLOSING_DEBIT != 0 {
            dr.flags &= !af::CLOSED;
        }
        let cr = self.accounts.get_mut(&p.credit_account_id).unwrap();
        cr.credits_pending -= p.amount;
        if p.flags & tf::CLOSING_CREDIT != 0 {
            cr.flags &= !af::CLOSED;
        }
        self.transfers.insert(id, (p, state, at));
    }

    fn batch<E>(
        &mut self,
        events: &[E],
        linked: impl Fn(&E) -> bool,
        open: u8,
        mut exec: impl FnMut(&mut Self, &E, u64) -> u8,
        base: u64,
        failed: impl Fn(&mut Self, &E, u8) -> u8,
    ) -> Vec<u8> {
        let mut codes = vec![0u8; events.len()];
        let mut i = 0;
        while i < events.len() {
            let mut end = i;
            while end < events.len() - 1 && linked(&events[end]) {
                end += 1;
            }
            let saved = self.clone();
            let mut broken = None;
            for j in i..=end {
                let code = if linked(&events[j]) && j == events.len() - 1 {
                    open
                } else {
                    exec(self, &events[j], base + j as u64)
                };
                if code != 0 {
                    broken = Some((j, code));
                    break;
                }
            }
            if let Some((at, code)) = broken {
                let last_timestamp = self.last_timestamp;
                *self = saved;
                self.last_timestamp = last_timestamp;
                // TigerBeetle 0.17 (`execute_create`): a linked last event
                // of the batch is `linked_event_chain_open` before anything
                // else; every other event of a broken chain but the failing
                // one is `linked_event_failed` (1).
                let chain_open = linked(&events[end]) && end == events.len() - 1;
                for (j, c) in codes.iter_mut().enumerate().take(end + 1).skip(i) {
                    *c = match j {
                        j if j == at => code,
                        j if chain_open && j == end => open,
                        _ => 1,
                    };
                }
                // After the rollback, the failing event's own code may mark
                // its id (not an open chain's end, which never ran).
                if !(chain_open && at == end) {
                    codes[at] = failed(self, &events[at], code);
                }
            }
            i = end + 1;
        }
        codes
    }

    pub fn create_accounts(&mut self, events: &[Account], now: u64) -> Vec<u8> {
        let base = self.begin(now, events.len());
        let batch_end = base + events.len().max(1) as u64 - 1;
        let first = events.first().is_some_and(|a| a.flags & af::IMPORTED != 0);
        self.batch(
            events,
            |a| a.flags & af::LINKED != 0,
            A::linked_event_chain_open as u8,
            |m, a, ts| {
                let imported = a.flags & af::IMPORTED != 0;
                match batch_rule(first, imported, a.timestamp, batch_end) {
                    Some(BatchRule::Expected) => A::imported_event_expected as u8,
                    Some(BatchRule::NotExpected) => A::imported_event_not_expected as u8,
                    Some(BatchRule::OutOfRange) => A::imported_event_timestamp_out_of_range as u8,
                    Some(BatchRule::MustNotAdvance) => {
                        A::imported_event_timestamp_must_not_advance as u8
                    }
                    None => m.create_account(a, ts, imported) as u8,
                }
            },
            base,
            |_, _, code| code,
        )
    }

    pub fn create_transfers(&mut self, events: &[Transfer], now: u64) -> Vec<u8> {
        let base = self.begin(now, events.len());
        let batch_end = base + events.len().max(1) as u64 - 1;
        let first = events.first().is_some_and(|t| t.flags & tf::IMPORTED != 0);
        self.batch(
            events,
            |t| t.flags & tf::LINKED != 0,
            T::linked_event_chain_open as u8,
            |m, t, ts| {
                let imported = t.flags & tf::IMPORTED != 0;
                match batch_rule(first, imported, t.timestamp, batch_end) {
                    Some(BatchRule::Expected) => T::imported_event_expected as u8,
                    Some(BatchRule::NotExpected) => T::imported_event_not_expected as u8,
                    Some(BatchRule::OutOfRange) => T::imported_event_timestamp_out_of_range as u8,
                    Some(BatchRule::MustNotAdvance) => {
                        T::imported_event_timestamp_must_not_advance as u8
                    }
                    None => m.create_transfer(t, ts, imported) as u8,
                }
            },
            base,
            |m, t, code| {
                // TigerBeetle 0.17 (`CreateTransferStatus.transient`).
                let transient = [
                    T::debit_account_not_found,
                    T::credit_account_not_found,
                    T::pending_transfer_not_found,
                    T::exceeds_credits,
                    T::exceeds_debits,
                    T::debit_account_already_closed,
                    T::credit_account_already_closed,
                ]
                .iter()
                .any(|&r| r as u8 == code);
                if !transient {
                    return code;
                }
                if m.failed.len() >= m.transfers_max {
                    return T::transfers_table_full as u8;
                }
                m.failed.insert(t.id);
                code
            },
        )
    }

    /// An imported event's timestamp must come after every event of its
    /// kind and be no other event's (TigerBeetle: `must_not_regress`).
    fn regresses(&self, timestamp: u64, accounts: bool) -> bool {
        let newest = match accounts {
            true => self.accounts.values().map(|a| a.timestamp).max(),
            false => self.transfers.values().map(|(t, _, _)| t.timestamp).max(),
        };
        timestamp <= newest.unwrap_or(0)
            || self.accounts.values().any(|a| a.timestamp == timestamp)
            || self
                .transfers
                .values()
                .any(|(t, _, _)| t.timestamp == timestamp)
    }

    /// TigerBeetle 0.17 (`create_account`): timestamp, reserved field and
    /// flags, id; idempotence; then the other fields.
    fn create_account(&mut self, a: &Account, ts: u64, imported: bool) -> A {
        let both = af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS;
        let first = [
            (!imported && a.timestamp != 0, A::timestamp_must_be_zero),
            (a.reserved != 0, A::reserved_field),
            (a.flags & !af::KNOWN != 0, A::reserved_flag),
            (a.id == 0, A::id_must_not_be_zero),
            (a.id == u128::MAX, A::id_must_not_be_int_max),
        ];
        if let Some(&(_, code)) = first.iter().find(|(failed, _)| *failed) {
            return code;
        }
        if let Some(e) = self.accounts.get(&a.id) {
            let differs = [
                // TigerBeetle compares all flags, `linked` included.
                (e.flags != a.flags, A::exists_with_different_flags),
                (
                    e.user_data_128 != a.user_data_128,
                    A::exists_with_different_user_data_128,
                ),
                (
                    e.user_data_64 != a.user_data_64,
                    A::exists_with_different_user_data_64,
                ),
                (
                    e.user_data_32 != a.user_data_32,
                    A::exists_with_different_user_data_32,
                ),
                (e.ledger != a.ledger, A::exists_with_different_ledger),
                (e.code != a.code, A::exists_with_different_code),
            ];
            return differs
                .iter()
                .find(|(d, _)| *d)
                .map_or(A::exists, |&(_, c)| c);
        }
        let checks = [
            (a.flags & both == both, A::flags_are_mutually_exclusive),
            (a.debits_pending != 0, A::debits_pending_must_be_zero),
            (a.debits_posted != 0, A::debits_posted_must_be_zero),
            (a.credits_pending != 0, A::credits_pending_must_be_zero),
            (a.credits_posted != 0, A::credits_posted_must_be_zero),
            (a.ledger == 0, A::ledger_must_not_be_zero),
            (a.code == 0, A::code_must_not_be_zero),
        ];
        if let Some(&(_, code)) = checks.iter().find(|(failed, _)| *failed) {
            return code;
        }
        if imported && self.regresses(a.timestamp, true) {
            return A::imported_event_timestamp_must_not_regress;
        }
        if self.accounts.len() >= self.accounts_max {
            return A::accounts_table_full;
        }
        self.accounts.insert(
            a.id,
            Account {
                timestamp: if imported { a.timestamp } else { ts },
                ..*a
            },
        );
        A::ok
    }

    /// TigerBeetle 0.17's order (`execute_create`, `create_transfer`): the
    /// timestamp, reserved flags and the id; then idempotence (`exists*`)
    /// before any other field or lookup; then the post/void path or a new
    /// transfer.
    fn create_transfer(&mut self, t: &Transfer, ts: u64, imported: bool) -> T {
        let checks = [
            (!imported && t.timestamp != 0, T::timestamp_must_be_zero),
            (t.flags & !tf::KNOWN != 0, T::reserved_flag),
            (t.id == 0, T::id_must_not_be_zero),
            (t.id == u128::MAX, T::id_must_not_be_int_max),
        ];
        if let Some(&(_, code)) = checks.iter().find(|(failed, _)| *failed) {
            return code;
        }
        if let Some(&(e, _, _)) = self.transfers.get(&t.id) {
            return self.exists(&e, t);
        }
        if self.failed.contains(&t.id) {
            return T::id_already_failed;
        }
        match t.flags & (tf::POST_PENDING_TRANSFER | tf::VOID_PENDING_TRANSFER) != 0 {
            true => self.post_or_void(t, ts, imported),
            false => self.new_transfer(t, ts, imported),
        }
    }

    fn new_transfer(&mut self, t: &Transfer, ts: u64, imported: bool) -> T {
        let pending = t.flags & tf::PENDING != 0;
        let checks = [
            (
                t.debit_account_id == 0,
                T::debit_account_id_must_not_be_zero,
            ),
            (
                t.debit_account_id == u128::MAX,
                T::debit_account_id_must_not_be_int_max,
            ),
            (
                t.credit_account_id == 0,
                T::credit_account_id_must_not_be_zero,
            ),
            (
                t.credit_account_id == u128::MAX,
                T::credit_account_id_must_not_be_int_max,
            ),
            (
                t.credit_account_id == t.debit_account_id,
                T::accounts_must_be_different,
            ),
            (t.pending_id != 0, T::pending_id_must_be_zero),
            (
                !pending && t.timeout != 0,
                T::timeout_reserved_for_pending_transfer,
            ),
            (
                !pending && t.flags & (tf::CLOSING_DEBIT | tf::CLOSING_CREDIT) != 0,
                T::closing_transfer_must_be_pending,
            ),
            (t.ledger == 0, T::ledger_must_not_be_zero),
            (t.code == 0, T::code_must_not_be_zero),
        ];
        if let Some(&(_, code)) = checks.iter().find(|(failed, _)| *failed) {
            return code;
        }
        let Some(dr) = self.accounts.get(&t.debit_account_id).copied() else {
            return T::debit_account_not_found;
        };
        let Some(cr) = self.accounts.get(&t.credit_account_id).copied() else {
            return T::credit_account_not_found;
        };
        if dr.ledger != cr.ledger {
            return T::accounts_must_have_the_same_ledger;
        }
        if t.ledger != dr.ledger {
            return T::transfer_must_have_the_same_ledger_as_accounts;
        }
        if imported {
            if self.regresses(t.timestamp, false) {
                return T::imported_event_timestamp_must_not_regress;
            }
            if t.timestamp <= dr.timestamp {
                return T::imported_event_timestamp_must_postdate_debit_account;
            }
            if t.timestamp <= cr.timestamp {
                return T::imported_event_timestamp_must_postdate_credit_account;
            }
            if t.timeout != 0 {
                return T::imported_event_timeout_must_be_zero;
            }
        }
        if dr.flags & af::CLOSED != 0 {
            return T::debit_account_already_closed;
        }
        if cr.flags & af::CLOSED != 0 {
            return T::credit_account_already_closed;
        }
        // Balances in u128: no overflow in the model itself.
        let mut amount = u128::from(t.amount);
        let (dp, dpo, cp, cpo) = (
            dr.debits_pending as u128,
            dr.debits_posted as u128,
            dr.credits_pending as u128,
            dr.credits_posted as u128,
        );
        if t.flags & tf::BALANCING_DEBIT != 0 {
            amount = amount.min((dr.credits_posted as u128).saturating_sub(dpo + dp));
        }
        if t.flags & tf::BALANCING_CREDIT != 0 {
            amount = amount.min(
                (cr.debits_posted as u128)
                    .saturating_sub(cr.credits_posted as u128 + cr.credits_pending as u128),
            );
        }
        let _ = (cp, cpo);
        let max = u128::from(u64::MAX);
        // TigerBeetle 0.17 (`create_transfer`): the pending overflows (for a
        // pending transfer), the posted ones (for every transfer: a pending
        // one may be posted later), the totals, then the timeout's, then the
        // balance limits.
        let overflows = [
            (
                pending && dr.debits_pending as u128 + amount > max,
                T::overflows_debits_pending,
            ),
            (
                pending && cr.credits_pending as u128 + amount > max,
                T::overflows_credits_pending,
            ),
            (
                dr.debits_posted as u128 + amount > max,
                T::overflows_debits_posted,
            ),
            (
                cr.credits_posted as u128 + amount > max,
                T::overflows_credits_posted,
            ),
            (dp + dpo + amount > max, T::overflows_debits),
            (
                cr.credits_pending as u128 + cr.credits_posted as u128 + amount > max,
                T::overflows_credits,
            ),
        ];
        if let Some(&(_, code)) = overflows.iter().find(|(failed, _)| *failed) {
            return code;
        }
        let deadline = u128::from(ts) + u128::from(t.timeout) * 1_000_000_000;
        if pending && t.timeout > 0 && deadline > max {
            return T::overflows_timeout;
        }
        let limits = [
            (
                dr.flags & af::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
                    && dp + dpo + amount > dr.credits_posted as u128,
                T::exceeds_credits,
            ),
            (
                cr.flags & af::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
                    && cr.credits_pending as u128 + cr.credits_posted as u128 + amount
                        > cr.debits_posted as u128,
                T::exceeds_debits,
            ),
        ];
        if let Some(&(_, code)) = limits.iter().find(|(failed, _)| *failed) {
            return code;
        }
        if self.transfers.len() >= self.transfers_max {
            return T::transfers_table_full;
        }
        let amount = amount as u64;
        let dr = self.accounts.get_mut(&t.debit_account_id).unwrap();
        if pending {
            dr.debits_pending += amount;
            if t.flags & tf::CLOSING_DEBIT != 0 {
                dr.flags |= af::CLOSED;
            }
        } else {
            dr.debits_posted += amount;
        }
        let cr = self.accounts.get_mut(&t.credit_account_id).unwrap();
        if pending {
            cr.credits_pending += amount;
            if t.flags & tf::CLOSING_CREDIT != 0 {
                cr.flags |= af::CLOSED;
            }
        } else {
            cr.credits_posted += amount;
        }
        let (state, at) = match pending {
            true => (
                PendingState::Pending,
                if t.timeout > 0 { deadline as u64 } else { 0 },
            ),
            false => (PendingState::None, 0),
        };
        self.transfers.insert(
            t.id,
            (
                Transfer {
                    amount,
                    timestamp: if imported { t.timestamp } else { ts },
                    ..*t
                },
                state,
                at,
            ),
        );
        T::ok
    }

    /// TigerBeetle 0.17 (`create_transfer_exists`,
    /// `post_or_void_pending_transfer_exists`), with Keel's post/void
    /// rules for the amount (0 means the pending amount) and user data (not
    /// inherited yet).
    fn exists(&self, e: &Transfer, t: &Transfer) -> T {
        let firsts = [
            (e.flags != t.flags, T::exists_with_different_flags),
            (
                e.pending_id != t.pending_id,
                T::exists_with_different_pending_id,
            ),
            (e.timeout != t.timeout, T::exists_with_different_timeout),
        ];
        if let Some(&(_, code)) = firsts.iter().find(|(d, _)| *d) {
            return code;
        }
        let post_or_void = t.flags & (tf::POST_PENDING_TRANSFER | tf::VOID_PENDING_TRANSFER) != 0;
        let differs = if post_or_void {
            // TigerBeetle 0.17 (docs: two-phase transfers): a void's amount 0
            // and a post's AMOUNT_MAX stand for the pending amount; a zero
            // user_data field stands for the pending transfer's.
            let p = self.transfers[&t.pending_id].0;
            let amount = requested(t, p.amount);
            let or_pending = |mine: u128, pending: u128| if mine == 0 { pending } else { mine };
            [
                (
                    t.debit_account_id != 0 && t.debit_account_id != e.debit_account_id,
                    T::exists_with_different_debit_account_id,
                ),
                (
                    t.credit_account_id != 0 && t.credit_account_id != e.credit_account_id,
                    T::exists_with_different_credit_account_id,
                ),
                (amount != e.amount, T::exists_with_different_amount),
                (
                    or_pending(t.user_data_128, p.user_data_128) != e.user_data_128,
                    T::exists_with_different_user_data_128,
                ),
                (
                    or_pending(t.user_data_64.into(), p.user_data_64.into())
                        != u128::from(e.user_data_64),
                    T::exists_with_different_user_data_64,
                ),
                (
                    or_pending(t.user_data_32.into(), p.user_data_32.into())
                        != u128::from(e.user_data_32),
                    T::exists_with_different_user_data_32,
                ),
                (
                    t.ledger != 0 && t.ledger != e.ledger,
                    T::exists_with_different_ledger,
                ),
                (
                    t.code != 0 && t.code != e.code,
                    T::exists_with_different_code,
                ),
            ]
        } else {
            let balancing = t.flags & (tf::BALANCING_DEBIT | tf::BALANCING_CREDIT) != 0;
            [
                (
                    t.debit_account_id != e.debit_account_id,
                    T::exists_with_different_debit_account_id,
                ),
                (
                    t.credit_account_id != e.credit_account_id,
                    T::exists_with_different_credit_account_id,
                ),
                (
                    if balancing {
                        t.amount < e.amount
                    } else {
                        t.amount != e.amount
                    },
                    T::exists_with_different_amount,
                ),
                (
                    t.user_data_128 != e.user_data_128,
                    T::exists_with_different_user_data_128,
                ),
                (
                    t.user_data_64 != e.user_data_64,
                    T::exists_with_different_user_data_64,
                ),
                (
                    t.user_data_32 != e.user_data_32,
                    T::exists_with_different_user_data_32,
                ),
                (t.ledger != e.ledger, T::exists_with_different_ledger),
                (t.code != e.code, T::exists_with_different_code),
            ]
        };
        differs
            .iter()
            .find(|(d, _)| *d)
            .map_or(T::exists, |&(_, c)| c)
    }

    fn post_or_void(&mut self, t: &Transfer, ts: u64, imported: bool) -> T {
        let both = tf::POST_PENDING_TRANSFER | tf::VOID_PENDING_TRANSFER;
        let others = tf::PENDING
            | tf::BALANCING_DEBIT
            | tf::BALANCING_CREDIT
            | tf::CLOSING_DEBIT
            | tf::CLOSING_CREDIT;
        let checks = [
            (
                t.flags & both == both || t.flags & others != 0,
                T::flags_are_mutually_exclusive,
            ),
            (t.pending_id == 0, T::pending_id_must_not_be_zero),
            (t.pending_id == u128::MAX, T::pending_id_must_not_be_int_max),
            (t.pending_id == t.id, T::pending_id_must_be_different),
            (t.timeout != 0, T::timeout_reserved_for_pending_transfer),
        ];
        if let Some(&(_, code)) = checks.iter().find(|(failed, _)| *failed) {
            return code;
        }
        let Some(&(p, state, deadline)) = self.transfers.get(&t.pending_id) else {
            return T::pending_transfer_not_found;
        };
        if p.flags & tf::PENDING == 0 {
            return T::pending_transfer_not_pending;
        }
        let post = t.flags & tf::POST_PENDING_TRANSFER != 0;
        let mismatch = [
            (
                t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id,
                T::pending_transfer_has_different_debit_account_id,
            ),
            (
                t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id,
                T::pending_transfer_has_different_credit_account_id,
            ),
            (
                t.ledger != 0 && t.ledger != p.ledger,
                T::pending_transfer_has_different_ledger,
            ),
            (
                t.code != 0 && t.code != p.code,
                T::pending_transfer_has_different_code,
            ),
            // A post of less than the pending amount posts that much (0:
            // nothing), of more (short of AMOUNT_MAX) exceeds it; a void
            // releases all of it, so less is a different amount.
            (
                requested(t, p.amount) > p.amount,
                T::exceeds_pending_transfer_amount,
            ),
            (
                !post && requested(t, p.amount) < p.amount,
                T::pending_transfer_has_different_amount,
            ),
        ];
        if let Some(&(_, code)) = mismatch.iter().find(|(failed, _)| *failed) {
            return code;
        }
        let amount = requested(t, p.amount);
        let resolved = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            ledger: p.ledger,
            code: p.code,
            amount,
            user_data_128: if t.user_data_128 == 0 {
                p.user_data_128
            } else {
                t.user_data_128
            },
            user_data_64: if t.user_data_64 == 0 {
                p.user_data_64
            } else {
                t.user_data_64
            },
            user_data_32: if t.user_data_32 == 0 {
                p.user_data_32
            } else {
                t.user_data_32
            },
            ..*t
        };
        match state {
            PendingState::Posted => return T::pending_transfer_already_posted,
            PendingState::Voided => return T::pending_transfer_already_voided,
            PendingState::Expired => return T::pending_transfer_expired,
            _ => {}
        }
        // Its deadline may pass inside this command (expiry itself runs
        // between commands).
        if deadline != 0 && deadline <= ts {
            return T::pending_transfer_expired;
        }
        if imported && self.regresses(t.timestamp, false) {
            return T::imported_event_timestamp_must_not_regress;
        }
        // A closed account takes only voids.
        if post && self.accounts[&p.debit_account_id].flags & af::CLOSED != 0 {
            return T::debit_account_already_closed;
        }
        if post && self.accounts[&p.credit_account_id].flags & af::CLOSED != 0 {
            return T::credit_account_already_closed;
        }
        let max = u128::from(u64::MAX);
        if post {
            if self.accounts[&p.debit_account_id].debits_posted as u128 + amount as u128 > max {
                return T::overflows_debits_posted;
            }
            if self.accounts[&p.credit_account_id].credits_posted as u128 + amount as u128 > max {
                return T::overflows_credits_posted;
            }
        }
        if self.transfers.len() >= self.transfers_max {
            return T::transfers_table_full;
        }
        if post {
            let dr = self.accounts.get_mut(&p.debit_account_id).unwrap();
            dr.debits_pending -= p.amount;
            dr.debits_posted += amount;
            let cr = self.accounts.get_mut(&p.credit_account_id).unwrap();
            cr.credits_pending -= p.amount;
            cr.credits_posted += amount;
            self.transfers.get_mut(&p.id).unwrap().1 = PendingState::Posted;
        } else {
            self.release(p.id, PendingState::Voided);
        }
        self.transfers.insert(
            t.id,
            (
                Transfer {
                    timestamp: if imported { t.timestamp } else { ts },
                    ..resolved
                },
                PendingState::None,
                0,
            ),
        );
        T::ok
    }
}

/// The amount a post or void asks for (TigerBeetle 0.17): a void's 0 and a
/// post's AMOUNT_MAX mean the whole pending amount.
fn requested(t: &Transfer, pending_amount: u64) -> u64 {
    let post = t.flags & tf::POST_PENDING_TRANSFER != 0;
    match (post, t.amount) {
        (true, u64::MAX) | (false, 0) => pending_amount,
        (_, amount) => amount,
    }
}

/// TigerBeetle 0.17's batch rules for imported events (`execute_create`):
/// the first event decides; a timestamp is in `1..2^63` and before the
/// batch's (its last event's).
enum BatchRule {
    Expected,
    NotExpected,
    OutOfRange,
    MustNotAdvance,
}

fn batch_rule(first: bool, imported: bool, timestamp: u64, batch_end: u64) -> Option<BatchRule> {
    match (first, imported) {
        (true, false) => Some(BatchRule::Expected),
        (false, true) => Some(BatchRule::NotExpected),
        (false, false) => None,
        (true, true) if timestamp == 0 || timestamp > (1 << 63) - 1 => Some(BatchRule::OutOfRange),
        (true, true) if timestamp >= batch_end => Some(BatchRule::MustNotAdvance),
        (true, true) => None,
    }
}
