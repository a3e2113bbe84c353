//! Keel's host side: the built-in demo workload and the load generator
//! behind `keel run`. Nothing in the workspace depends on this crate.

#![forbid(unsafe_code)]

pub mod demo;
pub mod load;
pub mod replay;
