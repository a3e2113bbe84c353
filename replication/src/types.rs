//! The vocabulary: node ids, epochs, sequences, policies and the shard
//! configuration that etcd holds.

/// A replica's id within its shard's replica set.
pub type NodeId = u16;
/// A configuration epoch: the `epoch` field of every journal record.
pub type Epoch = u32;
/// A journal sequence. Entries start at 1; 0 means "nothing".
pub type Seq = u64;
/// A process start counter, persisted and bumped at every start. A leader
/// is named by id *and* incarnation: a restarted leader never resumes its
/// old epoch.
pub type Incarnation = u64;

/// Most replicas a shard can have (leader included).
pub const REPLICAS_MAX: usize = 8;

/// Who a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A replica of the shard.
    Replica(NodeId),
    /// A controller (by its own id).
    Controller(u16),
}

/// How many in-sync followers must hold an entry before it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// This many followers.
    Followers(u8),
    /// Every in-sync follower.
    All,
}

/// What "held by a follower" means, and how many must hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Durable (synced) on the quorum of in-sync followers.
    Sync(Quorum),
    /// Written (not yet synced) by the quorum: survives kill -9 of every
    /// process, not a correlated power loss.
    Mem(Quorum),
    /// No follower needed: a failover may lose what followers lacked.
    Async,
}

impl Policy {
    /// Followers whose acknowledgement a commit needs among `followers`
    /// in-sync ones, or `None` when there are too few to ever commit.
    pub fn required(self, followers: usize) -> Option<usize> {
        let quorum = match self {
            Policy::Sync(q) | Policy::Mem(q) => q,
            Policy::Async => return Some(0),
        };
        match quorum {
            Quorum::All => Some(followers),
            Quorum::Followers(k) if usize::from(k) <= followers => Some(usize::from(k)),
            Quorum::Followers(_) => None,
        }
    }

    /// Seal answers a failover needs among `followers` in-sync followers so
    /// that one of them holds every committed entry (`n − k + 1`), or
    /// `None` when no answer set can guarantee it.
    pub fn failover_answers(self, followers: usize) -> Option<usize> {
        if followers == 0 {
            return None;
        }
        match self {
            // Nothing guarantees an async entry reached anyone: one answer
            // is as good as any, and the loss is reported.
            Policy::Async => Some(1),
            _ => self.required(followers).map(|k| followers - k + 1),
        }
    }

    /// True when followers acknowledge on write rather than on sync.
    pub fn acks_on_write(self) -> bool {
        matches!(self, Policy::Mem(_))
    }
}

/// A shard's configuration as etcd holds it. Written only by
/// compare-and-swap on its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// The current epoch; every record the leader writes carries it.
    pub epoch: Epoch,
    /// The leader of `epoch`.
    pub leader: NodeId,
    /// The leader's incarnation when it was chosen.
    pub leader_incarnation: Incarnation,
    /// Every replica of the shard, leader included.
    pub replicas: Vec<NodeId>,
    /// The in-sync set, leader included, sorted.
    pub isr: Vec<NodeId>,
    /// The fewest in-sync replicas (leader included) under which the leader
    /// still accepts writes.
    pub min_isr: u8,
    /// The replication policy.
    pub policy: Policy,
}

impl ShardConfig {
    /// The in-sync followers (the in-sync set without the leader).
    pub fn isr_followers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.isr.iter().copied().filter(move |&n| n != self.leader)
    }

    /// True when the in-sync set is large enough to accept writes.
    pub fn writable(&self) -> bool {
        self.isr.len() >= usize::from(self.min_isr)
    }
}
