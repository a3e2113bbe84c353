//! The ledger's records: [`Account`] and [`Transfer`] (TigerBeetle's
//! semantics, with 64-bit amounts), their flags, and the state of a pending
//! transfer. These are both the in-memory records and, archived by rkyv, the
//! encoded command events (96 and 120 bytes).

use rkyv::{Archive, Deserialize, Serialize};

/// Account flags (`Account::flags`).
pub mod account_flags {
    /// This event is linked to the next one in its batch: the chain succeeds or fails as one.
    pub const LINKED: u16 = 1 << 0;
    /// Debits (pending + posted) may never exceed posted credits.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    /// Credits (pending + posted) may never exceed posted debits.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Keep the account's transfer history (always kept here; accepted for compatibility).
    pub const HISTORY: u16 = 1 << 3;
    /// An imported event: it carries its own past `timestamp` (migrating
    /// history; `create_accounts` schema version 2).
    pub const IMPORTED: u16 = 1 << 4;
    /// The account takes no new transfers (set by a closing transfer, or at creation).
    pub const CLOSED: u16 = 1 << 5;
    /// Every flag this build understands; others are `reserved_flag`.
    pub const KNOWN: u16 = KNOWN_V1 | IMPORTED;
    /// The flags of `create_accounts` schema version 1 (no `IMPORTED`).
    pub const KNOWN_V1: u16 =
        LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS | HISTORY | CLOSED;
}

/// Transfer flags (`Transfer::flags`).
pub mod transfer_flags {
    /// This event is linked to the next one in its batch: the chain succeeds or fails as one.
    pub const LINKED: u16 = 1 << 0;
    /// Two-phase: reserve the amount (pending balances) until posted, voided or expired.
    pub const PENDING: u16 = 1 << 1;
    /// Post (part of) the pending transfer `pending_id`.
    pub const POST_PENDING_TRANSFER: u16 = 1 << 2;
    /// Void the pending transfer `pending_id`, releasing its reservation.
    pub const VOID_PENDING_TRANSFER: u16 = 1 << 3;
    /// Cap the amount at what the debit account can still give.
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    /// Cap the amount at what the credit account can still take.
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    /// Close the debit account (pending transfers only; voiding reopens it).
    pub const CLOSING_DEBIT: u16 = 1 << 6;
    /// Close the credit account (pending transfers only; voiding reopens it).
    pub const CLOSING_CREDIT: u16 = 1 << 7;
    /// An imported event: it carries its own past `timestamp` (migrating
    /// history; `create_transfers` schema version 2).
    pub const IMPORTED: u16 = 1 << 8;
    /// Every flag this build understands; others are `reserved_flag`.
    pub const KNOWN: u16 = KNOWN_V1 | IMPORTED;
    /// The flags of `create_transfers` schema version 1 (no `IMPORTED`).
    pub const KNOWN_V1: u16 = LINKED
        | PENDING
        | POST_PENDING_TRANSFER
        | VOID_PENDING_TRANSFER
        | BALANCING_DEBIT
        | BALANCING_CREDIT
        | CLOSING_DEBIT
        | CLOSING_CREDIT;
}

/// An account: identity, the ledger it belongs to, and its four balances.
///
/// As a command event, the balances and `timestamp` must be zero (the ledger
/// owns them); the ledger assigns the timestamp when it creates the account.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[rkyv(derive(Debug))]
pub struct Account {
    /// Unique id; not 0, not `u128::MAX`.
    pub id: u128,
    /// Sum of pending (reserved) debits.
    pub debits_pending: u64,
    /// Sum of posted debits.
    pub debits_posted: u64,
    /// Sum of pending (reserved) credits.
    pub credits_pending: u64,
    /// Sum of posted credits.
    pub credits_posted: u64,
    /// Opaque host data (e.g. a foreign key).
    pub user_data_128: u128,
    /// Opaque host data.
    pub user_data_64: u64,
    /// Opaque host data.
    pub user_data_32: u32,
    /// Must be zero.
    pub reserved: u32,
    /// The ledger (currency, asset) the account belongs to; not 0.
    pub ledger: u32,
    /// Host-defined account type (chart of accounts); not 0.
    pub code: u16,
    /// [`account_flags`].
    pub flags: u16,
    /// When the ledger created it (ns); must be zero in a command.
    pub timestamp: u64,
}

/// A transfer of `amount` from the debit account to the credit account.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[rkyv(derive(Debug))]
pub struct Transfer {
    /// Unique id; not 0, not `u128::MAX`.
    pub id: u128,
    /// The account debited (0 on post/void: taken from the pending transfer).
    pub debit_account_id: u128,
    /// The account credited (0 on post/void: taken from the pending transfer).
    pub credit_account_id: u128,
    /// Amount in the ledger's smallest unit. On post: 0 posts the whole pending amount.
    pub amount: u64,
    /// For post/void: the pending transfer's id; otherwise 0.
    pub pending_id: u128,
    /// Opaque host data.
    pub user_data_128: u128,
    /// Opaque host data.
    pub user_data_64: u64,
    /// Opaque host data.
    pub user_data_32: u32,
    /// Pending transfers only: seconds until the reservation expires (0: never).
    pub timeout: u32,
    /// The ledger of both accounts (0 on post/void: taken from the pending transfer).
    pub ledger: u32,
    /// Host-defined reason (0 on post/void: taken from the pending transfer).
    pub code: u16,
    /// [`transfer_flags`].
    pub flags: u16,
    /// When the ledger applied it (ns); must be zero in a command.
    pub timestamp: u64,
}

/// Where a pending transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum PendingState {
    /// Not a pending transfer (single-phase, or a post/void).
    #[default]
    None = 0,
    /// Reserved, awaiting post, void or expiry.
    Pending = 1,
    /// Posted (fully or partly).
    Posted = 2,
    /// Voided.
    Voided = 3,
    /// Its timeout passed before it was posted or voided.
    Expired = 4,
}

impl PendingState {
    /// The state a number stands for (as `state as u8` wrote it); an
    /// unknown number is `None` (not pending).
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => PendingState::Pending,
            2 => PendingState::Posted,
            3 => PendingState::Voided,
            4 => PendingState::Expired,
            _ => PendingState::None,
        }
    }
}

impl ArchivedAccount {
    /// The native account.
    pub fn to_native(&self) -> Account {
        Account {
            id: self.id.to_native(),
            debits_pending: self.debits_pending.to_native(),
            debits_posted: self.debits_posted.to_native(),
            credits_pending: self.credits_pending.to_native(),
            credits_posted: self.credits_posted.to_native(),
            user_data_128: self.user_data_128.to_native(),
            user_data_64: self.user_data_64.to_native(),
            user_data_32: self.user_data_32.to_native(),
            reserved: self.reserved.to_native(),
            ledger: self.ledger.to_native(),
            code: self.code.to_native(),
            flags: self.flags.to_native(),
            timestamp: self.timestamp.to_native(),
        }
    }
}

impl ArchivedTransfer {
    /// The native transfer.
    pub fn to_native(&self) -> Transfer {
        Transfer {
            id: self.id.to_native(),
            debit_account_id: self.debit_account_id.to_native(),
            credit_account_id: self.credit_account_id.to_native(),
            amount: self.amount.to_native(),
            pending_id: self.pending_id.to_native(),
            user_data_128: self.user_data_128.to_native(),
            user_data_64: self.user_data_64.to_native(),
            user_data_32: self.user_data_32.to_native(),
            timeout: self.timeout.to_native(),
            ledger: self.ledger.to_native(),
            code: self.code.to_native(),
            flags: self.flags.to_native(),
            timestamp: self.timestamp.to_native(),
        }
    }
}

const _: () = assert!(std::mem::size_of::<ArchivedAccount>() == 96);
const _: () = assert!(std::mem::size_of::<ArchivedTransfer>() == 120);
