//! `create_transfer`: single-phase and pending transfers, and posting or
//! voiding a pending one. All checks come first (first failing one wins, in
//! TigerBeetle's order), then the mutation, so a rejected transfer changes
//! nothing.

use crate::ledger::Ledger;
use crate::results::CreateTransferResult as R;
use crate::types::{account_flags as af, transfer_flags as f, Account, PendingState, Transfer};

const NS_PER_SECOND: u64 = 1_000_000_000;

/// The amount that, in a post under [`Rules::Tb017`], posts the whole
/// pending amount (TigerBeetle's `AMOUNT_MAX`; Keel's amounts are 64-bit).
pub const AMOUNT_MAX: u64 = u64::MAX;

/// Which rules a `create_transfers` or `create_accounts` command runs under:
/// its schema version ([`crate::commands::CREATE_TRANSFERS_VERSION`],
/// [`crate::commands::CREATE_ACCOUNTS_VERSION`]). A journal replays each
/// command under the rules it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Schema version 1 (Keel before TigerBeetle 0.17 parity): a post of
    /// amount 0 posts the whole pending amount; a post or void stores its
    /// own user data (zeros stay zeros); a post may go into a closed
    /// account; a pending transfer expires only at the start of a command;
    /// no imported events (the flag is `reserved_flag`).
    Keel1,
    /// Schema version 2 (TigerBeetle 0.17): a post posts exactly its
    /// amount (0 posts nothing, [`AMOUNT_MAX`] the whole pending amount); a
    /// zero `user_data_*` inherits the pending transfer's; only a void may
    /// touch a closed account; a post or void at or past the pending
    /// transfer's deadline is `pending_transfer_expired`, also within the
    /// command that passes it; imported events (the `IMPORTED` flag) keep
    /// their own past timestamps.
    Tb017,
}

/// The batch an event belongs to, for TigerBeetle 0.17's imported-event
/// rules: the first event decides whether every event is imported, and an
/// imported event's timestamp must lie before the batch's (its last
/// event's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    pub(crate) rules: Rules,
    /// Whether the batch's first event is imported (under [`Rules::Tb017`]).
    imported: bool,
    /// The batch's timestamp: its last event's.
    end: u64,
}

/// Why an event breaks its batch's imported-event rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportedBatch {
    Expected,
    NotExpected,
    OutOfRange,
    MustNotAdvance,
}

impl ImportedBatch {
    /// The result code for it, from `codes`: `imported_event_expected`,
    /// `…_not_expected`, `…_timestamp_out_of_range`,
    /// `…_timestamp_must_not_advance` (accounts and transfers have each).
    pub(crate) fn code<C: Copy>(self, codes: [C; 4]) -> C {
        codes[self as usize]
    }
}

/// The largest timestamp an event may carry (TigerBeetle's `2^63 - 1`).
pub const TIMESTAMP_MAX: u64 = (1 << 63) - 1;

impl Batch {
    pub(crate) fn new(rules: Rules, first_imported: bool, base: u64, n: usize) -> Self {
        Self {
            rules,
            imported: rules == Rules::Tb017 && first_imported,
            end: base + (n.max(1) as u64 - 1),
        }
    }

    /// Checks an event with `imported` set or not and `timestamp`; `Ok`
    /// says whether it is imported (and so carries its own timestamp).
    pub(crate) fn check(&self, imported: bool, timestamp: u64) -> Result<bool, ImportedBatch> {
        if self.rules == Rules::Keel1 {
            // Version 1 knows no imported events (the flag is reserved).
            return Ok(false);
        }
        match (self.imported, imported) {
            (true, false) => Err(ImportedBatch::Expected),
            (false, true) => Err(ImportedBatch::NotExpected),
            (false, false) => Ok(false),
            (true, true) if !(1..=TIMESTAMP_MAX).contains(&timestamp) => {
                Err(ImportedBatch::OutOfRange)
            }
            (true, true) if timestamp >= self.end => Err(ImportedBatch::MustNotAdvance),
            (true, true) => Ok(true),
        }
    }
}

impl Rules {
    /// The rules of `create_accounts` and `create_transfers` schema version `version`.
    pub fn for_version(version: u16) -> Rules {
        match version {
            0 | 1 => Rules::Keel1,
            _ => Rules::Tb017,
        }
    }

    /// The amount a post or void of `t` asks for, given the pending amount.
    fn requested(self, t: &Transfer, pending_amount: u64) -> u64 {
        let post = t.flags & f::POST_PENDING_TRANSFER != 0;
        match (self, post) {
            (Rules::Tb017, true) if t.amount == AMOUNT_MAX => pending_amount,
            (Rules::Tb017, true) => t.amount,
            (_, _) if t.amount == 0 => pending_amount,
            (_, _) => t.amount,
        }
    }
}

impl Ledger {
    /// Applies one transfer stamped `timestamp`, or says why not.
    ///
    /// TigerBeetle 0.17's order: timestamp, reserved flags and id; then
    /// idempotence (`exists*`) before any other field or lookup; then the
    /// post/void path or a new transfer.
    pub(crate) fn create_transfer(&mut self, t: &Transfer, timestamp: u64, batch: Batch) -> R {
        let rules = batch.rules;
        let imported = match batch.check(t.flags & f::IMPORTED != 0, t.timestamp) {
            Ok(imported) => imported,
            Err(e) => {
                return e.code([
                    R::imported_event_expected,
                    R::imported_event_not_expected,
                    R::imported_event_timestamp_out_of_range,
                    R::imported_event_timestamp_must_not_advance,
                ])
            }
        };
        if let Err(code) = validate(t, rules, imported) {
            return code;
        }
        if let Some(position) = self.transfer_position(t.id) {
            return self.exists(&self.transfers[position as usize].transfer, t, rules);
        }
        if rules == Rules::Tb017 && self.has_failed(t.id) {
            return R::id_already_failed;
        }
        if t.flags & (f::POST_PENDING_TRANSFER | f::VOID_PENDING_TRANSFER) != 0 {
            return self.post_or_void(t, timestamp, rules, imported);
        }
        match self.check_new(t, timestamp, imported) {
            Ok(plan) => {
                // An imported event keeps its own (past) timestamp.
                self.apply_new(t, if imported { t.timestamp } else { timestamp }, plan);
                R::ok
            }
            Err(code) => code,
        }
    }

    /// The code a transfer that failed with `code` gets, once its chain is
    /// settled. Under [`Rules::Tb017`] a transient failure (one that a
    /// retry with the same fields could pass: an account or pending
    /// transfer not found yet, limits, closed accounts) records the id, so
    /// it can never succeed later (`id_already_failed`): a retry after an
    /// unknown outcome cannot apply a transfer its first attempt was
    /// refused. With no room left to record it the event is
    /// `transfers_table_full`.
    pub(crate) fn transfer_failed(&mut self, id: u128, code: u8, rules: Rules) -> u8 {
        let transient = [
            R::debit_account_not_found,
            R::credit_account_not_found,
            R::pending_transfer_not_found,
            R::exceeds_credits,
            R::exceeds_debits,
            R::debit_account_already_closed,
            R::credit_account_already_closed,
        ]
        .iter()
        .any(|&r| r as u8 == code);
        if rules != Rules::Tb017 || !transient || self.record_failed(id) {
            return code;
        }
        R::transfers_table_full as u8
    }

    /// An imported event's timestamp must follow the newest transfer's and
    /// be no account's.
    fn check_imported_order(&self, t: &Transfer) -> Result<(), R> {
        if t.timestamp <= self.newest_transfer_timestamp() || self.timestamp_taken(t.timestamp) {
            return Err(R::imported_event_timestamp_must_not_regress);
        }
        Ok(())
    }

    /// Checks a single-phase or pending transfer; returns what to apply.
    fn check_new(&self, t: &Transfer, timestamp: u64, imported: bool) -> Result<Plan, R> {
        let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
        fail(
            t.debit_account_id == 0,
            R::debit_account_id_must_not_be_zero,
        )?;
        fail(
            t.debit_account_id == u128::MAX,
            R::debit_account_id_must_not_be_int_max,
        )?;
        fail(
            t.credit_account_id == 0,
            R::credit_account_id_must_not_be_zero,
        )?;
        fail(
            t.credit_account_id == u128::MAX,
            R::credit_account_id_must_not_be_int_max,
        )?;
        fail(
            t.credit_account_id == t.debit_account_id,
            R::accounts_must_be_different,
        )?;
        fail(t.pending_id != 0, R::pending_id_must_be_zero)?;
        let pending = t.flags & f::PENDING != 0;
        fail(
            !pending && t.timeout != 0,
            R::timeout_reserved_for_pending_transfer,
        )?;
        fail(
            !pending && t.flags & (f::CLOSING_DEBIT | f::CLOSING_CREDIT) != 0,
            R::closing_transfer_must_be_pending,
        )?;
        fail(t.ledger == 0, R::ledger_must_not_be_zero)?;
        fail(t.code == 0, R::code_must_not_be_zero)?;
        let debit = self
            .account_position(t.debit_account_id)
            .ok_or(R::debit_account_not_found)?;
        let credit = self
            .account_position(t.credit_account_id)
            .ok_or(R::credit_account_not_found)?;
        let dr = &self.accounts[debit as usize].account;
        let cr = &self.accounts[credit as usize].account;
        fail(
            dr.ledger != cr.ledger,
            R::accounts_must_have_the_same_ledger,
        )?;
        fail(
            t.ledger != dr.ledger,
            R::transfer_must_have_the_same_ledger_as_accounts,
        )?;
        if imported {
            self.check_imported_order(t)?;
            fail(
                t.timestamp <= dr.timestamp,
                R::imported_event_timestamp_must_postdate_debit_account,
            )?;
            fail(
                t.timestamp <= cr.timestamp,
                R::imported_event_timestamp_must_postdate_credit_account,
            )?;
            fail(t.timeout != 0, R::imported_event_timeout_must_be_zero)?;
        }
        fail(dr.flags & af::CLOSED != 0, R::debit_account_already_closed)?;
        fail(cr.flags & af::CLOSED != 0, R::credit_account_already_closed)?;
        let amount = balanced_amount(t, dr, cr);
        // TigerBeetle 0.17's order: every overflow, then the timeout's, then
        // the balance limits.
        check_overflows(dr, cr, amount, pending)?;
        let expires_at = match (pending, t.timeout) {
            (true, timeout) if timeout > 0 => u64::from(timeout)
                .checked_mul(NS_PER_SECOND)
                .and_then(|ns| timestamp.checked_add(ns))
                .ok_or(R::overflows_timeout)?,
            _ => 0,
        };
        check_limits(dr, cr, amount)?;
        fail(self.transfers_full(), R::transfers_table_full)?;
        Ok(Plan {
            debit,
            credit,
            amount,
            expires_at,
        })
    }

    fn apply_new(&mut self, t: &Transfer, timestamp: u64, plan: Plan) {
        let pending = t.flags & f::PENDING != 0;
        let mut dr = self.accounts[plan.debit as usize];
        let mut cr = self.accounts[plan.credit as usize];
        if pending {
            dr.account.debits_pending += plan.amount;
            cr.account.credits_pending += plan.amount;
            if t.flags & f::CLOSING_DEBIT != 0 {
                dr.account.flags |= af::CLOSED;
            }
            if t.flags & f::CLOSING_CREDIT != 0 {
                cr.account.flags |= af::CLOSED;
            }
        } else {
            dr.account.debits_posted += plan.amount;
            cr.account.credits_posted += plan.amount;
        }
        let stored = Transfer {
            amount: plan.amount,
            timestamp,
            ..*t
        };
        let state = match pending {
            true => PendingState::Pending,
            false => PendingState::None,
        };
        self.insert_transfer(
            stored,
            state,
            plan.expires_at,
            (plan.debit, dr),
            (plan.credit, cr),
        );
    }

    /// Posts or voids the pending transfer `t.pending_id` at the event's
    /// `timestamp` (stored with its own when imported).
    fn post_or_void(&mut self, t: &Transfer, timestamp: u64, rules: Rules, imported: bool) -> R {
        let checked = self.check_post_or_void(t, timestamp, rules, imported);
        let (position, pending, resolved) = match checked {
            Ok(checked) => checked,
            Err(code) => return code,
        };
        let debit = self
            .account_position(pending.debit_account_id)
            .expect("pending accounts exist");
        let credit = self
            .account_position(pending.credit_account_id)
            .expect("pending accounts exist");
        let stored = Transfer {
            timestamp: if imported { t.timestamp } else { timestamp },
            ..resolved
        };
        if t.flags & f::POST_PENDING_TRANSFER != 0 {
            let (mut dr, mut cr) = (
                self.accounts[debit as usize],
                self.accounts[credit as usize],
            );
            dr.account.debits_pending -= pending.amount;
            dr.account.debits_posted += resolved.amount;
            cr.account.credits_pending -= pending.amount;
            cr.account.credits_posted += resolved.amount;
            self.set_transfer_state(position, PendingState::Posted);
            self.insert_transfer(stored, PendingState::None, 0, (debit, dr), (credit, cr));
        } else {
            self.release_pending(&pending, PendingState::Voided);
            let (dr, cr) = (
                self.accounts[debit as usize],
                self.accounts[credit as usize],
            );
            self.insert_transfer(stored, PendingState::None, 0, (debit, dr), (credit, cr));
        }
        R::ok
    }

    /// The result for an id that exists (TigerBeetle 0.17,
    /// `create_transfer_exists` and `post_or_void_pending_transfer_exists`):
    /// `exists` for a retry, else the first field that differs. A post or
    /// void's amount and zero user data mean what they mean under `rules`.
    fn exists(&self, e: &Transfer, t: &Transfer, rules: Rules) -> R {
        let first = |checks: &[(bool, R)]| checks.iter().find(|(d, _)| *d).map(|&(_, c)| c);
        if let Some(code) = first(&[
            (e.flags != t.flags, R::exists_with_different_flags),
            (
                e.pending_id != t.pending_id,
                R::exists_with_different_pending_id,
            ),
            (e.timeout != t.timeout, R::exists_with_different_timeout),
        ]) {
            return code;
        }
        let user_data = |p: Option<&Transfer>| {
            // Under Tb017 a zero field of a post or void stands for the
            // pending transfer's value.
            let inherit = |mine: u128, theirs: u128| match (rules, p) {
                (Rules::Tb017, Some(_)) if mine == 0 => theirs,
                _ => mine,
            };
            let p = p.unwrap_or(t);
            [
                (
                    inherit(t.user_data_128, p.user_data_128) != e.user_data_128,
                    R::exists_with_different_user_data_128,
                ),
                (
                    inherit(t.user_data_64.into(), p.user_data_64.into())
                        != u128::from(e.user_data_64),
                    R::exists_with_different_user_data_64,
                ),
                (
                    inherit(t.user_data_32.into(), p.user_data_32.into())
                        != u128::from(e.user_data_32),
                    R::exists_with_different_user_data_32,
                ),
            ]
        };
        if t.flags & (f::POST_PENDING_TRANSFER | f::VOID_PENDING_TRANSFER) != 0 {
            let pending = self
                .transfer_position(t.pending_id)
                .map(|p| self.transfers[p as usize].transfer)
                .expect("a post or void's pending transfer exists");
            let amount = rules.requested(t, pending.amount);
            return first(&[
                (
                    t.debit_account_id != 0 && t.debit_account_id != e.debit_account_id,
                    R::exists_with_different_debit_account_id,
                ),
                (
                    t.credit_account_id != 0 && t.credit_account_id != e.credit_account_id,
                    R::exists_with_different_credit_account_id,
                ),
                (amount != e.amount, R::exists_with_different_amount),
            ])
            .or_else(|| first(&user_data(Some(&pending))))
            .or_else(|| {
                first(&[
                    (
                        t.ledger != 0 && t.ledger != e.ledger,
                        R::exists_with_different_ledger,
                    ),
                    (
                        t.code != 0 && t.code != e.code,
                        R::exists_with_different_code,
                    ),
                ])
            })
            .unwrap_or(R::exists);
        }
        // A balancing transfer's amount is an upper limit: a retry may ask
        // for more than was moved, not less.
        let balancing = t.flags & (f::BALANCING_DEBIT | f::BALANCING_CREDIT) != 0;
        let amount_differs = match balancing {
            true => t.amount < e.amount,
            false => t.amount != e.amount,
        };
        first(&[
            (
                t.debit_account_id != e.debit_account_id,
                R::exists_with_different_debit_account_id,
            ),
            (
                t.credit_account_id != e.credit_account_id,
                R::exists_with_different_credit_account_id,
            ),
            (amount_differs, R::exists_with_different_amount),
        ])
        .or_else(|| first(&user_data(None)))
        .or_else(|| {
            first(&[
                (t.ledger != e.ledger, R::exists_with_different_ledger),
                (t.code != e.code, R::exists_with_different_code),
            ])
        })
        .unwrap_or(R::exists)
    }

    /// Checks a post or void; returns the pending transfer's position, the
    /// pending transfer and the resolved post/void.
    fn check_post_or_void(
        &self,
        t: &Transfer,
        timestamp: u64,
        rules: Rules,
        imported: bool,
    ) -> Result<(u32, Transfer, Transfer), R> {
        let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
        let both = f::POST_PENDING_TRANSFER | f::VOID_PENDING_TRANSFER;
        let others = f::PENDING
            | f::BALANCING_DEBIT
            | f::BALANCING_CREDIT
            | f::CLOSING_DEBIT
            | f::CLOSING_CREDIT;
        fail(
            t.flags & both == both || t.flags & others != 0,
            R::flags_are_mutually_exclusive,
        )?;
        fail(t.pending_id == 0, R::pending_id_must_not_be_zero)?;
        fail(t.pending_id == u128::MAX, R::pending_id_must_not_be_int_max)?;
        fail(t.pending_id == t.id, R::pending_id_must_be_different)?;
        fail(t.timeout != 0, R::timeout_reserved_for_pending_transfer)?;
        let position = self
            .transfer_position(t.pending_id)
            .ok_or(R::pending_transfer_not_found)?;
        let p = self.transfers[position as usize];
        fail(
            p.transfer.flags & f::PENDING == 0,
            R::pending_transfer_not_pending,
        )?;
        let resolved = resolve(t, &p.transfer, rules)?;
        fail(
            p.state == PendingState::Posted,
            R::pending_transfer_already_posted,
        )?;
        fail(
            p.state == PendingState::Voided,
            R::pending_transfer_already_voided,
        )?;
        fail(
            p.state == PendingState::Expired,
            R::pending_transfer_expired,
        )?;
        let post = t.flags & f::POST_PENDING_TRANSFER != 0;
        if rules == Rules::Tb017 {
            // Its deadline may pass within this command, before the next
            // command's start expires it.
            fail(
                p.expires_at != 0 && p.expires_at <= timestamp,
                R::pending_transfer_expired,
            )?;
            if imported {
                self.check_imported_order(t)?;
            }
            // The only movement a closed account takes is a void.
            let closed =
                |id| self.account(id).expect("pending accounts exist").flags & af::CLOSED != 0;
            fail(
                post && closed(p.transfer.debit_account_id),
                R::debit_account_already_closed,
            )?;
            fail(
                post && closed(p.transfer.credit_account_id),
                R::credit_account_already_closed,
            )?;
        }
        if post {
            let debit = self
                .account(p.transfer.debit_account_id)
                .expect("pending accounts exist");
            let credit = self
                .account(p.transfer.credit_account_id)
                .expect("pending accounts exist");
            fail(
                debit.debits_posted.checked_add(resolved.amount).is_none(),
                R::overflows_debits_posted,
            )?;
            fail(
                credit.credits_posted.checked_add(resolved.amount).is_none(),
                R::overflows_credits_posted,
            )?;
        }
        fail(self.transfers_full(), R::transfers_table_full)?;
        Ok((position, p.transfer, resolved))
    }
}

/// What a checked new transfer will do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    debit: u32,
    credit: u32,
    amount: u64,
    expires_at: u64,
}

/// Checks of the transfer alone.
fn validate(t: &Transfer, rules: Rules, imported: bool) -> Result<(), R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    let known = match rules {
        Rules::Keel1 => f::KNOWN_V1,
        Rules::Tb017 => f::KNOWN,
    };
    fail(!imported && t.timestamp != 0, R::timestamp_must_be_zero)?;
    fail(t.flags & !known != 0, R::reserved_flag)?;
    fail(t.id == 0, R::id_must_not_be_zero)?;
    fail(t.id == u128::MAX, R::id_must_not_be_int_max)
}

/// The amount after balancing caps: what the debit account can still give
/// (posted credits not yet spent) and what the credit account can still take.
fn balanced_amount(t: &Transfer, dr: &Account, cr: &Account) -> u64 {
    let mut amount = t.amount;
    if t.flags & f::BALANCING_DEBIT != 0 {
        let spent = dr.debits_posted.saturating_add(dr.debits_pending);
        amount = amount.min(dr.credits_posted.saturating_sub(spent));
    }
    if t.flags & f::BALANCING_CREDIT != 0 {
        let taken = cr.credits_posted.saturating_add(cr.credits_pending);
        amount = amount.min(cr.debits_posted.saturating_sub(taken));
    }
    amount
}

/// Overflow checks for moving `amount`. As in TigerBeetle 0.17 a pending
/// transfer is checked against the posted balances too (it may be posted
/// later), so it is refused `overflows_*_posted` at creation.
fn check_overflows(dr: &Account, cr: &Account, amount: u64, pending: bool) -> Result<(), R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    if pending {
        fail(
            dr.debits_pending.checked_add(amount).is_none(),
            R::overflows_debits_pending,
        )?;
        fail(
            cr.credits_pending.checked_add(amount).is_none(),
            R::overflows_credits_pending,
        )?;
    }
    fail(
        dr.debits_posted.checked_add(amount).is_none(),
        R::overflows_debits_posted,
    )?;
    fail(
        cr.credits_posted.checked_add(amount).is_none(),
        R::overflows_credits_posted,
    )?;
    fail(
        dr.debits_pending
            .checked_add(dr.debits_posted)
            .and_then(|d| d.checked_add(amount))
            .is_none(),
        R::overflows_debits,
    )?;
    fail(
        cr.credits_pending
            .checked_add(cr.credits_posted)
            .and_then(|c| c.checked_add(amount))
            .is_none(),
        R::overflows_credits,
    )
}

/// The accounts' balance limits for moving `amount` (after the overflow
/// checks, so the sums cannot overflow).
fn check_limits(dr: &Account, cr: &Account, amount: u64) -> Result<(), R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    let debits = dr.debits_pending + dr.debits_posted + amount;
    let credits = cr.credits_pending + cr.credits_posted + amount;
    fail(
        dr.flags & af::DEBITS_MUST_NOT_EXCEED_CREDITS != 0 && debits > dr.credits_posted,
        R::exceeds_credits,
    )?;
    fail(
        cr.flags & af::CREDITS_MUST_NOT_EXCEED_DEBITS != 0 && credits > cr.debits_posted,
        R::exceeds_debits,
    )
}

/// A post/void with its zero fields taken from the pending transfer, or why
/// it contradicts the pending transfer.
fn resolve(t: &Transfer, p: &Transfer, rules: Rules) -> Result<Transfer, R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    fail(
        t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id,
        R::pending_transfer_has_different_debit_account_id,
    )?;
    fail(
        t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id,
        R::pending_transfer_has_different_credit_account_id,
    )?;
    fail(
        t.ledger != 0 && t.ledger != p.ledger,
        R::pending_transfer_has_different_ledger,
    )?;
    fail(
        t.code != 0 && t.code != p.code,
        R::pending_transfer_has_different_code,
    )?;
    // More than the pending amount exceeds it (a post or a void); a void
    // must release all of it.
    let amount = rules.requested(t, p.amount);
    fail(amount > p.amount, R::exceeds_pending_transfer_amount)?;
    let void = t.flags & f::VOID_PENDING_TRANSFER != 0;
    fail(
        void && amount < p.amount,
        R::pending_transfer_has_different_amount,
    )?;
    let resolved = Transfer {
        debit_account_id: p.debit_account_id,
        credit_account_id: p.credit_account_id,
        ledger: p.ledger,
        code: p.code,
        amount,
        ..*t
    };
    Ok(match rules {
        Rules::Keel1 => resolved,
        Rules::Tb017 => Transfer {
            user_data_128: nonzero_or(t.user_data_128, p.user_data_128),
            user_data_64: nonzero_or(t.user_data_64, p.user_data_64),
            user_data_32: nonzero_or(t.user_data_32, p.user_data_32),
            ..resolved
        },
    })
}

fn nonzero_or<T: PartialEq + Default>(mine: T, theirs: T) -> T {
    if mine == T::default() {
        theirs
    } else {
        mine
    }
}
