//! The idempotency (deduplication) table: a bounded, pre-allocated map from
//! idempotency key to the original outcome, owned by the business-logic
//! processor as part of the state.
//!
//! Layout: open addressing with linear probing over a power-of-two array at
//! most half full, plus a FIFO of insertion order. When `capacity` keys are
//! held, inserting evicts the oldest key (backward-shift deletion keeps probe
//! chains intact without tombstones). The window is therefore "the last
//! `capacity` keyed commands", deterministic for a given command sequence: the
//! hash is a fixed function of the key, never seeded per process.

use crate::outcome::Outcome;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// `0` marks an empty bucket (key 0 means "no key" and is never stored).
    key: u128,
    outcome: Outcome,
}

const EMPTY: Entry = Entry {
    key: 0,
    outcome: Outcome::code(crate::outcome::ResultCode::OK),
};

/// Bounded idempotency window. Allocates only in [`DedupTable::with_capacity`].
#[derive(Debug, Clone)]
pub struct DedupTable {
    buckets: Box<[Entry]>,
    /// Insertion order of the held keys; `order[(head + i) % capacity]`.
    order: Box<[u128]>,
    head: usize,
    len: usize,
}

impl DedupTable {
    /// A table that remembers the last `capacity` keys (`capacity >= 1`).
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity >= 1, "dedup capacity must be at least 1");
        let buckets = (capacity * 2).next_power_of_two();
        Self {
            buckets: vec![EMPTY; buckets].into_boxed_slice(),
            order: vec![0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Keys the window remembers at most.
    pub fn capacity(&self) -> usize {
        self.order.len()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The original outcome for `key`, if it is inside the window.
    pub fn get(&self, key: u128) -> Option<Outcome> {
        assert_ne!(key, 0, "key 0 means no key");
        self.find(key).map(|i| self.buckets[i].outcome)
    }

    /// Remembers `key → outcome`, evicting the oldest key when full. `key`
    /// must not be present.
    pub fn insert(&mut self, key: u128, outcome: Outcome) {
        assert_ne!(key, 0, "key 0 means no key");
        debug_assert!(self.find(key).is_none(), "key inserted twice");
        let capacity = self.order.len();
        if self.len == capacity {
            let oldest = self.order[self.head];
            self.remove(oldest);
            self.head = (self.head + 1) % capacity;
            self.len -= 1;
        }
        let mut i = self.home(key);
        while self.buckets[i].key != 0 {
            i = (i + 1) & self.mask();
        }
        self.buckets[i] = Entry { key, outcome };
        self.order[(self.head + self.len) % capacity] = key;
        self.len += 1;
        assert!(self.len <= capacity);
    }

    /// The held keys and their outcomes, oldest first. Inserting them in this
    /// order into an empty table of the same capacity rebuilds this table
    /// exactly (how a snapshot restores the window).
    pub fn entries(&self) -> impl Iterator<Item = (u128, Outcome)> + '_ {
        let capacity = self.order.len();
        (0..self.len).map(move |n| {
            let key = self.order[(self.head + n) % capacity];
            (key, self.get(key).expect("ordered key is held"))
        })
    }

    /// A deterministic hash of the held keys and outcomes, in insertion order.
    pub fn state_hash(&self) -> u64 {
        let capacity = self.order.len();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for n in 0..self.len {
            let key = self.order[(self.head + n) % capacity];
            let outcome = self.get(key).expect("ordered key is held");
            h = mix(h ^ mix(key as u64 ^ (key >> 64) as u64) ^ u64::from(outcome.code.0));
        }
        h
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

    /// Backward-shift deletion: moves later entries of the probe chain into
    /// the hole so lookups never stop early.
    fn remove(&mut self, key: u128) {
        let mut hole = self.find(key).expect("evicted key is held");
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
}

/// A fixed 64-bit finaliser (splitmix64): deterministic, no per-process seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::outcome::ResultCode;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    proptest! {
        /// The table behaves like a FIFO-bounded BTreeMap model.
        #[test]
        fn matches_fifo_model(capacity in 1usize..16, keys in prop::collection::vec(1u128..40, 0..300)) {
            let mut table = DedupTable::with_capacity(capacity);
            let mut model: BTreeMap<u128, u32> = BTreeMap::new();
            let mut fifo: VecDeque<u128> = VecDeque::new();
            for (n, key) in keys.into_iter().enumerate() {
                let got = table.get(key).map(|o| o.code.0);
                prop_assert_eq!(got, model.get(&key).copied());
                if got.is_none() {
                    if fifo.len() == capacity {
                        let old = fifo.pop_front().unwrap();
                        model.remove(&old);
                    }
                    fifo.push_back(key);
                    model.insert(key, n as u32);
                    table.insert(key, Outcome::code(ResultCode(n as u32)));
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for key in 1u128..40 {
                prop_assert_eq!(table.get(key).map(|o| o.code.0), model.get(&key).copied());
            }
        }
    }
}
