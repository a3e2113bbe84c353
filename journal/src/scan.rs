//! The journal scan: walks every segment in order, hands each valid record to
//! a visitor, and classifies where the valid data ends — a clean end, a torn
//! tail (recoverable: only garbage or zeros follow), or corruption in the
//! middle (valid data follows a bad spot: never skipped, always an error).
//! Used read-only by the reader and `keel journal verify`, and by recovery
//! before the writer resumes.

use std::io;

use crate::format::{
    align_up, decode_record, HeaderError, Record, RecordError, SegmentHeader, RECORD_ALIGN,
    SEGMENT_HEADER_BYTES,
};
use crate::storage::{SegmentFile, Storage};

/// Why a journal is corrupt: always says where.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// A bad record (or a hole of zeros) where synced data must be: a later
    /// valid record vouches that this sequence had been synced.
    #[error(
        "corrupt record in segment {segment_id} at offset {offset} (expected sequence {expected_sequence}): {reason}; later records prove it had been synced, so this is not a torn tail"
    )]
    Record {
        /// Segment id.
        segment_id: u64,
        /// Byte offset in the segment.
        offset: u64,
        /// The sequence that should be here.
        expected_sequence: u64,
        /// What is wrong.
        reason: BadSpot,
    },
    /// A segment header does not decode (and data follows it).
    #[error("segment {segment_id}: bad header: {error}")]
    Header {
        /// Segment id.
        segment_id: u64,
        /// The decode error.
        error: HeaderError,
    },
    /// A header decodes but belongs elsewhere (wrong id, sequence or size).
    #[error(
        "segment {segment_id}: header says id {found_id}, first sequence {found_sequence}, expected first sequence {expected_sequence}"
    )]
    Misplaced {
        /// Segment id (file name).
        segment_id: u64,
        /// Id in the header.
        found_id: u64,
        /// First sequence in the header.
        found_sequence: u64,
        /// The sequence that should start this segment.
        expected_sequence: u64,
    },
    /// Segment ids are not contiguous.
    #[error("segment {missing} is missing (found {found} after {previous})")]
    MissingSegment {
        /// The id that should exist.
        missing: u64,
        /// The previous id.
        previous: u64,
        /// The id found instead.
        found: u64,
    },
}

/// What is wrong at a bad spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadSpot {
    /// The bytes do not decode.
    #[error("{0}")]
    Undecodable(RecordError),
    /// A record that validates but belongs elsewhere (stale, recycled or misdirected).
    #[error("record for segment {segment_id} offset {offset} sequence {sequence} found here")]
    Misplaced {
        /// Its segment id field.
        segment_id: u64,
        /// Its offset field.
        offset: u64,
        /// Its sequence.
        sequence: u64,
    },
    /// A block of zeros where data must be (a hole).
    #[error("hole of zeros")]
    Hole,
    /// A chained record whose chain hash is not the previous record's hash:
    /// the previous record was altered (or records were removed or reordered).
    #[error("tamper-evident chain broken: the previous record was altered")]
    ChainBroken,
}

/// The scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading a segment failed.
    #[error("reading segment {segment_id}: {source}")]
    Io {
        /// Segment id.
        segment_id: u64,
        /// The error.
        source: io::Error,
    },
    /// The journal is corrupt.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}

/// A torn tail: garbage after the last valid record of the last written segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Segment id.
    pub segment_id: u64,
    /// Where the valid data ends.
    pub offset: u64,
    /// End of the damaged bytes (block-aligned).
    pub end: u64,
    /// Complete-looking records lost in the torn range (best effort: 0 if unknown).
    pub bytes: u64,
}

/// One scanned segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Its header.
    pub header: SegmentHeader,
    /// Records in it.
    pub records: u64,
    /// Byte offset just past its last valid record.
    pub data_end: u64,
}

/// What a scan found.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Segments with data (or at least a header), in order.
    pub segments: Vec<SegmentSummary>,
    /// Preallocated segments never written (all zeros).
    pub unused_segments: Vec<u64>,
    /// The sequence the next record must have.
    pub next_sequence: u64,
    /// A torn tail, if one was found.
    pub torn: Option<TornTail>,
    /// BLAKE3 of the last valid record (the chain head), if any record exists.
    pub last_record_hash: Option<[u8; crate::format::CHAIN_HASH_BYTES]>,
}

impl ScanReport {
    /// Records in the journal.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
}

fn read_segment<S: Storage>(storage: &S, id: u64) -> Result<Vec<u8>, ScanError> {
    let mut bytes = Vec::new();
    read_segment_into(storage, id, &mut bytes)?;
    Ok(bytes)
}

/// Reads segment `id` into `bytes` (reusing its allocation).
fn read_segment_into<S: Storage>(
    storage: &S,
    id: u64,
    bytes: &mut Vec<u8>,
) -> Result<(), ScanError> {
    let io_err = |source| ScanError::Io {
        segment_id: id,
        source,
    };
    let size = storage.size(id).map_err(io_err)?;
    let file = storage.open(id).map_err(io_err)?;
    bytes.resize(size as usize, 0);
    file.read_at(0, bytes).map_err(io_err)
}

/// Whether any record in `bytes[from..]` validates at its own position in
/// segment `id` and vouches that sequence `expected` was already synced when
/// it was written. Such a record proves the bad spot held synced
/// (acknowledged) data: corruption. Valid records that do not vouch for it
/// are the rest of the same torn, unsynced write.
fn synced_before_later_record(bytes: &[u8], id: u64, from: usize, expected: u64) -> bool {
    let mut pos = from.next_multiple_of(RECORD_ALIGN);
    while pos + RECORD_ALIGN <= bytes.len() {
        if let Ok(r) = decode_record(&bytes[pos..]) {
            let h = &r.header;
            if h.segment_id == id && h.offset == pos as u64 && h.synced_next > expected {
                return true;
            }
        }
        pos += RECORD_ALIGN;
    }
    false
}

/// Where the records of one segment stop.
enum Stop {
    /// A zero header at a block boundary (or the segment is full).
    End(u64),
    /// Something invalid at this offset.
    Bad(u64, BadSpot),
}

/// Walks the records of one segment, visiting each valid one.
fn walk_segment(
    bytes: &[u8],
    header: &SegmentHeader,
    next_sequence: &mut u64,
    previous: &mut Vec<u8>,
    visit: &mut dyn FnMut(&Record<'_>),
) -> (u64, Stop) {
    let block = u64::from(header.block_size);
    let mut pos = block;
    let mut records = 0;
    loop {
        if pos as usize >= bytes.len() {
            return (records, Stop::End(pos));
        }
        let boundary = align_up(pos, block);
        if pos != boundary
            && bytes[pos as usize..boundary as usize]
                .iter()
                .all(|&b| b == 0)
        {
            // Padding at the end of a write: the next write starts at the next block.
            pos = boundary;
            continue;
        }
        match decode_record(&bytes[pos as usize..]) {
            Ok(r) => {
                let h = &r.header;
                if h.segment_id != header.segment_id
                    || h.offset != pos
                    || h.sequence != *next_sequence
                {
                    let spot = BadSpot::Misplaced {
                        segment_id: h.segment_id,
                        offset: h.offset,
                        sequence: h.sequence,
                    };
                    return (records, Stop::Bad(pos, spot));
                }
                if let Some(chain) = h.chain {
                    // The first record seen has no predecessor to check against.
                    if !previous.is_empty() && chain != *blake3::hash(previous).as_bytes() {
                        return (records, Stop::Bad(pos, BadSpot::ChainBroken));
                    }
                }
                visit(&r);
                previous.clear();
                previous.extend_from_slice(r.bytes);
                records += 1;
                *next_sequence += 1;
                pos += r.footprint() as u64;
            }
            Err(RecordError::Zero) if pos % block == 0 => return (records, Stop::End(pos)),
            Err(e) => return (records, Stop::Bad(pos, BadSpot::Undecodable(e))),
        }
    }
}

/// Scans the whole journal, visiting every valid record in order.
///
/// A reader thread reads segment n+1 while segment n is walked (two buffers
/// passed back and forth, reused for every segment), so the copy out of the
/// page cache or the device overlaps the checksums and the visitor's work.
pub fn scan<S: Storage>(
    storage: &S,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<ScanReport, ScanError> {
    scan_from(storage, 0, visit)
}

/// Like [`scan`], but segments holding only records below `skip_below`
/// (those a snapshot already covers) are not read: only their headers are
/// checked, for identity and sequence continuity, and their records are
/// neither verified nor visited. The segment holding `skip_below` and every
/// later one are scanned in full. `keel journal verify` still checks all.
pub fn scan_from<S: Storage>(
    storage: &S,
    skip_below: u64,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<ScanReport, ScanError> {
    let ids = storage.list().map_err(|source| ScanError::Io {
        segment_id: 0,
        source,
    })?;
    let mut scanner = Scanner {
        storage,
        ids: &ids,
        report: ScanReport::default(),
        expected_sequence: None,
        previous: Vec::with_capacity(crate::format::RECORD_BYTES_MAX),
        visit,
    };
    let skipped = skippable(storage, &ids, skip_below)?;
    for pair in skipped.windows(2) {
        scanner.report.segments.push(SegmentSummary {
            header: pair[0],
            records: pair[1].first_sequence - pair[0].first_sequence,
            data_end: 0, // not read
        });
    }
    if let Some(next) = skipped.last().filter(|_| skipped.len() > 1) {
        scanner.expected_sequence = Some(next.first_sequence);
    }
    let first = skipped.len().saturating_sub(1);
    std::thread::scope(|s| -> Result<(), ScanError> {
        let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel(1);
        let ids = &ids[first..];
        s.spawn(move || {
            for &id in ids {
                let Ok(mut bytes) = free_rx.recv() else {
                    return;
                };
                let read = read_segment_into(storage, id, &mut bytes).map(|()| bytes);
                if full_tx.send(read).is_err() {
                    return; // the scan stopped early
                }
            }
        });
        for _ in 0..2 {
            // Fails only if the reader already finished (fewer segments than buffers).
            let _ = free_tx.send(Vec::new());
        }
        for n in first..first + ids.len() {
            let bytes = full_rx
                .recv()
                .expect("the reader sends one result per segment")?;
            scanner.segment(n, &bytes)?;
            let _ = free_tx.send(bytes); // the reader may be done
        }
        Ok(())
    })?;
    let mut report = scanner.report;
    report.next_sequence = scanner.expected_sequence.unwrap_or(0);
    report.last_record_hash =
        (!scanner.previous.is_empty()).then(|| *blake3::hash(&scanner.previous).as_bytes());
    Ok(report)
}

/// The headers of the leading segments a scan from `skip_below` need not
/// read, plus the header of the first segment it must read (so the result
/// is empty or has at least two entries): segment i may be skipped when its
/// id and its successor's are consecutive, both headers decode and belong
/// there, and the successor starts at or below `skip_below`.
fn skippable<S: Storage>(
    storage: &S,
    ids: &[u64],
    skip_below: u64,
) -> Result<Vec<SegmentHeader>, ScanError> {
    let mut headers: Vec<SegmentHeader> = Vec::new();
    if skip_below == 0 {
        return Ok(headers);
    }
    for (n, &id) in ids.iter().enumerate() {
        let file = storage.open(id).map_err(|source| ScanError::Io {
            segment_id: id,
            source,
        })?;
        let mut block = [0u8; SEGMENT_HEADER_BYTES];
        file.read_at(0, &mut block)
            .map_err(|source| ScanError::Io {
                segment_id: id,
                source,
            })?;
        let Ok(header) = SegmentHeader::decode(&block) else {
            break;
        };
        let continues = headers.last().is_none_or(|prev: &SegmentHeader| {
            ids[n - 1] + 1 == id && header.first_sequence >= prev.first_sequence
        });
        if header.segment_id != id || !continues {
            break;
        }
        let past = header.first_sequence > skip_below;
        if !past {
            headers.push(header);
        }
        if past || header.first_sequence == skip_below {
            break;
        }
    }
    if headers.len() < 2 {
        headers.clear();
    }
    Ok(headers)
}

/// The scan's state while it walks segments in order.
struct Scanner<'a, S: Storage> {
    storage: &'a S,
    ids: &'a [u64],
    report: ScanReport,
    /// The sequence the next record must have (None before the first header).
    expected_sequence: Option<u64>,
    /// The last valid record's bytes (for the chain and the head hash).
    previous: Vec<u8>,
    visit: &'a mut dyn FnMut(&Record<'_>),
}

impl<S: Storage> Scanner<'_, S> {
    /// Scans segment `ids[n]`, whose contents are `bytes`.
    fn segment(&mut self, n: usize, bytes: &[u8]) -> Result<(), ScanError> {
        let id = self.ids[n];
        if n > 0 && id != self.ids[n - 1] + 1 {
            return Err(Corruption::MissingSegment {
                missing: self.ids[n - 1] + 1,
                previous: self.ids[n - 1],
                found: id,
            }
            .into());
        }
        if self.report.torn.is_some() {
            // After a torn tail only never-written segments may follow.
            if bytes.iter().any(|&b| b != 0) {
                let expected = self.expected_sequence.unwrap_or(0);
                return Err(corrupt_after_torn(&self.report, expected));
            }
            self.report.unused_segments.push(id);
            return Ok(());
        }
        let header = match SegmentHeader::decode(bytes) {
            Ok(h) => h,
            Err(HeaderError::Zero) if bytes.iter().all(|&b| b == 0) => {
                self.report.unused_segments.push(id);
                return Ok(());
            }
            Err(error) => return self.bad_header(n, bytes, error),
        };
        self.check_header(id, &header)?;
        let mut next = self.expected_sequence.expect("set by check_header");
        let (records, stop) =
            walk_segment(bytes, &header, &mut next, &mut self.previous, self.visit);
        self.expected_sequence = Some(next);
        let (data_end, bad) = match stop {
            Stop::End(end) => (end, None),
            Stop::Bad(at, spot) => (at, Some(spot)),
        };
        self.report.segments.push(SegmentSummary {
            header,
            records,
            data_end,
        });
        self.classify_end(n, &header, bytes, data_end, bad)
    }

    /// A header that does not decode: corruption if data follows, else a
    /// header block torn at a roll (nothing after it was acknowledged).
    fn bad_header(&mut self, n: usize, bytes: &[u8], error: HeaderError) -> Result<(), ScanError> {
        let id = self.ids[n];
        let expected = self.expected_sequence.unwrap_or(0);
        if self.report.unused_segments.is_empty()
            && later_data(self.storage, &self.ids[n + 1..], expected)?
        {
            return Err(Corruption::Header {
                segment_id: id,
                error,
            }
            .into());
        }
        let end = last_nonzero(bytes, 512);
        self.report.torn = Some(TornTail {
            segment_id: id,
            offset: 0,
            end,
            bytes: end,
        });
        Ok(())
    }

    /// A decoded header must belong here and continue the sequence.
    fn check_header(&mut self, id: u64, header: &SegmentHeader) -> Result<(), ScanError> {
        if !self.report.unused_segments.is_empty() {
            // A written segment after a never-written one.
            return Err(Corruption::Header {
                segment_id: id,
                error: HeaderError::Zero,
            }
            .into());
        }
        let expected = *self.expected_sequence.get_or_insert(header.first_sequence);
        if header.segment_id != id || header.first_sequence != expected {
            return Err(Corruption::Misplaced {
                segment_id: id,
                found_id: header.segment_id,
                found_sequence: header.first_sequence,
                expected_sequence: expected,
            }
            .into());
        }
        Ok(())
    }

    /// Where a segment's records stopped: a clean end, a torn tail, or
    /// corruption (a later record vouches the bad spot had been synced).
    fn classify_end(
        &mut self,
        n: usize,
        header: &SegmentHeader,
        bytes: &[u8],
        data_end: u64,
        bad: Option<BadSpot>,
    ) -> Result<(), ScanError> {
        let id = self.ids[n];
        let next = self.expected_sequence.expect("set by segment");
        let tail = &bytes[(data_end as usize).min(bytes.len())..];
        if bad.is_none() && tail.iter().all(|&b| b == 0) {
            return Ok(());
        }
        if synced_before_later_record(bytes, id, data_end as usize + 1, next)
            || later_data(self.storage, &self.ids[n + 1..], next)?
        {
            return Err(Corruption::Record {
                segment_id: id,
                offset: data_end,
                expected_sequence: next,
                reason: bad.unwrap_or(BadSpot::Hole),
            }
            .into());
        }
        let end = align_up(
            data_end + last_nonzero(tail, 1),
            u64::from(header.block_size),
        );
        self.report.torn = Some(TornTail {
            segment_id: id,
            offset: data_end,
            end,
            bytes: end - data_end,
        });
        Ok(())
    }
}

/// Offset just past the last non-zero byte of `bytes`, rounded up to `align`.
fn last_nonzero(bytes: &[u8], align: u64) -> u64 {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
    align_up(end, align)
}

/// Whether any later segment holds a valid header (a roll syncs everything
/// before it) or a record vouching that `expected` was synced.
fn later_data<S: Storage>(storage: &S, ids: &[u64], expected: u64) -> Result<bool, ScanError> {
    for &id in ids {
        let bytes = read_segment(storage, id)?;
        if SegmentHeader::decode(&bytes).is_ok()
            || synced_before_later_record(&bytes, id, 0, expected)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn corrupt_after_torn(report: &ScanReport, expected_sequence: u64) -> ScanError {
    let torn = report.torn.expect("called after a torn tail");
    Corruption::Record {
        segment_id: torn.segment_id,
        offset: torn.offset,
        expected_sequence,
        reason: BadSpot::Hole,
    }
    .into()
}
