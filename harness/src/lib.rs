//! Keel's host side: the node (embedding API: configuration, recovery,
//! engine wiring), replay, and the load generator behind `keel run`. Nothing
//! in the workspace depends on this crate.

#![forbid(unsafe_code)]

pub mod config;
pub mod load;
pub mod node;
pub mod projection;
pub mod replay;
pub mod snapshot;
pub mod snapshotter;
pub mod traffic;
