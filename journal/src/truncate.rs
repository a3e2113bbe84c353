//! `cut_from`: removes a journal's records from a sequence on, keeping
//! their bytes for audit — what a follower does with a divergent suffix
//! that a new leader's log does not hold (ADR 0013). Such records were
//! never committed, so nothing acknowledged is lost; they are kept anyway,
//! byte for byte, because an operator of a financial system wants to see
//! what was cut.
//!
//! It runs on a closed journal (no writer: it takes the storage, which
//! holds the directory's lock) and only within the last segment: a
//! divergent suffix is short (at most what was written and not yet
//! committed); a longer cut is refused, leaving the journal untouched.
//! Crash safety: the copy is written and synced first (re-running the cut
//! rewrites it). Then the records are invalidated **last first**: the block
//! holding a record's header is rewritten with everything from the record
//! on zeroed (the bytes before it unchanged), and synced, before the record
//! before it is touched. A torn write can only leave that one record valid
//! or not, so after a crash the journal ends at some record between the cut
//! point and the old end — a prefix, never a hole followed by valid records
//! (which the scan would rightly call corruption). Last, the whole cut
//! region is zeroed in one write; a crash in it leaves only bytes without a
//! valid header, a torn tail the next open repairs.

use std::io;
use std::path::{Path, PathBuf};

use crate::aligned::AlignedBuf;
use crate::reader::read_records;
use crate::scan::ScanError;
use crate::storage::{SegmentFile, Storage};

/// What a cut removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The first sequence removed.
    pub from: u64,
    /// The last sequence removed.
    pub to: u64,
    /// The segment they were in.
    pub segment_id: u64,
    /// Their bytes (records only, not padding).
    pub bytes: u64,
    /// The file holding those bytes, back to back as they were on disk.
    pub kept_in: PathBuf,
}

/// Why a cut was not made (the journal is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// The journal does not scan clean.
    #[error("cannot cut: {0}")]
    Scan(#[from] ScanError),
    /// A torn tail awaits recovery: open and close the journal first.
    #[error("cannot cut: segment {segment_id} has a torn tail at offset {offset}; open the journal once to repair it")]
    TornTail {
        /// The segment.
        segment_id: u64,
        /// Where the tear starts.
        offset: u64,
    },
    /// The records from `from` on span more than the last segment.
    #[error("cannot cut from sequence {from}: it is in segment {segment_id}, not the last segment {last_segment}")]
    AcrossSegments {
        /// The first sequence to cut.
        from: u64,
        /// The segment holding it.
        segment_id: u64,
        /// The journal's last segment.
        last_segment: u64,
    },
    /// Reading or writing failed.
    #[error("cut of segment {segment_id}: {source}")]
    Io {
        /// The segment (0: the audit copy).
        segment_id: u64,
        /// The error.
        source: io::Error,
    },
}

struct Found {
    from: u64,
    to: u64,
    segment_id: u64,
    start: u64,
    end: u64,
    bytes: Vec<u8>,
    /// Offsets of the cut records in `segment_id`, ascending.
    offsets: Vec<u64>,
    segments: Vec<u64>,
}

/// Removes every record with sequence `from` or above, keeping their
/// bytes in `divergent_dir` (created if missing) as
/// `divergent-<from>-<to>.records`. `Ok(None)`: there is no such record.
pub fn cut_from<S: Storage>(
    storage: &S,
    from: u64,
    divergent_dir: &Path,
) -> Result<Option<Cut>, CutError> {
    let Some(found) = find(storage, from)? else {
        return Ok(None);
    };
    let last_segment = found.segments.last().copied().unwrap_or(found.segment_id);
    if found.segment_id != last_segment {
        return Err(CutError::AcrossSegments {
            from,
            segment_id: found.segment_id,
            last_segment,
        });
    }
    let kept_in = keep(divergent_dir, &found).map_err(|source| CutError::Io {
        segment_id: 0,
        source,
    })?;
    invalidate_backwards(storage, &found).map_err(|source| CutError::Io {
        segment_id: found.segment_id,
        source,
    })?;
    Ok(Some(Cut {
        from: found.from,
        to: found.to,
        segment_id: found.segment_id,
        bytes: found.bytes.len() as u64,
        kept_in,
    }))
}

fn find<S: Storage>(storage: &S, from: u64) -> Result<Option<Found>, CutError> {
    let block = u64::from(storage.block_size());
    let mut found: Option<Found> = None;
    let report = read_records(storage, from, u64::MAX, &mut |r| {
        let end = r.header.offset + r.bytes.len() as u64;
        match &mut found {
            None => {
                found = Some(Found {
                    from: r.header.sequence,
                    to: r.header.sequence,
                    segment_id: r.header.segment_id,
                    start: r.header.offset,
                    end,
                    bytes: r.bytes.to_vec(),
                    offsets: vec![r.header.offset],
                    segments: Vec::new(),
                })
            }
            Some(f) => {
                f.to = r.header.sequence;
                f.bytes.extend_from_slice(r.bytes);
                if r.header.segment_id == f.segment_id {
                    f.end = end;
                    f.offsets.push(r.header.offset);
                } else {
                    // Reported as AcrossSegments below.
                    f.segments.push(r.header.segment_id);
                }
            }
        }
    })?;
    if let Some(torn) = report.torn {
        return Err(CutError::TornTail {
            segment_id: torn.segment_id,
            offset: torn.offset,
        });
    }
    if let Some(f) = &mut found {
        f.end = f.end.next_multiple_of(block);
        if let Some(last) = report.segments.last() {
            f.segments.push(last.header.segment_id);
        }
    }
    Ok(found)
}

fn keep(dir: &Path, found: &Found) -> io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("divergent-{}-{}.records", found.from, found.to));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&found.bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Invalidates the cut records last first (one synced block rewrite
/// each), then zeroes the whole cut region.
fn invalidate_backwards<S: Storage>(storage: &S, found: &Found) -> io::Result<()> {
    let block = u64::from(storage.block_size());
    let mut file = storage.open(found.segment_id)?;
    let mut one = AlignedBuf::new(block as usize, block as usize);
    for &offset in found.offsets.iter().rev() {
        let block_start = offset - offset % block;
        file.read_at(block_start, one.as_mut_slice())?;
        one.as_mut_slice()[(offset - block_start) as usize..].fill(0);
        file.write_at(block_start, one.as_slice())?;
        file.sync()?;
    }
    let first_block = found.start - found.start % block;
    let len = (found.end - first_block) as usize;
    let mut all = AlignedBuf::new(len, block as usize);
    let keep = (found.start - first_block) as usize;
    if keep > 0 {
        file.read_at(first_block, &mut all.as_mut_slice()[..keep])?;
    }
    file.write_at(first_block, all.as_slice())?;
    file.sync()
}
