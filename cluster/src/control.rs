//! `EtcdControl`: Keel's keys in etcd, read and written with the
//! `etcd-client` crate (gRPC). Every write that decides something is a
//! transaction comparing a revision.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use keel_replication::CasOutcome;
use keel_replication::{Incarnation, NodeId, ShardConfig};

use crate::encoding::{self, DecodeError};

/// How long any etcd request may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// etcd could not be reached or refused the request.
    #[error("etcd at {endpoint}: {source}")]
    Etcd {
        /// The endpoint used.
        endpoint: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A stored value is not what Keel writes there.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The shard has no configuration yet (bootstrap it first).
    #[error("shard {shard} has no configuration at {key}")]
    NoConfig {
        /// The shard.
        shard: u32,
        /// The key read.
        key: String,
    },
    /// A node key's value is not an incarnation.
    #[error("{key}: not a node incarnation")]
    BadNodeKey {
        /// The key read.
        key: String,
    },
    /// etcd did not answer a lease renewal in time.
    #[error("etcd at {endpoint}: no answer to a lease renewal within {after:?}")]
    Unanswered {
        /// The endpoint used.
        endpoint: String,
        /// How long it waited.
        after: Duration,
    },
    /// The lease expired before it could be renewed.
    #[error("lease {lease} expired")]
    LeaseExpired {
        /// The lease id.
        lease: i64,
    },
}

/// A lease this process holds, with its keep-alive stream.
pub struct Lease {
    id: i64,
    ttl_s: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// When each renewal still unanswered was sent, oldest first: the
    /// stream answers in order, and a renewal counts from when it was
    /// sent (etcd restarted the TTL no earlier than that).
    sent: VecDeque<Instant>,
    /// When the grant was asked for.
    granted: Instant,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("ttl_s", &self.ttl_s)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// When the grant was asked for: the lease holds for its TTL from then.
    pub fn granted(&self) -> Instant {
        self.granted
    }

    /// The TTL etcd granted (it may round a short one up).
    pub fn ttl_s(&self) -> i64 {
        self.ttl_s
    }
}

/// A watch on one shard's configuration key ([`EtcdControl::watch_config`]).
pub struct ConfigWatch {
    key: String,
    endpoint: String,
    stream: etcd_client::WatchStream,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ConfigWatch {
    /// The next configuration written, with its revision (`None`: etcd
    /// ended the watch, e.g. its start was compacted away: read and watch
    /// again).
    pub async fn next(&mut self) -> Result<Option<(ShardConfig, i64)>, ControlError> {
        loop {
            let response = self
                .stream
                .message()
                .await
                .map_err(|source| ControlError::Etcd {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
            let Some(response) = response else {
                return Ok(None);
            };
            if response.canceled() {
                return Ok(None);
            }
            let newest = response
                .events()
                .iter()
                .filter(|e| e.event_type() == EventType::Put)
                .filter_map(|e| e.kv())
                .next_back();
            if let Some(kv) = newest {
                let config = encoding::decode(&self.key, kv.value())?;
                return Ok(Some((config, kv.mod_revision())));
            }
        }
    }
}

/// The controller election won: the key's create revision, which every
/// write the controller makes compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elected {
    /// The election key's create revision.
    pub create_revision: i64,
}

/// Keel's keys of one cluster in etcd.
#[derive(Clone)]
pub struct EtcdControl {
    client: Client,
    endpoint: String,
    prefix: String,
}

impl std::fmt::Debug for EtcdControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdControl")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdControl {
    /// Connects to etcd at `endpoint` for cluster `cluster`.
    pub async fn connect(endpoint: &str, cluster: &str) -> Result<Self, ControlError> {
        // Every request is bounded: a partition must surface as an error
        // the caller can count against the lease, never as a hang.
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|source| ControlError::Etcd {
                endpoint: endpoint.to_string(),
                source,
            })?;
        Ok(Self {
            client,
            endpoint: endpoint.to_string(),
            prefix: format!("/keel/v1/{cluster}/"),
        })
    }

    fn etcd(&self, source: etcd_client::Error) -> ControlError {
        ControlError::Etcd {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// The key of shard `shard`'s configuration.
    pub fn config_key(&self, shard: u32) -> String {
        format!("{}shard/{shard}/config", self.prefix)
    }

    fn node_key(&self, node: NodeId) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    fn controller_key(&self) -> String {
        format!("{}controller", self.prefix)
    }

    /// Writes `config` as shard `shard`'s first configuration unless one
    /// exists; returns the configuration in force and its revision.
    pub async fn bootstrap(
        &self,
        shard: u32,
        config: &ShardConfig,
    ) -> Result<(ShardConfig, i64), ControlError> {
        let key = self.config_key(shard);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), encoding::encode(config), None)]);
        let mut client = self.client.clone();
        client.txn(txn).await.map_err(|e| self.etcd(e))?;
        self.config(shard).await
    }

    /// Shard `shard`'s configuration and its revision (`mod_revision`).
    pub async fn config(&self, shard: u32) -> Result<(ShardConfig, i64), ControlError> {
        let key = self.config_key(shard);
        let mut client = self.client.clone();
        let response = client
            .get(key.as_str(), None)
            .await
            .map_err(|e| self.etcd(e))?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| ControlError::NoConfig {
                shard,
                key: key.clone(),
            })?;
        Ok((encoding::decode(&key, kv.value())?, kv.mod_revision()))
    }

    /// Watches shard `shard`'s configuration from the revision after
    /// `after` (the one last read), so no write in between is missed.
    pub async fn watch_config(&self, shard: u32, after: i64) -> Result<ConfigWatch, ControlError> {
        let key = self.config_key(shard);
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_start_revision(after + 1);
        let stream = client
            .watch(key.as_str(), Some(options))
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(ConfigWatch {
            key,
            endpoint: self.endpoint.clone(),
            stream,
        })
    }

    /// Installs `config` if the configuration's revision is still
    /// `expected` and, with `controller`, the election key still has that
    /// create revision (a deposed controller's write is refused).
    pub async fn cas_config(
        &self,
        shard: u32,
        expected: i64,
        controller: Option<Elected>,
        config: &ShardConfig,
    ) -> Result<CasOutcome, ControlError> {
        let key = self.config_key(shard);
        let mut compares = vec![Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            expected,
        )];
        if let Some(elected) = controller {
            compares.push(Compare::create_revision(
                self.controller_key(),
                CompareOp::Equal,
                elected.create_revision,
            ));
        }
        let txn = Txn::new().when(compares).and_then([TxnOp::put(
            key.as_str(),
            encoding::encode(config),
            None,
        )]);
        let mut client = self.client.clone();
        let response = client.txn(txn).await.map_err(|e| self.etcd(e))?;
        Ok(match (response.succeeded(), response.header()) {
            (true, Some(header)) => CasOutcome::Applied(header.revision() as u64),
            (true, None) => CasOutcome::Unknown,
            (false, _) => CasOutcome::Refused,
        })
    }

    /// Grants a lease of `ttl_s` seconds.
    pub async fn grant(&self, ttl_s: i64) -> Result<Lease, ControlError> {
        let mut client = self.client.clone();
        let asked = Instant::now();
        let granted = client
            .lease_grant(ttl_s, None)
            .await
            .map_err(|e| self.etcd(e))?;
        let (keeper, stream) = client
            .lease_keep_alive(granted.id())
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(Lease {
            id: granted.id(),
            ttl_s: granted.ttl(),
            keeper,
            stream,
            sent: VecDeque::new(),
            granted: asked,
        })
    }

    /// Renews `lease` once (call every TTL/3); returns when the renewal
    /// etcd answered was sent: the lease holds for its TTL from then.
    ///
    /// Waits at most `within` for etcd's answer: the stream is a gRPC
    /// stream, which the client's request timeout does not bound. A late
    /// answer is taken by the next call, paired with its own send time.
    pub async fn keep_alive(
        &self,
        lease: &mut Lease,
        within: Duration,
    ) -> Result<Instant, ControlError> {
        let renew = async {
            lease.keeper.keep_alive().await.map_err(|e| self.etcd(e))?;
            lease.sent.push_back(Instant::now());
            lease.stream.message().await.map_err(|e| self.etcd(e))
        };
        let reply =
            tokio::time::timeout(within, renew)
                .await
                .map_err(|_| ControlError::Unanswered {
                    endpoint: self.endpoint.clone(),
                    after: within,
                })??;
        let sent = lease.sent.pop_front();
        match (reply, sent) {
            (Some(reply), Some(sent)) if reply.ttl() > 0 => Ok(sent),
            _ => Err(ControlError::LeaseExpired { lease: lease.id }),
        }
    }

    /// Gives `lease` up at once: its keys go now, not at expiry.
    pub async fn revoke(&self, lease: &Lease) -> Result<(), ControlError> {
        let mut client = self.client.clone();
        client
            .lease_revoke(lease.id)
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(())
    }

    /// Puts `nodes/<node>` = `incarnation` on `lease`: the node is live
    /// while the lease is.
    pub async fn register_node(
        &self,
        node: NodeId,
        incarnation: Incarnation,
        lease: &Lease,
    ) -> Result<(), ControlError> {
        let mut client = self.client.clone();
        client
            .put(
                self.node_key(node),
                incarnation.to_string(),
                Some(PutOptions::new().with_lease(lease.id)),
            )
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(())
    }

    /// The live nodes and the incarnation each one's key names.
    pub async fn live_nodes(&self) -> Result<BTreeMap<NodeId, Incarnation>, ControlError> {
        let prefix = self.nodes_prefix();
        let mut client = self.client.clone();
        let response = client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.etcd(e))?;
        let mut live = BTreeMap::new();
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let bad = || ControlError::BadNodeKey { key: key.clone() };
            let node: NodeId = key[prefix.len()..].parse().map_err(|_| bad())?;
            let incarnation: Incarnation = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            live.insert(node, incarnation);
        }
        Ok(live)
    }

    /// Deletes every key of this cluster (a test's, or a decommissioned
    /// cluster's). Returns how many keys went.
    pub async fn delete_cluster(&self) -> Result<i64, ControlError> {
        let mut client = self.client.clone();
        let response = client
            .delete(
                self.prefix.as_str(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(response.deleted())
    }

    /// Campaigns for the controller key with `lease`: `Some` while
    /// `controller` holds it (just won, or already held), `None` while
    /// another does.
    pub async fn campaign(
        &self,
        controller: &str,
        lease: &Lease,
    ) -> Result<Option<Elected>, ControlError> {
        let key = self.controller_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                controller,
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut client = self.client.clone();
        let response = client.txn(txn).await.map_err(|e| self.etcd(e))?;
        if response.succeeded() {
            let revision = response.header().map_or(0, |h| h.revision());
            return Ok(Some(Elected {
                create_revision: revision,
            }));
        }
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    if kv.value() == controller.as_bytes() && kv.lease() == lease.id {
                        return Ok(Some(Elected {
                            create_revision: kv.create_revision(),
                        }));
                    }
                }
            }
        }
        Ok(None)
    }
}
