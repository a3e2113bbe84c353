//! [`JournalSettings`]: what a replay of a ledger journal must repeat to
//! reach the same state — the table capacities (a full table is a result
//! code) and the engine's idempotency window (a duplicate is a result). A
//! node stores them in its journal's manifest when the journal is created;
//! `keel replay` and the projector read them from there, and a node refuses
//! to start with different ones.

use crate::LedgerConfig;

/// Magic and version of the encoding.
const MAGIC: [u8; 8] = *b"KLEDGER1";
/// Encoded length.
const ENCODED_BYTES: usize = 24;

/// The ledger node's format settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSettings {
    /// Table capacities.
    pub ledger: LedgerConfig,
    /// Idempotency window (keys remembered).
    pub dedup_entries: u64,
}

impl JournalSettings {
    /// Encodes: magic, `accounts_max` u32, `transfers_max` u32, `dedup_entries` u64 (LE).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_BYTES);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.ledger.accounts_max.to_le_bytes());
        out.extend_from_slice(&self.ledger.transfers_max.to_le_bytes());
        out.extend_from_slice(&self.dedup_entries.to_le_bytes());
        out
    }

    /// Decodes; `None` if the bytes are not this encoding (another state
    /// machine's settings, or none).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_BYTES || bytes[..8] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        Some(Self {
            ledger: LedgerConfig {
                accounts_max: u32_at(8),
                transfers_max: u32_at(12),
                prefault: false,
            },
            dedup_entries: u64::from_le_bytes(bytes[16..24].try_into().expect("8")),
        })
    }

    /// The first setting that differs from `other`: (option, ours, theirs).
    pub fn difference(&self, other: &Self) -> Option<(&'static str, u64, u64)> {
        [
            (
                "ledger.accounts_max",
                u64::from(self.ledger.accounts_max),
                u64::from(other.ledger.accounts_max),
            ),
            (
                "ledger.transfers_max",
                u64::from(self.ledger.transfers_max),
                u64::from(other.ledger.transfers_max),
            ),
            (
                "engine.dedup_entries",
                self.dedup_entries,
                other.dedup_entries,
            ),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_first_difference() {
        let a = JournalSettings {
            ledger: LedgerConfig {
                accounts_max: 10,
                transfers_max: 20,
                prefault: false,
            },
            dedup_entries: 30,
        };
        assert_eq!(JournalSettings::decode(&a.encode()), Some(a));
        assert_eq!(JournalSettings::decode(b"other"), None);
        let b = JournalSettings {
            dedup_entries: 31,
            ..a
        };
        assert_eq!(a.difference(&b), Some(("engine.dedup_entries", 30, 31)));
        assert_eq!(a.difference(&a), None);
    }
}
