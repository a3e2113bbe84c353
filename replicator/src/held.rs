//! The entries a replica can ship from memory: those of the segment it is
//! writing, plus the sealed segment it last read back for a follower
//! catching up. An entry opening a new segment seals the one before, whose
//! entries leave memory; a follower that needs one is served from that
//! segment's file, which is never written again.
//!
//! Memory is bounded by about two segments, however long the node runs
//! (the driver used to hold every entry since it opened, read from every
//! segment file at open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_journal::format::SegmentHeader;
use keel_journal::storage::segment_name;
use keel_journal::{FsStorage, Storage};
use keel_replication::Seq;

use crate::chunk::{self, split_segment, Chunk};
use crate::DriverError;

/// Entries by core sequence: (bytes, whether they end a write).
pub(crate) struct Held {
    entries: BTreeMap<Seq, (Vec<u8>, bool)>,
    /// The first entry of the segment being written (0: the first segment).
    active_start: Seq,
    dir: PathBuf,
    block: usize,
}

impl Held {
    /// The entries of segment `active` (the one the journal at `dir`
    /// writes next), read from its file: nothing is in flight at open.
    /// `end` is the journal's next sequence.
    pub(crate) fn open(
        dir: &Path,
        block: usize,
        active: u64,
        end: u64,
    ) -> Result<Self, DriverError> {
        let mut held = Self {
            entries: BTreeMap::new(),
            active_start: 0,
            dir: dir.to_path_buf(),
            block,
        };
        let path = dir.join(segment_name(active));
        let file = read(&path)?;
        if let Some(header) = file
            .get(..block)
            .and_then(|b| SegmentHeader::decode(b).ok())
        {
            held.active_start = header.first_sequence + 1;
        }
        let mut chunks = Vec::new();
        split_segment(&file, block, end, &mut chunks)?;
        for chunk in chunks {
            held.entries
                .insert(chunk.sequence + 1, (chunk.data, chunk.ends_block));
        }
        Ok(held)
    }

    /// Holds an entry this replica wrote; one opening a segment drops the
    /// entries of the segment it sealed.
    pub(crate) fn insert(&mut self, seq: Seq, data: Vec<u8>, ends: bool) {
        if opens_segment(&data) {
            self.active_start = seq;
            self.entries = self.entries.split_off(&seq);
        }
        self.entries.insert(seq, (data, ends));
    }

    /// Entry `seq`, read back from its sealed segment if it left memory;
    /// `last` is the core's last entry (nothing past it is read).
    pub(crate) fn get(&mut self, seq: Seq, last: Seq) -> Result<&(Vec<u8>, bool), DriverError> {
        if !self.entries.contains_key(&seq) {
            if seq >= self.active_start {
                return Err(DriverError::NotHeld { seq });
            }
            self.load_sealed(seq, last)?;
        }
        self.entries.get(&seq).ok_or(DriverError::NotHeld { seq })
    }

    /// Entries held in memory now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Reads the sealed segment holding `seq` in place of the one read
    /// before.
    fn load_sealed(&mut self, seq: Seq, last: Seq) -> Result<(), DriverError> {
        let storage = FsStorage::open_read_only(&self.dir)?;
        let ids = storage.list().map_err(|source| DriverError::ReadSegment {
            path: self.dir.clone(),
            source,
        })?;
        for id in ids.into_iter().rev() {
            let path = self.dir.join(segment_name(id));
            let Some(header) = read_header(&path, self.block)? else {
                continue; // a segment prepared ahead, not begun
            };
            if header.first_sequence >= seq || header.first_sequence + 1 >= self.active_start {
                continue;
            }
            let file = read(&path)?;
            let mut chunks: Vec<Chunk> = Vec::new();
            split_segment(&file, self.block, last, &mut chunks)?;
            self.entries = self.entries.split_off(&self.active_start);
            for chunk in chunks {
                self.entries
                    .insert(chunk.sequence + 1, (chunk.data, chunk.ends_block));
            }
            return Ok(());
        }
        Err(DriverError::NotHeld { seq })
    }
}

/// Whether entry bytes carry a segment header block (the first record of
/// a segment): their length prefix is not zero.
fn opens_segment(data: &[u8]) -> bool {
    data.get(..chunk::PREFIX_BYTES)
        .is_some_and(|prefix| prefix.iter().any(|&b| b != 0))
}

/// The header in a segment's first block (`None`: not a begun segment).
fn read_header(path: &Path, block: usize) -> Result<Option<SegmentHeader>, DriverError> {
    use std::io::Read;
    let mut first = vec![0u8; block];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|source| DriverError::ReadSegment {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(SegmentHeader::decode(&first).ok())
}

fn read(path: &Path) -> Result<Vec<u8>, DriverError> {
    std::fs::read(path).map_err(|source| DriverError::ReadSegment {
        path: path.to_path_buf(),
        source,
    })
}
