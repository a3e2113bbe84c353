//! Keel's tools: the load generator behind `keel run`, the projector
//! wired behind a node, and test fixtures (traffic), over the embedding
//! API in `keel-node` (re-exported here under the same paths). Nothing in
//! the workspace depends on this crate; hosts depend on `keel-node`.

#![forbid(unsafe_code)]

pub use keel_node::{
    config, follower, metrics, node, replay, saga, sharded, snapshot, snapshotter,
};

pub mod devcert;
pub mod load;
pub mod netbench;
pub mod projection;
pub mod repl;
pub mod sharded_load;
pub mod traffic;
