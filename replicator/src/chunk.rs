//! A journal write cut into the replication core's entries, and back.
//!
//! The core ships one entry per journal record (ADR 0013). A follower must
//! write each record where its leader did, and a journal write never
//! rewrites a block, so an entry carries everything the follower needs to
//! reproduce the leader's writes exactly: the record's bytes, the padding
//! that follows it when it ends its group-commit write, and, for the first
//! record of a segment, that segment's header block. Entry bytes:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | `header_len`: 0, or the block size when a segment header follows |
//! | 4 | `header_len` | the new segment's header block, as the leader wrote it |
//! | 4 + `header_len` | rest | the record, then (last record of a write) the write's zero padding |
//!
//! Concatenating the record parts of consecutive entries gives the leader's
//! segment bytes from the first record's offset on.

use keel_journal::format::{decode_record, RecordHeader, RECORD_ALIGN};
use keel_journal::Written;

/// Bytes before an entry's record part.
pub const PREFIX_BYTES: usize = 4;

/// One entry cut from a leader's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The record's journal sequence (the core's sequence is this + 1).
    pub sequence: u64,
    /// The record's epoch.
    pub epoch: u32,
    /// The entry bytes (module docs).
    pub data: Vec<u8>,
    /// True when the record part ends a block (its write may end here).
    pub ends_block: bool,
}

/// Why bytes are not an entry, or a write is not records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Shorter than its prefix or its header block.
    #[error("entry of {len} bytes is shorter than its prefix and header ({needed})")]
    Short {
        /// Its length.
        len: usize,
        /// What the prefix says it needs.
        needed: usize,
    },
    /// The record part does not decode.
    #[error("entry's record does not decode: {0}")]
    Record(String),
    /// A leader's write held bytes that are neither a record nor padding.
    #[error("write at segment {segment_id} offset {offset}: no record at byte {at}")]
    NotRecords {
        /// The write's segment.
        segment_id: u64,
        /// The write's offset.
        offset: u64,
        /// Where in the write.
        at: usize,
    },
}

/// Cuts a leader's writes ([`Written`], from `Journal::set_observer`) into
/// entries, carrying a segment header over to the record after it.
#[derive(Debug, Default)]
pub struct Chunker {
    header: Option<Vec<u8>>,
}

impl Chunker {
    /// A chunker with no header held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts `write` into entries (none for a segment header block: it rides
    /// on the segment's first record).
    pub fn split(&mut self, write: Written<'_>, out: &mut Vec<Chunk>) -> Result<(), ChunkError> {
        if write.offset == 0 {
            self.header = Some(write.bytes.to_vec());
            return Ok(());
        }
        let bytes = write.bytes;
        let not_records = |at| ChunkError::NotRecords {
            segment_id: write.segment_id,
            offset: write.offset,
            at,
        };
        let mut at = 0usize;
        let mut records = Vec::new();
        while at < bytes.len() {
            let Ok(record) = decode_record(&bytes[at..]) else {
                if bytes[at..].iter().all(|&b| b == 0) && !records.is_empty() {
                    break;
                }
                return Err(not_records(at));
            };
            let end = at + record.footprint();
            records.push((at, record.header));
            at = end.next_multiple_of(RECORD_ALIGN);
        }
        for (i, &(start, header)) in records.iter().enumerate() {
            let end = records.get(i + 1).map_or(bytes.len(), |next| next.0);
            let header_block = self.header.take().unwrap_or_default();
            let mut data = Vec::with_capacity(PREFIX_BYTES + header_block.len() + end - start);
            data.extend_from_slice(&(header_block.len() as u32).to_le_bytes());
            data.extend_from_slice(&header_block);
            data.extend_from_slice(&bytes[start..end]);
            out.push(Chunk {
                sequence: header.sequence,
                epoch: header.epoch,
                data,
                ends_block: end == bytes.len(),
            });
        }
        Ok(())
    }
}

/// Cuts a whole segment file, as a leader's writes left it, into the same
/// entries [`Chunker::split`] cut those writes into: a write's padding is
/// the zeros from a record's end to the next block boundary where no
/// record follows. Stops at the first record that does not continue the
/// one before it or is at or past `end_sequence` (the journal's next
/// sequence: what follows is not part of the recovered journal). The
/// segment holding sequence 0 gives no header (every journal creates its
/// first segment when it opens).
pub fn split_segment(
    file: &[u8],
    block: usize,
    end_sequence: u64,
    out: &mut Vec<Chunk>,
) -> Result<(), ChunkError> {
    let Some(header_block) = file.get(..block) else {
        return Ok(());
    };
    let mut records: Vec<(usize, RecordHeader)> = Vec::new();
    let mut at = block;
    let mut end = block;
    while at < file.len() {
        let continues = |h: &RecordHeader| {
            h.sequence < end_sequence
                && records
                    .last()
                    .is_none_or(|(_, last)| last.sequence + 1 == h.sequence)
        };
        match decode_record(&file[at..]) {
            Ok(record) if continues(&record.header) => {
                records.push((at, record.header));
                at = (at + record.footprint()).next_multiple_of(RECORD_ALIGN);
                end = at;
            }
            _ => {
                let boundary = at.next_multiple_of(block).min(file.len());
                let padding = !at.is_multiple_of(block)
                    && !records.is_empty()
                    && file[at..boundary].iter().all(|&b| b == 0);
                if !padding {
                    break;
                }
                at = boundary;
                end = at;
            }
        }
    }
    // The journal's first segment is created when a journal is opened, on
    // every replica alike: only a roll's header rides on a record (as with
    // the leader's observed writes).
    let rolled = records.first().is_some_and(|(_, r)| r.sequence > 0);
    let mut header = rolled.then_some(header_block);
    for (i, &(start, record)) in records.iter().enumerate() {
        let stop = records.get(i + 1).map_or(end, |next| next.0);
        let header_block = header.take().unwrap_or_default();
        let mut data = Vec::with_capacity(PREFIX_BYTES + header_block.len() + stop - start);
        data.extend_from_slice(&(header_block.len() as u32).to_le_bytes());
        data.extend_from_slice(header_block);
        data.extend_from_slice(&file[start..stop]);
        out.push(Chunk {
            sequence: record.sequence,
            epoch: record.epoch,
            data,
            ends_block: stop.is_multiple_of(block),
        });
    }
    Ok(())
}

/// An entry's parts.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The segment header block it opens, if any.
    pub segment_header: Option<&'a [u8]>,
    /// The record's decoded header.
    pub record: RecordHeader,
    /// The record part (record and any padding).
    pub bytes: &'a [u8],
}

/// Splits entry bytes into their parts.
pub fn parts(data: &[u8]) -> Result<Parts<'_>, ChunkError> {
    let short = |needed| ChunkError::Short {
        len: data.len(),
        needed,
    };
    let prefix: [u8; PREFIX_BYTES] = data
        .get(..PREFIX_BYTES)
        .ok_or_else(|| short(PREFIX_BYTES))?
        .try_into()
        .expect("four bytes");
    let header_len = u32::from_le_bytes(prefix) as usize;
    let body = PREFIX_BYTES + header_len;
    if data.len() <= body {
        return Err(short(body + 1));
    }
    let bytes = &data[body..];
    let record = decode_record(bytes).map_err(|e| ChunkError::Record(e.to_string()))?;
    Ok(Parts {
        segment_header: (header_len > 0).then(|| &data[PREFIX_BYTES..body]),
        record: record.header,
        bytes,
    })
}
