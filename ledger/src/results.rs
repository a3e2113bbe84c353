//! Per-event result codes. A rejection is data: each event of a batch gets
//! one code, in the order TigerBeetle documents its checks (the first failing
//! check wins). The numbers are TigerBeetle 0.17's (`ok` is 0, its
//! `deprecated_ok`), so a client mapping codes by value reads them right;
//! codes TigerBeetle does not have are numbered from 200. Outcomes written
//! with Keel's earlier numbers (`EventResults` version 1) are translated
//! when read ([`crate::commands::event_results`]).

macro_rules! result_codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code for a wire value, if it is one.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The code's name in snake case, as TigerBeetle spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }

            /// Whether the event was applied.
            pub fn is_ok(self) -> bool {
                self as u8 == 0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

result_codes! {
    /// The result of one `create_accounts` event.
    #[allow(non_camel_case_types)]
    CreateAccountResult {
        /// Created.
        ok = 0,
        /// Another event of its linked chain failed; nothing of the chain was applied.
        linked_event_failed = 1,
        /// The batch ended inside a linked chain.
        linked_event_chain_open = 2,
        /// `timestamp` must be zero (the ledger assigns it).
        timestamp_must_be_zero = 3,
        /// `reserved` must be zero.
        reserved_field = 4,
        /// A flag this build does not know is set.
        reserved_flag = 5,
        /// `id` must not be zero.
        id_must_not_be_zero = 6,
        /// `id` must not be `u128::MAX`.
        id_must_not_be_int_max = 7,
        /// Both balance limits are set.
        flags_are_mutually_exclusive = 8,
        /// `debits_pending` must be zero.
        debits_pending_must_be_zero = 9,
        /// `debits_posted` must be zero.
        debits_posted_must_be_zero = 10,
        /// `credits_pending` must be zero.
        credits_pending_must_be_zero = 11,
        /// `credits_posted` must be zero.
        credits_posted_must_be_zero = 12,
        /// `ledger` must not be zero.
        ledger_must_not_be_zero = 13,
        /// `code` must not be zero.
        code_must_not_be_zero = 14,
        /// The id exists with other flags.
        exists_with_different_flags = 15,
        /// The id exists with other `user_data_128`.
        exists_with_different_user_data_128 = 16,
        /// The id exists with other `user_data_64`.
        exists_with_different_user_data_64 = 17,
        /// The id exists with other `user_data_32`.
        exists_with_different_user_data_32 = 18,
        /// The id exists on another ledger.
        exists_with_different_ledger = 19,
        /// The id exists with another code.
        exists_with_different_code = 20,
        /// The id exists with the same fields (a retry): nothing changed.
        exists = 21,
        /// The batch's first event is imported; this one is not.
        imported_event_expected = 22,
        /// The batch's first event is not imported; this one is.
        imported_event_not_expected = 23,
        /// An imported event's timestamp is 0 or above `2^63 - 1`.
        imported_event_timestamp_out_of_range = 24,
        /// An imported event's timestamp is not before the batch's.
        imported_event_timestamp_must_not_advance = 25,
        /// An imported account's timestamp is not after the newest account's,
        /// or is a transfer's.
        imported_event_timestamp_must_not_regress = 26,
        /// The accounts table is at its configured capacity (Keel's own).
        accounts_table_full = 200,
    }
}

result_codes! {
    /// The result of one `create_transfers` event.
    #[allow(non_camel_case_types)]
    CreateTransferResult {
        /// Applied.
        ok = 0,
        /// Another event of its linked chain failed; nothing of the chain was applied.
        linked_event_failed = 1,
        /// The batch ended inside a linked chain.
        linked_event_chain_open = 2,
        /// `timestamp` must be zero (the ledger assigns it).
        timestamp_must_be_zero = 3,
        /// A flag this build does not know is set.
        reserved_flag = 4,
        /// `id` must not be zero.
        id_must_not_be_zero = 5,
        /// `id` must not be `u128::MAX`.
        id_must_not_be_int_max = 6,
        /// Flags that exclude each other are set (e.g. pending and post).
        flags_are_mutually_exclusive = 7,
        /// `debit_account_id` must not be zero.
        debit_account_id_must_not_be_zero = 8,
        /// `debit_account_id` must not be `u128::MAX`.
        debit_account_id_must_not_be_int_max = 9,
        /// `credit_account_id` must not be zero.
        credit_account_id_must_not_be_zero = 10,
        /// `credit_account_id` must not be `u128::MAX`.
        credit_account_id_must_not_be_int_max = 11,
        /// Debit and credit are the same account.
        accounts_must_be_different = 12,
        /// `pending_id` is only for post/void.
        pending_id_must_be_zero = 13,
        /// Post/void needs a `pending_id`.
        pending_id_must_not_be_zero = 14,
        /// `pending_id` must not be `u128::MAX`.
        pending_id_must_not_be_int_max = 15,
        /// A transfer cannot post or void itself.
        pending_id_must_be_different = 16,
        /// Only a pending transfer has a timeout.
        timeout_reserved_for_pending_transfer = 17,
        /// Closing flags need the pending flag.
        closing_transfer_must_be_pending = 64,
        /// `ledger` must not be zero.
        ledger_must_not_be_zero = 19,
        /// `code` must not be zero.
        code_must_not_be_zero = 20,
        /// No account has `debit_account_id`.
        debit_account_not_found = 21,
        /// No account has `credit_account_id`.
        credit_account_not_found = 22,
        /// The two accounts are on different ledgers.
        accounts_must_have_the_same_ledger = 23,
        /// The transfer's ledger is not the accounts' ledger.
        transfer_must_have_the_same_ledger_as_accounts = 24,
        /// No transfer has `pending_id`.
        pending_transfer_not_found = 25,
        /// The transfer `pending_id` is not a pending transfer.
        pending_transfer_not_pending = 26,
        /// `debit_account_id` differs from the pending transfer's.
        pending_transfer_has_different_debit_account_id = 27,
        /// `credit_account_id` differs from the pending transfer's.
        pending_transfer_has_different_credit_account_id = 28,
        /// `ledger` differs from the pending transfer's.
        pending_transfer_has_different_ledger = 29,
        /// `code` differs from the pending transfer's.
        pending_transfer_has_different_code = 30,
        /// A post for more than was reserved.
        exceeds_pending_transfer_amount = 31,
        /// A void must name the pending amount (or 0).
        pending_transfer_has_different_amount = 32,
        /// The pending transfer was already posted.
        pending_transfer_already_posted = 33,
        /// The pending transfer was already voided.
        pending_transfer_already_voided = 34,
        /// The pending transfer's timeout passed.
        pending_transfer_expired = 35,
        /// The id exists with other flags.
        exists_with_different_flags = 36,
        /// The id exists with another debit account.
        exists_with_different_debit_account_id = 37,
        /// The id exists with another credit account.
        exists_with_different_credit_account_id = 38,
        /// The id exists with another amount.
        exists_with_different_amount = 39,
        /// The id exists with another `pending_id`.
        exists_with_different_pending_id = 40,
        /// The id exists with other `user_data_128`.
        exists_with_different_user_data_128 = 41,
        /// The id exists with other `user_data_64`.
        exists_with_different_user_data_64 = 42,
        /// The id exists with other `user_data_32`.
        exists_with_different_user_data_32 = 43,
        /// The id exists with another timeout.
        exists_with_different_timeout = 44,
        /// The id exists with another ledger.
        exists_with_different_ledger = 67,
        /// The id exists with another code.
        exists_with_different_code = 45,
        /// The id exists with the same fields (a retry): nothing changed.
        exists = 46,
        /// A transfer with this id failed before with a transient code
        /// (`transfer_failed`); it can never succeed: retry with a new id.
        id_already_failed = 68,
        /// `debits_pending` would overflow.
        overflows_debits_pending = 47,
        /// `credits_pending` would overflow.
        overflows_credits_pending = 48,
        /// `debits_posted` would overflow.
        overflows_debits_posted = 49,
        /// `credits_posted` would overflow.
        overflows_credits_posted = 50,
        /// Pending plus posted debits would overflow.
        overflows_debits = 51,
        /// Pending plus posted credits would overflow.
        overflows_credits = 52,
        /// The expiry time would overflow.
        overflows_timeout = 53,
        /// The debit account's debits would exceed its credits.
        exceeds_credits = 54,
        /// The credit account's credits would exceed its debits.
        exceeds_debits = 55,
        /// The debit account is closed.
        debit_account_already_closed = 65,
        /// The credit account is closed.
        credit_account_already_closed = 66,
        /// The batch's first event is imported; this one is not.
        imported_event_expected = 56,
        /// The batch's first event is not imported; this one is.
        imported_event_not_expected = 57,
        /// An imported event's timestamp is 0 or above `2^63 - 1`.
        imported_event_timestamp_out_of_range = 58,
        /// An imported event's timestamp is not before the batch's.
        imported_event_timestamp_must_not_advance = 59,
        /// An imported transfer's timestamp is not after the newest
        /// transfer's, or is an account's.
        imported_event_timestamp_must_not_regress = 60,
        /// An imported transfer's timestamp is not after its debit account's.
        imported_event_timestamp_must_postdate_debit_account = 61,
        /// An imported transfer's timestamp is not after its credit account's.
        imported_event_timestamp_must_postdate_credit_account = 62,
        /// An imported pending transfer cannot have a timeout.
        imported_event_timeout_must_be_zero = 63,
        /// The transfers table is at its configured capacity (Keel's own).
        transfers_table_full = 200,
    }
}

/// Keel's numbers before TigerBeetle 0.17's (`EventResults` version 1) →
/// today's, for `create_transfers` (index: the old number). Accounts moved
/// only `accounts_table_full` (22 → 200).
pub(crate) const TRANSFER_CODES_V1: [u8; 60] = {
    let mut map = [0u8; 60];
    let mut old = 0;
    while old < 60 {
        map[old] = match old {
            18 => 64,
            45 => 67,
            46 => 45,
            47 => 46,
            48..=56 => old as u8 - 1,
            57 => 65,
            58 => 66,
            59 => 200,
            _ => old as u8,
        };
        old += 1;
    }
    map
};

/// See [`TRANSFER_CODES_V1`].
pub(crate) fn account_code_from_v1(old: u8) -> u8 {
    match old {
        22 => 200,
        old => old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_tigerbeetles() {
        // Pinned from TigerBeetle 0.17's `src/tigerbeetle.zig`.
        use CreateTransferResult as T;
        for (code, number) in [
            (T::linked_event_chain_open, 2),
            (T::reserved_flag, 4),
            (T::flags_are_mutually_exclusive, 7),
            (T::closing_transfer_must_be_pending, 64),
            (T::pending_transfer_expired, 35),
            (T::exists_with_different_flags, 36),
            (T::exists_with_different_user_data_32, 43),
            (T::exists_with_different_timeout, 44),
            (T::exists_with_different_code, 45),
            (T::exists, 46),
            (T::overflows_debits_pending, 47),
            (T::overflows_timeout, 53),
            (T::exceeds_credits, 54),
            (T::exceeds_debits, 55),
            (T::debit_account_already_closed, 65),
            (T::credit_account_already_closed, 66),
            (T::exists_with_different_ledger, 67),
        ] {
            assert_eq!(code as u8, number, "{code}");
        }
        assert_eq!(CreateAccountResult::exists as u8, 21);
        assert_eq!(CreateAccountResult::exists_with_different_flags as u8, 15);
        assert_eq!(CreateAccountResult::flags_are_mutually_exclusive as u8, 8);
    }

    #[test]
    fn every_old_number_maps_to_the_code_of_the_same_name() {
        // Keel's version-1 names in their old numeric order.
        let old_names = [
            "ok",
            "linked_event_failed",
            "linked_event_chain_open",
            "timestamp_must_be_zero",
            "reserved_flag",
            "id_must_not_be_zero",
            "id_must_not_be_int_max",
            "flags_are_mutually_exclusive",
            "debit_account_id_must_not_be_zero",
            "debit_account_id_must_not_be_int_max",
            "credit_account_id_must_not_be_zero",
            "credit_account_id_must_not_be_int_max",
            "accounts_must_be_different",
            "pending_id_must_be_zero",
            "pending_id_must_not_be_zero",
            "pending_id_must_not_be_int_max",
            "pending_id_must_be_different",
            "timeout_reserved_for_pending_transfer",
            "closing_transfer_must_be_pending",
            "ledger_must_not_be_zero",
            "code_must_not_be_zero",
            "debit_account_not_found",
            "credit_account_not_found",
            "accounts_must_have_the_same_ledger",
            "transfer_must_have_the_same_ledger_as_accounts",
            "pending_transfer_not_found",
            "pending_transfer_not_pending",
            "pending_transfer_has_different_debit_account_id",
            "pending_transfer_has_different_credit_account_id",
            "pending_transfer_has_different_ledger",
            "pending_transfer_has_different_code",
            "exceeds_pending_transfer_amount",
            "pending_transfer_has_different_amount",
            "pending_transfer_already_posted",
            "pending_transfer_already_voided",
            "pending_transfer_expired",
            "exists_with_different_flags",
            "exists_with_different_debit_account_id",
            "exists_with_different_credit_account_id",
            "exists_with_different_amount",
            "exists_with_different_pending_id",
            "exists_with_different_user_data_128",
            "exists_with_different_user_data_64",
            "exists_with_different_user_data_32",
            "exists_with_different_timeout",
            "exists_with_different_ledger",
            "exists_with_different_code",
            "exists",
            "overflows_debits_pending",
            "overflows_credits_pending",
            "overflows_debits_posted",
            "overflows_credits_posted",
            "overflows_debits",
            "overflows_credits",
            "overflows_timeout",
            "exceeds_credits",
            "exceeds_debits",
            "debit_account_already_closed",
            "credit_account_already_closed",
            "transfers_table_full",
        ];
        assert_eq!(old_names.len(), TRANSFER_CODES_V1.len());
        for (old, name) in old_names.iter().enumerate() {
            let new = CreateTransferResult::from_u8(TRANSFER_CODES_V1[old]).unwrap();
            assert_eq!(new.name(), *name, "old number {old}");
        }
        assert_eq!(
            CreateAccountResult::from_u8(account_code_from_v1(22)),
            Some(CreateAccountResult::accounts_table_full)
        );
    }
}
