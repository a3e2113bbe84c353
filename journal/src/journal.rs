//! The journal writer: recovery on open, then the journaller stage. Each
//! batch is copied into one pre-allocated aligned buffer and written with one
//! `pwrite` padded to the block size at `end_of_batch` (group commit), then
//! synced per policy; the durable sequence is published only after that.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_core::{CommandRef, Journaller, StageError};

use crate::aligned::AlignedBuf;
use crate::format::{
    align_up, encode_record, record_footprint_with, RecordHeader, RecordMeta, SegmentHeader,
    CHAIN_HASH_BYTES, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::manifest::Manifest;
use crate::prealloc::Preallocator;
use crate::scan::{ScanError, ScanReport, TornTail};
use crate::storage::{SegmentFile, Storage};
use crate::sync_timer::SyncTimer;

/// When the journaller makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every batch is durable before the BLP sees it (group commit).
    Sync,
    /// Written to the OS per batch; synced at the first batch end at least
    /// this long after the previous sync, and by a background timer at most
    /// this long after a write when the journal is idle.
    Async(Duration),
    /// Written to the OS only.
    None,
}

/// Which segments to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Never delete.
    KeepAll,
    /// Keep the newest N segments (N ≥ 2).
    KeepSegments(usize),
    /// Delete segments wholly below the sequence released through
    /// [`JournalStatus::release_below`] (the oldest snapshot kept), at rolls.
    CoveredBySnapshots,
}

/// Journal configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Bytes per segment file (a multiple of the block size).
    pub segment_size: u64,
    /// Bytes of the pre-allocated write buffer (one group-commit write at most).
    pub write_buffer_bytes: usize,
    /// Sync policy.
    pub sync: SyncPolicy,
    /// Writer epoch stamped into every record and header.
    pub epoch: u32,
    /// Segment retention.
    pub retention: Retention,
    /// Tamper-evident chain: every record carries the BLAKE3 hash of the
    /// previous record (32 more bytes each, one hash per record).
    pub chain: bool,
    /// The host's format settings, stored in the manifest when the journal
    /// is created (e.g. the ledger's capacities): readers of the journal
    /// must use the same. Opaque to the journal; at most 1 KiB.
    pub settings: Vec<u8>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            write_buffer_bytes: 1 << 20,
            sync: SyncPolicy::Sync,
            epoch: 1,
            retention: Retention::KeepAll,
            chain: false,
            settings: Vec::new(),
        }
    }
}

/// Why the journal could not open for writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The scan failed or found corruption (refuses to write until an operator acts).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Repairing the torn tail or creating the first segment failed.
    #[error("journal open: segment {segment_id}: {source}")]
    Io {
        /// Segment id.
        segment_id: u64,
        /// The error.
        source: io::Error,
    },
    /// A setting that is part of the on-disk format differs from the
    /// journal's (its manifest): the journal keeps the one it was made with.
    #[error(
        "journal config `{option}` is {configured} but the journal was created with {on_disk}; \
         format settings cannot change between restarts"
    )]
    FormatMismatch {
        /// The option.
        option: &'static str,
        /// The journal's value.
        on_disk: String,
        /// The configured value.
        configured: String,
    },
    /// A configuration value is out of range.
    #[error("journal config `{option}`: {expected}")]
    Config {
        /// The option.
        option: &'static str,
        /// What is expected.
        expected: &'static str,
    },
}

/// A write-path failure: fail-stop, says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// `pwrite` failed.
    #[error(
        "journal write failed: segment {segment_id} offset {offset} ({bytes} bytes): {source}"
    )]
    Write {
        /// Segment id.
        segment_id: u64,
        /// Offset.
        offset: u64,
        /// Bytes in the write.
        bytes: usize,
        /// The error.
        source: io::Error,
    },
    /// `fdatasync` failed: nothing since the last good sync is durable.
    #[error(
        "journal sync failed: segment {segment_id} (last durable sequence {durable:?}): {source}"
    )]
    Sync {
        /// Segment id.
        segment_id: u64,
        /// Last sequence known durable.
        durable: Option<u64>,
        /// The error.
        source: io::Error,
    },
    /// The disk stayed full and the host gave up waiting (shutdown).
    #[error("journal out of space: segment {segment_id} could not be created; gave up waiting at shutdown")]
    OutOfSpace {
        /// The segment that could not be created.
        segment_id: u64,
    },
    /// Creating the next segment failed with something other than "no space".
    #[error("creating segment {segment_id}: {source}")]
    Roll {
        /// Segment id.
        segment_id: u64,
        /// The error.
        source: io::Error,
    },
    /// The engine handed a sequence other than the journal's next one.
    #[error("sequence {got} handed to the journal, expected {expected}")]
    SequenceMismatch {
        /// Expected.
        expected: u64,
        /// Received.
        got: u64,
    },
}

/// What open found and did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The scan.
    pub scan: ScanReport,
    /// The torn tail that was zeroed, if any.
    pub truncated: Option<TornTail>,
    /// Segments whose damaged header was rewritten from their records.
    pub repaired_headers: Vec<u64>,
}

/// Readable from any thread: the highest written and synced sequences and
/// whether the writer is waiting for disk space.
#[derive(Debug, Clone, Default)]
pub struct JournalStatus {
    /// One past the last sequence written to the OS (the BLP may run it).
    written_next: Arc<AtomicU64>,
    /// One past the last sequence known synced (survives a power cut).
    durable_next: Arc<AtomicU64>,
    /// When the writer began waiting for space (ns since the Unix epoch; 0: not waiting).
    out_of_space_since_ns: Arc<AtomicU64>,
    /// Set by the host at shutdown: a writer waiting for space gives up.
    abandon: Arc<AtomicBool>,
    out_of_space: Arc<AtomicBool>,
    prepared_segment: Arc<AtomicU64>,
    segment_id: Arc<AtomicU64>,
    released_below: Arc<AtomicU64>,
    holds: Holds,
}

/// Live retention holds: (id, the sequence the holder still needs).
type Holds = Arc<Mutex<Vec<(u64, Arc<AtomicU64>)>>>;

/// A reader's claim on the journal: while it lives, retention deletes no
/// segment holding a record at or above the sequence it points at (e.g. a
/// projector's checkpoint). Dropping it lifts the claim.
#[derive(Debug)]
pub struct RetentionHold {
    id: u64,
    holds: Holds,
}

impl Drop for RetentionHold {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|(id, _)| *id != self.id);
    }
}

impl JournalStatus {
    /// Keeps every segment with records at or above `*needed_from` (read at
    /// each roll; the holder advances it) until the hold is dropped.
    pub fn hold(&self, needed_from: Arc<AtomicU64>) -> RetentionHold {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.push((id, needed_from));
        RetentionHold {
            id,
            holds: Arc::clone(&self.holds),
        }
    }

    /// The lowest sequence a live hold still needs (`u64::MAX`: none).
    pub fn held_from(&self) -> u64 {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds
            .iter()
            .map(|(_, at)| at.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Declares every record below `sequence` covered by a retained snapshot:
    /// with `Retention::CoveredBySnapshots` the writer deletes the segments
    /// wholly below it at its next roll. Never moves backwards.
    pub fn release_below(&self, sequence: u64) {
        self.released_below.fetch_max(sequence, Ordering::AcqRel);
    }

    /// The sequence released so far (0: nothing).
    pub fn released_below(&self) -> u64 {
        self.released_below.load(Ordering::Acquire)
    }

    /// One past the highest sequence synced to stable storage (0: none):
    /// what survives a power cut. Under `sync` it equals
    /// [`JournalStatus::written_next`] at every batch end; under `async` it
    /// trails it by at most the interval; under `os` it moves at segment
    /// rolls and at a clean shutdown. Snapshots and projections must not
    /// pass it (they would be ahead of the journal after a power cut).
    pub fn durable_next(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire)
    }

    /// One past the highest sequence written to the OS (the engine may
    /// apply and acknowledge up to it under `async` and `os`).
    pub fn written_next(&self) -> u64 {
        self.written_next.load(Ordering::Acquire)
    }

    /// How long the writer has been waiting for disk space, if it is.
    pub fn out_of_space_for(&self) -> Option<Duration> {
        let since = self.out_of_space_since_ns.load(Ordering::Acquire);
        (since != 0).then(|| Duration::from_nanos(now_ns().saturating_sub(since)))
    }

    /// Tells a writer waiting for disk space to give up (shutdown): its
    /// batch fails with [`JournalError::OutOfSpace`], nothing more is
    /// acknowledged, and the engine stops instead of waiting forever.
    pub fn abandon_waits(&self) {
        self.abandon.store(true, Ordering::Release);
    }
    /// True while a segment roll waits for disk space (commands back up; submitters get `Busy`).
    pub fn out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Acquire)
    }

    /// Whether the segment after the current one is already preallocated.
    pub fn spare_ready(&self) -> bool {
        self.prepared_segment.load(Ordering::Acquire) > self.segment_id.load(Ordering::Acquire)
    }
}

/// The journal, open for writing; the engine's journaller stage.
pub struct Journal<S: Storage> {
    storage: Arc<S>,
    config: JournalConfig,
    block: u64,
    segment: S::File,
    segment_id: u64,
    /// The current segment's size (its header's; new segments: the manifest's).
    segment_size: u64,
    /// The manifest as last written (its `last_segment` moves at rolls).
    manifest: Manifest,
    /// Next write position in the segment (block-aligned, never written before).
    write_offset: u64,
    buf: AlignedBuf,
    /// Bytes of records in `buf` not yet written.
    buf_len: usize,
    next_sequence: u64,
    /// One past the last sequence made durable by a successful sync.
    synced_next: u64,
    /// BLAKE3 of the last record written (zeros before the first): the next
    /// chained record carries it.
    last_hash: [u8; CHAIN_HASH_BYTES],
    /// XXH3 checksum of the last record appended (0: none known), which a
    /// snapshot of the state up to here records.
    last_checksum: u64,
    unsynced: bool,
    last_sync: Instant,
    /// Live segments, oldest first: (id, first sequence).
    segments: VecDeque<(u64, u64)>,
    prealloc: Preallocator<S>,
    /// The `async(interval)` background sync (None under other policies).
    timer: Option<SyncTimer>,
    status: JournalStatus,
    /// Sees every write as it lands (a replication leader's shipper).
    observer: Option<Observer>,
}

/// What [`Journal::set_observer`] installs.
pub type Observer = Box<dyn FnMut(Written<'_>) + Send>;

/// One write the journal made: a whole group commit (records padded to the
/// block) or a new segment's header block, at its position. A follower
/// that writes the same bytes at the same place (`Journal::write_shipped`)
/// has a byte-identical journal.
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    /// The segment written.
    pub segment_id: u64,
    /// The offset (0: the segment's header block).
    pub offset: u64,
    /// The bytes, block-aligned in length.
    pub bytes: &'a [u8],
}

/// A shipped write a follower cannot take as its next one.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Not where this journal writes next.
    #[error("shipped write at segment {segment_id} offset {offset}; this journal writes next at segment {expected_segment} offset {expected_offset}")]
    Position {
        /// Where the write was for.
        segment_id: u64,
        /// Its offset.
        offset: u64,
        /// This journal's current segment.
        expected_segment: u64,
        /// Its next write offset.
        expected_offset: u64,
    },
    /// A header block that is not a segment header.
    #[error("shipped header of segment {segment_id}: {source}")]
    Header {
        /// The segment it was for.
        segment_id: u64,
        /// Why it did not decode.
        source: crate::format::HeaderError,
    },
    /// A segment header this journal would not write at its next roll.
    #[error("shipped header of segment {segment_id} begins at sequence {first_sequence} with block {block_size}; this journal is at {expected_sequence} with block {expected_block}")]
    HeaderMismatch {
        /// The segment.
        segment_id: u64,
        /// The header's first sequence.
        first_sequence: u64,
        /// Its block size.
        block_size: u32,
        /// This journal's next sequence.
        expected_sequence: u64,
        /// This journal's block size.
        expected_block: u64,
    },
    /// Not a whole number of blocks, larger than a group commit, or past
    /// the segment's end.
    #[error("shipped write of {len} bytes at segment {segment_id} offset {offset} is not a group commit that fits")]
    Size {
        /// The segment.
        segment_id: u64,
        /// The offset.
        offset: u64,
        /// Its length.
        len: usize,
    },
    /// Bytes at `offset` are not a valid record.
    #[error("shipped write: segment {segment_id} offset {offset}: {source}")]
    Record {
        /// The segment.
        segment_id: u64,
        /// Where the bad record starts.
        offset: u64,
        /// Why it is not a record.
        source: crate::format::RecordError,
    },
    /// A valid record that does not continue this journal where it stands.
    #[error("shipped record {sequence} claims segment {claimed_segment} offset {claimed_offset}; sequence {expected_sequence} belongs at segment {segment_id} offset {offset}")]
    Misplaced {
        /// The record's sequence.
        sequence: u64,
        /// The segment its header names.
        claimed_segment: u64,
        /// The offset its header names.
        claimed_offset: u64,
        /// The sequence expected there.
        expected_sequence: u64,
        /// Where it was shipped.
        segment_id: u64,
        /// The offset it was shipped at.
        offset: u64,
    },
    /// A record whose chain hash is not its predecessor's.
    #[error("shipped record {sequence} does not chain to its predecessor")]
    Unchained {
        /// The record.
        sequence: u64,
    },
    /// Writing, syncing or rolling failed (fail-stop, as for the leader).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl<S: Storage> std::fmt::Debug for Journal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("segment_id", &self.segment_id)
            .field("write_offset", &self.write_offset)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Journal<S> {
    /// Recovers the journal in `storage` (zeroing a torn tail, refusing on
    /// corruption) and opens it for appending.
    pub fn open(storage: S, config: JournalConfig) -> Result<(Self, OpenReport), OpenError> {
        Self::open_replaying(storage, config, &mut |_| {})
    }

    /// Like [`Journal::open`], handing every valid record to `visit` during
    /// the recovery scan, so a host rebuilds its state in the same pass.
    /// Records past a torn tail are never visited.
    pub fn open_replaying(
        storage: S,
        config: JournalConfig,
        visit: &mut dyn FnMut(&crate::format::Record<'_>),
    ) -> Result<(Self, OpenReport), OpenError> {
        Self::open_replaying_from(storage, config, 0, visit)
    }

    /// Like [`Journal::open_replaying`] for a host that already holds every
    /// record below `skip_below` (a snapshot): segments wholly below it are
    /// not read (`scan::scan_from`), so recovery costs the tail, not history.
    pub fn open_replaying_from(
        storage: S,
        config: JournalConfig,
        skip_below: u64,
        visit: &mut dyn FnMut(&crate::format::Record<'_>),
    ) -> Result<(Self, OpenReport), OpenError> {
        let block = u64::from(storage.block_size());
        check_config(&config, block)?;
        let report = crate::scan::scan_from(&storage, skip_below, visit)?;
        let mut manifest = settle_manifest(&config, &report)?;
        if let Some(torn) = report.torn {
            zero_range(&storage, torn, block)?;
        }
        let mut repaired_headers = Vec::new();
        for header in &report.damaged_headers {
            let io_err = |source| OpenError::Io {
                segment_id: header.segment_id,
                source,
            };
            let mut file = storage.open(header.segment_id).map_err(io_err)?;
            write_header(&mut file, header).map_err(io_err)?;
            repaired_headers.push(header.segment_id);
        }
        let storage = Arc::new(storage);
        let last = report.segments.last().copied();
        // Continue the last segment, or begin a new one (a new journal, or
        // the last segment was written with another block size).
        let continued = last.filter(|s| u64::from(s.header.block_size) == block);
        let segment_id = match (continued, last) {
            (Some(s), _) => s.header.segment_id,
            (None, Some(s)) => s.header.segment_id + 1,
            (None, None) => report.unused_segments.first().copied().unwrap_or(1),
        };
        let next_sequence = report.next_sequence;
        let io_err = |source| OpenError::Io { segment_id, source };
        // A new segment's file exists before the manifest names it, and the
        // manifest names it before it holds anything: a crash in between
        // leaves neither a missing segment nor an unnamed one with records.
        let new_file = match continued {
            Some(_) => None,
            None => {
                Some(create_or_open(&*storage, segment_id, manifest.segment_size).map_err(io_err)?)
            }
        };
        manifest.last_segment = manifest.last_segment.max(segment_id);
        manifest.block_size = block as u32;
        if report.manifest.as_ref() != Some(&manifest) {
            storage.write_manifest(&manifest.encode()).map_err(io_err)?;
        }
        let (segment, write_offset, segment_size) = match (continued, new_file) {
            (Some(s), _) => {
                let file = storage.open(segment_id).map_err(io_err)?;
                (file, align_up(s.data_end, block), s.header.segment_size)
            }
            (None, file) => {
                let mut file = file.expect("created above");
                let header = SegmentHeader {
                    block_size: block as u32,
                    segment_id,
                    first_sequence: next_sequence,
                    epoch: config.epoch,
                    segment_size: manifest.segment_size,
                };
                write_header(&mut file, &header).map_err(io_err)?;
                (file, block, manifest.segment_size)
            }
        };
        let mut segments: VecDeque<(u64, u64)> = report
            .segments
            .iter()
            .map(|s| (s.header.segment_id, s.header.first_sequence))
            .collect();
        if segments.back().map(|s| s.0) != Some(segment_id) {
            segments.push_back((segment_id, next_sequence));
        }
        let prealloc =
            Preallocator::start(Arc::clone(&storage), config.segment_size, segment_id + 1);
        let status = JournalStatus {
            prepared_segment: prealloc.prepared(),
            ..JournalStatus::default()
        };
        status.durable_next.store(next_sequence, Ordering::Release);
        status.written_next.store(next_sequence, Ordering::Release);
        status.segment_id.store(segment_id, Ordering::Release);
        let timer = match config.sync {
            SyncPolicy::Async(interval) => Some(SyncTimer::start(
                Arc::clone(&storage),
                interval,
                Arc::clone(&status.durable_next),
            )),
            _ => None,
        };
        let journal = Self {
            buf: AlignedBuf::new(config.write_buffer_bytes, block as usize),
            storage,
            block,
            segment,
            segment_id,
            segment_size,
            write_offset,
            manifest,
            buf_len: 0,
            next_sequence,
            synced_next: next_sequence,
            last_hash: report.last_record_hash.unwrap_or([0; CHAIN_HASH_BYTES]),
            last_checksum: report.last_record_checksum.unwrap_or(0),
            unsynced: false,
            last_sync: Instant::now(),
            segments,
            prealloc,
            timer,
            status,
            config,
            observer: None,
        };
        let truncated = report.torn;
        Ok((
            journal,
            OpenReport {
                scan: report,
                truncated,
                repaired_headers,
            },
        ))
    }

    /// The sequence the next appended command must have (the engine's `first_sequence`).
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// A status handle readable from other threads.
    pub fn status(&self) -> JournalStatus {
        self.status.clone()
    }

    /// The segment currently written.
    pub fn segment_id(&self) -> u64 {
        self.segment_id
    }

    /// The XXH3 checksum of the last record appended or recovered (0: none
    /// known): a snapshot of the state up to here records it.
    pub fn last_record_checksum(&self) -> u64 {
        self.last_checksum
    }

    /// The manifest: the journal's identity and format settings.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The storage (e.g. to read its counters).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Hands every write from now on to `observe`, on the journaller's
    /// thread, right after it lands (before its sync): a replication
    /// leader ships these bytes. It must not block for long.
    pub fn set_observer(&mut self, observe: Observer) {
        self.observer = Some(observe);
    }

    /// A follower's write of what its leader's journal wrote: a whole group
    /// commit at this journal's next write offset, or the next segment's
    /// header block (offset 0), which rolls. The records must continue
    /// this journal (sequence, position, chain) — checked before anything
    /// is written — and the bytes are written as they are, so the two
    /// journals stay byte-identical. Synced per the sync policy, like a
    /// group commit.
    pub fn write_shipped(&mut self, write: Written<'_>) -> Result<(), ShipError> {
        assert_eq!(
            self.buf_len, 0,
            "a following journal appends nothing itself"
        );
        if write.offset == 0 && write.segment_id == self.segment_id + 1 {
            let header =
                SegmentHeader::decode(write.bytes).map_err(|source| ShipError::Header {
                    segment_id: write.segment_id,
                    source,
                })?;
            if header.first_sequence != self.next_sequence
                || u64::from(header.block_size) != self.block
            {
                return Err(ShipError::HeaderMismatch {
                    segment_id: write.segment_id,
                    first_sequence: header.first_sequence,
                    block_size: header.block_size,
                    expected_sequence: self.next_sequence,
                    expected_block: self.block,
                });
            }
            self.roll_with_epoch(header.epoch)?;
            return Ok(());
        }
        if write.segment_id != self.segment_id || write.offset != self.write_offset {
            return Err(ShipError::Position {
                segment_id: write.segment_id,
                offset: write.offset,
                expected_segment: self.segment_id,
                expected_offset: self.write_offset,
            });
        }
        let len = write.bytes.len();
        if len == 0
            || !(len as u64).is_multiple_of(self.block)
            || len > self.buf.capacity()
            || self.write_offset + len as u64 > self.segment_size
        {
            return Err(ShipError::Size {
                segment_id: write.segment_id,
                offset: write.offset,
                len,
            });
        }
        let (next, last_hash, last_checksum) = self.check_shipped(write)?;
        // Direct I/O needs an aligned source: the journal's own buffer.
        self.buf.as_mut_slice()[..len].copy_from_slice(write.bytes);
        self.segment
            .write_at(self.write_offset, &self.buf.as_slice()[..len])
            .map_err(|source| JournalError::Write {
                segment_id: self.segment_id,
                offset: self.write_offset,
                bytes: len,
                source,
            })?;
        self.write_offset += len as u64;
        self.unsynced = true;
        self.next_sequence = next;
        self.last_hash = last_hash;
        self.last_checksum = last_checksum;
        self.sync()?;
        self.publish_written();
        Ok(())
    }

    /// The records of a shipped group: contiguous from this journal's next
    /// sequence, each at its own position, chained if this journal chains,
    /// then only zeros. Returns the next sequence, last hash and checksum.
    fn check_shipped(
        &self,
        write: Written<'_>,
    ) -> Result<(u64, [u8; CHAIN_HASH_BYTES], u64), ShipError> {
        let mut next = self.next_sequence;
        let mut last_hash = self.last_hash;
        let mut last_checksum = self.last_checksum;
        let mut at = 0usize;
        while at < write.bytes.len() {
            let rest = &write.bytes[at..];
            let record = match crate::format::decode_record(rest) {
                Ok(record) => record,
                Err(_) if rest.iter().all(|&b| b == 0) && next > self.next_sequence => break,
                Err(source) => {
                    return Err(ShipError::Record {
                        segment_id: write.segment_id,
                        offset: write.offset + at as u64,
                        source,
                    })
                }
            };
            let h = &record.header;
            if h.sequence != next
                || h.segment_id != write.segment_id
                || h.offset != write.offset + at as u64
            {
                return Err(ShipError::Misplaced {
                    sequence: h.sequence,
                    claimed_segment: h.segment_id,
                    claimed_offset: h.offset,
                    expected_sequence: next,
                    segment_id: write.segment_id,
                    offset: write.offset + at as u64,
                });
            }
            if self.config.chain {
                if h.chain != Some(last_hash) {
                    return Err(ShipError::Unchained { sequence: next });
                }
                last_hash = *blake3::hash(record.bytes).as_bytes();
            }
            last_checksum = record.checksum();
            next += 1;
            at += record
                .bytes
                .len()
                .next_multiple_of(crate::format::RECORD_ALIGN);
        }
        Ok((next, last_hash, last_checksum))
    }

    /// Writes and syncs everything appended so far, whatever the policy
    /// (a clean shutdown under `async` or `os`), and publishes it durable.
    pub fn sync_all(&mut self) -> Result<(), JournalError> {
        self.write_buffer()?;
        self.sync_now()?;
        self.publish_written();
        Ok(())
    }

    fn publish_written(&self) {
        self.status
            .written_next
            .store(self.next_sequence, Ordering::Release);
    }

    fn write_buffer(&mut self) -> Result<(), JournalError> {
        if self.buf_len == 0 {
            return Ok(());
        }
        let padded = align_up(self.buf_len as u64, self.block) as usize;
        self.buf.as_mut_slice()[self.buf_len..padded].fill(0);
        let data = &self.buf.as_slice()[..padded];
        self.segment
            .write_at(self.write_offset, data)
            .map_err(|source| JournalError::Write {
                segment_id: self.segment_id,
                offset: self.write_offset,
                bytes: padded,
                source,
            })?;
        if let Some(observe) = &mut self.observer {
            observe(Written {
                segment_id: self.segment_id,
                offset: self.write_offset,
                bytes: data,
            });
        }
        self.write_offset += padded as u64;
        self.buf_len = 0;
        if self.write_offset > self.segment_size / 2 {
            self.prealloc.hurry();
        }
        self.unsynced = true;
        if let Some(timer) = &self.timer {
            timer.mark_dirty(self.segment_id, self.next_sequence);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        if let Some((segment_id, source)) = self.timer.as_ref().and_then(SyncTimer::take_error) {
            return Err(JournalError::Sync {
                segment_id,
                durable: self.status.durable_next().checked_sub(1),
                source,
            });
        }
        let due = match self.config.sync {
            SyncPolicy::Sync => true,
            SyncPolicy::Async(interval) => self.last_sync.elapsed() >= interval,
            SyncPolicy::None => false,
        };
        match due {
            true => self.sync_now(),
            false => Ok(()),
        }
    }

    /// Syncs everything written so far, if anything is unsynced.
    fn sync_now(&mut self) -> Result<(), JournalError> {
        if self.unsynced {
            self.segment.sync().map_err(|source| JournalError::Sync {
                segment_id: self.segment_id,
                durable: self.status.durable_next().checked_sub(1),
                source,
            })?;
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        self.synced_next = self.next_sequence;
        self.status
            .durable_next
            .fetch_max(self.synced_next, Ordering::AcqRel);
        Ok(())
    }

    /// Closes the current segment (synced) and continues in the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        self.roll_with_epoch(self.config.epoch)
    }

    fn roll_with_epoch(&mut self, epoch: u32) -> Result<(), JournalError> {
        self.write_buffer()?;
        self.sync_now()?;
        let id = self.segment_id + 1;
        let mut file = self.take_segment(id)?;
        let roll_err = |source| JournalError::Roll {
            segment_id: id,
            source,
        };
        // The high-water mark first: once the new segment holds a record,
        // the manifest already says it exists, so deleting it is detected.
        self.manifest.last_segment = id;
        self.storage
            .write_manifest(&self.manifest.encode())
            .map_err(roll_err)?;
        let header = SegmentHeader {
            block_size: self.block as u32,
            segment_id: id,
            first_sequence: self.next_sequence,
            epoch,
            segment_size: self.manifest.segment_size,
        };
        write_header(&mut file, &header).map_err(roll_err)?;
        if let Some(observe) = &mut self.observer {
            let mut block = vec![0u8; self.block as usize];
            header.encode(&mut block[..SEGMENT_HEADER_BYTES]);
            observe(Written {
                segment_id: id,
                offset: 0,
                bytes: &block,
            });
        }
        self.segment = file;
        self.segment_id = id;
        self.segment_size = header.segment_size;
        self.status.segment_id.store(id, Ordering::Release);
        self.write_offset = self.block;
        self.segments.push_back((id, self.next_sequence));
        self.prealloc.request(id + 1);
        self.apply_retention();
        Ok(())
    }

    /// The preallocated segment `id`, waiting (back-pressure) while the
    /// disk is full, unless the host abandons the wait at shutdown.
    fn take_segment(&mut self, id: u64) -> Result<S::File, JournalError> {
        loop {
            match self.prealloc.take(id) {
                Ok(file) => {
                    self.status.out_of_space.store(false, Ordering::Release);
                    self.status
                        .out_of_space_since_ns
                        .store(0, Ordering::Release);
                    return Ok(file);
                }
                Err(e) if is_no_space(&e) => {
                    // Back-pressure: nothing is written or acknowledged until
                    // space returns; the ring fills and submitters get Busy.
                    if !self.status.out_of_space.swap(true, Ordering::AcqRel) {
                        self.status
                            .out_of_space_since_ns
                            .store(now_ns(), Ordering::Release);
                    }
                    if self.status.abandon.load(Ordering::Acquire) {
                        return Err(JournalError::OutOfSpace { segment_id: id });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    self.prealloc.request(id);
                }
                Err(source) => {
                    return Err(JournalError::Roll {
                        segment_id: id,
                        source,
                    })
                }
            }
        }
    }

    fn apply_retention(&mut self) {
        match self.config.retention {
            Retention::KeepAll => {}
            Retention::KeepSegments(keep) => {
                let held = self.status.held_from();
                // Segment 0 may go only if all its records are below every hold.
                while self.segments.len() > keep && self.segments[1].1 <= held {
                    let (old, _) = self.segments.pop_front().expect("len > keep >= 2");
                    // A failed delete is not fatal: the data stays valid.
                    let _ = self.storage.remove(old);
                }
            }
            Retention::CoveredBySnapshots => {
                // A failed delete is not fatal: it is retried at the next roll.
                let below = self.status.released_below().min(self.status.held_from());
                let _ = self.drop_below(below);
            }
        }
    }

    /// Deletes every segment all of whose records are below `sequence` (for
    /// a snapshot that covers them). The current segment is always kept.
    /// Returns the ids deleted. A failed delete stops and is returned.
    pub fn drop_below(&mut self, sequence: u64) -> io::Result<Vec<u64>> {
        let mut dropped = Vec::new();
        // Segment i holds [first_i, first_{i+1}); it may go when first_{i+1} <= sequence.
        while self.segments.len() > 1 && self.segments[1].1 <= sequence {
            let (old, _) = self.segments[0];
            self.storage.remove(old)?;
            self.segments.pop_front();
            dropped.push(old);
        }
        Ok(dropped)
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        .max(1)
}

/// The manifest the writer continues with: the journal's own, checked
/// against the configuration (format settings cannot change), or a new
/// one for a new journal (or one written before manifests existed).
fn settle_manifest(config: &JournalConfig, report: &ScanReport) -> Result<Manifest, OpenError> {
    let mismatch = |option, on_disk: String, configured: String| {
        Err(OpenError::FormatMismatch {
            option,
            on_disk,
            configured,
        })
    };
    if config.settings.len() > crate::manifest::MANIFEST_SETTINGS_MAX {
        return Err(OpenError::Config {
            option: "settings",
            expected: "at most 1 KiB",
        });
    }
    let Some(mut m) = report.manifest.clone() else {
        // A journal from before manifests keeps the size its segments have.
        let segment_size = report
            .segments
            .last()
            .map_or(config.segment_size, |s| s.header.segment_size);
        if segment_size != config.segment_size {
            return mismatch(
                "segment_size",
                segment_size.to_string(),
                config.segment_size.to_string(),
            );
        }
        return Ok(Manifest {
            journal_id: crate::manifest::new_journal_id(),
            block_size: 0,
            segment_size,
            chain: config.chain,
            last_segment: 0,
            settings: config.settings.clone(),
        });
    };
    if m.segment_size != config.segment_size {
        return mismatch(
            "segment_size",
            m.segment_size.to_string(),
            config.segment_size.to_string(),
        );
    }
    if m.chain != config.chain {
        return mismatch("chain", m.chain.to_string(), config.chain.to_string());
    }
    if m.settings.is_empty() {
        m.settings.clone_from(&config.settings);
    } else if m.settings != config.settings {
        return mismatch(
            "settings",
            format!("{:02x?}", m.settings),
            format!("{:02x?}", config.settings),
        );
    }
    Ok(m)
}

fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

fn check_config(config: &JournalConfig, block: u64) -> Result<(), OpenError> {
    let bad = |option, expected| Err(OpenError::Config { option, expected });
    if !config.segment_size.is_multiple_of(block)
        || config.segment_size < block + RECORD_BYTES_MAX as u64 * 4
    {
        return bad(
            "segment_size",
            "a multiple of the block size, room for at least 4 records",
        );
    }
    if !config.write_buffer_bytes.is_multiple_of(block as usize)
        || config.write_buffer_bytes < RECORD_BYTES_MAX.next_multiple_of(block as usize)
    {
        return bad(
            "write_buffer_bytes",
            "a multiple of the block size, at least one record",
        );
    }
    if let Retention::KeepSegments(n) = config.retention {
        if n < 2 {
            return bad("retention", "keep at least 2 segments");
        }
    }
    Ok(())
}

fn write_header<F: SegmentFile>(file: &mut F, header: &SegmentHeader) -> io::Result<()> {
    let block = header.block_size as usize;
    let mut buf = AlignedBuf::new(block, block);
    header.encode(&mut buf.as_mut_slice()[..SEGMENT_HEADER_BYTES]);
    file.write_at(0, buf.as_slice())?;
    file.sync()
}

/// Creates segment `id` (or reuses a preallocated one) for a new journal or
/// after a segment of another block size.
fn create_or_open<S: Storage>(storage: &S, id: u64, size: u64) -> io::Result<S::File> {
    match storage.list()?.contains(&id) {
        true => storage.open(id),
        false => storage.create(id, size),
    }
}

/// Zeroes a torn tail (read-modify-write of its first, partial block) and syncs.
fn zero_range<S: Storage>(storage: &S, torn: TornTail, block: u64) -> Result<(), OpenError> {
    let io_err = |source| OpenError::Io {
        segment_id: torn.segment_id,
        source,
    };
    let mut file = storage.open(torn.segment_id).map_err(io_err)?;
    let start = torn.offset - torn.offset % block;
    let len = (align_up(torn.end, block) - start) as usize;
    let mut buf = AlignedBuf::new(len, block as usize);
    let keep = (torn.offset - start) as usize;
    if keep > 0 {
        file.read_at(start, &mut buf.as_mut_slice()[..keep])
            .map_err(io_err)?;
    }
    file.write_at(start, buf.as_slice()).map_err(io_err)?;
    file.sync().map_err(io_err)
}

impl<S: Storage> Journaller for Journal<S> {
    fn append(&mut self, command: &CommandRef<'_>) -> Result<(), StageError> {
        if command.sequence != self.next_sequence {
            return Err(Box::new(JournalError::SequenceMismatch {
                expected: self.next_sequence,
                got: command.sequence,
            }));
        }
        let chained = self.config.chain;
        let footprint = record_footprint_with(command.payload.len(), chained) as u64;
        if self.write_offset + self.buf_len as u64 + footprint > self.segment_size {
            self.roll()?;
        }
        if self.buf_len + footprint as usize > self.buf.capacity() {
            self.write_buffer()?;
        }
        let h = command.header;
        let chain_len = if chained { CHAIN_HASH_BYTES } else { 0 };
        let header = RecordHeader {
            chain: chained.then_some(self.last_hash),
            synced_next: self.synced_next,
            record_len: (RECORD_HEADER_BYTES + chain_len + command.payload.len()) as u32,
            sequence: command.sequence,
            segment_id: self.segment_id,
            offset: self.write_offset + self.buf_len as u64,
            epoch: self.config.epoch,
            meta: RecordMeta {
                command_type: h.command_type,
                schema_version: h.schema_version,
                timestamp_ns: h.timestamp_ns,
                correlation_id: h.correlation_id,
                idempotency_key: h.idempotency_key,
                tenant_id: h.tenant_id,
                session: h.is_session(),
            },
        };
        let at = self.buf_len;
        self.buf_len += encode_record(&mut self.buf.as_mut_slice()[at..], &header, command.payload);
        let checksum = &self.buf.as_slice()[at..at + 8];
        self.last_checksum = u64::from_le_bytes(checksum.try_into().expect("8 bytes"));
        if chained {
            let bytes = &self.buf.as_slice()[at..at + header.record_len as usize];
            self.last_hash = *blake3::hash(bytes).as_bytes();
        }
        self.next_sequence += 1;
        Ok(())
    }

    fn times_every_batch(&self) -> bool {
        true
    }

    fn end_of_batch(&mut self, last_sequence: u64) -> Result<(), StageError> {
        debug_assert_eq!(last_sequence + 1, self.next_sequence);
        self.write_buffer()?;
        self.sync()?;
        self.publish_written();
        Ok(())
    }
}
