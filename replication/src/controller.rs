//! `Controller`: fails a shard over when etcd no longer holds its leader's
//! lease (ADR 0013, "Failover"). One controller acts at a time (elected
//! through etcd); a stale one can seal, but its install compares the
//! revision it read and loses.

use std::collections::BTreeMap;

use crate::message::Message;
use crate::types::{Epoch, Incarnation, NodeId, Seq, ShardConfig};

/// What the controller reads from etcd on each tick.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    /// The shard's configuration.
    pub config: &'a ShardConfig,
    /// Its revision.
    pub revision: u64,
    /// Nodes whose lease is alive, with the incarnation their key names.
    pub live: &'a BTreeMap<NodeId, Incarnation>,
}

/// What the controller asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerAction {
    /// Send a message to a replica.
    Send {
        /// The replica.
        to: NodeId,
        /// The message (a `Seal`).
        message: Message,
    },
    /// Install `config` by compare-and-swap on `expected_revision`.
    Install {
        /// The revision read.
        expected_revision: u64,
        /// The next epoch's configuration.
        config: ShardConfig,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    incarnation: Incarnation,
    last_seq: Seq,
    last_epoch: Epoch,
}

#[derive(Debug, Clone)]
struct Sealing {
    epoch: Epoch,
    answers: BTreeMap<NodeId, Answer>,
}

/// The failover decision for one shard.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    sealing: Option<Sealing>,
}

impl Controller {
    /// A controller with no failover in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch being sealed, if a failover is in progress.
    pub fn sealing(&self) -> Option<Epoch> {
        self.sealing.as_ref().map(|s| s.epoch)
    }

    /// Re-evaluates the shard: nothing while its leader is alive; else seal
    /// the in-sync followers at the next epoch and, with enough answers,
    /// install the longest log's owner as leader.
    pub fn on_tick(&mut self, view: ClusterView<'_>, out: &mut Vec<ControllerAction>) {
        let config = view.config;
        if view.live.get(&config.leader) == Some(&config.leader_incarnation) {
            self.sealing = None;
            return;
        }
        let epoch = config.epoch + 1;
        if self.sealing.as_ref().is_none_or(|s| s.epoch != epoch) {
            self.sealing = Some(Sealing {
                epoch,
                answers: BTreeMap::new(),
            });
        }
        let sealing = self.sealing.as_mut().expect("set above");
        let followers: Vec<NodeId> = config.isr_followers().collect();
        // The old leader, back in a new incarnation (restarted or resigned),
        // holds every entry it committed (a commit needs the leader's own
        // sync): its answer alone covers the committed prefix.
        let leader_back = view.live.contains_key(&config.leader);
        let asked = |n: &NodeId| followers.contains(n) || (leader_back && *n == config.leader);
        // Answers from a process that has since restarted say nothing
        // about its current incarnation: ask again.
        sealing
            .answers
            .retain(|n, a| asked(n) && view.live.get(n) == Some(&a.incarnation));
        let targets = followers
            .iter()
            .copied()
            .chain(leader_back.then_some(config.leader));
        for f in targets.filter(|f| !sealing.answers.contains_key(f)) {
            out.push(ControllerAction::Send {
                to: f,
                message: Message::Seal { epoch },
            });
        }
        let from_followers = sealing
            .answers
            .keys()
            .filter(|n| followers.contains(n))
            .count();
        let enough = sealing.answers.contains_key(&config.leader)
            || config
                .policy
                .failover_answers(followers.len())
                .is_some_and(|needed| from_followers >= needed);
        if !enough {
            return;
        }
        let (&leader, answer) = sealing
            .answers
            .iter()
            .max_by_key(|(&n, a)| (a.last_epoch, a.last_seq, std::cmp::Reverse(n)))
            .expect("at least one answer");
        let mut next = config.clone();
        next.epoch = epoch;
        next.leader = leader;
        next.leader_incarnation = answer.incarnation;
        // Only answers whose log ends where the new leader's does hold
        // everything it holds (same last sequence and epoch: the same
        // prefix). A shorter one may lack committed entries the new leader
        // has not yet re-replicated; in the set, a later failover could
        // count it as a copy. It rejoins when it has caught up.
        let end = (answer.last_epoch, answer.last_seq);
        next.isr = sealing
            .answers
            .iter()
            .filter(|(_, a)| (a.last_epoch, a.last_seq) == end)
            .map(|(&n, _)| n)
            .collect();
        out.push(ControllerAction::Install {
            expected_revision: view.revision,
            config: next,
        });
    }

    /// A replica's answer to a seal.
    pub fn on_message(&mut self, from: NodeId, message: Message) {
        let Message::Sealed {
            epoch,
            incarnation,
            last_seq,
            last_epoch,
        } = message
        else {
            return;
        };
        if let Some(s) = self.sealing.as_mut().filter(|s| s.epoch == epoch) {
            s.answers.insert(
                from,
                Answer {
                    incarnation,
                    last_seq,
                    last_epoch,
                },
            );
        }
    }
}
