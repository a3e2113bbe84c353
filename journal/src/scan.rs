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
use crate::manifest::Manifest;
use crate::storage::{SegmentFile, Storage};

/// Why a journal is corrupt: always says where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A segment file's size is not its header's (segment files never change
    /// size: it was truncated or extended from outside).
    #[error(
        "segment {segment_id}: file is {size} bytes but its header says {expected}; records past the end may be lost"
    )]
    SizeMismatch {
        /// Segment id.
        segment_id: u64,
        /// Bytes in the file.
        size: u64,
        /// `segment_size` in its header.
        expected: u64,
    },
    /// The manifest's high-water mark names a segment that is not there:
    /// the newest segment(s) were deleted.
    #[error(
        "segment {high_water} was begun (journal.manifest) but the newest segment present is {last_present:?}: the journal's tail is missing"
    )]
    MissingTail {
        /// The newest segment ever begun, per the manifest.
        high_water: u64,
        /// The newest segment present.
        last_present: Option<u64>,
    },
    /// The manifest does not decode.
    #[error("journal.manifest: {0}")]
    Manifest(#[from] crate::manifest::ManifestError),
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// The manifest (None: a journal written before manifests existed, or none yet).
    pub manifest: Option<Manifest>,
    /// Segments whose header block was damaged while their records were
    /// intact: the header is rebuilt from the records (a writer rewrites it).
    pub damaged_headers: Vec<SegmentHeader>,
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
    /// The last valid record's XXH3 checksum, if any record was read.
    pub last_record_checksum: Option<u64>,
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
    from: u64,
    next_sequence: &mut u64,
    previous: &mut Vec<u8>,
    visit: &mut dyn FnMut(&Record<'_>),
) -> (u64, Stop) {
    let block = u64::from(header.block_size);
    let mut pos = from;
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
            Err(RecordError::Zero) if pos.is_multiple_of(block) => {
                return (records, Stop::End(pos))
            }
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
    let io0 = |source| ScanError::Io {
        segment_id: 0,
        source,
    };
    let ids = storage.list().map_err(io0)?;
    let manifest = match storage.read_manifest().map_err(io0)? {
        Some(bytes) => Some(Manifest::decode(&bytes).map_err(Corruption::from)?),
        None => None,
    };
    let mut scanner = Scanner {
        storage,
        ids: &ids,
        report: ScanReport {
            manifest,
            ..ScanReport::default()
        },
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
    if let Some(m) = &report.manifest {
        if ids.last().is_none_or(|&last| last < m.last_segment) {
            return Err(Corruption::MissingTail {
                high_water: m.last_segment,
                last_present: ids.last().copied(),
            }
            .into());
        }
    }
    report.next_sequence = scanner.expected_sequence.unwrap_or(0);
    report.last_record_checksum = scanner
        .previous
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
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

/// How a segment's records ended.
enum End {
    /// Zeros after the last record.
    Clean,
    /// Garbage or zeros that nothing later vouches for: an unsynced write.
    Torn(TornTail),
    /// A bad spot a later record (or segment header) proves had been synced.
    Corrupt(Corruption),
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
        if self.report.torn.is_some() && bytes.iter().any(|&b| b != 0) {
            // After a torn tail only never-written segments may follow. A
            // reader of a live journal may have read the previous segment
            // while a write was in flight: read it again first.
            self.resume_previous(n)?;
        }
        if self.report.torn.is_some() {
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
            Err(error) => match self.rebuild_header(id, bytes) {
                Some(h) => {
                    self.report.damaged_headers.push(h);
                    h
                }
                None => return self.bad_header(n, bytes, error),
            },
        };
        self.check_header(n, &header)?;
        if bytes.len() as u64 != header.segment_size {
            return Err(Corruption::SizeMismatch {
                segment_id: id,
                size: bytes.len() as u64,
                expected: header.segment_size,
            }
            .into());
        }
        self.report.segments.push(SegmentSummary {
            header,
            records: 0,
            data_end: u64::from(header.block_size),
        });
        let mut fresh: Option<Vec<u8>> = None;
        loop {
            let bytes = fresh.as_deref().unwrap_or(bytes);
            match self.walk_and_classify(n, bytes)? {
                End::Clean => return Ok(()),
                End::Torn(torn) => {
                    self.report.torn = Some(torn);
                    return Ok(());
                }
                // A reader of a live journal copies a segment front to back
                // while the writer appends: a write still in flight when its
                // bytes were copied, followed by a later write copied after it
                // landed, looks like a synced hole. The later write proves the
                // earlier one completed, so a fresh read shows it; corruption
                // is reported only if the fresh bytes are bad too.
                End::Corrupt(c) if fresh.is_some() => return Err(c.into()),
                End::Corrupt(_) => fresh = Some(read_segment(self.storage, id)?),
            }
        }
    }

    /// Walks segment `ids[n]` on from where its summary stopped, then says
    /// how its records end.
    fn walk_and_classify(&mut self, n: usize, bytes: &[u8]) -> Result<End, ScanError> {
        let summary = *self.report.segments.last().expect("pushed by the caller");
        let mut next = self.expected_sequence.expect("set by check_header");
        let (records, stop) = walk_segment(
            bytes,
            &summary.header,
            summary.data_end,
            &mut next,
            &mut self.previous,
            self.visit,
        );
        self.expected_sequence = Some(next);
        let (data_end, bad) = match stop {
            Stop::End(end) => (end, None),
            Stop::Bad(at, spot) => (at, Some(spot)),
        };
        let last = self.report.segments.last_mut().expect("pushed");
        last.records += records;
        last.data_end = data_end;
        self.classify_end(n, &summary.header, bytes, data_end, bad)
    }

    /// Reads segment `ids[n - 1]` again and walks on from where it seemed to
    /// end (a live writer had appended since), clearing a torn tail found
    /// there; corruption in it is then reported as usual.
    fn resume_previous(&mut self, n: usize) -> Result<(), ScanError> {
        let Some(previous) = n.checked_sub(1) else {
            return Ok(());
        };
        let Some(last) = self.report.segments.last() else {
            return Ok(());
        };
        if last.header.segment_id != self.ids[previous] || last.data_end == 0 {
            return Ok(()); // not read by this scan (skipped below a snapshot)
        }
        self.report.torn = None;
        let bytes = read_segment(self.storage, self.ids[previous])?;
        match self.walk_and_classify(previous, &bytes)? {
            End::Clean => Ok(()),
            End::Torn(torn) => {
                self.report.torn = Some(torn);
                Ok(())
            }
            End::Corrupt(c) => Err(c.into()),
        }
    }

    /// A segment whose header block does not decode but whose first record
    /// validates at its own position: the header is redundant with the
    /// records (id, offset, sequence, epoch), so it is rebuilt from them
    /// and nothing is dropped. `None` if no record starts the segment.
    fn rebuild_header(&self, id: u64, bytes: &[u8]) -> Option<SegmentHeader> {
        let manifest = self.report.manifest.as_ref();
        let candidates = [
            manifest.map(|m| m.block_size),
            Some(self.storage.block_size()),
        ];
        candidates.into_iter().flatten().find_map(|block| {
            let r = decode_record(bytes.get(block as usize..)?).ok()?;
            let h = &r.header;
            let starts_here = h.segment_id == id && h.offset == u64::from(block);
            let continues = self.expected_sequence.is_none_or(|e| e == h.sequence);
            (starts_here && continues).then_some(SegmentHeader {
                block_size: block,
                segment_id: id,
                first_sequence: h.sequence,
                epoch: h.epoch,
                segment_size: manifest.map_or(bytes.len() as u64, |m| m.segment_size),
            })
        })
    }

    /// A header that does not decode and no record to rebuild it from:
    /// corruption if data follows (in this segment or later), else a header
    /// block torn at a roll (nothing after it was acknowledged).
    fn bad_header(&mut self, n: usize, bytes: &[u8], error: HeaderError) -> Result<(), ScanError> {
        let id = self.ids[n];
        let expected = self.expected_sequence.unwrap_or(0);
        let records_here = any_record_of(bytes, id);
        if records_here
            || (self.report.unused_segments.is_empty()
                && later_data(self.storage, &self.ids[n + 1..], expected)?)
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
    fn check_header(&mut self, n: usize, header: &SegmentHeader) -> Result<(), ScanError> {
        let id = self.ids[n];
        if !self.report.unused_segments.is_empty() {
            // A written segment after a never-written one.
            return Err(Corruption::Header {
                segment_id: id,
                error: HeaderError::Zero,
            }
            .into());
        }
        if self
            .expected_sequence
            .is_some_and(|e| header.first_sequence > e)
        {
            // The previous segment may have been read before its last writes.
            self.resume_previous(n)?;
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
    ) -> Result<End, ScanError> {
        let id = self.ids[n];
        let next = self.expected_sequence.expect("set by segment");
        let tail = &bytes[(data_end as usize).min(bytes.len())..];
        if bad.is_none() && tail.iter().all(|&b| b == 0) {
            return Ok(End::Clean);
        }
        if synced_before_later_record(bytes, id, data_end as usize + 1, next)
            || later_data(self.storage, &self.ids[n + 1..], next)?
        {
            return Ok(End::Corrupt(Corruption::Record {
                segment_id: id,
                offset: data_end,
                expected_sequence: next,
                reason: bad.unwrap_or(BadSpot::Hole),
            }));
        }
        let end = align_up(
            data_end + last_nonzero(tail, 1),
            u64::from(header.block_size),
        );
        Ok(End::Torn(TornTail {
            segment_id: id,
            offset: data_end,
            end,
            bytes: end - data_end,
        }))
    }
}

/// Whether any record in `bytes` validates at its own position in segment `id`.
fn any_record_of(bytes: &[u8], id: u64) -> bool {
    (RECORD_ALIGN..bytes.len())
        .step_by(RECORD_ALIGN)
        .any(|pos| {
            decode_record(&bytes[pos..])
                .is_ok_and(|r| r.header.segment_id == id && r.header.offset == pos as u64)
        })
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
