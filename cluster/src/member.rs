//! `keel-cluster node`: one replica of a shard as a process (ADR 0013,
//! "The node process").
//!
//! Two threads. The **replica thread** owns the [`ReplicaDriver`] and takes
//! events from one bounded queue: replication messages, configuration
//! reads, compare-and-swap outcomes, and wake-ups from the engine's
//! journaller. It ticks the core every [`TICK_MS`] and, while this node
//! leads, publishes the commit point the engine's journaller waits on. The
//! **control thread** (the caller's, on a current-thread tokio runtime)
//! runs the replication links, polls the shard's configuration, keeps the
//! lease alive, performs the replica's configuration changes, and runs the
//! failover [`Controller`] while this node holds the controller key.
//!
//! A follower runs no engine and no client server (clients find the
//! leader by trying the nodes), but a hot replica ([`HotReplica`]) applies
//! its journal up to the commit point it has learned. When etcd names this
//! node leader and its `EpochStart` is written, the driver hands its
//! journal to the engine ([`Node::start_replicated`] from the hot
//! replica's state: only the records past the commit point are replayed),
//! and the client server starts. Losing leadership (a newer epoch, a fenced
//! append, a lost lease, any driver error) is fail-stop: the commit point
//! is lost (waiting batches fail, never acknowledged), and the process
//! exits with [`Exit::SteppedDown`]; restarted, it rejoins as a follower in
//! a new incarnation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_journal::IoMode;
use keel_ledger::{Ledger, LedgerValidator};
use keel_node::config::NodeConfig;
use keel_node::follower::HotReplica;
use keel_node::node::{Node, NodeError, StartPoint};
use keel_node::replicated::{CommitPoint, Replication};
use keel_replication::{
    CasOutcome, ClusterView, ConfigProposal, Controller, ControllerAction, Incarnation, Message,
    NodeId, Peer, Role, ShardConfig, Timing,
};
use keel_replicator::{DriverError, Effects, Paths, ReplicaDriver, Wake};
use keel_server::{Server, ServerConfig, ServerError};
use tokio::sync::mpsc as tmpsc;

use crate::control::{ConfigWatch, ControlError, EtcdControl, Lease};
use crate::metrics::{LeaderMetrics, ReplicaMetrics};
use crate::transport::{PeerTls, Transport};

/// The replica thread ticks the core this often (milliseconds).
pub const TICK_MS: u64 = 10;
/// The shard's configuration is read from etcd this often besides the
/// watch that delivers each write at once (the read also re-creates a watch
/// that ended).
const CONFIG_POLL: Duration = Duration::from_millis(500);
/// How often the control thread checks its lease is still surely held.
const LEASE_CHECK: Duration = Duration::from_millis(50);
/// The controller re-evaluates the shard this often.
const CONTROLLER_TICK: Duration = Duration::from_millis(100);
/// Events queued for the replica thread before new ones are dropped.
const EVENTS_MAX: usize = 8192;
/// A graceful stop waits this long for the server to write admitted replies.
const DRAIN: Duration = Duration::from_secs(5);

/// What one member process is.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// This replica's id (as in the shard's `replicas`).
    pub id: NodeId,
    /// The shard it serves.
    pub shard: u32,
    /// etcd's endpoint.
    pub etcd: String,
    /// The cluster name (the etcd key prefix).
    pub cluster: String,
    /// The replica's directory: `journal/`, `replica.state`, `divergent/`.
    pub data_dir: PathBuf,
    /// The engine's configuration (its journal directory is set from
    /// `data_dir`).
    pub node: NodeConfig,
    /// The client server's configuration (served while leading).
    pub server: ServerConfig,
    /// Where peers connect for replication.
    pub replication_listen: SocketAddr,
    /// Every replica's replication address, this one's included.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Mutual TLS on the replication links (`None`: plaintext, trusted
    /// networks only).
    pub peer_tls: Option<PeerTls>,
    /// The lease's TTL in seconds: how long a dead leader goes unnoticed.
    pub lease_ttl_s: i64,
    /// The replication core's timers (milliseconds).
    pub timing: Timing,
}

impl MemberConfig {
    /// The driver's files under `data_dir`.
    pub fn paths(&self) -> Paths {
        Paths {
            journal: self.data_dir.join("journal"),
            state: self.data_dir.join("replica.state"),
            divergent: self.data_dir.join("divergent"),
        }
    }
}

/// How a member ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by a signal; the lease was revoked.
    Stopped,
    /// Stopped leading or following (deposed, fenced, lease lost, a
    /// replication error): restart it; it rejoins as a follower.
    SteppedDown(String),
}

/// Why a member could not start or went on no further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// etcd refused or could not be reached.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The replica's journal or state file.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The engine would not start on promotion.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The client server would not start on promotion.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The replication address could not be bound.
    #[error("cannot listen for replication on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A configuration value that cannot work.
    #[error("{0}")]
    Config(String),
    /// The runtime could not be built.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

enum Event {
    Net { from: Peer, message: Message },
    Config { config: ShardConfig, revision: u64 },
    Cas(CasOutcome),
    Wake,
    Fatal(String),
}

enum ToControl {
    Propose(ConfigProposal),
    Register(Incarnation),
    Done(Result<Exit, String>),
}

/// Runs one member until it is stopped (`stop` set, e.g. by a signal) or
/// steps down.
pub fn run(config: MemberConfig, stop: Arc<AtomicBool>) -> Result<Exit, MemberError> {
    if config.node.journal_config().is_none() {
        return Err(MemberError::Config(
            "a replica needs a journal: [journal] durability must not be \"none\"".into(),
        ));
    }
    if !config.peers.contains_key(&config.id) {
        return Err(MemberError::Config(format!(
            "--peer must name every replica, this one ({}) included",
            config.id
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MemberError::Runtime)?;
    runtime.block_on(run_async(config, stop))
}

async fn run_async(mut config: MemberConfig, stop: Arc<AtomicBool>) -> Result<Exit, MemberError> {
    let control = EtcdControl::connect(&config.etcd, &config.cluster).await?;
    let lease = control.grant(config.lease_ttl_s).await?;
    let paths = config.paths();
    std::fs::create_dir_all(&paths.journal).map_err(|e| {
        MemberError::Config(format!("cannot create {}: {e}", paths.journal.display()))
    })?;
    config.node.journal.data_dir = paths.journal.clone();
    // The server's I/O thread must never wait on the ring: Busy at once.
    config.node.engine.back_pressure_wait_ms = 0;
    let journal_config = config.node.journal_config().expect("checked in run");
    let mode = IoMode::for_policy(
        journal_config.sync,
        config.node.journal.dev_allow_buffered_io,
    );
    let journal_dir = paths.journal.clone();
    let driver = ReplicaDriver::open(config.id, config.timing, paths, journal_config, mode)?;
    let hot = HotReplica::spawn(
        journal_dir,
        Ledger::new(config.node.ledger_config()),
        config.node.engine.dedup_entries,
    );
    let incarnation = driver.replica().incarnation();
    control
        .register_node(config.id, incarnation, &lease)
        .await?;
    let listener = tokio::net::TcpListener::bind(config.replication_listen)
        .await
        .map_err(|source| MemberError::Bind {
            addr: config.replication_listen,
            source,
        })?;
    eprintln!(
        "keel-cluster: node {} (incarnation {incarnation}) of shard {} in cluster {:?}: \
         replication on {} ({}), journal {}, lease {} s",
        config.id,
        config.shard,
        config.cluster,
        config.replication_listen,
        match config.peer_tls {
            Some(_) => "mutual TLS",
            None => "plaintext",
        },
        config.node.journal.data_dir.display(),
        lease.ttl_s(),
    );

    let metrics = Arc::new(ReplicaMetrics::default());
    let _endpoint = match config.server.metrics_listen {
        None => None,
        Some(addr) => {
            let render = {
                let metrics = Arc::clone(&metrics);
                Box::new(move || metrics.render())
            };
            let endpoint = keel_server::metrics::MetricsEndpoint::start(addr, render)?;
            eprintln!(
                "keel-cluster: metrics on http://{}/metrics",
                endpoint.local_addr()
            );
            Some(endpoint)
        }
    };
    let (events_tx, events) = mpsc::sync_channel::<Event>(EVENTS_MAX);
    let (controller_tx, controller_rx) = tmpsc::unbounded_channel::<(NodeId, Message)>();
    let dropped = Arc::clone(&metrics.dropped);
    let me = config.id;
    let inbox = {
        let events = events_tx.clone();
        let dropped = Arc::clone(&dropped);
        Arc::new(
            move |from: Peer, to: Peer, message: Message| match (to, from) {
                (Peer::Replica(to), _) if to == me => {
                    if events.try_send(Event::Net { from, message }).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (Peer::Controller(to), Peer::Replica(from)) if to == me => {
                    let _ = controller_tx.send((from, message));
                }
                _ => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        )
    };
    let transport = Transport::start(
        config.shard,
        listener,
        &config.peers,
        inbox,
        config.peer_tls.clone(),
    );

    let (to_control, from_member) = tmpsc::unbounded_channel::<ToControl>();
    let woken = Arc::new(AtomicBool::new(false));
    let wake: Wake = {
        let events = events_tx.clone();
        let woken = Arc::clone(&woken);
        Arc::new(move || {
            if !woken.swap(true, Ordering::AcqRel) {
                let _ = events.try_send(Event::Wake);
            }
        })
    };
    let member = Member {
        driver,
        events,
        woken,
        wake,
        transport: transport.clone(),
        control: to_control.clone(),
        node: config.node.clone(),
        server: config.server.clone(),
        started: Instant::now(),
        next_tick: 0,
        leading: None,
        hot: Some(hot),
        metrics,
        stop,
    };
    let replica = std::thread::Builder::new()
        .name(format!("keel-replica-{me}"))
        .spawn(move || {
            let result = member.run().map_err(|e| e.to_string());
            let _ = to_control.send(ToControl::Done(result));
        })
        .map_err(MemberError::Runtime)?;
    let outcome = control_loop(
        &control,
        lease,
        &config,
        transport,
        events_tx,
        from_member,
        controller_rx,
    )
    .await;
    let _ = replica.join();
    outcome
}

/// etcd unreachable (a partition, an etcd outage): the lease may run out at
/// etcd while no answer says so. This task steps the node down before it
/// can, so a leader never acknowledges while another is chosen. It is its
/// own task because the control loop waits on etcd calls (each bounded by
/// the request timeout) and a check between them came too late: a cut-off
/// leader heard of its successor before it noticed (the partition test).
///
/// The orderly stop (the replica thread ends, the server drains) must be
/// done before etcd can expire the lease. If it is not — a thread stuck on
/// something the partition cut off (the partition test caught a node still
/// running 15 s after its guard fired) — the process exits at once with
/// [`EXIT_STEPPED_DOWN`] once a whole TTL has passed without a renewal:
/// a node whose lease may be gone never keeps running.
async fn guard_lease(renewed: Arc<Mutex<Instant>>, ttl: Duration, events: SyncSender<Event>) {
    let mut check = tokio::time::interval(LEASE_CHECK);
    loop {
        check.tick().await;
        let since = renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if since >= ttl {
            eprintln!(
                "keel-cluster node: stepped down: lease lost: no renewal answered for {since:.2?} \
                 (TTL {ttl:?}) and the orderly stop did not finish: exiting now"
            );
            std::process::exit(i32::from(EXIT_STEPPED_DOWN));
        }
        if since >= ttl - ttl / 5 {
            let _ = events.try_send(Event::Fatal(format!(
                "lease lost: no renewal answered for {since:.2?} (TTL {ttl:?})"
            )));
        }
    }
}

/// The exit code of a node that stepped down (deposed, fenced, lease lost,
/// a replication error): restart it; it rejoins as a follower.
pub const EXIT_STEPPED_DOWN: u8 = 5;

/// Renews the lease every third of its TTL, in a task of its own so a slow
/// etcd call of the control loop (a controller round under load) never
/// delays a renewal: it did, and a follower stepped down for a lease it
/// still held. A renewal counts from when it was sent.
async fn renew_lease(
    control: EtcdControl,
    lease: Arc<tokio::sync::Mutex<Lease>>,
    ttl: Duration,
    renewed: Arc<Mutex<Instant>>,
    events: SyncSender<Event>,
) {
    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        renew.tick().await;
        let mut lease = lease.lock().await;
        match control.keep_alive(&mut lease, ttl / 4).await {
            Ok(sent) => {
                let mut renewed = renewed.lock().unwrap_or_else(|e| e.into_inner());
                *renewed = (*renewed).max(sent);
            }
            Err(e @ ControlError::LeaseExpired { .. }) => {
                let _ = events.try_send(Event::Fatal(format!("lease lost: {e}")));
            }
            Err(e) => eprintln!("keel-cluster: lease renewal failed: {e}"),
        }
    }
}

/// The control thread's loop: configuration polls, the replica's etcd
/// writes, and the controller (the lease is renewed and guarded by tasks
/// of their own).
async fn control_loop(
    control: &EtcdControl,
    lease: Lease,
    config: &MemberConfig,
    transport: Transport,
    events: SyncSender<Event>,
    mut from_member: tmpsc::UnboundedReceiver<ToControl>,
    mut controller_rx: tmpsc::UnboundedReceiver<(NodeId, Message)>,
) -> Result<Exit, MemberError> {
    let shard = config.shard;
    let mut poll = tokio::time::interval(CONFIG_POLL);
    let ttl = Duration::from_secs(lease.ttl_s().max(1) as u64);
    let mut controller_tick = tokio::time::interval(CONTROLLER_TICK);
    for timer in [&mut poll, &mut controller_tick] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut delivered: Option<i64> = None;
    let mut watch: Option<ConfigWatch> = None;
    let mut waiting_noted = false;
    let renewed = Arc::new(Mutex::new(lease.granted()));
    let guard = tokio::spawn(guard_lease(Arc::clone(&renewed), ttl, events.clone()));
    let lease = Arc::new(tokio::sync::Mutex::new(lease));
    let renewal = tokio::spawn(renew_lease(
        control.clone(),
        Arc::clone(&lease),
        ttl,
        renewed,
        events.clone(),
    ));
    let stop_lease = || {
        guard.abort();
        renewal.abort();
    };
    let mut controller = Controller::new();
    let mut actions = Vec::new();
    let name = config.id.to_string();
    loop {
        tokio::select! {
            _ = poll.tick() => match control.config(shard).await {
                Ok((shard_config, revision)) => {
                    deliver(&events, &mut delivered, shard_config, revision);
                    if watch.is_none() {
                        watch = control.watch_config(shard, revision).await.ok();
                    }
                }
                Err(ControlError::NoConfig { key, .. }) if !waiting_noted => {
                    eprintln!("keel-cluster: no configuration at {key} yet: run keel-cluster init");
                    waiting_noted = true;
                }
                Err(_) => {}
            },
            written = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            } => match written {
                Ok(Some((shard_config, revision))) => {
                    deliver(&events, &mut delivered, shard_config, revision);
                }
                // Ended or broken: the next read watches again.
                Ok(None) | Err(_) => watch = None,
            },
            _ = controller_tick.tick() => {
                let lease = lease.lock().await;
                if let Err(e) = controller_step(control, &lease, &name, config, &transport, &mut controller, &mut actions).await {
                    eprintln!("keel-cluster: controller: {e}");
                }
            },
            Some((from, message)) = controller_rx.recv() => controller.on_message(from, message),
            command = from_member.recv() => match command {
                Some(ToControl::Propose(proposal)) => {
                    let outcome = control
                        .cas_config(shard, proposal.expected_revision as i64, None, &proposal.config)
                        .await
                        .unwrap_or(CasOutcome::Unknown);
                    let _ = events.try_send(Event::Cas(outcome));
                }
                Some(ToControl::Register(incarnation)) => {
                    if let Err(e) = control.register_node(config.id, incarnation, &*lease.lock().await).await {
                        let _ = events.try_send(Event::Fatal(format!("cannot re-register after resigning: {e}")));
                    }
                }
                Some(ToControl::Done(result)) => {
                    // The lease goes now, not at expiry: the controller
                    // fails over at once.
                    stop_lease();
                    let _ = control.revoke(&*lease.lock().await).await;
                    return result.map_err(MemberError::Config);
                }
                None => {
                    stop_lease();
                    let _ = control.revoke(&*lease.lock().await).await;
                    return Err(MemberError::Config("the replica thread ended".into()));
                }
            },
        }
    }
}

/// Hands the replica thread a configuration it has not had yet (a full
/// queue leaves it for the next read).
fn deliver(
    events: &SyncSender<Event>,
    delivered: &mut Option<i64>,
    config: ShardConfig,
    revision: i64,
) {
    if delivered.is_some_and(|d| d >= revision) {
        return;
    }
    let event = Event::Config {
        config,
        revision: revision as u64,
    };
    if events.try_send(event).is_ok() {
        *delivered = Some(revision);
    }
}

/// One controller round: campaign; while elected, read the shard and the
/// live nodes and act on the controller's decision.
async fn controller_step(
    control: &EtcdControl,
    lease: &Lease,
    name: &str,
    config: &MemberConfig,
    transport: &Transport,
    controller: &mut Controller,
    actions: &mut Vec<ControllerAction>,
) -> Result<(), ControlError> {
    let Some(elected) = control.campaign(name, lease).await? else {
        return Ok(());
    };
    let (shard_config, revision) = match control.config(config.shard).await {
        Ok(read) => read,
        Err(ControlError::NoConfig { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let live = control.live_nodes().await?;
    actions.clear();
    controller.on_tick(
        ClusterView {
            config: &shard_config,
            revision: revision as u64,
            live: &live,
        },
        actions,
    );
    for action in actions.drain(..) {
        match action {
            ControllerAction::Send { to, message } => {
                transport.send(to, Peer::Controller(config.id), Peer::Replica(to), &message)
            }
            ControllerAction::Install {
                expected_revision,
                config: next,
            } => {
                let outcome = control
                    .cas_config(config.shard, expected_revision as i64, Some(elected), &next)
                    .await?;
                eprintln!(
                    "keel-cluster: controller {}: epoch {} leader {} (incarnation {}) in-sync {:?}: {outcome:?}",
                    config.id, next.epoch, next.leader, next.leader_incarnation, next.isr
                );
            }
        }
    }
    Ok(())
}

/// The engine and client server of a leading member.
struct Leading {
    node: Node<Ledger>,
    server: Server,
    commit: Arc<CommitPoint>,
}

/// The replica thread's state.
struct Member {
    driver: ReplicaDriver,
    events: mpsc::Receiver<Event>,
    woken: Arc<AtomicBool>,
    wake: Wake,
    transport: Transport,
    control: tmpsc::UnboundedSender<ToControl>,
    node: NodeConfig,
    server: ServerConfig,
    started: Instant,
    next_tick: u64,
    leading: Option<Leading>,
    /// While following: the state machine kept at the commit point.
    hot: Option<HotReplica<Ledger>>,
    metrics: Arc<ReplicaMetrics>,
    stop: Arc<AtomicBool>,
}

impl Member {
    fn run(mut self) -> Result<Exit, MemberError> {
        let result = self.drive();
        match (&result, self.leading.take()) {
            (Ok(Exit::Stopped), Some(leading)) => self.drain(leading),
            (_, Some(leading)) => {
                leading.commit.lose();
                leading.server.shutdown();
                let _ = leading.node.shutdown();
            }
            (_, None) => {}
        }
        result
    }

    /// Steps until stopped or stepped down.
    fn drive(&mut self) -> Result<Exit, MemberError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Exit::Stopped);
            }
            match self.step() {
                Ok(None) => {}
                Ok(Some(exit)) => return Ok(exit),
                Err(MemberError::Driver(e)) => return Ok(Exit::SteppedDown(e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }

    /// A graceful stop of a leader: the server stops accepting and writes
    /// every admitted reply while this thread keeps committing; then the
    /// engine stops.
    fn drain(&mut self, leading: Leading) {
        let Leading {
            node,
            server,
            commit,
        } = leading;
        let shutting = std::thread::spawn(move || server.shutdown());
        let deadline = Instant::now() + DRAIN;
        while !shutting.is_finished() && Instant::now() < deadline {
            if self.step_committing(&commit).is_err() {
                break;
            }
        }
        commit.lose();
        let _ = shutting.join();
        let _ = node.shutdown();
    }

    fn step_committing(&mut self, commit: &CommitPoint) -> Result<(), MemberError> {
        self.step()?;
        commit.advance(self.driver.committed_next());
        Ok(())
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Waits for one event (at most a tick), handles it, ticks when due,
    /// and promotes or steps down as the core's role says.
    fn step(&mut self) -> Result<Option<Exit>, MemberError> {
        let event = self.events.recv_timeout(Duration::from_millis(TICK_MS));
        let now = self.now();
        let effects = match event {
            Ok(Event::Net { from, message }) => self.driver.on_message(now, from, message)?,
            Ok(Event::Config { config, revision }) => {
                self.driver.on_config(now, &config, revision)?
            }
            Ok(Event::Cas(outcome)) => self.driver.on_config_result(outcome)?,
            Ok(Event::Wake) => {
                self.woken.store(false, Ordering::Release);
                self.driver.absorb_local_writes()?
            }
            Ok(Event::Fatal(why)) => return Ok(Some(Exit::SteppedDown(why))),
            Err(RecvTimeoutError::Timeout) => Effects::default(),
            Err(RecvTimeoutError::Disconnected) => return Ok(Some(Exit::Stopped)),
        };
        self.perform(effects);
        if now >= self.next_tick {
            self.next_tick = now + TICK_MS;
            let effects = if self.leading.is_some() {
                let mut effects = self.driver.absorb_local_writes()?;
                let more = self.driver.on_tick(now)?;
                effects.messages.extend(more.messages);
                effects.proposals.extend(more.proposals);
                effects.resigned = effects.resigned.or(more.resigned);
                effects
            } else {
                self.driver.on_tick(now)?
            };
            self.perform(effects);
            let hot_applied = self.hot.as_ref().map_or(0, HotReplica::applied_next);
            self.metrics.publish(
                self.driver.replica(),
                self.driver.committed_next(),
                hot_applied,
            );
        }
        let role = self.driver.replica().role();
        match (&self.leading, role) {
            (Some(leading), Role::Leader { .. }) => {
                leading.commit.advance(self.driver.committed_next());
            }
            (Some(_), Role::Follower { leader }) => {
                return Ok(Some(Exit::SteppedDown(format!(
                    "deposed: the shard now follows {leader:?}"
                ))));
            }
            (None, Role::Leader { epoch }) if self.driver.writing_epoch() == epoch => {
                self.promote(epoch)?;
            }
            (None, _) => {
                if let Some(hot) = &self.hot {
                    hot.advance(self.driver.committed_next());
                }
            }
        }
        Ok(None)
    }

    fn perform(&mut self, effects: Effects) {
        let me = self.driver.replica().id();
        for (to, message) in effects.messages {
            let node = match to {
                Peer::Replica(n) | Peer::Controller(n) => n,
            };
            self.transport.send(node, Peer::Replica(me), to, &message);
        }
        for proposal in effects.proposals {
            let _ = self.control.send(ToControl::Propose(proposal));
        }
        if let Some(incarnation) = effects.resigned {
            let _ = self.control.send(ToControl::Register(incarnation));
        }
    }

    /// This node leads `epoch` and its `EpochStart` is written: hand the
    /// journal and the hot replica's state to the engine (which replays
    /// the records past it) and serve clients.
    fn promote(&mut self, epoch: u32) -> Result<(), MemberError> {
        let started = Instant::now();
        let dedup_entries = self.node.engine.dedup_entries;
        let start = match self.hot.take().map(HotReplica::take) {
            Some(Ok(start)) => start,
            Some(Err(why)) => {
                eprintln!(
                    "keel-cluster: the hot replica failed ({why}): replaying the journal in full"
                );
                StartPoint::fresh(Ledger::new(self.node.ledger_config()), dedup_entries)
            }
            None => StartPoint::fresh(Ledger::new(self.node.ledger_config()), dedup_entries),
        };
        let hot_next = start.sequence;
        self.driver.release_journal();
        let wake = Arc::clone(&self.wake);
        let commit = CommitPoint::new(self.driver.committed_next(), Box::new(move || wake()));
        let replication = Replication {
            epoch,
            observer: self.driver.observer(Arc::clone(&self.wake)),
            commit: Arc::clone(&commit),
        };
        let node =
            Node::start_replicated(&self.node, start, LedgerValidator, &mut |_| {}, replication)?;
        self.driver.attach(
            node.journal_status()
                .expect("a replicated node has a journal"),
        );
        let server = match Server::start(self.server.clone(), node.submitter()) {
            Ok(server) => server,
            Err(e) => {
                commit.lose();
                let _ = node.shutdown();
                return Err(e.into());
            }
        };
        self.metrics.promoted(
            LeaderMetrics {
                engine: node.engine().metrics_handle(),
                server: server.stats_handle(),
                commit: Arc::clone(&commit),
                journal: node
                    .journal_status()
                    .expect("a replicated node has a journal"),
            },
            node.recovery().records,
        );
        eprintln!(
            "keel-cluster: node {} leads epoch {epoch}: hot replica at sequence {hot_next}, \
             replayed {} records in {:.2} s; serving clients on {}",
            self.driver.replica().id(),
            node.recovery().records,
            started.elapsed().as_secs_f64(),
            server.local_addr(),
        );
        self.leading = Some(Leading {
            node,
            server,
            commit,
        });
        Ok(())
    }
}

/// Parses `sync:<k>`, `sync:all`, `mem:<k>`, `mem:all` or `async`.
pub fn parse_policy(text: &str) -> Option<keel_replication::Policy> {
    crate::encoding::parse_policy(text)
}
