//! `create_account`: the checks (first failing one wins, in TigerBeetle's
//! order) and the insert.

use crate::ledger::Ledger;
use crate::results::CreateAccountResult as R;
use crate::transfer::{Batch, Rules};
use crate::types::{account_flags as f, Account};

impl Ledger {
    /// Creates one account stamped `timestamp`, or says why not. Every check
    /// precedes the mutation, so a rejected account changes nothing.
    ///
    /// TigerBeetle 0.17's order: timestamp, reserved field and flags, id;
    /// then idempotence (`exists*`) before the other fields.
    pub(crate) fn create_account(&mut self, a: &Account, timestamp: u64, batch: Batch) -> R {
        let imported = match batch.check(a.flags & f::IMPORTED != 0, a.timestamp) {
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
        if let Err(code) = validate_id(a, batch.rules, imported) {
            return code;
        }
        if let Some(position) = self.account_position(a.id) {
            return exists(&self.accounts[position as usize].account, a);
        }
        if let Err(code) = validate(a) {
            return code;
        }
        // An imported account keeps its own timestamp, after the newest
        // account's and no transfer's.
        if imported
            && (a.timestamp <= self.newest_account_timestamp() || self.timestamp_taken(a.timestamp))
        {
            return R::imported_event_timestamp_must_not_regress;
        }
        if self.accounts_full() {
            return R::accounts_table_full;
        }
        let timestamp = if imported { a.timestamp } else { timestamp };
        self.insert_account(Account { timestamp, ..*a });
        R::ok
    }
}

/// The checks before idempotence.
fn validate_id(a: &Account, rules: Rules, imported: bool) -> Result<(), R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    let known = match rules {
        Rules::Keel1 => f::KNOWN_V1,
        Rules::Tb017 => f::KNOWN,
    };
    fail(!imported && a.timestamp != 0, R::timestamp_must_be_zero)?;
    fail(a.reserved != 0, R::reserved_field)?;
    fail(a.flags & !known != 0, R::reserved_flag)?;
    fail(a.id == 0, R::id_must_not_be_zero)?;
    fail(a.id == u128::MAX, R::id_must_not_be_int_max)
}

/// The checks of a new account's other fields.
fn validate(a: &Account) -> Result<(), R> {
    let fail = |cond: bool, code: R| if cond { Err(code) } else { Ok(()) };
    let both = f::DEBITS_MUST_NOT_EXCEED_CREDITS | f::CREDITS_MUST_NOT_EXCEED_DEBITS;
    fail(a.flags & both == both, R::flags_are_mutually_exclusive)?;
    fail(a.debits_pending != 0, R::debits_pending_must_be_zero)?;
    fail(a.debits_posted != 0, R::debits_posted_must_be_zero)?;
    fail(a.credits_pending != 0, R::credits_pending_must_be_zero)?;
    fail(a.credits_posted != 0, R::credits_posted_must_be_zero)?;
    fail(a.ledger == 0, R::ledger_must_not_be_zero)?;
    fail(a.code == 0, R::code_must_not_be_zero)
}

/// The result for an id that exists: `exists` for an identical retry, else
/// the first field that differs (the linked flag included, as in
/// TigerBeetle 0.17).
fn exists(e: &Account, a: &Account) -> R {
    if e.flags != a.flags {
        R::exists_with_different_flags
    } else if e.user_data_128 != a.user_data_128 {
        R::exists_with_different_user_data_128
    } else if e.user_data_64 != a.user_data_64 {
        R::exists_with_different_user_data_64
    } else if e.user_data_32 != a.user_data_32 {
        R::exists_with_different_user_data_32
    } else if e.ledger != a.ledger {
        R::exists_with_different_ledger
    } else if e.code != a.code {
        R::exists_with_different_code
    } else {
        R::exists
    }
}
