//! Keel's MySQL projection sink (docs/projector.md).
//!
//! SQL is a projection of the journal, never its source of truth: rows are
//! derived by replaying the journal through the same ledger code the engine
//! runs ([`mod@derive`]), written one MySQL transaction per batch together with
//! a fenced checkpoint ([`sink`]), by a reader/writer pair that lags behind
//! the engine and never slows it ([`projector`]). [`query`] reads the
//! projection back.

#![forbid(unsafe_code)]

pub mod derive;
pub mod projector;
pub mod query;
pub mod schema;
pub mod sink;

pub use crate::derive::{Batch, Deriver};
pub use crate::projector::{
    checkpoint, rebuild, run, Bound, ProjectorConfig, ProjectorError, Status, Summary, Until,
};
pub use crate::query::{ProjectedTransfer, ProjectionReader};
pub use crate::schema::{Flavor, TableSet, SCHEMA_VERSION};
pub use crate::sink::{Checkpoint, Sink, SinkError, Timeouts};

/// The database a projector uses when none is given: `MYSQL_URL`, else the
/// local MariaDB of a development machine.
pub fn default_mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}
