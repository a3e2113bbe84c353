//! Keel's durable journal: fixed-size preallocated segments written with
//! `O_DIRECT` (alignment from `statx`), group commit per batch, a recovery
//! scan that tells a torn tail from corruption, a reader, and a
//! fault-injecting storage for tests, and snapshot files. Format:
//! `docs/journal.md`.

pub mod aligned;
pub mod faulty;
pub mod format;
pub mod journal;
pub mod manifest;
mod prealloc;
pub mod reader;
pub mod scan;
pub mod snapshot;
pub mod storage;
mod sync_timer;
pub mod tail;
pub mod truncate;

pub use crate::faulty::{FaultConfig, FaultyStorage};
pub use crate::journal::{
    Journal, JournalConfig, JournalError, JournalStatus, Observer, OpenError, OpenReport,
    Retention, RetentionHold, ShipError, SyncPolicy, Written,
};
pub use crate::manifest::{Manifest, ManifestError};
pub use crate::reader::{read_records, OwnedRecord};
pub use crate::scan::{scan, scan_from, BadSpot, Corruption, ScanError, ScanReport, TornTail};
pub use crate::snapshot::{
    LoadedSnapshot, SnapshotDefect, SnapshotError, SnapshotHeader, SnapshotReadError, SnapshotStore,
};
pub use crate::storage::{FsStorage, IoMode, SegmentFile, Storage, StorageError};
pub use crate::tail::{JournalTail, TailError};
pub use crate::truncate::{cut_from, Cut, CutError};
