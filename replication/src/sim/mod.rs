//! The deterministic simulator (ADR 0013, "Proof"): replicas, controllers,
//! a model etcd and a faulty network, all driven from one seed on
//! simulated time, with the safety invariants checked at every step.
//!
//! [`run`] plays one seed; a failing seed replays exactly. Faults: message
//! loss, duplication, delay and reordering; one-way partitions between any
//! two processes and between a process and etcd; paused processes
//! (SIGSTOP: a stale leader that wakes up); process crashes (written
//! entries survive); power loss (only synced entries, plus a random prefix
//! of the rest, survive — not injected under `mem` policies, which
//! promise no more); disk errors (fail-stop).

mod etcd;
mod rng;
mod storage;

use std::collections::{BTreeMap, BTreeSet};

pub use etcd::Etcd;
pub use rng::Rng;
pub use storage::Storage;

use crate::controller::{ClusterView, Controller, ControllerAction};
use crate::message::Message;
use crate::replica::{Action, CasOutcome, Replica, Role, Timing};
use crate::types::{Epoch, Incarnation, NodeId, Peer, Policy, Quorum, Seq, ShardConfig};

/// One simulated run's settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The seed: everything random comes from it.
    pub seed: u64,
    /// Replicas in the shard (2..=5).
    pub replicas: u16,
    /// The policy under test (not `Async`: it promises no failover safety).
    pub policy: Policy,
    /// The configuration's `min_isr`.
    pub min_isr: u8,
    /// Simulated ticks with faults, before the healing phase.
    pub ticks: u64,
    /// Keep an event trace for a failure report.
    pub trace: bool,
}

impl SimOptions {
    /// Options for `seed` with a policy, replica count and length the seed
    /// itself picks, so a sweep over seeds covers them all.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_5eed);
        let replicas = 2 + rng.below(3) as u16;
        let followers = replicas - 1;
        let (policy, min_isr) = match rng.below(4) {
            0 => (Policy::Sync(Quorum::Followers(1)), 2),
            1 => (Policy::Sync(Quorum::All), 1 + rng.below(2) as u8),
            2 => (Policy::Mem(Quorum::Followers(1)), 2),
            _ => {
                let k = 1 + rng.below(u64::from(followers)) as u8;
                (Policy::Sync(Quorum::Followers(k)), k + 1)
            }
        };
        Self {
            seed,
            replicas,
            policy,
            min_isr,
            ticks: 3_000,
            trace: false,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Client entries acknowledged (committed by a leader).
    pub acknowledged: u64,
    /// Client entries proposed.
    pub proposed: u64,
    /// Configurations installed by failover (new epochs).
    pub failovers: u64,
    /// In-sync set changes installed.
    pub isr_changes: u64,
    /// Faults injected.
    pub faults: u64,
    /// The final commit point.
    pub commit: Seq,
}

/// A failed run: the invariant, where, and the trace's tail.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// The tick.
    pub tick: u64,
    /// What broke.
    pub violation: String,
    /// The last events (with `trace`).
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} tick {}: {}",
            self.seed, self.tick, self.violation
        )
    }
}

const CONTROLLERS: u16 = 2;
const LEASE_TTL: u64 = 100;
const KEEPALIVE_EVERY: u64 = 25;
const TICK_EVERY: u64 = 5;
const HEAL_TICKS: u64 = 3_000;
const TRACE_KEPT: usize = 20_000;

#[derive(Debug)]
struct Node {
    replica: Option<Replica>,
    storage: Storage,
    paused: bool,
    lease: Option<u64>,
    /// The incarnation the node's etcd key names.
    registered: Incarnation,
    disk_fails: bool,
    /// The commit point the checker has verified for this process.
    checked: Seq,
}

#[derive(Debug)]
struct ControllerProc {
    controller: Controller,
    up: bool,
    paused: bool,
    lease: Option<u64>,
    /// The election key's create revision while this controller holds it.
    elected: Option<u64>,
}

#[derive(Debug)]
struct InFlight {
    at: u64,
    order: u64,
    from: Peer,
    to: Peer,
    message: Message,
}

struct World {
    opts: SimOptions,
    rng: Rng,
    now: u64,
    timing: Timing,
    etcd: Etcd,
    nodes: Vec<Node>,
    controllers: Vec<ControllerProc>,
    net: Vec<InFlight>,
    /// Blocked one-way links `(from, to)` between process indices.
    cut: BTreeSet<(usize, usize)>,
    /// Processes cut off from etcd.
    etcd_cut: BTreeSet<usize>,
    faults_on: bool,
    // Checker state.
    /// The entry committed at each sequence (index = seq − 1).
    committed: Vec<(Epoch, Vec<u8>)>,
    /// Acknowledged client values → (seq, epoch).
    acked: BTreeMap<u64, (Seq, Epoch)>,
    /// Epoch → the leader (and incarnation) that led it.
    leaders: BTreeMap<Epoch, (NodeId, Incarnation)>,
    next_value: u64,
    summary: Summary,
    trace: Vec<String>,
}

/// Plays one seed; `Err` names the first invariant broken.
pub fn run(opts: &SimOptions) -> Result<Summary, Failure> {
    assert!((2..=5).contains(&opts.replicas), "2..=5 replicas");
    assert!(
        !matches!(opts.policy, Policy::Async),
        "async promises no failover safety"
    );
    let mut world = World::new(opts.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.play()));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {what}"))
        }
    };
    outcome.map_err(|violation| Failure {
        seed: opts.seed,
        tick: world.now,
        violation,
        trace: std::mem::take(&mut world.trace),
    })
}

fn value_of(data: &[u8]) -> Option<u64> {
    data.try_into().ok().map(u64::from_le_bytes)
}

impl World {
    fn new(opts: SimOptions) -> Self {
        let ids: Vec<NodeId> = (0..opts.replicas).collect();
        let config = ShardConfig {
            epoch: 1,
            leader: 0,
            leader_incarnation: 1,
            replicas: ids.clone(),
            isr: ids,
            min_isr: opts.min_isr,
            policy: opts.policy,
        };
        let timing = Timing {
            heartbeat: 20,
            lag_timeout: 100,
            entries_per_append_max: 16,
        };
        let mut world = Self {
            rng: Rng::new(opts.seed),
            now: 0,
            timing,
            etcd: Etcd::new(config),
            nodes: Vec::new(),
            controllers: Vec::new(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            etcd_cut: BTreeSet::new(),
            faults_on: true,
            committed: Vec::new(),
            acked: BTreeMap::new(),
            leaders: BTreeMap::new(),
            next_value: 1,
            summary: Summary::default(),
            trace: Vec::new(),
            opts,
        };
        for _ in 0..world.opts.replicas {
            world.nodes.push(Node {
                replica: None,
                storage: Storage::default(),
                paused: false,
                lease: None,
                registered: 0,
                disk_fails: false,
                checked: 0,
            });
        }
        for i in 0..world.nodes.len() {
            world.start(i);
        }
        for _ in 0..CONTROLLERS {
            world.controllers.push(ControllerProc {
                controller: Controller::new(),
                up: true,
                paused: false,
                lease: None,
                elected: None,
            });
        }
        world
    }

    fn log(&mut self, event: impl FnOnce() -> String) {
        if self.opts.trace {
            if self.trace.len() == TRACE_KEPT {
                self.trace.remove(0);
            }
            let line = format!("{:>6} {}", self.now, event());
            self.trace.push(line);
        }
    }

    fn play(&mut self) -> Result<Summary, String> {
        let end = self.opts.ticks;
        while self.now < end {
            self.step(true)?;
        }
        self.heal();
        let acknowledged_at_heal = self.summary.acknowledged;
        let busy_end = self.now + HEAL_TICKS;
        while self.now < busy_end {
            self.step(true)?;
        }
        // A quiet spell lets every replica catch up before the final checks.
        let quiet_end = self.now + HEAL_TICKS / 2;
        while self.now < quiet_end {
            self.step(false)?;
        }
        self.finish(acknowledged_at_heal)
    }

    fn step(&mut self, proposals: bool) -> Result<(), String> {
        if self.faults_on {
            self.inject_faults();
        }
        self.etcd.expire(self.now);
        for i in 0..self.nodes.len() {
            self.node_step(i)?;
        }
        for c in 0..self.controllers.len() {
            self.controller_step(c)?;
        }
        self.deliver()?;
        if proposals && self.rng.chance(150_000) {
            self.propose()?;
        }
        self.now += 1;
        Ok(())
    }

    // ---- processes -------------------------------------------------------

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.storage.incarnation += 1;
        let durable = node.storage.sync();
        let replica = Replica::new(
            i as NodeId,
            node.storage.incarnation,
            self.timing,
            node.storage.accepted_epoch,
            node.storage.epoch_log(),
            durable,
        );
        node.replica = Some(replica);
        node.paused = false;
        node.lease = None;
        node.disk_fails = false;
        node.checked = 0;
        let incarnation = node.storage.incarnation;
        self.log(|| format!("n{i} starts (incarnation {incarnation})"));
    }

    fn crash(&mut self, i: usize, power: bool) {
        let node = &mut self.nodes[i];
        if node.replica.take().is_none() {
            return;
        }
        if power {
            node.storage.power_loss(&mut self.rng);
        }
        let last = node.storage.last();
        self.log(|| {
            format!(
                "n{i} {} (log ends at {last})",
                if power { "loses power" } else { "is killed" }
            )
        });
    }

    fn node_up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some() && !self.nodes[i].paused
    }

    fn node_step(&mut self, i: usize) -> Result<(), String> {
        if !self.node_up(i) {
            return Ok(());
        }
        let reach_etcd = !self.etcd_cut.contains(&i);
        if reach_etcd && self.now % KEEPALIVE_EVERY == i as u64 % KEEPALIVE_EVERY {
            self.keep_node_alive(i);
        }
        if self.now % TICK_EVERY == i as u64 % TICK_EVERY {
            let mut out = Vec::new();
            let replica = self.nodes[i].replica.as_mut().expect("up");
            if reach_etcd {
                let (config, revision) = self.etcd.config();
                replica.on_config(self.now, config, revision, &mut out);
            }
            replica.on_tick(self.now, &mut out);
            self.perform(i, out)?;
        }
        // Group commit completes at random moments.
        let storage = &self.nodes[i].storage;
        if storage.synced < storage.entries.len() && self.rng.chance(300_000) {
            if self.nodes[i].disk_fails {
                self.log(|| format!("n{i} sync fails: fail-stop"));
                self.crash(i, false);
                return Ok(());
            }
            let synced = self.nodes[i].storage.sync();
            let mut out = Vec::new();
            self.nodes[i]
                .replica
                .as_mut()
                .expect("up")
                .on_synced(synced, &mut out);
            self.perform(i, out)?;
        }
        Ok(())
    }

    fn keep_node_alive(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let alive = node
            .lease
            .is_some_and(|lease| self.etcd.keepalive(self.now, lease, LEASE_TTL));
        if !alive {
            node.lease = Some(self.etcd.grant(self.now, LEASE_TTL));
        }
        if !alive || node.registered != node.storage.incarnation {
            let lease = node.lease.expect("granted");
            self.etcd
                .put_node(i as NodeId, node.storage.incarnation, lease);
            node.registered = node.storage.incarnation;
        }
    }

    fn controller_index(&self, c: usize) -> usize {
        self.nodes.len() + c
    }

    fn controller_step(&mut self, c: usize) -> Result<(), String> {
        let proc_index = self.controller_index(c);
        let ctl = &mut self.controllers[c];
        if !ctl.up || ctl.paused || self.etcd_cut.contains(&proc_index) {
            return Ok(());
        }
        if self.now % TICK_EVERY != (proc_index as u64 + 2) % TICK_EVERY {
            return Ok(());
        }
        let alive = ctl
            .lease
            .is_some_and(|lease| self.etcd.keepalive(self.now, lease, LEASE_TTL));
        if !alive {
            ctl.lease = Some(self.etcd.grant(self.now, LEASE_TTL));
            ctl.elected = None;
        }
        ctl.elected = self.etcd.campaign(c as u16, ctl.lease.expect("granted"));
        let Some(created) = ctl.elected else {
            return Ok(());
        };
        let (config, revision) = self.etcd.config();
        let config = config.clone();
        let live = self.etcd.live();
        let mut out = Vec::new();
        self.controllers[c].controller.on_tick(
            ClusterView {
                config: &config,
                revision,
                live: &live,
            },
            &mut out,
        );
        for action in out {
            match action {
                ControllerAction::Send { to, message } => {
                    self.send(Peer::Controller(c as u16), Peer::Replica(to), message)
                }
                ControllerAction::Install {
                    expected_revision,
                    config,
                } => {
                    let installed = self.etcd.cas_config(
                        expected_revision,
                        Some((c as u16, created)),
                        config.clone(),
                    );
                    if installed.is_some() {
                        self.summary.failovers += 1;
                        self.log(|| {
                            format!(
                                "c{c} installs epoch {} leader n{} isr {:?}",
                                config.epoch, config.leader, config.isr
                            )
                        });
                    }
                }
            }
        }
        Ok(())
    }

    // ---- actions ---------------------------------------------------------

    fn perform(&mut self, i: usize, actions: Vec<Action>) -> Result<(), String> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if self.nodes[i].replica.is_none() {
                return Ok(());
            }
            match action {
                Action::Write(entries) => {
                    if self.nodes[i].disk_fails {
                        self.log(|| format!("n{i} write fails: fail-stop"));
                        self.crash(i, false);
                        return Ok(());
                    }
                    self.nodes[i].storage.write(&entries);
                }
                Action::Truncate { after } => {
                    self.log(|| format!("n{i} cuts its log after {after}"));
                    self.nodes[i].storage.truncate(after);
                }
                Action::SyncAll => {
                    self.nodes[i].storage.sync();
                }
                Action::PersistEpoch(epoch) => self.nodes[i].storage.accepted_epoch = epoch,
                Action::Resign(incarnation) => {
                    self.log(|| format!("n{i} resigns (incarnation {incarnation})"));
                    self.nodes[i].storage.incarnation = incarnation;
                }
                Action::Send { to, message } => self.send(Peer::Replica(i as NodeId), to, message),
                Action::Ship {
                    to,
                    epoch,
                    prev_seq,
                    prev_epoch,
                    from,
                    through,
                    commit,
                } => {
                    let entries = self.nodes[i].storage.range(from, through);
                    let message = Message::Append {
                        epoch,
                        prev_seq,
                        prev_epoch,
                        entries,
                        commit,
                    };
                    self.send(Peer::Replica(i as NodeId), Peer::Replica(to), message);
                }
                Action::Commit { seq } => self.check_commit(i, seq)?,
                Action::ProposeConfig(proposal) => {
                    let outcome = if self.etcd_cut.contains(&i) {
                        CasOutcome::Refused
                    } else {
                        let installed = self.etcd.cas_config(
                            proposal.expected_revision,
                            None,
                            proposal.config.clone(),
                        );
                        let lost_reply = self.faults_on && self.rng.chance(100_000);
                        match (installed, lost_reply) {
                            (Some(_), true) => CasOutcome::Unknown,
                            (Some(revision), false) => CasOutcome::Applied(revision),
                            (None, _) => CasOutcome::Refused,
                        }
                    };
                    if !matches!(outcome, CasOutcome::Refused) {
                        self.summary.isr_changes += 1;
                    }
                    self.log(|| {
                        format!("n{i} proposes isr {:?}: {outcome:?}", proposal.config.isr)
                    });
                    let mut out = Vec::new();
                    self.nodes[i]
                        .replica
                        .as_mut()
                        .expect("up")
                        .on_config_result(outcome, &mut out);
                    queue.extend(out);
                }
            }
        }
        self.check_leader(i)
    }

    fn send(&mut self, from: Peer, to: Peer, message: Message) {
        let (f, t) = (self.proc_of(from), self.proc_of(to));
        if self.cut.contains(&(f, t)) {
            return;
        }
        if self.faults_on && self.rng.chance(30_000) {
            return;
        }
        let copies = if self.faults_on && self.rng.chance(20_000) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.below(if self.faults_on { 12 } else { 3 });
            self.net.push(InFlight {
                at,
                order: self.rng.next_u64(),
                from,
                to,
                message: message.clone(),
            });
        }
    }

    fn proc_of(&self, peer: Peer) -> usize {
        match peer {
            Peer::Replica(n) => usize::from(n),
            Peer::Controller(c) => self.controller_index(usize::from(c)),
        }
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now && !self.paused(self.net[i].to) {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| m.order);
        for m in due {
            let (f, t) = (self.proc_of(m.from), self.proc_of(m.to));
            if self.cut.contains(&(f, t)) {
                continue;
            }
            match m.to {
                Peer::Replica(n) => {
                    let n = usize::from(n);
                    let Some(replica) = self.nodes[n].replica.as_mut() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    replica.on_message(now, m.from, m.message, &mut out);
                    self.perform(n, out)?;
                }
                Peer::Controller(c) => {
                    let ctl = &mut self.controllers[usize::from(c)];
                    if let (true, Peer::Replica(from)) = (ctl.up, m.from) {
                        ctl.controller.on_message(from, m.message);
                    }
                }
            }
        }
        Ok(())
    }

    fn paused(&self, peer: Peer) -> bool {
        match peer {
            Peer::Replica(n) => self.nodes[usize::from(n)].paused,
            Peer::Controller(c) => self.controllers[usize::from(c)].paused,
        }
    }

    fn propose(&mut self) -> Result<(), String> {
        // Clients reach whoever believes it leads, stale leaders included.
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.node_up(i)
                    && matches!(
                        self.nodes[i].replica.as_ref().map(Replica::role),
                        Some(Role::Leader { .. })
                    )
            })
            .collect();
        if leaders.is_empty() {
            return Ok(());
        }
        let i = leaders[self.rng.below(leaders.len() as u64) as usize];
        let value = self.next_value;
        let mut out = Vec::new();
        let replica = self.nodes[i].replica.as_mut().expect("up");
        if let Ok(seq) = replica.propose(value.to_le_bytes().to_vec(), &mut out) {
            self.next_value += 1;
            self.summary.proposed += 1;
            self.log(|| format!("n{i} accepts value {value} at {seq}"));
        }
        self.perform(i, out)
    }

    // ---- faults ----------------------------------------------------------

    fn inject_faults(&mut self) {
        let procs = self.nodes.len() + self.controllers.len();
        let r = self.rng.below(1_000_000);
        let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
        match r {
            0..=1_999 => {
                let (a, b) = (pick(&mut self.rng, procs), pick(&mut self.rng, procs));
                if a != b {
                    self.cut.insert((a, b));
                    if self.rng.chance(500_000) {
                        self.cut.insert((b, a));
                    }
                    self.summary.faults += 1;
                    self.log(|| format!("partition p{a} -/-> p{b}"));
                }
            }
            2_000..=2_999 => {
                let p = pick(&mut self.rng, procs);
                self.etcd_cut.insert(p);
                self.summary.faults += 1;
                self.log(|| format!("p{p} cut from etcd"));
            }
            3_000..=3_799 => {
                let i = pick(&mut self.rng, self.nodes.len());
                if self.nodes[i].replica.is_some() && !self.nodes[i].paused {
                    self.nodes[i].paused = true;
                    self.summary.faults += 1;
                    self.log(|| format!("n{i} paused"));
                }
            }
            3_800..=4_599 => {
                let i = pick(&mut self.rng, self.nodes.len());
                let power = !self.opts.policy.acks_on_write() && self.rng.chance(500_000);
                self.summary.faults += 1;
                self.crash(i, power);
            }
            4_600..=4_799 => {
                let i = pick(&mut self.rng, self.nodes.len());
                self.nodes[i].disk_fails = true;
                self.summary.faults += 1;
                self.log(|| format!("n{i}'s disk starts failing"));
            }
            4_800..=5_099 => {
                let c = pick(&mut self.rng, self.controllers.len());
                self.controllers[c].paused = !self.controllers[c].paused;
                self.summary.faults += 1;
            }
            10_000..=19_999 => {
                // Healing is as common as hurting, so runs mix both.
                if !self.cut.is_empty() && self.rng.chance(500_000) {
                    self.cut.clear();
                    self.log(|| "partitions heal".into());
                }
                if !self.etcd_cut.is_empty() && self.rng.chance(500_000) {
                    self.etcd_cut.clear();
                    self.log(|| "etcd reachable again".into());
                }
            }
            20_000..=29_999 => {
                let i = pick(&mut self.rng, self.nodes.len());
                if self.nodes[i].replica.is_none() {
                    self.start(i);
                } else if self.nodes[i].paused {
                    self.nodes[i].paused = false;
                    self.log(|| format!("n{i} resumes"));
                }
            }
            _ => {}
        }
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.cut.clear();
        self.etcd_cut.clear();
        for c in &mut self.controllers {
            c.paused = false;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                self.start(i);
            }
            self.nodes[i].paused = false;
            self.nodes[i].disk_fails = false;
        }
        self.log(|| "heal: every fault removed".into());
    }

    // ---- invariants ------------------------------------------------------

    /// Every sequence a process learns is committed holds the one entry
    /// committed there; a leader's commit acknowledges its client entries.
    fn check_commit(&mut self, i: usize, seq: Seq) -> Result<(), String> {
        let from = self.nodes[i].checked + 1;
        let is_leader = matches!(
            self.nodes[i].replica.as_ref().map(Replica::role),
            Some(Role::Leader { .. })
        );
        for s in from..=seq {
            let Some(entry) = self.nodes[i].storage.entries.get((s - 1) as usize) else {
                return Err(format!(
                    "n{i} committed {s} past its log end {}",
                    self.nodes[i].storage.last()
                ));
            };
            let idx = (s - 1) as usize;
            if idx < self.committed.len() {
                let (epoch, data) = &self.committed[idx];
                if *epoch != entry.epoch || *data != entry.data {
                    return Err(format!(
                        "n{i} committed {s} as epoch {} {:?}, but epoch {epoch} {data:?} was committed there",
                        entry.epoch, entry.data
                    ));
                }
            } else if idx == self.committed.len() {
                self.committed.push((entry.epoch, entry.data.clone()));
            } else {
                return Err(format!("n{i} committed {s} with a gap before it"));
            }
            if is_leader {
                if let Some(value) = value_of(&entry.data) {
                    if let Some(prev) = self.acked.insert(value, (s, entry.epoch)) {
                        if prev != (s, entry.epoch) {
                            return Err(format!(
                                "value {value} acknowledged at {prev:?} and at {s}"
                            ));
                        }
                    } else {
                        self.summary.acknowledged += 1;
                    }
                }
            }
        }
        self.nodes[i].checked = self.nodes[i].checked.max(seq);
        Ok(())
    }

    /// One leader per epoch, and a new leader's log holds everything
    /// committed (and so every acknowledgement) before it.
    fn check_leader(&mut self, i: usize) -> Result<(), String> {
        let Some(replica) = self.nodes[i].replica.as_ref() else {
            return Ok(());
        };
        let Role::Leader { epoch } = replica.role() else {
            return Ok(());
        };
        let me = (i as NodeId, replica.incarnation());
        match self.leaders.get(&epoch) {
            Some(&other) if other != me => {
                return Err(format!(
                    "two leaders of epoch {epoch}: {other:?} and {me:?}"
                ))
            }
            Some(_) => return Ok(()),
            None => {}
        }
        self.leaders.insert(epoch, me);
        self.log(|| format!("n{i} leads epoch {epoch}"));
        let entries = &self.nodes[i].storage.entries;
        for (idx, (e, data)) in self.committed.iter().enumerate() {
            match entries.get(idx) {
                Some(entry) if entry.epoch == *e && entry.data == *data => {}
                _ => {
                    return Err(format!(
                        "n{i} leads epoch {epoch} without committed entry {} (epoch {e})",
                        idx + 1
                    ))
                }
            }
        }
        Ok(())
    }

    /// After healing: the shard commits again, every acknowledged value is
    /// in the leader's log exactly once, and every replica's log equals
    /// the leader's up to the commit point.
    fn finish(&mut self, acknowledged_at_heal: u64) -> Result<Summary, String> {
        let (config, _) = self.etcd.config();
        let config = config.clone();
        let leader = usize::from(config.leader);
        let replica = self.nodes[leader]
            .replica
            .as_ref()
            .ok_or("leader down after heal")?;
        if replica.role()
            != (Role::Leader {
                epoch: config.epoch,
            })
        {
            return Err(format!(
                "no leader after heal: {:?} expected n{leader} of epoch {}",
                replica.role(),
                config.epoch
            ));
        }
        let commit = replica.commit();
        if self.summary.acknowledged == acknowledged_at_heal {
            return Err(format!(
                "nothing acknowledged after heal (epoch {})",
                config.epoch
            ));
        }
        let log = &self.nodes[leader].storage.entries[..commit as usize];
        let mut seen = BTreeMap::new();
        for entry in log {
            if let Some(v) = value_of(&entry.data) {
                if seen.insert(v, entry.seq).is_some() {
                    return Err(format!("value {v} twice in the leader's log"));
                }
            }
        }
        for (value, (seq, _)) in &self.acked {
            if seen.get(value) != Some(seq) {
                return Err(format!("acknowledged value {value} (seq {seq}) lost"));
            }
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let entries = &node.storage.entries;
            if entries.len() < commit as usize || entries[..commit as usize] != *log {
                return Err(format!(
                    "n{n}'s log differs from the leader's below commit {commit}"
                ));
            }
        }
        let installed: BTreeSet<Epoch> = self.etcd.history().iter().map(|h| h.1.epoch).collect();
        if installed.len()
            != self
                .etcd
                .history()
                .iter()
                .map(|h| (h.1.epoch, h.1.leader))
                .collect::<BTreeSet<_>>()
                .len()
        {
            return Err("etcd installed two leaders for one epoch".into());
        }
        self.summary.commit = commit;
        Ok(self.summary.clone())
    }
}
