//! Keel's replication protocol, without I/O (ADR 0013).
//!
//! [`Replica`] is one member of a shard's replica set, leader or follower;
//! [`Controller`] fails a shard over when its leader's etcd lease is gone.
//! Both are state machines: they take messages, timer ticks, storage
//! completions and configuration reads, and return [`Action`]s for the
//! caller to perform (write, truncate, sync, persist the epoch, send,
//! commit, propose a configuration). etcd alone decides the configuration
//! ([`ShardConfig`]); the replicas only count acknowledgements under it.
//!
//! The same code runs under the deterministic simulator in [`sim`], which
//! drives replicas, controllers, a model etcd and a faulty network from one
//! seed and checks the safety invariants at every step.

#![forbid(unsafe_code)]

pub mod controller;
pub mod log;
pub mod message;
pub mod replica;
pub mod sim;
pub mod types;
pub mod wire;

pub use controller::{ClusterView, Controller, ControllerAction};
pub use log::EpochLog;
pub use message::{Entry, Message};
pub use replica::{
    Action, CasOutcome, ConfigProposal, FollowerProgress, ProposeError, Replica, Role, Timing,
};
pub use types::{Epoch, Incarnation, NodeId, Peer, Policy, Quorum, Seq, ShardConfig};
