//! [`IdIndex`]: a fixed-capacity open-addressing index from a 128-bit id to
//! a record's position in its (insertion-ordered) array.
//!
//! Why this shape: records never move and are never deleted (ledgers only
//! grow), so the records live in a dense array in creation order — iteration
//! is deterministic and independent of any hash — and the index holds only
//! `u64` slots: a 32-bit fingerprint of the id's hash and the record position
//! plus one (0 is an empty slot). Linear probing at a load factor of at most
//! one half keeps a lookup to one or two cache lines, and the hash function is
//! fixed (no per-process seed), so replay is byte-identical everywhere.
//!
//! The only removal is [`IdIndex::remove_last`], used to roll back a failed
//! linked chain. It is exact for linear probing because removals happen in
//! reverse insertion order: every entry whose probe passed the removed slot
//! was inserted later, and so was removed first.

/// Fixed-capacity id → position index. Allocated once; never grows.
#[derive(Debug, Clone)]
pub struct IdIndex {
    slots: Box<[u64]>,
    mask: usize,
    len: u32,
    capacity: u32,
}

/// A fixed mixer of the id's two halves (a folded 128-bit multiply). Not seeded:
/// determinism across processes is the point. Ids are chosen by hosts, who
/// should not be able to aim collisions: that is the host's authentication
/// problem, noted in `docs/ledger.md`.
#[inline]
pub fn id_hash(id: u128) -> u64 {
    let lo = id as u64 ^ 0x243f_6a88_85a3_08d3;
    let hi = (id >> 64) as u64 ^ 0x1319_8a2e_0370_7344;
    let m = u128::from(lo).wrapping_mul(u128::from(hi) | 1) ^ id.rotate_left(32);
    let folded = (m as u64) ^ ((m >> 64) as u64);
    (folded ^ (folded >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (folded >> 32)
}

/// Slots per cache line: ids that differ only in the low bits share one.
const GROUP: u64 = 8;

impl IdIndex {
    /// The first slot `id` probes and its fingerprint.
    #[inline]
    fn home(&self, id: u128) -> (usize, u64) {
        let low = id as u64 % GROUP;
        let hash = id_hash(id - u128::from(low));
        let slot = (hash.wrapping_mul(GROUP) | low) as usize & self.mask;
        (slot, (hash >> 32) ^ low)
    }

    /// An index for up to `capacity` ids.
    pub fn with_capacity(capacity: u32, prefault: bool) -> Self {
        assert!(
            capacity < u32::MAX,
            "positions are stored plus one in 32 bits"
        );
        let slots = (capacity as usize * 2).next_power_of_two().max(16);
        let slots = crate::memory::zeroed_u64s(slots, prefault);
        Self {
            mask: slots.len() - 1,
            slots,
            len: 0,
            capacity,
        }
    }

    /// Ids indexed.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another id fits.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// The position of `id`; `id_at` reads the id stored at a position.
    #[inline]
    pub fn find(&self, id: u128, id_at: impl Fn(u32) -> u128) -> Option<u32> {
        let (mut slot, fingerprint) = self.home(id);
        loop {
            let value = self.slots[slot];
            if value == 0 {
                return None;
            }
            let position = (value as u32).wrapping_sub(1);
            if value >> 32 == fingerprint && id_at(position) == id {
                return Some(position);
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Starts loading the first slot `id` probes into the cache.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        crate::memory::prefetch(&self.slots[self.home(id).0]);
    }

    /// The position the first slot of `id`'s probe points at when its
    /// fingerprint matches — unverified, only to prefetch the record.
    #[inline]
    pub fn candidate(&self, id: u128) -> Option<u32> {
        let (slot, fingerprint) = self.home(id);
        let value = self.slots[slot];
        (value != 0 && value >> 32 == fingerprint).then(|| (value as u32).wrapping_sub(1))
    }

    /// Indexes `id` at `position`. The caller checked that `id` is absent and
    /// that the index is not full.
    #[inline]
    pub fn insert(&mut self, id: u128, position: u32) {
        assert!(self.len < self.capacity, "index full");
        let (mut slot, fingerprint) = self.home(id);
        while self.slots[slot] != 0 {
            slot = (slot + 1) & self.mask;
        }
        self.slots[slot] = fingerprint << 32 | u64::from(position + 1);
        self.len += 1;
    }

    /// Removes `id`, which must be the most recently inserted id still present
    /// (linked-chain rollback: removals in reverse insertion order).
    pub fn remove_last(&mut self, id: u128, position: u32) {
        let (mut slot, _) = self.home(id);
        loop {
            let value = self.slots[slot];
            assert!(value != 0, "remove_last of an id that is not indexed");
            if value as u32 == position + 1 {
                self.slots[slot] = 0;
                self.len -= 1;
                return;
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_and_rolls_back_lifo() {
        let ids: Vec<u128> = (0..1000u128).map(|i| i * 0x1_0000_0001 + 7).collect();
        let mut index = IdIndex::with_capacity(1000, false);
        for (position, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), None);
            index.insert(*id, position as u32);
        }
        assert!(index.is_full());
        for (position, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), Some(position as u32));
        }
        for position in (500..1000).rev() {
            index.remove_last(ids[position], position as u32);
        }
        for (position, id) in ids.iter().enumerate() {
            let expected = (position < 500).then_some(position as u32);
            assert_eq!(index.find(*id, |p| ids[p as usize]), expected);
        }
    }
}
