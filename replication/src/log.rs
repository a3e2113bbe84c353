//! `EpochLog`: what the protocol needs to know about a replica's journal —
//! its last sequence and the first sequence of every epoch in it (Kafka's
//! leader-epoch checkpoint, KIP-101), never the entries themselves.

use crate::types::{Epoch, Seq};

/// The epochs of a log by their first sequence. Entries `1..=last` exist;
/// entry `s` has the epoch of the last run starting at or before `s`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochLog {
    /// `(epoch, first sequence)`, both strictly increasing.
    runs: Vec<(Epoch, Seq)>,
    last: Seq,
}

impl EpochLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last sequence (0 when empty).
    pub fn last(&self) -> Seq {
        self.last
    }

    /// The epoch of the last entry (0 when empty).
    pub fn last_epoch(&self) -> Epoch {
        self.runs.last().map_or(0, |r| r.0)
    }

    /// The epoch of entry `seq`: 0 for `seq == 0`, `None` past the end.
    pub fn epoch_at(&self, seq: Seq) -> Option<Epoch> {
        if seq == 0 {
            return Some(0);
        }
        if seq > self.last {
            return None;
        }
        let run = self.runs.partition_point(|r| r.1 <= seq);
        debug_assert!(run > 0, "entry {seq} precedes every run");
        Some(self.runs[run - 1].0)
    }

    /// The last sequence whose epoch is at most `epoch` (Kafka's "end
    /// offset for leader epoch").
    pub fn end_of(&self, epoch: Epoch) -> Seq {
        let next = self.runs.partition_point(|r| r.0 <= epoch);
        match self.runs.get(next) {
            Some(&(_, start)) => start - 1,
            None => self.last,
        }
    }

    /// Appends entry `seq` of `epoch`.
    ///
    /// # Panics
    /// If `seq` does not follow the last entry or `epoch` goes backwards:
    /// callers check both.
    pub fn append(&mut self, seq: Seq, epoch: Epoch) {
        assert_eq!(seq, self.last + 1, "log append must be contiguous");
        assert!(
            epoch >= self.last_epoch(),
            "epochs never go backwards in a log"
        );
        if epoch != self.last_epoch() || self.runs.is_empty() {
            self.runs.push((epoch, seq));
        }
        self.last = seq;
    }

    /// Cuts every entry after `seq`.
    pub fn truncate_after(&mut self, seq: Seq) {
        if seq >= self.last {
            return;
        }
        self.runs.retain(|r| r.1 <= seq);
        self.last = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_found_by_run_and_cut_with_the_log() {
        let mut log = EpochLog::new();
        for seq in 1..=3 {
            log.append(seq, 1);
        }
        for seq in 4..=5 {
            log.append(seq, 3);
        }
        assert_eq!(log.epoch_at(0), Some(0));
        assert_eq!(log.epoch_at(3), Some(1));
        assert_eq!(log.epoch_at(4), Some(3));
        assert_eq!(log.epoch_at(6), None);
        assert_eq!(log.end_of(0), 0);
        assert_eq!(log.end_of(1), 3);
        assert_eq!(log.end_of(2), 3);
        assert_eq!(log.end_of(3), 5);
        log.truncate_after(3);
        assert_eq!((log.last(), log.last_epoch()), (3, 1));
        log.append(4, 4);
        assert_eq!(log.epoch_at(4), Some(4));
        log.truncate_after(0);
        assert_eq!((log.last(), log.last_epoch()), (0, 0));
    }
}
