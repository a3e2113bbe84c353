//! The journal manifest (`journal.manifest`): the settings that are part of
//! the on-disk format (block size, segment size, chain), the journal's
//! identity (a random id snapshots are bound to), the host's own format
//! settings (opaque bytes, e.g. the ledger's capacities) and a durable
//! high-water mark — the newest segment ever begun — so a deleted last
//! segment is found. Rewritten atomically (tmp → fsync → rename → fsync dir)
//! when the journal is created and at every segment roll, before the new
//! segment's first record is written. Byte format: `docs/journal.md`.

/// File name in the journal directory.
pub const MANIFEST_NAME: &str = "journal.manifest";
/// Magic at offset 0.
pub const MANIFEST_MAGIC: [u8; 8] = *b"KEELMNFT";
/// Format version written.
pub const MANIFEST_VERSION: u32 = 1;
/// Fixed part before the host settings.
pub const MANIFEST_FIXED_BYTES: usize = 72;
/// Host settings bytes at most.
pub const MANIFEST_SETTINGS_MAX: usize = 1024;

/// Flag bit: records carry the tamper-evident chain.
const FLAG_CHAIN: u32 = 1;

/// The decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Random identity of this journal (snapshots record it).
    pub journal_id: u128,
    /// The writer's block size.
    pub block_size: u32,
    /// Bytes per segment file.
    pub segment_size: u64,
    /// Whether records carry the BLAKE3 chain.
    pub chain: bool,
    /// The newest segment ever begun (its header may not be written yet).
    pub last_segment: u64,
    /// The host's format settings (opaque to the journal; ≤ 1 KiB).
    pub settings: Vec<u8>,
}

/// Why a manifest did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Shorter than its fixed part or its stated settings length.
    #[error("manifest truncated ({len} bytes)")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Not a Keel manifest.
    #[error("bad manifest magic")]
    BadMagic,
    /// The checksum does not match.
    #[error("manifest checksum mismatch")]
    BadChecksum,
    /// A version this build cannot read.
    #[error("unsupported manifest version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
}

impl Manifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.settings.len() <= MANIFEST_SETTINGS_MAX);
        let mut out = vec![0u8; MANIFEST_FIXED_BYTES + self.settings.len()];
        out[0..8].copy_from_slice(&MANIFEST_MAGIC);
        out[8..12].copy_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        out[16..32].copy_from_slice(&self.journal_id.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_size.to_le_bytes());
        let flags = if self.chain { FLAG_CHAIN } else { 0 };
        out[40..44].copy_from_slice(&flags.to_le_bytes());
        out[44..48].copy_from_slice(&(self.settings.len() as u32).to_le_bytes());
        out[48..56].copy_from_slice(&self.last_segment.to_le_bytes());
        // 56..64 reserved (zero).
        out[MANIFEST_FIXED_BYTES..].copy_from_slice(&self.settings);
        let checksum = manifest_checksum(&out);
        out[64..72].copy_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Decodes and checks a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let truncated = ManifestError::Truncated { len: bytes.len() };
        if bytes.len() < MANIFEST_FIXED_BYTES {
            return Err(truncated);
        }
        if bytes[0..8] != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let settings_len = u32_at(44) as usize;
        if settings_len > MANIFEST_SETTINGS_MAX
            || bytes.len() != MANIFEST_FIXED_BYTES + settings_len
        {
            return Err(truncated);
        }
        if u64_at(64) != manifest_checksum(bytes) {
            return Err(ManifestError::BadChecksum);
        }
        let version = u32_at(8);
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion { version });
        }
        Ok(Self {
            block_size: u32_at(12),
            journal_id: u128::from_le_bytes(bytes[16..32].try_into().expect("16")),
            segment_size: u64_at(32),
            chain: u32_at(40) & FLAG_CHAIN != 0,
            last_segment: u64_at(48),
            settings: bytes[MANIFEST_FIXED_BYTES..].to_vec(),
        })
    }
}

/// XXH3-64 (as every checksum here) of everything but the checksum field (bytes 64..72).
fn manifest_checksum(bytes: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&bytes[..64]);
    hasher.update(&bytes[MANIFEST_FIXED_BYTES..]);
    hasher.digest()
}

/// The manifest in `storage`, if one is there and decodes: for hosts that
/// read their settings or the journal id (a damaged one is reported as
/// corruption by the scan, not here).
pub fn read_manifest<S: crate::Storage>(storage: &S) -> Option<Manifest> {
    let bytes = storage.read_manifest().ok().flatten()?;
    Manifest::decode(&bytes).ok()
}

/// A fresh random journal id (from the kernel's generator).
pub fn new_journal_id() -> u128 {
    let mut bytes = [0u8; 16];
    // SAFETY: `bytes` is writable for its length for the duration of the call.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(
        n,
        16,
        "getrandom failed: {}",
        std::io::Error::last_os_error()
    );
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            journal_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            block_size: 512,
            segment_size: 64 << 20,
            chain: true,
            last_segment: 7,
            settings: b"ledger".to_vec(),
        }
    }

    #[test]
    fn round_trips_and_every_flipped_bit_is_refused() {
        let bytes = sample().encode();
        assert_eq!(Manifest::decode(&bytes), Ok(sample()));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&bad).is_err(), "bit {bit} accepted");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn journal_ids_differ() {
        assert_ne!(new_journal_id(), new_journal_id());
    }
}
