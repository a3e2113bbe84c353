//! Where an account lives when the ledger is split into shards (ADR 0014):
//! the slot of `(tenant, account id)`, the router's versioned
//! [`SlotTable`], the [`Ownership`] a shard's ledger holds as state, and the
//! ids a cross-shard saga derives (clearing accounts, steps).
//!
//! Account ids stay location-free: a slot is a function of the id, and
//! moving a slot to another shard changes the table, never an id.

use rkyv::{Archive, Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

/// Logical slots: the unit a table assigns to shards.
pub const SLOTS: usize = 4096;
/// Shards one table can name.
pub const SHARDS_MAX: usize = 256;
/// Words of a slot bit set.
pub const OWNED_WORDS: usize = SLOTS / 64;

/// Top 32 bits of a clearing account's id (`"KE"` then a marker), so no
/// table can place one on another shard.
const CLEARING_TAG: u128 = 0x4B45_C1EA;

/// The slot of an account over the whole slot space.
#[inline]
pub fn slot_of(tenant: u32, id: u128) -> u16 {
    (key_hash(tenant, id) % SLOTS as u64) as u16
}

#[inline]
fn key_hash(tenant: u32, id: u128) -> u64 {
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&tenant.to_le_bytes());
    key[4..].copy_from_slice(&id.to_le_bytes());
    xxh3_64(&key)
}

/// The clearing account on shard `owner` that stands for peer shard `peer`
/// in `ledger` (a saga's intermediary; owned by `owner` under any table).
pub fn clearing_account_id(owner: u16, peer: u16, ledger: u32) -> u128 {
    CLEARING_TAG << 96 | u128::from(owner) << 80 | u128::from(peer) << 64 | u128::from(ledger)
}

/// The owner shard of a clearing account id, or `None` for any other id.
#[inline]
pub fn clearing_owner(id: u128) -> Option<u16> {
    (id >> 96 == CLEARING_TAG).then_some((id >> 80) as u16)
}

/// The id of step `step` of saga `saga`: the same on every retry, so a
/// repeated step is answered `exists`.
pub fn saga_step_id(saga: u128, step: u8) -> u128 {
    let mut key = [0u8; 9 + 16 + 1];
    key[..9].copy_from_slice(b"keel-saga");
    key[9..25].copy_from_slice(&saga.to_le_bytes());
    key[25] = step;
    match xxh3_128(&key) {
        0 | u128::MAX => 1, // never: the two ids a transfer cannot have
        id => id,
    }
}

/// The slots one shard owns, as ledger state (installed by the
/// `SET_OWNERSHIP` command, so replay repeats every decision it made).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// This shard's index.
    pub shard: u16,
    /// The table version the set comes from; only a later one replaces it.
    pub table_version: u64,
    /// Bit `s` set: slot `s` is owned.
    pub owned: [u64; OWNED_WORDS],
    /// Tenants pinned to a slot range, as `(tenant, start, end)`, packed
    /// at the front; the first empty range (`start >= end`) ends the list.
    pub tenants: [(u32, u16, u16); TENANT_RANGES_MAX],
}

/// Tenants a table can pin to slot ranges.
pub const TENANT_RANGES_MAX: usize = 16;

impl Ownership {
    /// Whether this shard may hold account `id` of `tenant`.
    #[inline]
    pub fn owns(&self, tenant: u32, id: u128) -> bool {
        if let Some(owner) = clearing_owner(id) {
            return owner == self.shard;
        }
        let slot = tenant_slot(&self.tenants, tenant, id) as usize;
        self.owned[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// A digest of the whole ownership (shard, version, slots, tenant
    /// ranges): its term in the state hash, and how a node tells whether a
    /// shard already holds the table it is configured with.
    pub fn fingerprint(&self) -> u64 {
        let mut words = [0u64; OWNED_WORDS + 2 + TENANT_RANGES_MAX];
        words[0] = u64::from(self.shard);
        words[1] = self.table_version;
        words[2..2 + OWNED_WORDS].copy_from_slice(&self.owned);
        for (w, &(t, s, e)) in words[2 + OWNED_WORDS..].iter_mut().zip(&self.tenants) {
            *w = u64::from(t) << 32 | u64::from(s) << 16 | u64::from(e);
        }
        crate::hash::fold(&words)
    }
}

#[inline]
fn tenant_slot(tenants: &[(u32, u16, u16)], tenant: u32, id: u128) -> u16 {
    let hash = key_hash(tenant, id);
    // Pinned tenants are packed at the front; the first empty entry ends them.
    let mut pinned = tenants.iter().take_while(|&&(_, s, e)| e > s);
    match pinned.find(|&&(t, _, _)| t == tenant) {
        Some(&(_, start, end)) => start + (hash % u64::from(end - start)) as u16,
        None => (hash % SLOTS as u64) as u16,
    }
}

/// The router's map: which shard owns each slot, under a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    version: u64,
    shard_of: Box<[u16; SLOTS]>,
    tenants: [(u32, u16, u16); TENANT_RANGES_MAX],
    shards: u16,
}

/// Why a slot table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// No shards, or more than [`SHARDS_MAX`].
    #[error("shard count {0} is outside 1..={SHARDS_MAX}")]
    ShardCount(usize),
    /// The version must be at least 1 (0 means "no table").
    #[error("table version must be at least 1")]
    Version,
    /// A tenant range is empty, out of the slot space, or given twice.
    #[error("tenant {tenant}: slot range {start}..{end} is empty, beyond {SLOTS} or repeated")]
    TenantRange {
        /// The tenant.
        tenant: u32,
        /// First slot.
        start: u16,
        /// One past the last slot.
        end: u16,
    },
    /// More pinned tenants than [`TENANT_RANGES_MAX`].
    #[error("{0} tenant ranges, more than {TENANT_RANGES_MAX}")]
    TooManyTenants(usize),
    /// A slot names a shard beyond the count.
    #[error("slot {slot} is assigned shard {shard}, beyond the {shards} shards")]
    Shard {
        /// The slot.
        slot: usize,
        /// Its shard.
        shard: u16,
        /// The shard count.
        shards: usize,
    },
}

impl SlotTable {
    /// `shards` contiguous, near-equal slot ranges (shard `i` owns slots
    /// `[i·4096/n, (i+1)·4096/n)`), with tenants pinned to the given ranges.
    pub fn even(
        version: u64,
        shards: usize,
        tenants: &[(u32, u16, u16)],
    ) -> Result<Self, TableError> {
        if shards == 0 || shards > SHARDS_MAX {
            return Err(TableError::ShardCount(shards));
        }
        let mut shard_of = Box::new([0u16; SLOTS]);
        for (slot, shard) in shard_of.iter_mut().enumerate() {
            *shard = (slot * shards / SLOTS) as u16;
        }
        Self::new(version, shards, shard_of, tenants)
    }

    /// A table from an explicit slot → shard map.
    pub fn new(
        version: u64,
        shards: usize,
        shard_of: Box<[u16; SLOTS]>,
        tenants: &[(u32, u16, u16)],
    ) -> Result<Self, TableError> {
        if shards == 0 || shards > SHARDS_MAX {
            return Err(TableError::ShardCount(shards));
        }
        if version == 0 {
            return Err(TableError::Version);
        }
        if let Some((slot, &shard)) = shard_of
            .iter()
            .enumerate()
            .find(|(_, &s)| usize::from(s) >= shards)
        {
            return Err(TableError::Shard {
                slot,
                shard,
                shards,
            });
        }
        if tenants.len() > TENANT_RANGES_MAX {
            return Err(TableError::TooManyTenants(tenants.len()));
        }
        let mut ranges = [(0, 0, 0); TENANT_RANGES_MAX];
        for (i, &(tenant, start, end)) in tenants.iter().enumerate() {
            let repeated = tenants[..i].iter().any(|&(t, _, _)| t == tenant);
            if start >= end || usize::from(end) > SLOTS || repeated {
                return Err(TableError::TenantRange { tenant, start, end });
            }
            ranges[i] = (tenant, start, end);
        }
        Ok(Self {
            version,
            shard_of,
            tenants: ranges,
            shards: shards as u16,
        })
    }

    /// The version (a shard answers `WRONG_SHARD` with its own).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        usize::from(self.shards)
    }

    /// The slot of an account, honouring its tenant's range.
    #[inline]
    pub fn slot(&self, tenant: u32, id: u128) -> u16 {
        tenant_slot(&self.tenants, tenant, id)
    }

    /// The shard that holds account `id` of `tenant`.
    #[inline]
    pub fn shard(&self, tenant: u32, id: u128) -> u16 {
        match clearing_owner(id) {
            Some(owner) => owner,
            None => self.shard_of[usize::from(self.slot(tenant, id))],
        }
    }

    /// What shard `shard` owns under this table.
    pub fn ownership(&self, shard: u16) -> Ownership {
        let mut owned = [0u64; OWNED_WORDS];
        for (slot, &s) in self.shard_of.iter().enumerate() {
            if s == shard {
                owned[slot / 64] |= 1 << (slot % 64);
            }
        }
        Ownership {
            shard,
            table_version: self.version,
            owned,
            tenants: self.tenants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_SLOTS: [u16; 4] = [2460, 2169, 2762, 3824];
    const PINNED_STEP_ID: u128 = 58495884409071467733377107672007331230;

    #[test]
    fn an_even_table_spreads_ids_across_shards_and_ownership_agrees() {
        let table = SlotTable::even(1, 4, &[]).unwrap();
        let owners: Vec<Ownership> = (0..4).map(|s| table.ownership(s)).collect();
        let mut per_shard = [0usize; 4];
        for id in 1..=40_000u128 {
            let shard = table.shard(0, id);
            per_shard[usize::from(shard)] += 1;
            for (s, o) in owners.iter().enumerate() {
                assert_eq!(o.owns(0, id), s == usize::from(shard), "id {id}");
            }
        }
        for n in per_shard {
            assert!((9_000..11_000).contains(&n), "{per_shard:?}");
        }
    }

    #[test]
    fn a_pinned_tenant_stays_in_its_range_and_others_do_not_care() {
        let table = SlotTable::even(3, 4, &[(7, 0, 1024)]).unwrap();
        for id in 1..=5_000u128 {
            assert!(table.slot(7, id) < 1024);
            assert_eq!(table.shard(7, id), 0, "slots 0..1024 are shard 0's");
        }
        let elsewhere = (1..=5_000u128)
            .filter(|&id| table.shard(8, id) != 0)
            .count();
        assert!(elsewhere > 3_000, "{elsewhere}");
        assert!(table.ownership(0).owns(7, 99));
        assert!(!table.ownership(1).owns(7, 99));
    }

    #[test]
    fn clearing_accounts_belong_to_their_owner_under_any_table() {
        let id = clearing_account_id(2, 1, 700);
        assert_eq!(clearing_owner(id), Some(2));
        assert_eq!(clearing_owner(12345), None);
        let table = SlotTable::even(1, 3, &[]).unwrap();
        assert_eq!(table.shard(0, id), 2);
        assert!(table.ownership(2).owns(0, id));
        assert!(!table.ownership(1).owns(0, id));
    }

    #[test]
    fn the_slot_function_is_pinned() {
        // Every journal's accounts were placed by this function: changing
        // it would strand them. These values must never change.
        let pinned: Vec<u16> = [(0u32, 1u128), (0, 2), (7, 1), (1, u128::MAX - 1)]
            .iter()
            .map(|&(t, id)| slot_of(t, id))
            .collect();
        assert_eq!(pinned, PINNED_SLOTS);
        assert_eq!(saga_step_id(1, 1), PINNED_STEP_ID);
    }

    #[test]
    fn saga_step_ids_are_stable_and_distinct() {
        assert_eq!(saga_step_id(5, 1), saga_step_id(5, 1));
        let ids: std::collections::HashSet<u128> = (1..100u128)
            .flat_map(|g| (1..=6).map(move |s| saga_step_id(g, s)))
            .collect();
        assert_eq!(ids.len(), 99 * 6);
    }

    #[test]
    fn bad_tables_are_refused_with_what_is_wrong() {
        assert_eq!(SlotTable::even(1, 0, &[]), Err(TableError::ShardCount(0)));
        assert_eq!(SlotTable::even(0, 2, &[]), Err(TableError::Version));
        assert!(matches!(
            SlotTable::even(1, 2, &[(1, 5, 5)]),
            Err(TableError::TenantRange { tenant: 1, .. })
        ));
        assert!(matches!(
            SlotTable::even(1, 2, &[(1, 0, 5), (1, 6, 9)]),
            Err(TableError::TenantRange { tenant: 1, .. })
        ));
        let mut map = Box::new([0u16; SLOTS]);
        map[9] = 2;
        assert!(matches!(
            SlotTable::new(1, 2, map, &[]),
            Err(TableError::Shard {
                slot: 9,
                shard: 2,
                ..
            })
        ));
    }
}
