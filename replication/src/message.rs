//! The messages replicas and controllers exchange.

use crate::types::{Epoch, Incarnation, Seq};

/// One journal entry as shipped: the record's bytes with the sequence and
/// epoch its header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence.
    pub seq: Seq,
    /// The epoch it was written in.
    pub epoch: Epoch,
    /// The record bytes, identical on every replica.
    pub data: Vec<u8>,
}

/// A replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Leader → follower: entries `prev_seq + 1 ..` (possibly none: a
    /// heartbeat carrying the commit point).
    Append {
        /// The sender's epoch.
        epoch: Epoch,
        /// The entry before the first one sent.
        prev_seq: Seq,
        /// Its epoch, which the follower must have at `prev_seq`.
        prev_epoch: Epoch,
        /// Contiguous entries from `prev_seq + 1`.
        entries: Vec<Entry>,
        /// The leader's commit point.
        commit: Seq,
    },
    /// Follower → leader: how far the follower's log matches the leader's.
    Ack {
        /// The leader's epoch being acknowledged.
        epoch: Epoch,
        /// The follower's incarnation.
        incarnation: Incarnation,
        /// Written and matching the leader's log up to here.
        received: Seq,
        /// Synced and matching up to here.
        durable: Seq,
    },
    /// Follower → leader: `prev_seq` did not match; the follower's log now
    /// ends at `last_seq` (it cut what could not be the leader's).
    Mismatch {
        /// The leader's epoch.
        epoch: Epoch,
        /// The follower's last sequence after any cut.
        last_seq: Seq,
        /// Its epoch.
        last_epoch: Epoch,
    },
    /// Replica → stale sender: a newer epoch has been accepted here.
    Fenced {
        /// The replica's accepted epoch.
        epoch: Epoch,
    },
    /// Controller → replica: refuse every epoch below `epoch` from now on.
    Seal {
        /// The epoch being prepared.
        epoch: Epoch,
    },
    /// Replica → controller: sealed, with the end of its synced log.
    Sealed {
        /// The sealed epoch.
        epoch: Epoch,
        /// The replica's incarnation.
        incarnation: Incarnation,
        /// Its last sequence (all synced).
        last_seq: Seq,
        /// Its last entry's epoch.
        last_epoch: Epoch,
    },
}
