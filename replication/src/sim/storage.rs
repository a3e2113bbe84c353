//! A replica's disk in the simulator: the journal's sector semantics at
//! entry granularity. Written entries survive a process crash; a power
//! loss keeps the synced ones and a random prefix of the rest (the journal
//! scan stops at the first torn record). The accepted epoch and the
//! incarnation are written synchronously (a superblock).

use crate::log::EpochLog;
use crate::message::Entry;
use crate::types::{Epoch, Incarnation, Seq};

use super::rng::Rng;

/// One replica's persistent state.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    /// Entries `1..=len`.
    pub entries: Vec<Entry>,
    /// The first `synced` entries are synced.
    pub synced: usize,
    /// The persisted accepted epoch.
    pub accepted_epoch: Epoch,
    /// Bumped at every start.
    pub incarnation: Incarnation,
    /// Entries cut by a new leader, kept for audit.
    pub divergent: Vec<Entry>,
}

impl Storage {
    /// Appends entries after the end.
    pub fn write(&mut self, entries: &[Entry]) {
        for e in entries {
            assert_eq!(e.seq, self.entries.len() as Seq + 1, "write past a gap");
            self.entries.push(e.clone());
        }
    }

    /// Cuts every entry after `after` into `divergent`.
    pub fn truncate(&mut self, after: Seq) {
        let keep = after as usize;
        if keep < self.entries.len() {
            self.divergent.extend(self.entries.drain(keep..));
            self.synced = self.synced.min(keep);
        }
    }

    /// Syncs everything written.
    pub fn sync(&mut self) -> Seq {
        self.synced = self.entries.len();
        self.synced as Seq
    }

    /// The last entry's sequence.
    pub fn last(&self) -> Seq {
        self.entries.len() as Seq
    }

    /// Power loss: unsynced entries survive only as a random prefix.
    pub fn power_loss(&mut self, rng: &mut Rng) {
        let unsynced = self.entries.len() - self.synced;
        let kept = self.synced + rng.below(unsynced as u64 + 1) as usize;
        self.entries.truncate(kept);
    }

    /// The epochs of the log, as recovery rebuilds them.
    pub fn epoch_log(&self) -> EpochLog {
        let mut log = EpochLog::new();
        for e in &self.entries {
            log.append(e.seq, e.epoch);
        }
        log
    }

    /// Entries `from..=through`.
    pub fn range(&self, from: Seq, through: Seq) -> Vec<Entry> {
        if from > through {
            return Vec::new();
        }
        self.entries[(from - 1) as usize..through as usize].to_vec()
    }
}
