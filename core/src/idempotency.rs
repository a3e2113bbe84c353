//! The idempotency (deduplication) table: a bounded, pre-allocated map from
//! idempotency key to the original outcome, owned by the business-logic
//! processor as part of the state.
//!
//! Layout: a FIFO ring of keys and outcomes in insertion order, indexed by a
//! `ProbeMap` (open addressing, fixed hash). When `capacity` keys are held,
//! inserting evicts the oldest key. The window is therefore "the last
//! `capacity` keyed commands", deterministic for a given command sequence.

use crate::outcome::Outcome;
use crate::probe::{mix, ProbeMap};
use crate::session::SessionTable;

/// Bounded idempotency window, with the session table built on it
/// ([`crate::session`]). Allocates only in [`DedupTable::with_capacity`].
#[derive(Debug, Clone)]
pub struct DedupTable {
    /// key → position in `order`/`outcomes`.
    index: ProbeMap,
    /// Insertion order of the held keys; `order[(head + i) % capacity]`.
    order: Box<[u128]>,
    /// The outcome of the key at the same position.
    outcomes: Box<[Outcome]>,
    head: usize,
    len: usize,
    sessions: SessionTable,
}

impl DedupTable {
    /// A table that remembers the last `capacity` keys (`capacity >= 1`),
    /// with room for [`crate::session::sessions_for`]`(capacity)` sessions.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity >= 1, "dedup capacity must be at least 1");
        Self {
            index: ProbeMap::new(capacity),
            order: vec![0; capacity].into_boxed_slice(),
            outcomes: vec![Outcome::default(); capacity].into_boxed_slice(),
            head: 0,
            len: 0,
            sessions: SessionTable::with_capacity(crate::session::sessions_for(capacity)),
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

    /// The session table.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// The session table, to register sessions and record their requests.
    pub fn sessions_mut(&mut self) -> &mut SessionTable {
        &mut self.sessions
    }

    /// The original outcome for `key`, if it is inside the window.
    pub fn get(&self, key: u128) -> Option<Outcome> {
        assert_ne!(key, 0, "key 0 means no key");
        self.index.get(key).map(|at| self.outcomes[at as usize])
    }

    /// Remembers `key → outcome`, evicting the oldest key when full. `key`
    /// must not be present.
    pub fn insert(&mut self, key: u128, outcome: Outcome) {
        assert_ne!(key, 0, "key 0 means no key");
        debug_assert!(self.index.get(key).is_none(), "key inserted twice");
        let capacity = self.order.len();
        if self.len == capacity {
            self.index.remove(self.order[self.head]);
            self.head = (self.head + 1) % capacity;
            self.len -= 1;
        }
        let at = (self.head + self.len) % capacity;
        self.order[at] = key;
        self.outcomes[at] = outcome;
        self.index.insert(key, at as u32);
        self.len += 1;
    }

    /// The held keys and their outcomes, oldest first. Inserting them in this
    /// order into an empty table of the same capacity rebuilds this window
    /// exactly (how a snapshot restores it).
    pub fn entries(&self) -> impl Iterator<Item = (u128, Outcome)> + '_ {
        let capacity = self.order.len();
        (0..self.len).map(move |n| {
            let at = (self.head + n) % capacity;
            (self.order[at], self.outcomes[at])
        })
    }

    /// A deterministic hash of the held keys and outcomes, in insertion
    /// order, and of the session table.
    pub fn state_hash(&self) -> u64 {
        let window = self
            .entries()
            .fold(0xcbf2_9ce4_8422_2325, |h, (key, outcome)| {
                mix(h ^ mix(key as u64 ^ (key >> 64) as u64) ^ u64::from(outcome.code.0))
            });
        match self.sessions.is_empty() {
            true => window,
            false => mix(window ^ self.sessions.state_hash()),
        }
    }
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
