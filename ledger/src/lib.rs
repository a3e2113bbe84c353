//! Keel's reference domain: a double-entry ledger modelled on the semantics
//! TigerBeetle documents for accounts and transfers — balance limits,
//! two-phase (pending → post / void / expire) transfers, linked chains that
//! succeed or fail as one, balancing and closing transfers — as a
//! deterministic [`keel_core::StateMachine`].
//!
//! A host builds commands with the helpers in [`commands`] (rkyv payloads via
//! `keel-codecs`), submits them to an engine running a [`Ledger`], and reads
//! per-event [`CreateTransferResult`]s from the acknowledgement. A rejection is
//! data, never a panic. Design and invariants: `docs/ledger.md`.
//!
//! ```
//! use keel_ledger::{commands, Account, Ledger, LedgerConfig, Transfer};
//! use keel_core::{apply, CommandHeader, CommandRef, DedupTable};
//!
//! let mut ledger = Ledger::new(LedgerConfig { accounts_max: 16, transfers_max: 16, prefault: false });
//! let mut payload = [0u8; 896];
//! let accounts = [1u128, 2].map(|id| Account { id, ledger: 1, code: 1, ..Account::default() });
//! let len = commands::encode_create_accounts(&accounts, &mut payload).unwrap();
//! let header = CommandHeader {
//!     command_type: commands::command_type::CREATE_ACCOUNTS,
//!     schema_version: 1,
//!     payload_len: len as u32,
//!     timestamp_ns: 1,
//!     ..CommandHeader::default()
//! };
//! let command = CommandRef { sequence: 0, header: &header, payload: &payload[..len] };
//! let applied = apply(&mut ledger, &mut DedupTable::with_capacity(1), &command);
//! assert!(applied.outcome.code.is_ok());
//! assert_eq!(ledger.accounts_len(), 2);
//! ```

#![deny(unsafe_code)] // one exception: `memory.rs` (madvise)

mod account;
pub mod client;
pub mod commands;
mod hash;
mod ledger;
mod memory;
pub mod results;
pub mod routing;
mod settings;
pub mod snapshot;
pub mod table;
mod transfer;
pub mod types;
mod validator;

pub use crate::client::{CallOptions, ClientError, LedgerClient};
pub use crate::ledger::{Ledger, LedgerConfig, LedgerStats};
pub use crate::results::{CreateAccountResult, CreateTransferResult};
pub use crate::settings::JournalSettings;
pub use crate::snapshot::{LedgerImage, RestoreError};
pub use crate::transfer::{Rules, AMOUNT_MAX, TIMESTAMP_MAX};
pub use crate::types::{account_flags, transfer_flags, Account, PendingState, Transfer};
pub use crate::validator::{validation_code, LedgerValidator};
