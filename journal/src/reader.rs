//! Reading records back: every valid record from a sequence, in order, for
//! replay, `keel journal dump` and (later) the replicator and projector. A
//! corrupt journal stops the read with the exact location. (A tailing mode
//! that follows a live writer is not built yet.)

use crate::format::{Record, RecordMeta};
use crate::scan::{scan_from, ScanError, ScanReport};
use crate::storage::Storage;

/// A record with its payload copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Sequence.
    pub sequence: u64,
    /// Segment it is in.
    pub segment_id: u64,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Writer epoch.
    pub epoch: u32,
    /// Command fields.
    pub meta: RecordMeta,
    /// Payload.
    pub payload: Vec<u8>,
}

impl OwnedRecord {
    /// Copies a borrowed record.
    pub fn from_record(r: &Record<'_>) -> Self {
        Self {
            sequence: r.header.sequence,
            segment_id: r.header.segment_id,
            offset: r.header.offset,
            epoch: r.header.epoch,
            meta: r.header.meta,
            payload: r.payload.to_vec(),
        }
    }
}

/// Visits every record with `from <= sequence <= to`, in order. Segments
/// wholly below `from` are not read (`scan_from`: their headers are
/// checked); everything from the segment holding `from` on is verified.
pub fn read_records<S: Storage>(
    storage: &S,
    from: u64,
    to: u64,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<ScanReport, ScanError> {
    scan_from(storage, from, &mut |r| {
        if (from..=to).contains(&r.header.sequence) {
            visit(r);
        }
    })
}
