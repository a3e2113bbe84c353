//! A fixed-capacity map from a non-zero `u128` key to a `u32` slot number:
//! open addressing with linear probing over a power-of-two array at most
//! half full, backward-shift deletion (no tombstones). The index under the
//! idempotency window and the session table. The hash is a fixed function
//! of the key, never seeded per process, so iteration-free users stay
//! deterministic across runs and replay. Allocates only in [`ProbeMap::new`].

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// `0` marks an empty bucket.
    key: u128,
    slot: u32,
}

const EMPTY: Bucket = Bucket { key: 0, slot: 0 };

#[derive(Debug, Clone)]
pub(crate) struct ProbeMap {
    buckets: Box<[Bucket]>,
}

impl ProbeMap {
    /// A map for up to `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        let buckets = (capacity.max(1) * 2).next_power_of_two();
        Self {
            buckets: vec![EMPTY; buckets].into_boxed_slice(),
        }
    }

    pub(crate) fn get(&self, key: u128) -> Option<u32> {
        self.find(key).map(|i| self.buckets[i].slot)
    }

    /// Maps `key` (absent, non-zero) to `slot`. The caller keeps the number
    /// of keys within the capacity given to [`ProbeMap::new`].
    pub(crate) fn insert(&mut self, key: u128, slot: u32) {
        debug_assert!(key != 0 && self.find(key).is_none());
        let mut i = self.home(key);
        while self.buckets[i].key != 0 {
            i = (i + 1) & self.mask();
        }
        self.buckets[i] = Bucket { key, slot };
    }

    /// Removes `key` (present): moves later entries of its probe chain into
    /// the hole so lookups never stop early.
    pub(crate) fn remove(&mut self, key: u128) {
        let mut hole = self.find(key).expect("removed key is held");
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask();
            let k = self.buckets[i].key;
            if k == 0 {
                break;
            }
            let home = self.home(k);
            // Move `i` into `hole` unless its home lies cyclically in (hole, i].
            let distance_to_i = i.wrapping_sub(home) & self.mask();
            let distance_to_hole = hole.wrapping_sub(home) & self.mask();
            if distance_to_hole < distance_to_i {
                self.buckets[hole] = self.buckets[i];
                hole = i;
            }
        }
        self.buckets[hole] = EMPTY;
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn home(&self, key: u128) -> usize {
        (mix(key as u64 ^ mix((key >> 64) as u64)) as usize) & self.mask()
    }

    fn find(&self, key: u128) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            match self.buckets[i].key {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }
}

/// A fixed 64-bit finaliser (splitmix64): deterministic, no per-process seed.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
