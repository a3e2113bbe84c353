//! A tailing reader: follows a live writer, handing over each new record
//! once, in order, across segment rolls. It reads bounded windows from where
//! it stopped, never re-reading the journal.
//!
//! Bound: `poll(limit)` reads only records with `sequence < limit`. In the
//! writer's process pass `JournalStatus::durable_next()`: every record below
//! it is complete on disk, so a bad one is corruption (typed error). Without
//! a bound (`u64::MAX`, e.g. from another process) a bad or half-written spot
//! ends the poll and is read again on the next one. The tail checks
//! checksums and positions, not the optional hash chain (`verify` does).

use std::io;

use crate::format::{
    align_up, decode_record, Record, RecordError, SegmentHeader, RECORD_BYTES_MAX,
    SEGMENT_HEADER_BYTES,
};
use crate::scan::{BadSpot, Corruption};
use crate::storage::{SegmentFile, Storage};

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// Reading failed.
    #[error("tailing segment {segment_id}: {source}")]
    Io {
        /// Segment id.
        segment_id: u64,
        /// The error.
        source: io::Error,
    },
    /// A record below the durable bound is bad.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}

/// Bytes read per window at most (catching up).
const WINDOW_BYTES: usize = 1 << 20;
/// Bytes read per window at first and after reaching the end of written
/// data: a follower polling an idle journal reads little; the window
/// doubles while full windows keep coming.
const WINDOW_BYTES_MIN: usize = 64 << 10;

struct Current<F> {
    header: SegmentHeader,
    file: F,
    /// Position of the next record.
    offset: u64,
}

/// Follows a journal, handing over records from `from_sequence` on.
pub struct JournalTail<'s, S: Storage> {
    storage: &'s S,
    current: Option<Current<S::File>>,
    /// Sequence of the record at the current position.
    expected: u64,
    from_sequence: u64,
    window: Vec<u8>,
    /// Bytes the next window reads (`WINDOW_BYTES_MIN..=WINDOW_BYTES`).
    window_len: usize,
    /// Where the last poll stopped on a bad spot (segment id, offset, what).
    bad_spot: Option<(u64, u64, BadSpot)>,
}

impl<S: Storage> std::fmt::Debug for JournalTail<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalTail")
            .field(
                "segment",
                &self.current.as_ref().map(|c| c.header.segment_id),
            )
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// How a walk over one window ended.
enum Stop {
    /// Read everything valid in the window; continue from the new offset.
    Refill,
    /// A zero header at a block boundary: end of written data for now.
    End,
    /// The limit was reached.
    Limit,
    /// The segment is exhausted.
    SegmentFull,
    /// A bad spot at this offset.
    Bad(u64, BadSpot),
}

/// Whether [`JournalTail::open_segment`] moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// Opened; reading continues there.
    Yes,
    /// Not there, or not started yet.
    No,
    /// It starts past the records read so far: read the current one again.
    Ahead,
}

impl<'s, S: Storage> JournalTail<'s, S> {
    /// A tail over `storage` that hands over records with `sequence >= from_sequence`.
    pub fn new(storage: &'s S, from_sequence: u64) -> Self {
        Self {
            storage,
            current: None,
            expected: 0,
            from_sequence,
            window: vec![0; WINDOW_BYTES],
            window_len: WINDOW_BYTES_MIN,
            bad_spot: None,
        }
    }

    /// Where the last poll stopped on a bad spot without handing over a
    /// record (segment id, offset, what is wrong): a write in progress, a
    /// torn tail or corruption — `scan_from` tells which.
    pub fn bad_spot(&self) -> Option<(u64, u64, BadSpot)> {
        self.bad_spot
    }

    /// Sequence of the next record to be read.
    pub fn next_sequence(&self) -> u64 {
        self.expected.max(self.from_sequence)
    }

    /// Visits every new record with `from_sequence <= sequence < limit`, in
    /// order. Returns how many were visited.
    pub fn poll(
        &mut self,
        limit: u64,
        visit: &mut dyn FnMut(&Record<'_>),
    ) -> Result<u64, TailError> {
        let mut visited = 0;
        if self.expected >= limit {
            return Ok(0); // nothing below the bound is new: no read at all
        }
        self.bad_spot = None;
        let mut reread = false;
        loop {
            if self.current.is_none() && self.open_segment(None, false)? == Opened::No {
                return Ok(visited);
            }
            match self.walk_window(limit, visit, &mut visited)? {
                Stop::Refill => self.window_len = (self.window_len * 2).min(WINDOW_BYTES),
                Stop::Limit => return Ok(visited),
                Stop::End | Stop::SegmentFull => {
                    self.window_len = WINDOW_BYTES_MIN;
                    let id = self.current.as_ref().expect("open").header.segment_id;
                    match self.open_segment(Some(id + 1), reread)? {
                        Opened::Yes => reread = false,
                        Opened::No => return Ok(visited),
                        // The next segment starts past what this poll saw of
                        // the current one: it was read before the writer's
                        // last writes to it landed (the roll synced them).
                        // Read the rest of it again; if it still ends short,
                        // `open_segment` reports the gap.
                        Opened::Ahead => reread = true,
                    }
                }
                Stop::Bad(offset, reason) => {
                    let segment_id = self.current.as_ref().expect("open").header.segment_id;
                    if visited == 0 {
                        self.bad_spot = Some((segment_id, offset, reason));
                    }
                    if self.expected < limit && limit != u64::MAX {
                        return Err(Corruption::Record {
                            segment_id,
                            offset,
                            expected_sequence: self.expected,
                            reason,
                        }
                        .into());
                    }
                    return Ok(visited);
                }
            }
        }
    }

    fn walk_window(
        &mut self,
        limit: u64,
        visit: &mut dyn FnMut(&Record<'_>),
        visited: &mut u64,
    ) -> Result<Stop, TailError> {
        let current = self.current.as_mut().expect("open");
        let header = current.header;
        let block = u64::from(header.block_size);
        let remaining = header.segment_size.saturating_sub(current.offset);
        let len = (remaining as usize).min(self.window_len);
        if len == 0 {
            return Ok(Stop::SegmentFull);
        }
        let window = &mut self.window[..len];
        current
            .file
            .read_at(current.offset, window)
            .map_err(|source| TailError::Io {
                segment_id: header.segment_id,
                source,
            })?;
        let reaches_end = len as u64 == remaining;
        let mut pos = 0usize;
        let stop = loop {
            let at = current.offset + pos as u64;
            if self.expected >= limit {
                break Stop::Limit;
            }
            if pos >= len {
                break if reaches_end {
                    Stop::SegmentFull
                } else {
                    Stop::Refill
                };
            }
            if !reaches_end && len - pos < RECORD_BYTES_MAX {
                break Stop::Refill;
            }
            let boundary = align_up(at, block);
            let to_boundary = (boundary - at) as usize;
            if to_boundary > 0
                && window[pos..(pos + to_boundary).min(len)]
                    .iter()
                    .all(|&b| b == 0)
            {
                pos += to_boundary; // padding after a write
                continue;
            }
            match decode_record(&window[pos..]) {
                Ok(r) => {
                    let h = &r.header;
                    if h.segment_id != header.segment_id
                        || h.offset != at
                        || h.sequence != self.expected
                    {
                        let spot = BadSpot::Misplaced {
                            segment_id: h.segment_id,
                            offset: h.offset,
                            sequence: h.sequence,
                        };
                        break Stop::Bad(at, spot);
                    }
                    if h.sequence >= self.from_sequence {
                        visit(&r);
                        *visited += 1;
                    }
                    self.expected += 1;
                    pos += r.footprint();
                }
                Err(RecordError::Zero) if to_boundary == 0 => break Stop::End,
                Err(e) => break Stop::Bad(at, BadSpot::Undecodable(e)),
            }
        };
        current.offset += pos as u64;
        Ok(stop)
    }

    /// Opens segment `id` (or the first one) if it exists and has a header.
    /// A next segment starting past the expected sequence is `Ahead` the
    /// first time (`reread` false) and a gap after a re-read.
    fn open_segment(&mut self, id: Option<u64>, reread: bool) -> Result<Opened, TailError> {
        let id = match id {
            Some(id) => id,
            None => match self
                .storage
                .list()
                .map_err(|source| TailError::Io {
                    segment_id: 0,
                    source,
                })?
                .first()
            {
                Some(&first) => first,
                None => return Ok(Opened::No),
            },
        };
        let Ok(file) = self.storage.open(id) else {
            return Ok(Opened::No);
        };
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        file.read_at(0, &mut bytes)
            .map_err(|source| TailError::Io {
                segment_id: id,
                source,
            })?;
        let Ok(header) = SegmentHeader::decode(&bytes) else {
            return Ok(Opened::No); // preallocated, not started yet
        };
        if self.current.is_none() {
            self.expected = header.first_sequence;
        } else if header.first_sequence > self.expected && !reread {
            return Ok(Opened::Ahead);
        } else if header.first_sequence != self.expected {
            return Err(Corruption::Misplaced {
                segment_id: id,
                found_id: header.segment_id,
                found_sequence: header.first_sequence,
                expected_sequence: self.expected,
            }
            .into());
        }
        self.current = Some(Current {
            offset: u64::from(header.block_size),
            header,
            file,
        });
        Ok(Opened::Yes)
    }
}
