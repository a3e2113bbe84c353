//! The replica's persisted state: its accepted epoch and its incarnation,
//! written atomically (tmp → fsync → rename → fsync dir).

use std::io::Write;
use std::path::{Path, PathBuf};

/// What a replica must remember across restarts besides its journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// The highest epoch accepted (refuses lower ones).
    pub accepted_epoch: u32,
    /// The process start counter.
    pub incarnation: u64,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on the file.
    #[error("replica state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold `epoch <n>\nincarnation <n>\n`.
    #[error("replica state {path}: not `epoch N` and `incarnation N` lines")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl ReplicaState {
    /// Reads `path`; a missing file is the zero state (a new replica).
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let malformed = || StateError::Malformed {
            path: path.to_path_buf(),
        };
        let mut lines = text.lines();
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(malformed)
        };
        let epoch = field("epoch ")?;
        let incarnation = field("incarnation ")?;
        Ok(Self {
            accepted_epoch: u32::try_from(epoch).map_err(|_| malformed())?,
            incarnation,
        })
    }

    /// Writes `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        write!(
            file,
            "epoch {}\nincarnation {}\n",
            self.accepted_epoch, self.incarnation
        )
        .map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}
