//! Node snapshots: the state machine's snapshot body together with the
//! engine's idempotency window (part of the state: a command retried after a
//! crash must get its original outcome), in a `keel_journal::SnapshotStore`.
//!
//! Body layout (little-endian): `u32` count of window entries, oldest first,
//! each `key: u128, code: u32, len: u8, data[len]`; bit 31 of the count set
//! (`SESSIONS_FOLLOW`) means a session section follows: `u32` count of
//! sessions in table order, each `scope u64, highest u64, last_used u64,
//! applied [u64; 16]` (152 bytes); then the state machine's own snapshot
//! bytes (`SnapshotCodec`). A snapshot without sessions (every one written
//! before sessions existed) has bit 31 clear and restores an empty table.
//! The file header carries the sequence the snapshot covers and the state
//! hash, checked after restore.

use keel_codecs::SnapshotCodec;
use keel_core::session::{SessionRow, SESSION_WINDOW};
use keel_core::{DedupTable, Outcome, ResultCode, StateMachine};
use keel_journal::{SnapshotHeader, SnapshotStore};

/// Bit 31 of the window count: a session section follows the window.
const SESSIONS_FOLLOW: u32 = 1 << 31;
const APPLIED_WORDS: usize = (SESSION_WINDOW / 64) as usize;

/// What binds a snapshot to one journal's history: the journal's id and
/// the checksum of its record at `sequence - 1` (0: not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Binding {
    /// The journal's id (its manifest's).
    pub journal_id: u128,
    /// The checksum of the last record the state holds.
    pub last_record_checksum: u64,
}

/// A state restored from a snapshot, ready for the journal's tail.
#[derive(Debug)]
pub struct Restored<S> {
    /// The checksum of the journal record at `sequence - 1` it recorded (0: none).
    pub last_record_checksum: u64,
    /// The state machine.
    pub state_machine: S,
    /// The idempotency window.
    pub dedup: DedupTable,
    /// The snapshot holds every command below this sequence.
    pub sequence: u64,
    /// The snapshot's file.
    pub path: std::path::PathBuf,
}

/// Why a snapshot could not be used (the loader then tries an older one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotUseError {
    /// The window section is truncated or malformed.
    #[error("idempotency window section is malformed")]
    Window,
    /// The state machine refused its section.
    #[error("state: {0}")]
    State(Box<dyn std::error::Error + Send + Sync>),
    /// The restored state's hash differs from the one recorded at writing.
    #[error("restored state hash {restored:016x} differs from the recorded {recorded:016x}")]
    Hash {
        /// Recomputed after restore.
        restored: u64,
        /// In the file header.
        recorded: u64,
    },
    /// The session section is truncated, or session `position` is not a
    /// valid row (scope 0, or a scope held twice).
    #[error("session section of the snapshot is malformed at session {position}")]
    SessionRow {
        /// The row's position in the section.
        position: usize,
    },
    /// The session section holds no session or more than the configured
    /// window's table holds (`dedup_entries / 16`, at least 16).
    #[error("{found} sessions in the snapshot; the session table holds 1..={capacity}")]
    Sessions {
        /// Sessions in the snapshot.
        found: usize,
        /// The table's capacity.
        capacity: usize,
    },
    /// The window in the snapshot does not fit the configured one.
    #[error("idempotency window of {found} entries exceeds dedup_entries {capacity}")]
    WindowSize {
        /// Entries in the snapshot.
        found: usize,
        /// Configured capacity.
        capacity: usize,
    },
}

/// Encodes the window and the state machine into one snapshot body.
pub fn encode<S: SnapshotCodec>(state_machine: &S, dedup: &DedupTable) -> Vec<u8> {
    let mut body = Vec::new();
    let sessions = dedup.sessions().rows();
    let flag = if sessions.is_empty() {
        0
    } else {
        SESSIONS_FOLLOW
    };
    body.extend_from_slice(&(dedup.len() as u32 | flag).to_le_bytes());
    for (key, outcome) in dedup.entries() {
        body.extend_from_slice(&key.to_le_bytes());
        body.extend_from_slice(&outcome.code.0.to_le_bytes());
        body.push(outcome.data().len() as u8);
        body.extend_from_slice(outcome.data());
    }
    if !sessions.is_empty() {
        body.extend_from_slice(&(sessions.len() as u32).to_le_bytes());
        for row in sessions {
            for word in [row.scope, row.highest, row.last_used]
                .iter()
                .chain(&row.applied)
            {
                body.extend_from_slice(&word.to_le_bytes());
            }
        }
    }
    body.extend_from_slice(&state_machine.encode_snapshot());
    body
}

/// Writes a snapshot of `state_machine` and `dedup` covering every command
/// below `sequence`; returns its path.
pub fn write<S: SnapshotCodec + StateMachine>(
    store: &SnapshotStore,
    binding: Binding,
    sequence: u64,
    state_machine: &S,
    dedup: &DedupTable,
) -> Result<std::path::PathBuf, keel_journal::SnapshotError> {
    store.write(
        header::<S>(binding, sequence, state_machine),
        &encode(state_machine, dedup),
    )
}

/// Writes a snapshot to exactly `path` (e.g. `keel replay --snapshot-out`).
pub fn write_to<S: SnapshotCodec + StateMachine>(
    path: &std::path::Path,
    binding: Binding,
    sequence: u64,
    state_machine: &S,
    dedup: &DedupTable,
) -> Result<(), keel_journal::SnapshotError> {
    let header = header::<S>(binding, sequence, state_machine);
    keel_journal::snapshot::write_snapshot_file(path, header, &encode(state_machine, dedup))
}

fn header<S: SnapshotCodec + StateMachine>(
    binding: Binding,
    sequence: u64,
    state_machine: &S,
) -> SnapshotHeader {
    SnapshotHeader {
        journal_id: binding.journal_id,
        last_record_checksum: binding.last_record_checksum,
        schema_id: S::SNAPSHOT_SCHEMA_ID,
        schema_version: S::SNAPSHOT_VERSION,
        sequence,
        state_hash: state_machine.state_hash(),
        body_len: 0,
        body_checksum: 0,
        created_at_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Restores the session section at the start of `body` into `dedup`'s
/// table; returns the bytes it took.
fn decode_sessions(body: &[u8], dedup: &mut DedupTable) -> Result<usize, SnapshotUseError> {
    const ROW_BYTES: usize = 8 * (3 + APPLIED_WORDS);
    let word = |bytes: &[u8], i: usize| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    };
    let count = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(SnapshotUseError::SessionRow { position: 0 })?;
    let capacity = dedup.sessions().capacity();
    if count == 0 || count > capacity {
        return Err(SnapshotUseError::Sessions {
            found: count,
            capacity,
        });
    }
    for position in 0..count {
        let at = 4 + position * ROW_BYTES;
        let bytes = body
            .get(at..at + ROW_BYTES)
            .ok_or(SnapshotUseError::SessionRow { position })?;
        let mut row = SessionRow {
            scope: word(bytes, 0),
            highest: word(bytes, 1),
            last_used: word(bytes, 2),
            applied: [0; APPLIED_WORDS],
        };
        for (i, applied) in row.applied.iter_mut().enumerate() {
            *applied = word(bytes, 3 + i);
        }
        if !dedup.sessions_mut().restore(row) {
            return Err(SnapshotUseError::SessionRow { position });
        }
    }
    Ok(4 + count * ROW_BYTES)
}

/// Decodes a snapshot body; checks the restored hash against the header.
pub fn decode<S: SnapshotCodec + StateMachine>(
    header: &SnapshotHeader,
    body: &[u8],
    config: &S::Config,
    dedup_entries: usize,
) -> Result<(S, DedupTable), SnapshotUseError> {
    let take = |at: &mut usize, n: usize| -> Result<&[u8], SnapshotUseError> {
        let bytes = body.get(*at..*at + n).ok_or(SnapshotUseError::Window)?;
        *at += n;
        Ok(bytes)
    };
    let mut at = 0;
    let count = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"));
    let sessions_follow = count & SESSIONS_FOLLOW != 0;
    let count = (count & !SESSIONS_FOLLOW) as usize;
    if count > dedup_entries {
        return Err(SnapshotUseError::WindowSize {
            found: count,
            capacity: dedup_entries,
        });
    }
    let mut dedup = DedupTable::with_capacity(dedup_entries);
    for _ in 0..count {
        let key = u128::from_le_bytes(take(&mut at, 16)?.try_into().expect("16 bytes"));
        let code = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"));
        let len = usize::from(take(&mut at, 1)?[0]);
        if key == 0 || len > keel_core::constants::RESULT_BYTES_MAX || dedup.get(key).is_some() {
            return Err(SnapshotUseError::Window);
        }
        let mut outcome = Outcome::default();
        outcome.set(ResultCode(code), take(&mut at, len)?);
        dedup.insert(key, outcome);
    }
    if sessions_follow {
        at += decode_sessions(&body[at..], &mut dedup)?;
    }
    let state = S::restore_snapshot(config, &body[at..])
        .map_err(|e| SnapshotUseError::State(Box::new(e)))?;
    if state.state_hash() != header.state_hash {
        return Err(SnapshotUseError::Hash {
            restored: state.state_hash(),
            recorded: header.state_hash,
        });
    }
    Ok((state, dedup))
}

/// The journal id in `data_dir`'s manifest (None: no journal there yet,
/// or one from before manifests).
pub fn journal_id_in(data_dir: &std::path::Path) -> Option<u128> {
    let storage = keel_journal::FsStorage::open_read_only(data_dir).ok()?;
    keel_journal::manifest::read_manifest(&storage).map(|m| m.journal_id)
}

/// The newest snapshot in `store` that verifies and restores (at or below
/// `max_sequence`) and belongs to the journal `journal_id` (its manifest's
/// id; None: there is no journal yet, so any bound snapshot is foreign),
/// and a warning for each newer one that did not. A version 1 snapshot
/// (unbound) is used with a warning.
pub fn load_newest<S: SnapshotCodec + StateMachine>(
    store: &SnapshotStore,
    config: &S::Config,
    dedup_entries: usize,
    max_sequence: u64,
    journal_id: Option<u128>,
) -> Result<(Option<Restored<S>>, Vec<String>), keel_journal::SnapshotError> {
    let mut warnings = Vec::new();
    for (sequence, path) in store.list()? {
        if sequence > max_sequence {
            continue;
        }
        let loaded = match keel_journal::snapshot::read_snapshot(&path) {
            Ok(loaded) => loaded,
            Err(e) => {
                warnings.push(format!("{e}: skipped"));
                continue;
            }
        };
        match (loaded.header.journal_id, journal_id) {
            (0, _) => warnings.push(format!(
                "snapshot {} has no journal binding (format 1): its origin cannot be checked",
                path.display()
            )),
            (bound, Some(ours)) if bound == ours => {}
            (bound, ours) => {
                let ours = ours.map_or("none yet".into(), |id| format!("{id:032x}"));
                warnings.push(format!(
                    "snapshot {} belongs to journal {bound:032x}, not this one ({ours}): skipped",
                    path.display()
                ));
                continue;
            }
        }
        match decode::<S>(&loaded.header, &loaded.body, config, dedup_entries) {
            Ok((state_machine, dedup)) => {
                let restored = Restored {
                    last_record_checksum: loaded.header.last_record_checksum,
                    state_machine,
                    dedup,
                    sequence: loaded.header.sequence,
                    path,
                };
                return Ok((Some(restored), warnings));
            }
            Err(e) => warnings.push(format!("snapshot {} skipped: {e}", path.display())),
        }
    }
    Ok((None, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::{CommandHeader, CommandRef, Registration, SESSION_REGISTER};
    use keel_ledger::{Ledger, LedgerConfig};

    fn config() -> LedgerConfig {
        LedgerConfig {
            accounts_max: 4,
            transfers_max: 4,
            prefault: false,
        }
    }

    /// A window with two registered sessions.
    fn dedup() -> DedupTable {
        let mut dedup = DedupTable::with_capacity(64);
        for scope in [7, 9] {
            let mut payload = Vec::new();
            Registration {
                scope,
                session: scope,
                resume: false,
                principal: b"p",
            }
            .encode(&mut payload);
            let header = CommandHeader {
                command_type: SESSION_REGISTER,
                payload_len: payload.len() as u32,
                ..CommandHeader::default()
            };
            dedup.sessions_mut().register(&CommandRef {
                sequence: scope,
                header: &header,
                payload: &payload,
            });
        }
        dedup.sessions_mut().record(9, 3, 10);
        dedup
    }

    fn header(ledger: &Ledger) -> SnapshotHeader {
        super::header::<Ledger>(Binding::default(), 11, ledger)
    }

    #[test]
    fn sessions_round_trip_and_a_damaged_section_is_named() {
        let ledger = Ledger::new(config());
        let dedup = dedup();
        let body = encode(&ledger, &dedup);
        let (_, restored) = decode::<Ledger>(&header(&ledger), &body, &config(), 64).unwrap();
        assert_eq!(restored.state_hash(), dedup.state_hash());
        assert_eq!(restored.sessions().len(), 2);

        // Sessions start after the empty window's count (4 bytes) and their
        // own count (4 bytes); each row is 152 bytes.
        let mut duplicate = body.clone();
        duplicate.copy_within(8..16, 8 + 152);
        assert!(matches!(
            decode::<Ledger>(&header(&ledger), &duplicate, &config(), 64),
            Err(SnapshotUseError::SessionRow { position: 1 })
        ));
        assert!(matches!(
            decode::<Ledger>(&header(&ledger), &body[..8 + 152 + 20], &config(), 64),
            Err(SnapshotUseError::SessionRow { position: 1 })
        ));
        let mut too_many = body.clone();
        too_many[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            decode::<Ledger>(&header(&ledger), &too_many, &config(), 64),
            Err(SnapshotUseError::Sessions {
                found: 1000,
                capacity: 16
            })
        ));
    }
}
