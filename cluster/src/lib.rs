//! Keel's replication control plane in etcd (ADR 0013).
//!
//! [`EtcdControl`] is the only code that reads or writes Keel's keys:
//! shard configurations ([`keel_replication::ShardConfig`], JSON, written
//! only by compare-and-swap on their revision), node keys on leases
//! (`nodes/<id>` = incarnation) and the controller election key. Fencing
//! never rests on an etcd lock: every write compares a revision, and the
//! epochs in the configuration fence the data path.
//!
//! Key layout under `/keel/v1/<cluster>/`: `shard/<s>/config`,
//! `nodes/<id>`, `controller`.

#![forbid(unsafe_code)]

mod control;
mod encoding;
pub mod member;
pub mod metrics;
pub mod transport;

pub use control::{ConfigWatch, ControlError, Elected, EtcdControl, Lease};
pub use encoding::{ConfigProblem, DecodeError};
