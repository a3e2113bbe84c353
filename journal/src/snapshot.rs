//! Snapshot files: a checksummed header and an opaque body (the state
//! machine's encoded state), written so a half-written snapshot is never
//! loaded, and loaded newest-first with a fallback past damaged ones.
//!
//! Writing: `snapshot-<sequence>.keel-snap.tmp` → write → `fsync` → rename
//! to `snapshot-<sequence>.keel-snap` → `fsync` the directory; then all but
//! the newest `keep` snapshots are deleted. A crash at any point leaves
//! either the previous set or the new one, plus at most a `.tmp` that no
//! reader looks at (and the next write removes).
//!
//! Byte layout (little-endian; `docs/journal.md`, "Snapshot files"):
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `KEELSNAP` |
//! | 8 | 4 | format version (2; 1 is still read) |
//! | 12 | 2 | body schema id |
//! | 14 | 2 | body schema version |
//! | 16 | 8 | sequence: the snapshot holds every command below it |
//! | 24 | 8 | state hash of the state it holds |
//! | 32 | 8 | body length |
//! | 40 | 8 | body checksum (XXH3-64) |
//! | 48 | 8 | created at (ns since the Unix epoch; informational) |
//! | 56 | 16 | journal id (the manifest's: the journal this state continues; v2) |
//! | 72 | 8 | XXH3 checksum of the journal record at `sequence - 1` (0: none; v2) |
//! | 80 | 8 | header checksum (XXH3-64 of bytes 0..80) |
//! | 88 | n | body |
//!
//! Version 1 had no journal id: the checksum at 56..64 over 0..56, the body at 64.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

/// Magic at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KEELSNAP";
/// The snapshot file format this build writes (it reads 1 and 2).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// Bytes of the snapshot header (version 2).
pub const SNAPSHOT_HEADER_BYTES: usize = 88;
/// Bytes of a version 1 header.
const SNAPSHOT_HEADER_BYTES_V1: usize = 64;
const SUFFIX: &str = ".keel-snap";

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Schema id of the body (the state machine's snapshot schema).
    pub schema_id: u16,
    /// Schema version of the body (older versions are migrated on restore).
    pub schema_version: u16,
    /// The snapshot holds every command with a lower sequence; replay resumes here.
    pub sequence: u64,
    /// The state hash of the state it holds.
    pub state_hash: u64,
    /// Body bytes.
    pub body_len: u64,
    /// XXH3-64 of the body.
    pub body_checksum: u64,
    /// When it was written (ns since the Unix epoch).
    pub created_at_ns: u64,
    /// The journal this state continues (its manifest's id; 0: unbound, a
    /// version 1 file or a node without a journal). A node refuses a
    /// snapshot bound to another journal.
    pub journal_id: u128,
    /// The checksum of the journal record at `sequence - 1` — the last
    /// command this state holds (0: not recorded). A node refuses the
    /// snapshot if its journal holds another record there (another
    /// history with the same journal id, e.g. a restored backup).
    pub last_record_checksum: u64,
}

impl SnapshotHeader {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut b = [0u8; SNAPSHOT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        b[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        b[12..14].copy_from_slice(&self.schema_id.to_le_bytes());
        b[14..16].copy_from_slice(&self.schema_version.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..32].copy_from_slice(&self.state_hash.to_le_bytes());
        b[32..40].copy_from_slice(&self.body_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.body_checksum.to_le_bytes());
        b[48..56].copy_from_slice(&self.created_at_ns.to_le_bytes());
        b[56..72].copy_from_slice(&self.journal_id.to_le_bytes());
        b[72..80].copy_from_slice(&self.last_record_checksum.to_le_bytes());
        let checksum = xxh3_64(&b[..80]);
        b[80..88].copy_from_slice(&checksum.to_le_bytes());
        b
    }

    /// Header bytes of a file of this format `version`.
    fn len_of(version: u32) -> usize {
        match version {
            1 => SNAPSHOT_HEADER_BYTES_V1,
            _ => SNAPSHOT_HEADER_BYTES,
        }
    }

    fn decode(b: &[u8]) -> Result<Self, SnapshotDefect> {
        if b.len() < SNAPSHOT_HEADER_BYTES_V1 {
            return Err(SnapshotDefect::Short);
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if b[0..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotDefect::Magic);
        }
        // The version is read before the checksum that covers it: a flipped
        // version bit then fails one of the two checksums below.
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        let len = Self::len_of(version);
        if b.len() < len {
            return Err(SnapshotDefect::Short);
        }
        if u64_at(len - 8) != xxh3_64(&b[..len - 8]) {
            return Err(SnapshotDefect::HeaderChecksum);
        }
        if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotDefect::FormatVersion(version));
        }
        let (journal_id, last_record_checksum) = match version {
            1 => (0, 0),
            _ => (
                u128::from_le_bytes(b[56..72].try_into().expect("16 bytes")),
                u64_at(72),
            ),
        };
        Ok(Self {
            schema_id: u16::from_le_bytes([b[12], b[13]]),
            schema_version: u16::from_le_bytes([b[14], b[15]]),
            sequence: u64_at(16),
            state_hash: u64_at(24),
            body_len: u64_at(32),
            body_checksum: u64_at(40),
            created_at_ns: u64_at(48),
            journal_id,
            last_record_checksum,
        })
    }
}

/// What is wrong with a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotDefect {
    /// Shorter than its header or than the body the header announces.
    #[error("truncated")]
    Short,
    /// Not a snapshot file.
    #[error("bad magic")]
    Magic,
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A format this build does not read.
    #[error("unknown format version {0}")]
    FormatVersion(u32),
    /// The body's checksum does not match.
    #[error("body checksum mismatch")]
    BodyChecksum,
}

/// Why snapshots could not be written or listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A loaded, verified snapshot.
#[derive(Debug)]
pub struct LoadedSnapshot {
    /// Its file.
    pub path: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
    /// Its body (checksum verified).
    pub body: Vec<u8>,
}

/// The snapshot files of one directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SnapshotStore {
    /// Snapshots in `dir` (created if missing), keeping the newest `keep` (≥ 1).
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, SnapshotError> {
        assert!(keep >= 1, "keep at least one snapshot");
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        Ok(Self { dir, keep })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Snapshot files by sequence, newest first (`.tmp` files are not snapshots).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let sequence = name
                .strip_prefix("snapshot-")
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(sequence) = sequence {
                found.push((sequence, path));
            }
        }
        found.sort_by_key(|s| std::cmp::Reverse(s.0));
        Ok(found)
    }

    /// Writes a snapshot durably, then prunes to the newest `keep`.
    pub fn write(&self, header: SnapshotHeader, body: &[u8]) -> Result<PathBuf, SnapshotError> {
        let path = self
            .dir
            .join(format!("snapshot-{:020}{SUFFIX}", header.sequence));
        write_snapshot_file(&path, header, body)?;
        self.prune()?;
        Ok(path)
    }

    /// Deletes all but the newest `keep` snapshots and any leftover `.tmp`.
    fn prune(&self) -> Result<(), SnapshotError> {
        for (_, path) in self.list()?.into_iter().skip(self.keep) {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.to_str().is_some_and(|p| p.ends_with(".keel-snap.tmp")) {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }
}

/// Writes one snapshot file at `path`: `<path>.tmp` → write → fsync →
/// rename → fsync the directory. A crash leaves the old file or the new
/// one, never a half-written one under `path`.
pub fn write_snapshot_file(
    path: &Path,
    header: SnapshotHeader,
    body: &[u8],
) -> Result<(), SnapshotError> {
    let header = SnapshotHeader {
        body_len: body.len() as u64,
        body_checksum: xxh3_64(body),
        ..header
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(&header.encode()).map_err(io_err(&tmp))?;
    file.write_all(body).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))?;
    Ok(())
}

/// Why a snapshot file could not be read: typed, with its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotReadError {
    /// The file could not be opened or read.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is damaged or not a snapshot.
    #[error("snapshot {path}: {defect}")]
    Defect {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        defect: SnapshotDefect,
    },
}

/// Reads and verifies one snapshot file.
pub fn read_snapshot(path: &Path) -> Result<LoadedSnapshot, SnapshotReadError> {
    let io = |source| SnapshotReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let defect = |defect| SnapshotReadError::Defect {
        path: path.to_path_buf(),
        defect,
    };
    let mut file = OpenOptions::new().read(true).open(path).map_err(io)?;
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES];
    file.read_exact(&mut head[..SNAPSHOT_HEADER_BYTES_V1])
        .map_err(|_| defect(SnapshotDefect::Short))?;
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let len = SnapshotHeader::len_of(version);
    file.read_exact(&mut head[SNAPSHOT_HEADER_BYTES_V1..len])
        .map_err(|_| defect(SnapshotDefect::Short))?;
    let header = SnapshotHeader::decode(&head[..len]).map_err(defect)?;
    let mut body = Vec::new();
    file.read_to_end(&mut body).map_err(io)?;
    if body.len() as u64 != header.body_len {
        return Err(defect(SnapshotDefect::Short));
    }
    if xxh3_64(&body) != header.body_checksum {
        return Err(defect(SnapshotDefect::BodyChecksum));
    }
    Ok(LoadedSnapshot {
        path: path.to_path_buf(),
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64) -> SnapshotHeader {
        SnapshotHeader {
            schema_id: 32,
            schema_version: 1,
            sequence,
            state_hash: sequence * 7,
            body_len: 0,
            body_checksum: 0,
            created_at_ns: 1,
            journal_id: 0x1234,
            last_record_checksum: 0x5678,
        }
    }

    fn defect(path: &Path) -> Option<SnapshotDefect> {
        match read_snapshot(path) {
            Err(SnapshotReadError::Defect { defect, .. }) => Some(defect),
            _ => None,
        }
    }

    #[test]
    fn snapshots_are_kept_newest_first_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 2).unwrap();
        store.write(header(10), b"ten").unwrap();
        store.write(header(20), b"twenty").unwrap();
        let newest = store.write(header(30), b"thirty").unwrap();
        // Keep 2: the oldest is gone.
        let listed: Vec<u64> = store.list().unwrap().into_iter().map(|s| s.0).collect();
        assert_eq!(listed, [30, 20]);
        let loaded = read_snapshot(&newest).unwrap();
        assert_eq!(
            (loaded.header.sequence, loaded.body.as_slice()),
            (30, &b"thirty"[..])
        );
        assert_eq!(loaded.header.state_hash, 210);
        // A flipped body byte, then a truncated header, are typed defects.
        let mut bytes = std::fs::read(&newest).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&newest, &bytes).unwrap();
        assert_eq!(defect(&newest), Some(SnapshotDefect::BodyChecksum));
        std::fs::write(&newest, &bytes[..20]).unwrap();
        assert_eq!(defect(&newest), Some(SnapshotDefect::Short));
        // A stray .tmp is not listed, and the next write prunes it.
        let tmp = dir
            .path()
            .join("snapshot-00000000000000000099.keel-snap.tmp");
        std::fs::write(&tmp, b"junk").unwrap();
        assert!(store.list().unwrap().iter().all(|(s, _)| *s != 99));
        store.write(header(40), b"forty").unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn a_header_bit_flip_is_caught() {
        let mut encoded = header(5).encode();
        encoded[20] ^= 4;
        assert_eq!(
            SnapshotHeader::decode(&encoded),
            Err(SnapshotDefect::HeaderChecksum)
        );
        assert_eq!(
            SnapshotHeader::decode(&encoded[..10]),
            Err(SnapshotDefect::Short)
        );
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// The snapshot file format is pinned: a header with fixed fields and a
    /// four-byte body, byte for byte (`tests/it/golden/snapshot-v2.keel-snap`);
    /// version 1 files (`snapshot-v1.keel-snap`) still load, unbound.
    #[test]
    fn snapshot_file_v2_and_v1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.keel-snap");
        let header = SnapshotHeader {
            schema_id: 32,
            schema_version: 1,
            sequence: 0x0102_0304,
            state_hash: 0xdead_beef_cafe_f00d,
            body_len: 0,
            body_checksum: 0,
            created_at_ns: 1_764_000_000_000_000_000,
            journal_id: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff,
            last_record_checksum: 0x0123_4567_89ab_cdef,
        };
        write_snapshot_file(&path, header, b"body").unwrap();
        let written = std::fs::read(&path).unwrap();
        let golden_dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden");
        let golden = golden_dir.join("snapshot-v2.keel-snap");
        if std::env::var_os("KEEL_BLESS").is_some() {
            std::fs::write(&golden, &written).unwrap();
        }
        assert_eq!(
            written,
            std::fs::read(&golden).unwrap(),
            "snapshot format changed"
        );
        for (file, journal_id) in [
            ("snapshot-v2.keel-snap", header.journal_id),
            ("snapshot-v1.keel-snap", 0),
        ] {
            let loaded = read_snapshot(&golden_dir.join(file)).unwrap();
            assert_eq!(loaded.header.sequence, 0x0102_0304);
            assert_eq!(loaded.header.state_hash, 0xdead_beef_cafe_f00d);
            assert_eq!(loaded.header.journal_id, journal_id);
            let checksum = if journal_id == 0 {
                0
            } else {
                header.last_record_checksum
            };
            assert_eq!(loaded.header.last_record_checksum, checksum);
            assert_eq!(loaded.body, b"body");
        }
    }
}
