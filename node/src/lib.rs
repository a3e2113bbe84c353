//! Keel's embedding API: a [`node::Node`] built from a [`config::NodeConfig`]
//! recovers its state (newest usable snapshot plus the journal's tail),
//! starts the engine and, when configured, a shadow-replica snapshotter. A
//! host depends on this crate alone: no CLI, no projector, no database
//! driver, no test fixtures (those are in `keel-harness`).

#![forbid(unsafe_code)]

pub mod config;
pub mod follower;
pub mod metrics;
pub mod node;
pub mod replay;
pub mod replicated;
pub mod saga;
pub mod sharded;
pub mod snapshot;
pub mod snapshotter;
