//! `Replica`: one member of a shard's replica set, as a state machine.
//!
//! The caller feeds it configuration reads from etcd ([`Replica::on_config`]),
//! messages ([`Replica::on_message`]), timer ticks, storage completions
//! ([`Replica::on_synced`]) and client entries ([`Replica::propose`]); it
//! answers with [`Action`]s, to be performed **in order** (a `PersistEpoch`
//! or `SyncAll` is complete before the next action). Rules: ADR 0013.

use std::collections::BTreeMap;

use crate::log::EpochLog;
use crate::message::{Entry, Message};
use crate::types::{Epoch, Incarnation, NodeId, Peer, Policy, Seq, ShardConfig, REPLICAS_MAX};

/// Timer settings, in the caller's time unit (the simulator's ticks, or
/// milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A leader resends unacknowledged entries (or a heartbeat) this often.
    pub heartbeat: u64,
    /// A follower not caught up for this long leaves the in-sync set.
    pub lag_timeout: u64,
    /// Most entries in one `Append`.
    pub entries_per_append_max: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: 50,
            lag_timeout: 500,
            entries_per_append_max: 256,
        }
    }
}

/// Something the caller must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Append these entries after the log's current end.
    Write(Vec<Entry>),
    /// Cut every entry after `after` (keeping the cut ones for audit).
    Truncate {
        /// The last entry kept.
        after: Seq,
    },
    /// Sync every written entry before the next action.
    SyncAll,
    /// Persist the accepted epoch (durably) before the next action.
    PersistEpoch(Epoch),
    /// This replica stopped leading before etcd replaced it: persist the
    /// new incarnation and put it in the node's etcd key, so the
    /// controller sees the configured leader gone and fails over.
    Resign(Incarnation),
    /// Send a message.
    Send {
        /// The receiver.
        to: Peer,
        /// The message.
        message: Message,
    },
    /// Send an `Append` of the entries `from..=through` read from the log
    /// (none when `from > through`: a heartbeat).
    Ship {
        /// The follower.
        to: NodeId,
        /// The leader's epoch.
        epoch: Epoch,
        /// The entry before `from`.
        prev_seq: Seq,
        /// Its epoch.
        prev_epoch: Epoch,
        /// First entry to send.
        from: Seq,
        /// Last entry to send.
        through: Seq,
        /// The leader's commit point.
        commit: Seq,
    },
    /// Everything up to `seq` is committed: apply it; a leader acknowledges it.
    Commit {
        /// The new commit point.
        seq: Seq,
    },
    /// Write this configuration to etcd by compare-and-swap, then report
    /// with [`Replica::on_config_result`].
    ProposeConfig(ConfigProposal),
}

/// A configuration change the leader asks etcd for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProposal {
    /// The revision the change compares against.
    pub expected_revision: u64,
    /// The configuration to install.
    pub config: ShardConfig,
}

/// How a configuration compare-and-swap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Installed at this revision.
    Applied(u64),
    /// Not installed: the revision had moved.
    Refused,
    /// Not known (the reply was lost); a later read tells.
    Unknown,
}

/// Why an entry was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica does not lead; `leader` is the one its configuration names.
    #[error("not the leader (the configuration names {leader:?})")]
    NotLeader {
        /// The configured leader, when known.
        leader: Option<NodeId>,
    },
    /// Fewer in-sync replicas than `min_isr`: the leader accepts nothing
    /// rather than acknowledge under-replicated entries.
    #[error("{in_sync} in-sync replicas, fewer than min_isr {min_isr}")]
    NotEnoughReplicas {
        /// In-sync replicas now (leader included).
        in_sync: usize,
        /// The configured minimum.
        min_isr: u8,
    },
}

/// What a replica is doing, for callers and checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following `leader` (when known).
    Follower {
        /// The leader whose entries it accepts.
        leader: Option<NodeId>,
    },
    /// Leading `epoch`.
    Leader {
        /// Its epoch.
        epoch: Epoch,
    },
}

/// A follower's progress as its leader knows it ([`Replica::followers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower.
    pub id: NodeId,
    /// Written and matching, as acknowledged.
    pub received: Seq,
    /// Synced and matching, as acknowledged.
    pub durable: Seq,
    /// Whether the confirmed in-sync set holds it.
    pub in_sync: bool,
}

#[derive(Debug, Clone)]
struct Progress {
    /// Next entry to send.
    next: Seq,
    /// Written and matching, as acknowledged.
    received: Seq,
    /// Synced and matching, as acknowledged.
    durable: Seq,
    /// When its acknowledgement last reached the leader's last entry.
    caught_up_at: u64,
    /// When the last heartbeat was due.
    resent_at: u64,
    /// `received` at that heartbeat.
    heartbeat_received: Seq,
    /// The incarnation its acknowledgements came from.
    incarnation: Incarnation,
}

#[derive(Debug, Clone)]
struct Pending {
    isr: Vec<NodeId>,
    expected_revision: u64,
}

#[derive(Debug, Clone)]
struct LeaderState {
    epoch: Epoch,
    /// This leader's `EpochStart` entry: nothing commits below it until it does.
    start: Seq,
    progress: BTreeMap<NodeId, Progress>,
    /// The in-sync set etcd confirmed.
    isr: Vec<NodeId>,
    /// A change asked for and not yet confirmed or refused.
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
enum State {
    Follower {
        leader: Option<(NodeId, Epoch)>,
        /// The log matches the leader's up to here.
        matched: Seq,
    },
    Leader(LeaderState),
}

/// One replica of a shard.
#[derive(Debug, Clone)]
pub struct Replica {
    id: NodeId,
    incarnation: Incarnation,
    timing: Timing,
    accepted_epoch: Epoch,
    log: EpochLog,
    durable: Seq,
    commit: Seq,
    config: Option<(ShardConfig, u64)>,
    state: State,
}

impl Replica {
    /// A replica recovered from its storage: the persisted accepted epoch,
    /// the log's epochs and how much of it is synced. It starts as a
    /// follower that knows no leader and no commit point.
    pub fn new(
        id: NodeId,
        incarnation: Incarnation,
        timing: Timing,
        accepted_epoch: Epoch,
        log: EpochLog,
        durable: Seq,
    ) -> Self {
        assert!(durable <= log.last(), "durable past the log's end");
        assert!(log.last_epoch() <= accepted_epoch || accepted_epoch == 0 && log.last() == 0);
        Self {
            id,
            incarnation,
            timing,
            accepted_epoch,
            log,
            durable,
            commit: 0,
            config: None,
            state: State::Follower {
                leader: None,
                matched: 0,
            },
        }
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// This process's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }
    /// The highest epoch this replica accepted (it refuses lower ones).
    pub fn accepted_epoch(&self) -> Epoch {
        self.accepted_epoch
    }
    /// The log's epochs and end.
    pub fn log(&self) -> &EpochLog {
        &self.log
    }
    /// Synced up to here.
    pub fn durable(&self) -> Seq {
        self.durable
    }
    /// The commit point this replica knows.
    pub fn commit(&self) -> Seq {
        self.commit
    }
    /// While leading: each follower's acknowledged progress, in id order
    /// (empty while following). For metrics; allocates.
    pub fn followers(&self) -> Vec<FollowerProgress> {
        match &self.state {
            State::Leader(ls) => ls
                .progress
                .iter()
                .map(|(&id, p)| FollowerProgress {
                    id,
                    received: p.received,
                    durable: p.durable,
                    in_sync: ls.isr.contains(&id),
                })
                .collect(),
            State::Follower { .. } => Vec::new(),
        }
    }

    /// The in-sync set of the configuration this replica last saw.
    pub fn isr(&self) -> &[NodeId] {
        self.config.as_ref().map_or(&[], |(c, _)| c.isr.as_slice())
    }

    /// Leader or follower.
    pub fn role(&self) -> Role {
        match &self.state {
            State::Leader(ls) => Role::Leader { epoch: ls.epoch },
            State::Follower { leader, .. } => Role::Follower {
                leader: leader.map(|l| l.0),
            },
        }
    }

    /// Accepts a client entry: written locally, shipped, and committed once
    /// the policy's quorum holds it. Returns its sequence.
    pub fn propose(&mut self, data: Vec<u8>, out: &mut Vec<Action>) -> Result<Seq, ProposeError> {
        let min_isr = self.config.as_ref().map_or(1, |c| c.0.min_isr);
        let State::Leader(ls) = &self.state else {
            return Err(ProposeError::NotLeader {
                leader: self.config.as_ref().map(|c| c.0.leader),
            });
        };
        let in_sync = ls
            .pending
            .as_ref()
            .map_or(ls.isr.len(), |p| p.isr.len().min(ls.isr.len()));
        if in_sync < usize::from(min_isr) {
            return Err(ProposeError::NotEnoughReplicas { in_sync, min_isr });
        }
        let seq = self.log.last() + 1;
        let epoch = ls.epoch;
        self.log.append(seq, epoch);
        out.push(Action::Write(vec![Entry { seq, epoch, data }]));
        self.stream(out);
        Ok(seq)
    }

    /// The caller synced the log up to `seq`.
    pub fn on_synced(&mut self, seq: Seq, out: &mut Vec<Action>) {
        let seq = seq.min(self.log.last());
        if seq <= self.durable {
            return;
        }
        self.durable = seq;
        match &self.state {
            State::Leader(_) => self.advance_commit(out),
            State::Follower { leader, matched } => {
                if let Some((leader, epoch)) = *leader {
                    out.push(self.ack(leader, epoch, *matched));
                }
            }
        }
    }

    /// The caller read the shard's configuration at `revision` from etcd.
    pub fn on_config(
        &mut self,
        now: u64,
        config: &ShardConfig,
        revision: u64,
        out: &mut Vec<Action>,
    ) {
        if self.config.as_ref().is_some_and(|c| c.1 >= revision) {
            return;
        }
        self.config = Some((config.clone(), revision));
        if let State::Leader(ls) = &mut self.state {
            if config.epoch == ls.epoch {
                ls.isr = config.isr.clone();
                if let Some(p) = &ls.pending {
                    if p.isr == config.isr || revision > p.expected_revision {
                        ls.pending = None;
                    }
                }
                self.advance_commit(out);
                return;
            }
            if config.epoch < ls.epoch {
                return;
            }
            self.step_down(true, out);
        }
        if config.epoch < self.accepted_epoch {
            // Sealed for a newer epoch: wait for its configuration.
            return;
        }
        if config.leader == self.id && config.leader_incarnation == self.incarnation {
            self.become_leader(now, config, out);
            return;
        }
        if config.leader == self.id {
            // Named in an earlier incarnation: never resume that epoch.
            return;
        }
        self.accept_epoch(config.epoch, out);
        self.follow(config.leader, config.epoch);
    }

    /// The caller's compare-and-swap of a proposed configuration ended.
    pub fn on_config_result(&mut self, outcome: CasOutcome, out: &mut Vec<Action>) {
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        let Some(pending) = ls.pending.clone() else {
            return;
        };
        match outcome {
            CasOutcome::Applied(revision) => {
                if let Some((config, _)) = &self.config {
                    let mut config = config.clone();
                    config.isr = pending.isr.clone();
                    self.config = Some((config, revision));
                }
                ls.isr = pending.isr;
                ls.pending = None;
                self.advance_commit(out);
            }
            CasOutcome::Refused => ls.pending = None,
            // Count under both sets until a read tells which one etcd holds.
            CasOutcome::Unknown => {}
        }
    }

    /// The caller's `Append` to `to` carried entries through `seq` (a
    /// [`Action::Ship`] extended to the end of a write): the next one
    /// starts after it.
    pub fn shipped(&mut self, to: NodeId, seq: Seq) {
        if let State::Leader(ls) = &mut self.state {
            if let Some(p) = ls.progress.get_mut(&to) {
                p.next = p.next.max(seq.min(self.log.last()) + 1);
            }
        }
    }

    /// A timer tick: resend what is unacknowledged, heartbeat, and keep the
    /// in-sync set honest.
    pub fn on_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        let last = self.log.last();
        for (&to, p) in ls.progress.iter_mut() {
            if now.saturating_sub(p.resent_at) >= self.timing.heartbeat {
                p.resent_at = now;
                // Resend from the acknowledged point only when the follower
                // acknowledged nothing new for a whole heartbeat (a lost
                // message, a reconnect). Rewinding a follower that is merely
                // behind resent its whole window every heartbeat and starved
                // it further: 13.5 GB shipped for 129 MB of journal.
                if p.received == p.heartbeat_received {
                    p.next = p.received + 1;
                }
                p.heartbeat_received = p.received;
            }
            if p.next <= last || p.resent_at == now {
                Self::ship(&self.log, self.timing, ls.epoch, self.commit, to, p, out);
            }
        }
        self.maintain_isr(now, out);
    }

    /// A message from a peer.
    pub fn on_message(&mut self, now: u64, from: Peer, message: Message, out: &mut Vec<Action>) {
        match (from, message) {
            (
                Peer::Replica(from),
                Message::Append {
                    epoch,
                    prev_seq,
                    prev_epoch,
                    entries,
                    commit,
                },
            ) => self.on_append(from, epoch, prev_seq, prev_epoch, &entries, commit, out),
            (
                Peer::Replica(from),
                Message::Ack {
                    epoch,
                    incarnation,
                    received,
                    durable,
                },
            ) => self.on_ack(now, from, epoch, incarnation, received, durable, out),
            (
                Peer::Replica(from),
                Message::Mismatch {
                    epoch,
                    last_seq,
                    last_epoch,
                },
            ) => self.on_mismatch(from, epoch, last_seq, last_epoch, out),
            (_, Message::Fenced { epoch }) if epoch > self.accepted_epoch => {
                self.accept_epoch(epoch, out);
                self.step_down(false, out);
            }
            (Peer::Controller(_), Message::Seal { epoch }) => self.on_seal(from, epoch, out),
            // Anything else is not for a replica: ignore it.
            _ => {}
        }
    }

    fn on_seal(&mut self, from: Peer, epoch: Epoch, out: &mut Vec<Action>) {
        if epoch < self.accepted_epoch {
            out.push(Action::Send {
                to: from,
                message: Message::Fenced {
                    epoch: self.accepted_epoch,
                },
            });
            return;
        }
        if let State::Leader(ls) = &self.state {
            if ls.epoch < epoch {
                self.step_down(false, out);
            }
        }
        self.accept_epoch(epoch, out);
        out.push(Action::SyncAll);
        self.durable = self.log.last();
        out.push(Action::Send {
            to: from,
            message: Message::Sealed {
                epoch,
                incarnation: self.incarnation,
                last_seq: self.log.last(),
                last_epoch: self.log.last_epoch(),
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        prev_seq: Seq,
        prev_epoch: Epoch,
        entries: &[Entry],
        commit: Seq,
        out: &mut Vec<Action>,
    ) {
        if epoch < self.accepted_epoch {
            out.push(Action::Send {
                to: Peer::Replica(from),
                message: Message::Fenced {
                    epoch: self.accepted_epoch,
                },
            });
            return;
        }
        if let State::Leader(ls) = &self.state {
            assert!(
                ls.epoch < epoch,
                "two leaders of epoch {epoch}: {} and {from}",
                self.id
            );
            self.step_down(false, out);
        }
        if !entries_are_well_formed(prev_seq, prev_epoch, epoch, entries) {
            return;
        }
        self.accept_epoch(epoch, out);
        self.follow(from, epoch);
        let last = self.log.last();
        if prev_seq > last {
            out.push(self.mismatch(from, epoch));
            return;
        }
        if self.log.epoch_at(prev_seq) != Some(prev_epoch) {
            // Our entry at `prev_seq` is not the leader's, so it was never
            // committed: cut it and everything after it.
            self.cut_after(prev_seq - 1, out);
            out.push(self.mismatch(from, epoch));
            return;
        }
        let mut write = Vec::new();
        for entry in entries {
            if write.is_empty() && entry.seq <= self.log.last() {
                if self.log.epoch_at(entry.seq) == Some(entry.epoch) {
                    continue;
                }
                self.cut_after(entry.seq - 1, out);
            }
            self.log.append(entry.seq, entry.epoch);
            write.push(entry.clone());
        }
        if !write.is_empty() {
            out.push(Action::Write(write));
        }
        let State::Follower { matched, .. } = &mut self.state else {
            unreachable!("followed above")
        };
        *matched = (*matched).max(prev_seq + entries.len() as Seq);
        let matched = *matched;
        let learned = commit.min(matched);
        if learned > self.commit {
            self.commit = learned;
            out.push(Action::Commit { seq: learned });
        }
        out.push(self.ack(from, epoch, matched));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ack(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: Epoch,
        incarnation: Incarnation,
        received: Seq,
        durable: Seq,
        out: &mut Vec<Action>,
    ) {
        let last = self.log.last();
        let policy = self.policy();
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        if epoch != ls.epoch || received > last {
            return;
        }
        let Some(p) = ls.progress.get_mut(&from) else {
            return;
        };
        if incarnation != p.incarnation {
            // A restarted follower: what it acknowledged before may be gone.
            p.incarnation = incarnation;
            p.received = received;
            p.durable = durable;
        } else {
            p.received = p.received.max(received);
            p.durable = p.durable.max(durable);
        }
        p.next = p.next.max(p.received + 1);
        if acked(policy, p) >= last {
            p.caught_up_at = now;
        }
        self.advance_commit(out);
    }

    fn on_mismatch(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        last_seq: Seq,
        last_epoch: Epoch,
        out: &mut Vec<Action>,
    ) {
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        if epoch != ls.epoch {
            return;
        }
        let Some(p) = ls.progress.get_mut(&from) else {
            return;
        };
        p.next = last_seq.min(self.log.end_of(last_epoch)) + 1;
        Self::ship(&self.log, self.timing, ls.epoch, self.commit, from, p, out);
    }

    fn become_leader(&mut self, now: u64, config: &ShardConfig, out: &mut Vec<Action>) {
        self.accept_epoch(config.epoch, out);
        let start = self.log.last() + 1;
        self.log.append(start, config.epoch);
        out.push(Action::Write(vec![Entry {
            seq: start,
            epoch: config.epoch,
            data: Vec::new(),
        }]));
        let progress = config
            .replicas
            .iter()
            .filter(|&&n| n != self.id)
            .map(|&n| {
                let p = Progress {
                    next: start,
                    received: 0,
                    durable: 0,
                    caught_up_at: now,
                    resent_at: now,
                    heartbeat_received: 0,
                    incarnation: 0,
                };
                (n, p)
            })
            .collect();
        self.state = State::Leader(LeaderState {
            epoch: config.epoch,
            start,
            progress,
            isr: config.isr.clone(),
            pending: None,
        });
        self.stream(out);
    }

    /// Leaves leadership. Unless a newer configuration already replaced
    /// it (`replaced`), it resigns: a leader fenced by sealed followers
    /// cannot commit, and its etcd key must stop naming the incarnation the
    /// configuration trusts.
    fn step_down(&mut self, replaced: bool, out: &mut Vec<Action>) {
        let was_leader = matches!(self.state, State::Leader(_));
        self.state = State::Follower {
            leader: None,
            matched: 0,
        };
        if was_leader && !replaced {
            self.incarnation += 1;
            out.push(Action::Resign(self.incarnation));
        }
    }

    fn follow(&mut self, leader: NodeId, epoch: Epoch) {
        if let State::Follower { leader: l, matched } = &mut self.state {
            if *l != Some((leader, epoch)) {
                *l = Some((leader, epoch));
                *matched = 0;
            }
        }
    }

    fn accept_epoch(&mut self, epoch: Epoch, out: &mut Vec<Action>) {
        if epoch > self.accepted_epoch {
            self.accepted_epoch = epoch;
            out.push(Action::PersistEpoch(epoch));
        }
    }

    fn cut_after(&mut self, seq: Seq, out: &mut Vec<Action>) {
        assert!(
            seq >= self.commit,
            "replica {} asked to cut committed entry {} (commit {})",
            self.id,
            seq + 1,
            self.commit
        );
        self.log.truncate_after(seq);
        self.durable = self.durable.min(seq);
        out.push(Action::Truncate { after: seq });
    }

    fn ack(&self, leader: NodeId, epoch: Epoch, matched: Seq) -> Action {
        Action::Send {
            to: Peer::Replica(leader),
            message: Message::Ack {
                epoch,
                incarnation: self.incarnation,
                received: matched,
                durable: self.durable.min(matched),
            },
        }
    }

    fn mismatch(&self, leader: NodeId, epoch: Epoch) -> Action {
        Action::Send {
            to: Peer::Replica(leader),
            message: Message::Mismatch {
                epoch,
                last_seq: self.log.last(),
                last_epoch: self.log.last_epoch(),
            },
        }
    }

    fn policy(&self) -> Policy {
        self.config.as_ref().map_or(Policy::Async, |c| c.0.policy)
    }

    /// Sends new entries to every follower already streaming.
    fn stream(&mut self, out: &mut Vec<Action>) {
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        for (&to, p) in ls.progress.iter_mut() {
            if p.next <= self.log.last() {
                Self::ship(&self.log, self.timing, ls.epoch, self.commit, to, p, out);
            }
        }
    }

    fn ship(
        log: &EpochLog,
        timing: Timing,
        epoch: Epoch,
        commit: Seq,
        to: NodeId,
        p: &mut Progress,
        out: &mut Vec<Action>,
    ) {
        let from = p.next.min(log.last() + 1);
        let through = log
            .last()
            .min(from + timing.entries_per_append_max as Seq - 1);
        let prev_seq = from - 1;
        let prev_epoch = log.epoch_at(prev_seq).expect("prev within the log");
        out.push(Action::Ship {
            to,
            epoch,
            prev_seq,
            prev_epoch,
            from,
            through,
            commit,
        });
        p.next = through + 1;
    }

    /// Moves the commit point to the highest entry the policy's quorum
    /// holds under the confirmed set and any pending one, if it is at or
    /// above this leader's `EpochStart`.
    fn advance_commit(&mut self, out: &mut Vec<Action>) {
        let Some((config, _)) = &self.config else {
            return;
        };
        let State::Leader(ls) = &self.state else {
            return;
        };
        let mut candidate = self.durable;
        let sets = [Some(&ls.isr), ls.pending.as_ref().map(|p| &p.isr)];
        for isr in sets.into_iter().flatten() {
            match quorum_point(config.policy, config.min_isr, self.id, isr, &ls.progress) {
                Some(point) => candidate = candidate.min(point),
                None => return,
            }
        }
        if candidate > self.commit && candidate >= ls.start {
            self.commit = candidate;
            out.push(Action::Commit { seq: candidate });
        }
    }

    /// Proposes at most one in-sync change at a time: drop a follower that
    /// has lagged for `lag_timeout` (only if the rest hold the commit point
    /// with the quorum), or add one that has caught up.
    fn maintain_isr(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some((config, revision)) = &self.config else {
            return;
        };
        let State::Leader(ls) = &mut self.state else {
            return;
        };
        if ls.pending.is_some() || config.epoch != ls.epoch {
            return;
        }
        let last = self.log.last();
        let policy = config.policy;
        let mut change = None;
        for &f in ls.isr.iter().filter(|&&n| n != self.id) {
            let p = &ls.progress[&f];
            if now.saturating_sub(p.caught_up_at) <= self.timing.lag_timeout {
                continue;
            }
            let rest: Vec<NodeId> = ls.isr.iter().copied().filter(|&n| n != f).collect();
            let holds = quorum_point(policy, 1, self.id, &rest, &ls.progress)
                .is_some_and(|point| point >= self.commit);
            if holds {
                change = Some(rest);
                break;
            }
        }
        if change.is_none() {
            for &f in config.replicas.iter().filter(|n| !ls.isr.contains(n)) {
                let Some(p) = ls.progress.get(&f) else {
                    continue;
                };
                if p.incarnation != 0 && acked(policy, p) >= last && last >= ls.start {
                    let mut grown = ls.isr.clone();
                    grown.push(f);
                    grown.sort_unstable();
                    change = Some(grown);
                    break;
                }
            }
        }
        let Some(isr) = change else {
            return;
        };
        let mut proposed = config.clone();
        proposed.isr = isr.clone();
        ls.pending = Some(Pending {
            isr,
            expected_revision: *revision,
        });
        out.push(Action::ProposeConfig(ConfigProposal {
            expected_revision: *revision,
            config: proposed,
        }));
    }
}

fn acked(policy: Policy, p: &Progress) -> Seq {
    if policy.acks_on_write() {
        p.received
    } else {
        p.durable
    }
}

/// The highest sequence the policy's quorum of `isr`'s followers holds, or
/// `None` when `isr` cannot commit at all (too small).
fn quorum_point(
    policy: Policy,
    min_isr: u8,
    leader: NodeId,
    isr: &[NodeId],
    progress: &BTreeMap<NodeId, Progress>,
) -> Option<Seq> {
    if isr.len() < usize::from(min_isr) {
        return None;
    }
    let mut held = [0 as Seq; REPLICAS_MAX];
    let mut n = 0;
    for &f in isr.iter().filter(|&&f| f != leader) {
        held[n] = progress.get(&f).map_or(0, |p| acked(policy, p));
        n += 1;
    }
    let k = policy.required(n)?;
    if k == 0 {
        return Some(Seq::MAX);
    }
    let held = &mut held[..n];
    held.sort_unstable_by(|a, b| b.cmp(a));
    Some(held[k - 1])
}

fn entries_are_well_formed(
    prev_seq: Seq,
    prev_epoch: Epoch,
    epoch: Epoch,
    entries: &[Entry],
) -> bool {
    let mut seq = prev_seq;
    let mut last_epoch = prev_epoch;
    for entry in entries {
        if entry.seq != seq + 1 || entry.epoch < last_epoch || entry.epoch > epoch {
            return false;
        }
        seq = entry.seq;
        last_epoch = entry.epoch;
    }
    prev_epoch <= epoch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first entry each `Ship` to `to` sends.
    fn shipped_from(out: &[Action], to: NodeId) -> Vec<Seq> {
        out.iter()
            .filter_map(|a| match a {
                Action::Ship { to: t, from, .. } if *t == to => Some(*from),
                _ => None,
            })
            .collect()
    }

    fn ack(leader: &mut Replica, now: u64, from: NodeId, received: Seq, out: &mut Vec<Action>) {
        let message = Message::Ack {
            epoch: 1,
            incarnation: 0,
            received,
            durable: received,
        };
        leader.on_message(now, Peer::Replica(from), message, out);
    }

    #[test]
    fn a_heartbeat_resends_only_to_a_follower_that_stalled() {
        let timing = Timing::default();
        let mut leader = Replica::new(1, 0, timing, 0, EpochLog::new(), 0);
        let config = ShardConfig {
            epoch: 1,
            leader: 1,
            leader_incarnation: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            min_isr: 1,
            policy: Policy::Async,
        };
        let mut out = Vec::new();
        leader.on_config(0, &config, 1, &mut out);
        assert!(matches!(leader.role(), Role::Leader { epoch: 1 }));
        for _ in 0..100 {
            leader.propose(vec![7], &mut out).unwrap();
        }
        let last = leader.log().last();
        ack(&mut leader, 10, 2, 10, &mut out);
        // Behind but acknowledging: nothing is sent again.
        out.clear();
        leader.on_tick(timing.heartbeat, &mut out);
        assert_eq!(shipped_from(&out, 2), [last + 1], "only a heartbeat");
        ack(&mut leader, 60, 2, 20, &mut out);
        out.clear();
        leader.on_tick(2 * timing.heartbeat, &mut out);
        assert_eq!(shipped_from(&out, 2), [last + 1], "only a heartbeat");
        // Nothing acknowledged for a whole heartbeat: resend from 21.
        out.clear();
        leader.on_tick(3 * timing.heartbeat, &mut out);
        assert_eq!(shipped_from(&out, 2), [21]);
    }
}
