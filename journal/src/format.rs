//! The on-disk format, version 1: segment header and record framing
//! (documented byte by byte in `docs/journal.md`). Decoders never panic on
//! arbitrary bytes; they return a typed error.

use keel_core::constants::PAYLOAD_BYTES_MAX;
use xxhash_rust::xxh3::xxh3_64;

/// Segment magic.
pub const MAGIC: [u8; 8] = *b"KEELJRNL";
/// Format version written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the encoded segment header (it occupies a whole block on disk).
pub const SEGMENT_HEADER_BYTES: usize = 56;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 96;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Bytes of the optional chain hash (BLAKE3 of the previous record).
pub const CHAIN_HASH_BYTES: usize = 32;
/// Record flag: a chain hash follows the header.
pub const FLAG_CHAINED: u16 = 1;
/// Record flag: the idempotency key is a client session's `scope << 64 |
/// request` ([`keel_core::session`]); the same bit as the engine's
/// [`keel_core::envelope::FLAG_SESSION`].
pub const FLAG_SESSION: u16 = keel_core::envelope::FLAG_SESSION;
/// Largest encoded record.
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + CHAIN_HASH_BYTES + PAYLOAD_BYTES_MAX;
/// Smallest block size (write alignment) the format accepts.
pub const BLOCK_SIZE_MIN: u32 = 512;
/// Largest block size the format accepts.
pub const BLOCK_SIZE_MAX: u32 = 64 * 1024;

const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_BYTES <= BLOCK_SIZE_MIN as usize);

/// Rounds `n` up to a multiple of `to` (a power of two).
pub fn align_up(n: u64, to: u64) -> u64 {
    debug_assert!(to.is_power_of_two());
    (n + to - 1) & !(to - 1)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn u128_at(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

/// The header in the first block of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Write alignment of the writer; records are padded to it per write.
    pub block_size: u32,
    /// This segment's id.
    pub segment_id: u64,
    /// Sequence of the first record in this segment.
    pub first_sequence: u64,
    /// Writer epoch.
    pub epoch: u32,
    /// File size in bytes.
    pub segment_size: u64,
}

/// Why a segment header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("segment header truncated: {len} bytes")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The header block is all zeros (a preallocated, never-used segment).
    #[error("segment header is all zeros (unused segment)")]
    Zero,
    /// Wrong magic.
    #[error("bad segment magic")]
    BadMagic,
    /// A format version this code cannot read.
    #[error("unsupported segment format version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// Checksum mismatch.
    #[error("segment header checksum mismatch")]
    BadChecksum,
    /// Block size out of range or not a power of two.
    #[error("bad block size {block_size}")]
    BadBlockSize {
        /// The value found.
        block_size: u32,
    },
}

impl SegmentHeader {
    /// Encodes into `out[..SEGMENT_HEADER_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= SEGMENT_HEADER_BYTES);
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[32..36].copy_from_slice(&self.epoch.to_le_bytes());
        out[36..40].copy_from_slice(&0u32.to_le_bytes());
        out[40..48].copy_from_slice(&self.segment_size.to_le_bytes());
        let checksum = xxh3_64(&out[0..48]);
        out[48..56].copy_from_slice(&checksum.to_le_bytes());
    }

    /// Decodes and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Truncated { len: bytes.len() });
        }
        let b = &bytes[..SEGMENT_HEADER_BYTES];
        if b.iter().all(|&x| x == 0) {
            return Err(HeaderError::Zero);
        }
        if b[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if u64_at(b, 48) != xxh3_64(&b[0..48]) {
            return Err(HeaderError::BadChecksum);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let block_size = u32_at(b, 12);
        if !block_size.is_power_of_two() || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size)
        {
            return Err(HeaderError::BadBlockSize { block_size });
        }
        Ok(Self {
            block_size,
            segment_id: u64_at(b, 16),
            first_sequence: u64_at(b, 24),
            epoch: u32_at(b, 32),
            segment_size: u64_at(b, 40),
        })
    }
}

/// The fields of a record other than its payload and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    /// Command type (non-zero).
    pub command_type: u16,
    /// Payload schema version (non-zero).
    pub schema_version: u16,
    /// Sequencer timestamp.
    pub timestamp_ns: u64,
    /// Caller's correlation id.
    pub correlation_id: u64,
    /// Idempotency key (0 = none).
    pub idempotency_key: u128,
    /// Tenant.
    pub tenant_id: u32,
    /// The key is a session request's ([`FLAG_SESSION`]).
    pub session: bool,
}

/// A decoded record header: where the record claims to be, and its meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// One past the last sequence the writer had durably synced when it wrote
    /// this record. Recovery uses it to tell a torn unsynced write (valid
    /// records after a bad spot, all with `synced_next` at or below it) from
    /// corruption of synced data (a later record vouches it was synced).
    pub synced_next: u64,
    /// Header plus payload bytes (unpadded).
    pub record_len: u32,
    /// The record's sequence.
    pub sequence: u64,
    /// The segment it was written to.
    pub segment_id: u64,
    /// Its byte offset in that segment.
    pub offset: u64,
    /// Writer epoch.
    pub epoch: u32,
    /// Command fields.
    pub meta: RecordMeta,
    /// The tamper-evident chain: BLAKE3 of the previous record's bytes
    /// (all zeros for the first record of a journal), if the writer chains.
    pub chain: Option<[u8; CHAIN_HASH_BYTES]>,
}

/// A decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The payload.
    pub payload: &'a [u8],
    /// The record's encoded bytes (`record_len` of them), for chaining.
    pub bytes: &'a [u8],
}

impl Record<'_> {
    /// The record's XXH3 checksum (its first 8 bytes): what a snapshot
    /// records of the last command it holds, to be bound to this history.
    pub fn checksum(&self) -> u64 {
        u64::from_le_bytes(
            self.bytes[..8]
                .try_into()
                .expect("a record is longer than 8 bytes"),
        )
    }
}

impl RecordMeta {
    /// The command header the engine journaled, for replaying a command of
    /// `payload_len` bytes (no caller waits on a replayed command).
    pub fn command_header(&self, payload_len: usize) -> keel_core::CommandHeader {
        keel_core::CommandHeader {
            idempotency_key: self.idempotency_key,
            correlation_id: self.correlation_id,
            timestamp_ns: self.timestamp_ns,
            command_type: self.command_type,
            schema_version: self.schema_version,
            tenant_id: self.tenant_id,
            payload_len: payload_len as u32,
            completion: keel_core::completion::NO_COMPLETION,
            flags: if self.session { FLAG_SESSION } else { 0 },
        }
    }
}

impl Record<'_> {
    /// Bytes the record occupies, padded to [`RECORD_ALIGN`].
    pub fn footprint(&self) -> usize {
        (self.header.record_len as usize).next_multiple_of(RECORD_ALIGN)
    }

    /// BLAKE3 of the record's bytes: what the next chained record must carry.
    pub fn chain_hash(&self) -> [u8; CHAIN_HASH_BYTES] {
        *blake3::hash(self.bytes).as_bytes()
    }
}

/// Why bytes at a position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The header is all zeros: padding or unwritten space.
    #[error("zero header (padding or end of data)")]
    Zero,
    /// Fewer bytes than the record claims.
    #[error("record truncated: needs {need} bytes, {have} available")]
    Truncated {
        /// Bytes the record needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Length field out of range or inconsistent with the payload length.
    #[error("bad record length {record_len} (payload {payload_len})")]
    BadLength {
        /// The record_len field.
        record_len: u32,
        /// The payload_len field.
        payload_len: u32,
    },
    /// A format version this code cannot read.
    #[error("unsupported record format version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// Checksum mismatch.
    #[error("record checksum mismatch")]
    BadChecksum,
    /// Flag bits this code does not know.
    #[error("unknown record flags {flags:#06x}")]
    UnknownFlags {
        /// The flags field.
        flags: u16,
    },
}

/// Encoded size of an unchained record with `payload_len` bytes, padded to [`RECORD_ALIGN`].
pub fn record_footprint(payload_len: usize) -> usize {
    record_footprint_with(payload_len, false)
}

/// Encoded size of a record, chained or not, padded to [`RECORD_ALIGN`].
pub fn record_footprint_with(payload_len: usize, chained: bool) -> usize {
    let chain = if chained { CHAIN_HASH_BYTES } else { 0 };
    (RECORD_HEADER_BYTES + chain + payload_len).next_multiple_of(RECORD_ALIGN)
}

/// Encodes a record into `out` (at least `record_footprint` bytes; the
/// padding bytes are zeroed). Returns the footprint.
pub fn encode_record(out: &mut [u8], header: &RecordHeader, payload: &[u8]) -> usize {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "payload exceeds the format's maximum"
    );
    let chain_len = if header.chain.is_some() {
        CHAIN_HASH_BYTES
    } else {
        0
    };
    let body_at = RECORD_HEADER_BYTES + chain_len;
    let record_len = body_at + payload.len();
    assert_eq!(header.record_len as usize, record_len);
    let footprint = record_footprint_with(payload.len(), header.chain.is_some());
    let out = &mut out[..footprint];
    let m = &header.meta;
    out[8..12].copy_from_slice(&header.record_len.to_le_bytes());
    out[12..14].copy_from_slice(&(FORMAT_VERSION as u16).to_le_bytes());
    out[14..16].copy_from_slice(&m.command_type.to_le_bytes());
    out[16..24].copy_from_slice(&header.sequence.to_le_bytes());
    out[24..32].copy_from_slice(&header.segment_id.to_le_bytes());
    out[32..40].copy_from_slice(&header.offset.to_le_bytes());
    out[40..44].copy_from_slice(&header.epoch.to_le_bytes());
    out[44..46].copy_from_slice(&m.schema_version.to_le_bytes());
    let mut flags = if header.chain.is_some() {
        FLAG_CHAINED
    } else {
        0
    };
    if m.session {
        flags |= FLAG_SESSION;
    }
    out[46..48].copy_from_slice(&flags.to_le_bytes());
    out[48..56].copy_from_slice(&m.timestamp_ns.to_le_bytes());
    out[56..64].copy_from_slice(&m.correlation_id.to_le_bytes());
    out[64..80].copy_from_slice(&m.idempotency_key.to_le_bytes());
    out[80..84].copy_from_slice(&m.tenant_id.to_le_bytes());
    out[84..88].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[88..96].copy_from_slice(&header.synced_next.to_le_bytes());
    if let Some(chain) = &header.chain {
        out[RECORD_HEADER_BYTES..body_at].copy_from_slice(chain);
    }
    out[body_at..record_len].copy_from_slice(payload);
    out[record_len..].fill(0);
    let checksum = xxh3_64(&out[8..record_len]);
    out[0..8].copy_from_slice(&checksum.to_le_bytes());
    footprint
}

/// Decodes the record at the start of `bytes`, checking length and checksum
/// (not its position: the caller compares segment id, offset and sequence).
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        if bytes.iter().all(|&b| b == 0) {
            return Err(RecordError::Zero);
        }
        return Err(RecordError::Truncated {
            need: RECORD_HEADER_BYTES,
            have: bytes.len(),
        });
    }
    let h = &bytes[..RECORD_HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return Err(RecordError::Zero);
    }
    let record_len = u32_at(h, 8);
    let payload_len = u32_at(h, 84);
    let flags = u16_at(h, 46);
    if flags & !(FLAG_CHAINED | FLAG_SESSION) != 0 {
        return Err(RecordError::UnknownFlags { flags });
    }
    let chain_len = if flags & FLAG_CHAINED != 0 {
        CHAIN_HASH_BYTES
    } else {
        0
    };
    if payload_len as usize > PAYLOAD_BYTES_MAX
        || record_len as usize != RECORD_HEADER_BYTES + chain_len + payload_len as usize
    {
        return Err(RecordError::BadLength {
            record_len,
            payload_len,
        });
    }
    let version = u16_at(h, 12);
    if u32::from(version) != FORMAT_VERSION {
        return Err(RecordError::UnsupportedVersion { version });
    }
    let len = record_len as usize;
    if bytes.len() < len {
        return Err(RecordError::Truncated {
            need: len,
            have: bytes.len(),
        });
    }
    if u64_at(h, 0) != xxh3_64(&bytes[8..len]) {
        return Err(RecordError::BadChecksum);
    }
    Ok(Record {
        header: RecordHeader {
            synced_next: u64_at(h, 88),
            record_len,
            sequence: u64_at(h, 16),
            segment_id: u64_at(h, 24),
            offset: u64_at(h, 32),
            epoch: u32_at(h, 40),
            meta: RecordMeta {
                command_type: u16_at(h, 14),
                schema_version: u16_at(h, 44),
                timestamp_ns: u64_at(h, 48),
                correlation_id: u64_at(h, 56),
                idempotency_key: u128_at(h, 64),
                tenant_id: u32_at(h, 80),
                session: flags & FLAG_SESSION != 0,
            },
            chain: (chain_len > 0).then(|| {
                bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + CHAIN_HASH_BYTES]
                    .try_into()
                    .expect("32 bytes")
            }),
        },
        payload: &bytes[RECORD_HEADER_BYTES + chain_len..len],
        bytes: &bytes[..len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_record(&bytes);
            let _ = SegmentHeader::decode(&bytes);
        }

        #[test]
        fn record_round_trips(payload in prop::collection::vec(any::<u8>(), 0..=PAYLOAD_BYTES_MAX),
                              sequence: u64, key: u128, flip in 0usize..1000, session: bool,
                              chain in prop::option::of(any::<[u8; 32]>())) {
            let chain_len = if chain.is_some() { CHAIN_HASH_BYTES } else { 0 };
            let header = RecordHeader {
                chain,
                synced_next: sequence / 2,
                record_len: (RECORD_HEADER_BYTES + chain_len + payload.len()) as u32,
                sequence, segment_id: 3, offset: 4096, epoch: 2,
                meta: RecordMeta { command_type: 7, schema_version: 1, timestamp_ns: 11,
                                   correlation_id: 12, idempotency_key: key, tenant_id: 5,
                                   session },
            };
            let mut buf = vec![0u8; RECORD_BYTES_MAX + 8];
            let n = encode_record(&mut buf, &header, &payload);
            let record = decode_record(&buf[..n]).unwrap();
            prop_assert_eq!(record.header, header);
            prop_assert_eq!(record.payload, &payload[..]);
            // Any single bit flip inside the record is detected.
            let len = header.record_len as usize;
            let bit = flip % (len * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&buf[..n]).is_err());
        }
    }
}
