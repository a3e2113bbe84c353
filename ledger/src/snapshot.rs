//! The ledger's snapshot codec: the whole state as one rkyv archive
//! ([`LedgerImage`], schema 32) and its restore into a fresh ledger.
//!
//! The image holds the records in creation order with their history links,
//! pending states and deadlines, the ledger clock and the counters; indexes,
//! the expiry heap and the state hash are rebuilt on restore (they are
//! functions of the records), so the restored ledger's hash is recomputed,
//! not trusted. Restoring an older image version goes through
//! [`Migrate`]: version 1 had no failed transfer ids, version 2 no
//! shard ownership.

use keel_codecs::{DecodeError, Migrate, Rkyv, Schema, SnapshotCodec};
use rkyv::{Archive, Deserialize, Serialize};

use crate::ledger::{AccountEntry, Ledger, LedgerConfig, LedgerStats, TransferEntry};
use crate::routing::Ownership;
use crate::types::{Account, PendingState, Transfer};

/// One account in a snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountImage {
    /// The account.
    pub account: Account,
    /// Position of its latest transfer (`u32::MAX`: none).
    pub last_transfer: u32,
}

/// One transfer in a snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferImage {
    /// The transfer as stored (resolved amount, timestamp).
    pub transfer: Transfer,
    /// `PendingState` as a number.
    pub state: u8,
    /// Expiry deadline of a pending transfer with a timeout (0: none).
    pub expires_at: u64,
    /// The debit account's previous transfer (`u32::MAX`: none).
    pub prev_debit: u32,
    /// The credit account's previous transfer (`u32::MAX`: none).
    pub prev_credit: u32,
}

/// The whole ledger, as a snapshot body (version 3).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LedgerImage {
    /// See [`LedgerImageV2::last_timestamp`].
    pub last_timestamp: u64,
    /// See [`LedgerImageV2::accounts`].
    pub accounts: Vec<AccountImage>,
    /// See [`LedgerImageV2::transfers`].
    pub transfers: Vec<TransferImage>,
    /// See [`LedgerImageV2::stats`].
    pub stats: [u64; 4],
    /// See [`LedgerImageV2::failed_ids`].
    pub failed_ids: Vec<u128>,
    /// The slots this shard owns, when sharded (new in version 3).
    pub ownership: Option<Ownership>,
}

/// Version 2 of [`LedgerImage`]: no ownership (no build before version 3
/// was sharded).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LedgerImageV2 {
    /// The ledger clock (last event timestamp, ns).
    pub last_timestamp: u64,
    /// Accounts in creation order.
    pub accounts: Vec<AccountImage>,
    /// Transfers in creation order.
    pub transfers: Vec<TransferImage>,
    /// `LedgerStats`: events ok, rejected, expired, malformed.
    pub stats: [u64; 4],
    /// Ids of transfers that failed with a transient code, in order
    /// (`id_already_failed`; new in version 2).
    pub failed_ids: Vec<u128>,
}

/// Version 1 of [`LedgerImage`]: no failed ids (no build before version 2
/// recorded any).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LedgerImageV1 {
    /// See [`LedgerImage::last_timestamp`].
    pub last_timestamp: u64,
    /// See [`LedgerImage::accounts`].
    pub accounts: Vec<AccountImage>,
    /// See [`LedgerImage::transfers`].
    pub transfers: Vec<TransferImage>,
    /// See [`LedgerImage::stats`].
    pub stats: [u64; 4],
}

impl Schema for LedgerImageV1 {
    const SCHEMA_ID: u16 = 32;
    const VERSION: u16 = 1;
    const NAME: &'static str = "ledger_snapshot";
}

impl Schema for LedgerImageV2 {
    const SCHEMA_ID: u16 = 32;
    const VERSION: u16 = 2;
    const NAME: &'static str = "ledger_snapshot";
}

impl Schema for LedgerImage {
    const SCHEMA_ID: u16 = 32;
    const VERSION: u16 = 3;
    const NAME: &'static str = "ledger_snapshot";
}

impl Migrate for LedgerImage {
    fn migrate(version: u16, body: &[u8]) -> Result<Self, DecodeError> {
        let invalid = || DecodeError::Invalid {
            schema: Self::NAME,
            version,
            len: body.len(),
        };
        let v2 = match version {
            1 => {
                let old = Rkyv::access_body::<LedgerImageV1>(version, body)?;
                let old = rkyv::deserialize::<LedgerImageV1, rkyv::rancor::Error>(old)
                    .map_err(|_| invalid())?;
                LedgerImageV2 {
                    last_timestamp: old.last_timestamp,
                    accounts: old.accounts,
                    transfers: old.transfers,
                    stats: old.stats,
                    failed_ids: Vec::new(),
                }
            }
            2 => {
                let old = Rkyv::access_body::<LedgerImageV2>(version, body)?;
                rkyv::deserialize::<LedgerImageV2, rkyv::rancor::Error>(old)
                    .map_err(|_| invalid())?
            }
            _ => {
                return Err(DecodeError::NoMigration {
                    schema: Self::NAME,
                    version,
                    current: Self::VERSION,
                })
            }
        };
        Ok(LedgerImage {
            last_timestamp: v2.last_timestamp,
            accounts: v2.accounts,
            transfers: v2.transfers,
            stats: v2.stats,
            failed_ids: v2.failed_ids,
            ownership: None,
        })
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The body does not decode (typed codec error).
    #[error("ledger snapshot: {0}")]
    Decode(#[from] DecodeError),
    /// The snapshot holds more records than the configured capacity.
    #[error("ledger snapshot holds {found} {table}, more than the configured {capacity}")]
    Capacity {
        /// `accounts` or `transfers`.
        table: &'static str,
        /// Records in the snapshot.
        found: usize,
        /// The configured capacity.
        capacity: u32,
    },
    /// A record refers to a position or state that cannot exist.
    #[error("ledger snapshot is inconsistent at {table} record {position}")]
    Inconsistent {
        /// `accounts` or `transfers`.
        table: &'static str,
        /// The record's position.
        position: usize,
    },
}

impl Ledger {
    /// The whole state as a snapshot body (codec header + rkyv archive).
    /// Allocates (it runs off the hot path, on a copy or after shutdown).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let stats = self.stats();
        let image = LedgerImage {
            last_timestamp: self.last_timestamp(),
            accounts: self
                .accounts
                .iter()
                .map(|e| AccountImage {
                    account: e.account,
                    last_transfer: e.last_transfer,
                })
                .collect(),
            transfers: self
                .transfers
                .iter()
                .map(|e| TransferImage {
                    transfer: e.transfer,
                    state: e.state as u8,
                    expires_at: e.expires_at,
                    prev_debit: e.prev_debit,
                    prev_credit: e.prev_credit,
                })
                .collect(),
            stats: [
                stats.events_ok,
                stats.events_rejected,
                stats.expired,
                stats.malformed,
            ],
            failed_ids: self.failed.to_vec(),
            ownership: self.ownership().copied(),
        };
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&image).expect("in-memory serialization");
        let mut out = Vec::with_capacity(keel_codecs::HEADER_BYTES + body.len());
        out.extend_from_slice(&LedgerImage::SCHEMA_ID.to_le_bytes());
        out.extend_from_slice(&LedgerImage::VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A ledger with `config`'s capacities holding the state in `bytes`.
    pub fn restore_snapshot(config: LedgerConfig, bytes: &[u8]) -> Result<Ledger, RestoreError> {
        let header = keel_codecs::Header::read(bytes)?;
        if header.schema_id != LedgerImage::SCHEMA_ID {
            return Err(DecodeError::WrongSchema {
                schema: LedgerImage::NAME,
                expected: LedgerImage::SCHEMA_ID,
                found: header.schema_id,
            }
            .into());
        }
        if header.version > LedgerImage::VERSION {
            return Err(DecodeError::NewerVersion {
                schema: LedgerImage::NAME,
                version: header.version,
                current: LedgerImage::VERSION,
            }
            .into());
        }
        if header.version < LedgerImage::VERSION {
            let image = LedgerImage::migrate(header.version, &bytes[keel_codecs::HEADER_BYTES..])?;
            let mut out = Vec::new();
            out.extend_from_slice(&LedgerImage::SCHEMA_ID.to_le_bytes());
            out.extend_from_slice(&LedgerImage::VERSION.to_le_bytes());
            out.extend_from_slice(
                &rkyv::to_bytes::<rkyv::rancor::Error>(&image).expect("serialize"),
            );
            return Self::restore_snapshot(config, &out);
        }
        let image = Rkyv::access::<LedgerImage>(bytes)?;
        let capacity = |table, found: usize, capacity: u32| {
            if found > capacity as usize {
                return Err(RestoreError::Capacity {
                    table,
                    found,
                    capacity,
                });
            }
            Ok(())
        };
        capacity("accounts", image.accounts.len(), config.accounts_max)?;
        capacity("transfers", image.transfers.len(), config.transfers_max)?;
        let mut ledger = Ledger::new(config);
        let transfers = image.transfers.len();
        let link_ok = |link: u32, below: usize| link == u32::MAX || (link as usize) < below;
        for (position, a) in image.accounts.iter().enumerate() {
            let entry = AccountEntry {
                account: a.account.to_native(),
                static_term: 0,
                last_transfer: a.last_transfer.to_native(),
            };
            if !link_ok(entry.last_transfer, transfers)
                || ledger.account(entry.account.id).is_some()
            {
                return Err(RestoreError::Inconsistent {
                    table: "accounts",
                    position,
                });
            }
            ledger.restore_account(entry);
        }
        for (position, t) in image.transfers.iter().enumerate() {
            let state = match t.state {
                0 => PendingState::None,
                1 => PendingState::Pending,
                2 => PendingState::Posted,
                3 => PendingState::Voided,
                4 => PendingState::Expired,
                _ => {
                    return Err(RestoreError::Inconsistent {
                        table: "transfers",
                        position,
                    })
                }
            };
            let entry = TransferEntry {
                transfer: t.transfer.to_native(),
                state,
                expires_at: t.expires_at.to_native(),
                prev_debit: t.prev_debit.to_native(),
                prev_credit: t.prev_credit.to_native(),
            };
            let links = link_ok(entry.prev_debit, position) && link_ok(entry.prev_credit, position);
            if !links || ledger.transfer(entry.transfer.id).is_some() {
                return Err(RestoreError::Inconsistent {
                    table: "transfers",
                    position,
                });
            }
            ledger.restore_transfer(entry);
        }
        capacity(
            "failed transfer ids",
            image.failed_ids.len(),
            config.transfers_max,
        )?;
        for (position, id) in image.failed_ids.iter().enumerate() {
            let id = id.to_native();
            let valid = id != 0 && id != u128::MAX;
            if !valid || ledger.transfer(id).is_some() || ledger.has_failed(id) {
                return Err(RestoreError::Inconsistent {
                    table: "failed transfer ids",
                    position,
                });
            }
            assert!(ledger.record_failed(id), "capacity checked above");
        }
        if let Some(ownership) = image.ownership.as_ref() {
            let ownership = rkyv::deserialize::<Ownership, rkyv::rancor::Error>(ownership)
                .map_err(|_| DecodeError::Invalid {
                    schema: LedgerImage::NAME,
                    version: LedgerImage::VERSION,
                    len: bytes.len(),
                })?;
            ledger.install_ownership(ownership);
        }
        let s = &image.stats;
        ledger.restore_clock(
            image.last_timestamp.to_native(),
            LedgerStats {
                events_ok: s[0].to_native(),
                events_rejected: s[1].to_native(),
                expired: s[2].to_native(),
                malformed: s[3].to_native(),
            },
        );
        Ok(ledger)
    }
}

impl SnapshotCodec for Ledger {
    type Config = LedgerConfig;
    type Error = RestoreError;
    const SNAPSHOT_SCHEMA_ID: u16 = LedgerImage::SCHEMA_ID;
    const SNAPSHOT_VERSION: u16 = LedgerImage::VERSION;

    fn encode_snapshot(&self) -> Vec<u8> {
        Ledger::encode_snapshot(self)
    }

    fn restore_snapshot(config: &LedgerConfig, bytes: &[u8]) -> Result<Self, RestoreError> {
        Ledger::restore_snapshot(*config, bytes)
    }
}
