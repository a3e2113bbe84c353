//! A model of etcd for the simulator: one linearizable store with a
//! revision counter, compare-and-swap transactions and leases that expire
//! on simulated time. It holds the three things Keel keeps there: the
//! shard configuration, the node keys (`nodes/<id>` = incarnation, on the
//! node's lease) and the controller election key.

use std::collections::BTreeMap;

use crate::types::{Incarnation, NodeId, ShardConfig};

/// A lease id.
pub type LeaseId = u64;

/// The model store.
#[derive(Debug, Clone)]
pub struct Etcd {
    revision: u64,
    config: ShardConfig,
    config_revision: u64,
    nodes: BTreeMap<NodeId, (Incarnation, LeaseId)>,
    /// `(controller id, create revision, lease)`.
    controller: Option<(u16, u64, LeaseId)>,
    leases: BTreeMap<LeaseId, u64>,
    next_lease: LeaseId,
    /// Every configuration installed, with its revision.
    history: Vec<(u64, ShardConfig)>,
}

impl Etcd {
    /// A store holding the initial configuration.
    pub fn new(config: ShardConfig) -> Self {
        Self {
            revision: 1,
            history: vec![(1, config.clone())],
            config,
            config_revision: 1,
            nodes: BTreeMap::new(),
            controller: None,
            leases: BTreeMap::new(),
            next_lease: 1,
        }
    }

    /// Grants a lease expiring `ttl` after `now`.
    pub fn grant(&mut self, now: u64, ttl: u64) -> LeaseId {
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(id, now + ttl);
        id
    }

    /// Renews a lease; false when it already expired.
    pub fn keepalive(&mut self, now: u64, lease: LeaseId, ttl: u64) -> bool {
        match self.leases.get_mut(&lease) {
            Some(expiry) => {
                *expiry = now + ttl;
                true
            }
            None => false,
        }
    }

    /// Expires the leases due at `now`, deleting their keys.
    pub fn expire(&mut self, now: u64) {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for lease in expired {
            self.leases.remove(&lease);
            let before = self.nodes.len();
            self.nodes.retain(|_, v| v.1 != lease);
            let mut changed = before != self.nodes.len();
            if self.controller.is_some_and(|c| c.2 == lease) {
                self.controller = None;
                changed = true;
            }
            if changed {
                self.revision += 1;
            }
        }
    }

    /// Puts `nodes/<id>` = `incarnation` on `lease`.
    pub fn put_node(&mut self, id: NodeId, incarnation: Incarnation, lease: LeaseId) {
        if self.leases.contains_key(&lease) {
            self.nodes.insert(id, (incarnation, lease));
            self.revision += 1;
        }
    }

    /// Campaigns for the controller key: the key's create revision when
    /// `controller` holds it (now or already), else `None`.
    pub fn campaign(&mut self, controller: u16, lease: LeaseId) -> Option<u64> {
        match self.controller {
            Some((holder, created, _)) if holder == controller => Some(created),
            Some(_) => None,
            None if self.leases.contains_key(&lease) => {
                self.revision += 1;
                self.controller = Some((controller, self.revision, lease));
                Some(self.revision)
            }
            None => None,
        }
    }

    /// The configuration and its revision.
    pub fn config(&self) -> (&ShardConfig, u64) {
        (&self.config, self.config_revision)
    }

    /// Live node keys: id → incarnation.
    pub fn live(&self) -> BTreeMap<NodeId, Incarnation> {
        self.nodes.iter().map(|(&n, &(i, _))| (n, i)).collect()
    }

    /// Installs `config` if the configuration's revision is still
    /// `expected` and, when `controller` is given, that controller still
    /// holds the election key created at that revision. Returns the new
    /// revision.
    pub fn cas_config(
        &mut self,
        expected: u64,
        controller: Option<(u16, u64)>,
        config: ShardConfig,
    ) -> Option<u64> {
        if self.config_revision != expected {
            return None;
        }
        if let Some((id, created)) = controller {
            if self.controller.map(|c| (c.0, c.1)) != Some((id, created)) {
                return None;
            }
        }
        self.revision += 1;
        self.config = config.clone();
        self.config_revision = self.revision;
        self.history.push((self.revision, config));
        Some(self.revision)
    }

    /// Every configuration installed, oldest first.
    pub fn history(&self) -> &[(u64, ShardConfig)] {
        &self.history
    }
}
