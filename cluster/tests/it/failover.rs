//! A replicated shard as three real `keel-cluster node` processes on a real
//! etcd: a client rides through leaders killed with SIGKILL (resuming its
//! session on whichever node leads next), every acknowledged transfer is
//! on the last leader exactly once, and the replicas' journals end
//! byte-identical.
//!
//! A leader paused (SIGSTOP) past its lease is replaced; woken, it is a
//! stale leader with a connected client, and acknowledges nothing more.
//!
//! CI runs [`FAILOVERS_CI`] failovers; `KEEL_FAILOVER_SOAK=<n>` runs `n`
//! (the soak in docs/operating.md).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientConfig, ClientError, ReplyEntry, Request, Status};
use keel_cluster::EtcdControl;
use keel_core::{Outcome, ResultCode};
use keel_journal::{read_records, FsStorage, IoMode, Storage};
use keel_ledger::commands::{self, command_type};
use keel_ledger::{Account, Transfer};
use keel_replication::ShardConfig;

/// Failovers in the default suite.
const FAILOVERS_CI: usize = 3;
/// Transfers sent between two kills.
const TRANSFERS_PER_ROUND: u64 = 40;
/// How long the shard may take to elect a leader and serve clients.
pub(super) const FAILOVER_MAX: Duration = Duration::from_secs(30);
pub(super) const NODES: [u16; 3] = [1, 2, 3];

/// One three-process shard at a time: two cores, and leases of 2 s.
pub(super) static ONE_SHARD: Mutex<()> = Mutex::new(());

fn endpoint() -> String {
    std::env::var("KEEL_ETCD_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

/// A port below the kernel's ephemeral range (32768 and up by default), so
/// no outgoing connection (a node's, etcd's) can be given it between this
/// check and the node's bind: a port from `bind(:0)` was, once in a while.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % 600 * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base + n) % 12_000;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
}

/// Small tables (a node replays and allocates them on every promotion)
/// and small segments (bounded disk: three replicas).
const NODE_TOML: &str = r#"
[journal]
segment_size_mib = 4
write_buffer_kib = 256

[ledger]
accounts_max = 64
transfers_max = 8192

[server]
frame_timeout_ms = 1000
"#;

pub(super) struct Member {
    client: SocketAddr,
    replication: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    /// Runs as this user (see [`Shard::run_as`]); else as the test's.
    uid: Option<u32>,
    child: Option<Child>,
}

pub(super) struct Shard {
    cluster: String,
    root: tempfile::TempDir,
    members: BTreeMap<u16, Member>,
    runtime: tokio::runtime::Runtime,
    control: EtcdControl,
    /// `--peer-tls-*` flags for every node (`None`: `--peer-plaintext`).
    peer_tls: Option<Vec<String>>,
    /// The replication policy `init` writes.
    policy: &'static str,
}

impl Shard {
    pub(super) fn new(test: &str) -> Shard {
        let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let cluster = format!("test-{test}-{}-{nanos}", std::process::id());
        std::fs::write(root.path().join("node.toml"), NODE_TOML).unwrap();
        let members = NODES
            .iter()
            .map(|&id| {
                let dir = root.path().join(format!("node{id}"));
                let member = Member {
                    client: free_port(),
                    replication: free_port(),
                    metrics: free_port(),
                    log: root.path().join(format!("node{id}.log")),
                    dir,
                    uid: None,
                    child: None,
                };
                (id, member)
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let control = runtime
            .block_on(EtcdControl::connect(&endpoint(), &cluster))
            .unwrap_or_else(|e| panic!("{e} (run scripts/ensure-etcd.sh)"));
        Shard {
            cluster,
            root,
            members,
            runtime,
            control,
            peer_tls: None,
            policy: "sync:1",
        }
    }

    /// The policy `init` writes (default `sync:1`).
    pub(super) fn policy(&mut self, policy: &'static str) {
        self.policy = policy;
    }

    /// Replication links in mutual TLS, with `ca`, `cert` and `key` for
    /// every node, from the next start.
    pub(super) fn peer_tls(&mut self, ca: &Path, cert: &Path, key: &Path) {
        let arg = |p: &Path| p.to_str().unwrap().to_string();
        self.peer_tls = Some(vec![
            "--peer-tls-ca".into(),
            arg(ca),
            "--peer-tls-cert".into(),
            arg(cert),
            "--peer-tls-key".into(),
            arg(key),
        ]);
    }

    /// `id`'s replication address.
    pub(super) fn replication(&self, id: u16) -> SocketAddr {
        self.members[&id].replication
    }

    pub(super) fn init(&self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel-cluster"));
        let status = command
            .args(["init", "--etcd", &endpoint(), "--cluster", &self.cluster])
            .args([
                "--replicas",
                "1,2,3",
                "--min-isr",
                "2",
                "--policy",
                self.policy,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "keel-cluster init: {status}");
    }

    pub(super) fn start(&mut self, id: u16) {
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|(id, m)| format!("{id}={}", m.replication))
            .collect();
        let config = self.root.path().join("node.toml");
        let member = &self.members[&id];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel-cluster"));
        command
            .arg("node")
            .args(["--etcd", &endpoint(), "--cluster", &self.cluster])
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&member.dir)
            .arg("--config")
            .arg(&config)
            .args(["--listen", &member.client.to_string()])
            .args(["--replication-listen", &member.replication.to_string()])
            .args(["--metrics-listen", &member.metrics.to_string()])
            .args(["--lease-ttl", "2", "--allow-anonymous", "--plaintext"]);
        for peer in &peers {
            command.args(["--peer", peer]);
        }
        match &self.peer_tls {
            Some(flags) => command.args(flags),
            None => command.arg("--peer-plaintext"),
        };
        if let Some(uid) = member.uid {
            use std::os::unix::process::CommandExt;
            std::fs::create_dir_all(&member.dir).unwrap();
            std::os::unix::fs::chown(&member.dir, Some(uid), Some(uid)).unwrap();
            command.uid(uid).gid(uid);
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.members.get_mut(&id).unwrap().child = Some(child);
    }

    /// Runs `id` as `uid` from its next start, so an nft rule on the
    /// sender's uid can cut it off (the partition tests).
    pub(super) fn run_as(&mut self, id: u16, uid: u32) {
        use std::os::unix::fs::PermissionsExt;
        let root = self.root.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.members.get_mut(&id).unwrap().uid = Some(uid);
    }

    /// `id`'s listening ports (clients, replication, metrics).
    pub(super) fn ports(&self, id: u16) -> [u16; 3] {
        let m = &self.members[&id];
        [m.client.port(), m.replication.port(), m.metrics.port()]
    }

    fn kill(&mut self, id: u16) {
        let mut child = self.members.get_mut(&id).unwrap().child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` to `id`'s process.
    fn signal(&self, id: u16, signal: i32) {
        let child = self.members[&id].child.as_ref().unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// Waits for `id` to exit on its own; its exit code.
    pub(super) fn exit_code(&mut self, id: u16, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            let child = self.members.get_mut(&id).unwrap().child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.members.get_mut(&id).unwrap().child = None;
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!("node {id} still runs after {within:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit code.
    fn stop(&mut self, id: u16) -> i32 {
        let mut child = self.members.get_mut(&id).unwrap().child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("node {id} did not stop on SIGTERM\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn config(&self) -> ShardConfig {
        self.runtime.block_on(self.control.config(0)).unwrap().0
    }

    /// Waits until `done` holds of the shard's configuration.
    pub(super) fn await_config(
        &self,
        what: &str,
        done: impl Fn(&ShardConfig) -> bool,
    ) -> ShardConfig {
        let deadline = Instant::now() + FAILOVER_MAX;
        loop {
            if let Ok((config, _)) = self.runtime.block_on(self.control.config(0)) {
                if done(&config) {
                    return config;
                }
                if Instant::now() > deadline {
                    panic!("{what}: still {config:?}\n{}", self.logs());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        self.members.values().map(|m| m.client).collect()
    }

    /// Waits for `id`'s log to say it leads `epoch`; returns the sequence
    /// its hot replica had reached and the records the engine replayed.
    fn promotion(&self, id: u16, epoch: u32) -> (u64, u64) {
        let needle = format!("leads epoch {epoch}: hot replica at sequence ");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(&self.members[&id].log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
                let rest = &line[line.find(&needle).unwrap() + needle.len()..];
                let hot: u64 = rest.split(',').next().unwrap().parse().unwrap();
                let replayed: u64 = rest
                    .split("replayed ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .unwrap()
                    .parse()
                    .unwrap();
                return (hot, replayed);
            }
            if Instant::now() > deadline {
                panic!(
                    "node {id} never said it leads epoch {epoch}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `id`'s `GET /metrics`: every sample, by name with its labels.
    fn scrape(&self, id: u16) -> BTreeMap<String, f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.members[&id].metrics).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.lines()
            .filter(|l| l.starts_with("keel_"))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// Waits until `id`'s metrics satisfy `done`; returns them.
    fn await_metrics(
        &self,
        id: u16,
        what: &str,
        done: impl Fn(&BTreeMap<String, f64>) -> bool,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.scrape(id);
            if done(&metrics) {
                return metrics;
            }
            if Instant::now() > deadline {
                panic!("node {id}: {what}: {metrics:#?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn logs(&self) -> String {
        let mut text = String::new();
        for (id, member) in &self.members {
            let log = std::fs::read_to_string(&member.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- node {id} (last lines) ---\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        for member in self.members.values_mut() {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.runtime.block_on(self.control.delete_cluster());
    }
}

/// A client that finds the leader by trying every node, and resumes its
/// session there: a request whose outcome is unknown is sent again under
/// the same request number, so it runs exactly once.
pub(super) struct Rider {
    addrs: Vec<SocketAddr>,
    session: u64,
    client: Option<Client>,
    reconnects: usize,
}

impl Rider {
    pub(super) fn new(addrs: Vec<SocketAddr>) -> Rider {
        Rider {
            addrs,
            session: 0,
            client: None,
            reconnects: 0,
        }
    }

    fn connect(&mut self, logs: &dyn Fn() -> String) -> &mut Client {
        let deadline = Instant::now() + FAILOVER_MAX;
        while self.client.is_none() {
            for &addr in &self.addrs {
                let mut config = ClientConfig::new(addr);
                config.session = self.session;
                config.deadline = Duration::from_millis(300);
                match Client::connect(config) {
                    Ok(client) => {
                        self.session = client.session();
                        self.client = Some(client);
                        self.reconnects += 1;
                        break;
                    }
                    Err(ClientError::Unknown { .. }) => {}
                    Err(e) => panic!("connecting to {addr}: {e}\n{}", logs()),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no node served clients for {FAILOVER_MAX:?}\n{}",
                logs()
            );
        }
        self.client.as_mut().unwrap()
    }

    /// Sends `request` until a node answers it (applied, or the original
    /// answer to a retry).
    pub(super) fn call(&mut self, request: Request<'_>, logs: &dyn Fn() -> String) -> ReplyEntry {
        let mut number: Option<u64> = None;
        let deadline = Instant::now() + FAILOVER_MAX;
        loop {
            assert!(Instant::now() < deadline, "unanswered\n{}", logs());
            let client = self.connect(logs);
            match number {
                Some(n) => client.set_next_request(n),
                None => number = Some(client.next_request()),
            }
            match client.call(&[request]) {
                Ok(replies) => match replies[0].status {
                    Status::Applied | Status::Duplicate => return replies[0],
                    // Not sequenced, or the engine stopped under it
                    // (outcome unknown): the same number again.
                    Status::Busy | Status::Unavailable => {
                        self.client = None;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => panic!("{other:?}: {:?}\n{}", replies[0], logs()),
                },
                Err(ClientError::Unknown { .. }) => self.client = None,
                Err(e) => panic!("{e}\n{}", logs()),
            }
        }
    }
}

pub(super) fn request(command_type: u16, payload: &[u8]) -> Request<'_> {
    Request {
        command_type,
        schema_version: commands::schema_version(command_type),
        payload,
    }
}

pub(super) fn accounts() -> Vec<u8> {
    let accounts: Vec<Account> = [1u128, 2]
        .iter()
        .map(|&id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        })
        .collect();
    let mut buf = vec![0; 1024];
    let len = commands::encode_create_accounts(&accounts, &mut buf).unwrap();
    buf.truncate(len);
    buf
}

pub(super) fn transfer(id: u128) -> Vec<u8> {
    let transfer = Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    let mut buf = vec![0; 1024];
    let len = commands::encode_create_transfers(&[transfer], &mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// The event results of a create reply: 0 is `ok`.
pub(super) fn event_codes(command: u16, reply: &ReplyEntry) -> Vec<u8> {
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    commands::event_results(command, &outcome)
        .unwrap()
        .codes()
        .to_vec()
}

pub(super) fn credits(rider: &mut Rider, logs: &dyn Fn() -> String) -> u128 {
    let mut buf = [0u8; 64];
    let len = commands::encode_lookup(2, &mut buf).unwrap();
    let reply = rider.call(request(command_type::LOOKUP_ACCOUNT, &buf[..len]), logs);
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    commands::account_balance(&outcome)
        .unwrap()
        .unwrap()
        .credits_posted
        .into()
}

/// Every record of a replica's journal: (sequence, segment, offset, bytes).
type Records = Vec<(u64, u64, u64, Vec<u8>)>;

fn records(journal: &Path) -> Records {
    let storage = FsStorage::open(journal, IoMode::ReadOnly).unwrap();
    let mut out = Vec::new();
    read_records(&storage, 0, u64::MAX, &mut |r| {
        out.push((
            r.header.sequence,
            r.header.segment_id,
            r.header.offset,
            r.bytes.to_vec(),
        ))
    })
    .unwrap();
    assert!(!storage.list().unwrap().is_empty());
    out
}

/// The segment files' bytes up to the end of the last record.
fn written_bytes(journal: &Path, records: &Records) -> Vec<(u64, Vec<u8>)> {
    let mut ends: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, segment, offset, bytes) in records {
        ends.insert(*segment, offset + bytes.len() as u64);
    }
    ends.into_iter()
        .map(|(segment, end)| {
            let path = journal.join(keel_journal::storage::segment_name(segment));
            let mut file = std::fs::read(path).unwrap();
            file.truncate(end as usize);
            (segment, file)
        })
        .collect()
}

/// A three-node shard (`setup` applied before its nodes start) whose first
/// leader has a full in-sync set, with the two accounts created: the
/// shard, that configuration, and a client.
pub(super) fn shard_with_accounts(
    test: &str,
    setup: impl FnOnce(&mut Shard),
) -> (Shard, ShardConfig, Rider) {
    let mut shard = Shard::new(test);
    setup(&mut shard);
    shard.init();
    for id in NODES {
        shard.start(id);
    }
    let first = shard.await_config("the first leader with a full in-sync set", |c| {
        c.epoch >= 1 && c.isr.len() == 3
    });
    let mut rider = Rider::new(shard.addrs());
    let reply = rider.call(request(command_type::CREATE_ACCOUNTS, &accounts()), &|| {
        shard.logs()
    });
    assert_eq!(
        event_codes(command_type::CREATE_ACCOUNTS, &reply),
        [0, 0],
        "both accounts created"
    );
    (shard, first, rider)
}

/// Sends `count` transfers, with the ids after `*acknowledged`; each must
/// be acknowledged `ok` (a retry of one applied before a failover gets the
/// session's original reply, journaled and so replicated, never the
/// ledger's `exists`). Counts them in `acknowledged`.
pub(super) fn send_transfers(rider: &mut Rider, shard: &Shard, acknowledged: &mut u64, count: u64) {
    for _ in 0..count {
        let id = u128::from(*acknowledged) + 1;
        let payload = transfer(id);
        let reply = rider.call(request(command_type::CREATE_TRANSFERS, &payload), &|| {
            shard.logs()
        });
        let codes = event_codes(command_type::CREATE_TRANSFERS, &reply);
        assert_eq!(codes, [0], "transfer {id}: {reply:?}");
        *acknowledged += 1;
    }
}

fn failovers() -> usize {
    std::env::var("KEEL_FAILOVER_SOAK")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(FAILOVERS_CI)
}

#[test]
fn a_client_rides_through_killed_leaders_and_every_acknowledged_transfer_is_kept_once() {
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let (mut shard, first, mut rider) = shard_with_accounts("failover", |_| {});

    let mut acknowledged: u64 = 0;
    let mut epoch = first.epoch;
    let rounds = failovers();
    let started = Instant::now();
    for round in 0..=rounds {
        send_transfers(&mut rider, &shard, &mut acknowledged, TRANSFERS_PER_ROUND);
        if round == 0 {
            check_metrics(&shard, acknowledged);
        }
        if round == rounds {
            break;
        }
        let leader = shard.config().leader;
        shard.kill(leader);
        let next = shard.await_config("a new leader", |c| c.epoch > epoch && c.leader != leader);
        epoch = next.epoch;
        // The new leader was a hot follower: its state machine had applied
        // the committed prefix, so the engine replayed only the tail.
        let (hot, replayed) = shard.promotion(next.leader, epoch);
        assert!(
            hot > acknowledged && replayed < hot,
            "node {} promoted with its hot replica at {hot}, replaying {replayed}",
            next.leader
        );
        eprintln!(
            "epoch {epoch}: node {} leads, hot replica at {hot}, {replayed} records replayed",
            next.leader
        );
        // The killed leader restarts, truncates what it wrote past the
        // commit point, and catches up: the in-sync set is whole again
        // before the next kill (min_isr 2 of 3 tolerates one failure).
        shard.start(leader);
        shard.await_config("the restarted leader back in sync", |c| c.isr.len() == 3);
    }
    let logs = || shard.logs();
    assert_eq!(
        credits(&mut rider, &logs),
        u128::from(acknowledged),
        "every acknowledged transfer applied exactly once on the last leader"
    );
    eprintln!(
        "{rounds} failovers, {acknowledged} transfers in {:.1} s, {} connections",
        started.elapsed().as_secs_f64(),
        rider.reconnects
    );
    drop(rider);
    stop_and_compare(&mut shard, acknowledged);
}

/// Stops the shard (followers first) and checks every replica's journal
/// holds the leader's records, byte for byte, more than `acknowledged`.
pub(super) fn stop_and_compare(shard: &mut Shard, acknowledged: u64) {
    // Let the followers take the last entries, then stop everything.
    let leader = shard.config().leader;
    std::thread::sleep(Duration::from_millis(500));
    for id in NODES {
        if id != leader {
            assert_eq!(shard.stop(id), 0, "follower {id} stops cleanly");
        }
    }
    assert_eq!(shard.stop(leader), 0, "the leader stops cleanly");
    let journals: Vec<(u16, PathBuf)> = shard
        .members
        .iter()
        .map(|(id, m)| (*id, m.dir.join("journal")))
        .collect();
    let (leader_dir, others): (Vec<_>, Vec<_>) =
        journals.into_iter().partition(|(id, _)| *id == leader);
    let leader_records = records(&leader_dir[0].1);
    assert!(leader_records.len() as u64 > acknowledged);
    let leader_bytes = written_bytes(&leader_dir[0].1, &leader_records);
    for (id, dir) in others {
        let theirs = records(&dir);
        assert!(
            theirs == leader_records,
            "node {id} holds {} records, the leader {}",
            theirs.len(),
            leader_records.len()
        );
        assert!(
            written_bytes(&dir, &theirs) == leader_bytes,
            "node {id}'s segment files differ from the leader's"
        );
    }
}

/// Once the shard is quiet: the leader's metrics show every follower in
/// sync and caught up, and batches that waited for the commit point; each
/// follower's hot replica has applied everything committed.
fn check_metrics(shard: &Shard, acknowledged: u64) {
    let leader = shard.config().leader;
    let metric = |m: &BTreeMap<String, f64>, name: &str| m.get(name).copied().unwrap_or(-1.0);
    // Published every tick (10 ms): wait for one after the last ack.
    let at_leader = shard.await_metrics(leader, "followers caught up", |m| {
        metric(m, "keel_replication_committed_next") > acknowledged as f64
            && NODES.iter().filter(|&&id| id != leader).all(|id| {
                metric(
                    m,
                    &format!("keel_replication_follower_lag_entries{{follower=\"{id}\"}}"),
                ) == 0.0
                    && metric(
                        m,
                        &format!("keel_replication_follower_in_sync{{follower=\"{id}\"}}"),
                    ) == 1.0
            })
    });
    assert_eq!(metric(&at_leader, "keel_replication_leader"), 1.0);
    assert_eq!(metric(&at_leader, "keel_replication_in_sync_replicas"), 3.0);
    assert!(metric(&at_leader, "keel_replication_commit_wait_seconds_count") > 0.0);
    assert!(metric(&at_leader, "keel_ack_latency_seconds_count") > 0.0);
    let committed = metric(&at_leader, "keel_replication_committed_next");
    for id in NODES.iter().copied().filter(|&id| id != leader) {
        let at_follower = shard.await_metrics(id, "the hot replica caught up", |m| {
            // The replica holds the newest record back until the next
            // one arrives (it cannot yet tell it is whole).
            metric(m, "keel_replication_hot_applied_next") + 1.0 >= committed
                && metric(m, "keel_replication_hot_lag_records") <= 1.0
        });
        assert_eq!(metric(&at_follower, "keel_replication_leader"), 0.0);
        assert!(
            !at_follower.contains_key("keel_ack_latency_seconds_count"),
            "a follower runs no engine"
        );
    }
}

/// The transfer `id` as the last leader holds it (`None`: not there).
fn transfer_exists(rider: &mut Rider, id: u128, logs: &dyn Fn() -> String) -> bool {
    let mut buf = [0u8; 64];
    let len = commands::encode_lookup(id, &mut buf).unwrap();
    let reply = rider.call(request(command_type::LOOKUP_TRANSFER, &buf[..len]), logs);
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    commands::transfer_status(&outcome).unwrap().is_some()
}

#[test]
fn a_paused_leader_is_replaced_and_woken_acknowledges_nothing() {
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let (mut shard, first, mut rider) = shard_with_accounts("stale", |_| {});
    let old = first.leader;
    let mut acknowledged: u64 = 0;
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);

    // A second client, connected to the leader and working.
    let mut config = ClientConfig::new(shard.members[&old].client);
    config.deadline = Duration::from_secs(5);
    let mut stale = Client::connect(config).unwrap();
    let payload = transfer(1_000);
    let replies = stale
        .call(&[request(command_type::CREATE_TRANSFERS, &payload)])
        .unwrap();
    assert_eq!(replies[0].status, Status::Applied);
    let stale_applied: u128 = 1;

    // Paused past its lease: etcd forgets it, and another replica leads.
    shard.signal(old, libc::SIGSTOP);
    let next = shard.await_config("a leader other than the paused one", |c| {
        c.epoch > first.epoch && c.leader != old
    });
    drop(rider);
    let mut rider = Rider::new(vec![shard.members[&next.leader].client]);
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);

    // Its client is still connected and sends a transfer; the kernel
    // buffers it for the paused process, which reads it the moment it
    // wakes, still believing it leads: nothing may be acknowledged.
    let sender = std::thread::spawn(move || {
        let payload = transfer(2_000);
        let woken = stale
            .call(&[request(command_type::CREATE_TRANSFERS, &payload)])
            .map(|replies| replies[0]);
        (stale, woken)
    });
    std::thread::sleep(Duration::from_millis(300));
    shard.signal(old, libc::SIGCONT);
    let (stale, woken) = sender.join().unwrap();
    if let Ok(reply) = &woken {
        assert!(
            !matches!(reply.status, Status::Applied | Status::Duplicate),
            "a deposed leader acknowledged {reply:?}\n{}",
            shard.logs()
        );
    }
    drop(stale);
    let code = shard.exit_code(old, Duration::from_secs(20));
    let said = std::fs::read_to_string(&shard.members[&old].log).unwrap();
    eprintln!(
        "the deposed leader's last words: {:?}",
        said.lines().rev().take(3).collect::<Vec<_>>()
    );
    assert_eq!(code, 5, "the deposed leader steps down (exit 5)");

    // Restarted, it rejoins as a follower; the shard goes on.
    shard.start(old);
    shard.await_config("the deposed leader back in sync", |c| c.isr.len() == 3);
    send_transfers(&mut rider, &shard, &mut acknowledged, 10);
    let logs = || shard.logs();
    assert_eq!(
        credits(&mut rider, &logs),
        u128::from(acknowledged) + stale_applied,
        "every acknowledged transfer once, and nothing else"
    );
    assert!(transfer_exists(&mut rider, 1_000, &logs));
    assert!(
        !transfer_exists(&mut rider, 2_000, &logs),
        "the transfer sent to the deposed leader is nowhere"
    );
    eprintln!(
        "paused leader {old} replaced by {} in epoch {}; woken, it answered {:?}",
        next.leader,
        next.epoch,
        woken.map(|r| r.status)
    );
}

/// `mem:1`: acknowledged once one follower has written (not yet synced)
/// a command. A kill -9 of the leader loses nothing acknowledged: the
/// follower's write survives its leader's process, and the new leader is
/// the replica whose log is longest.
#[test]
fn under_mem_a_killed_leader_loses_no_acknowledged_transfer() {
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let (mut shard, first, mut rider) = shard_with_accounts("mem", |shard| shard.policy("mem:1"));
    assert_eq!(
        first.policy,
        keel_replication::Policy::Mem(keel_replication::Quorum::Followers(1))
    );
    let mut acknowledged: u64 = 0;
    send_transfers(&mut rider, &shard, &mut acknowledged, 30);
    shard.kill(first.leader);
    shard.await_config("a new leader", |c| {
        c.epoch > first.epoch && c.leader != first.leader
    });
    send_transfers(&mut rider, &shard, &mut acknowledged, 30);
    shard.start(first.leader);
    shard.await_config("the killed leader back in sync", |c| c.isr.len() == 3);
    assert_eq!(
        credits(&mut rider, &|| shard.logs()),
        u128::from(acknowledged),
        "every acknowledged transfer applied exactly once"
    );
    drop(rider);
    stop_and_compare(&mut shard, acknowledged);
}

/// A rolling restart's step: the leader is stopped with SIGTERM under
/// load. It drains, exits 0 and revokes its lease, so the controller hands
/// leadership over at once instead of waiting for the lease to expire; the
/// clients notice at most a pause, and lose nothing.
#[test]
fn a_leader_stopped_with_sigterm_hands_over_before_its_lease_would_expire() {
    let _one = ONE_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let (mut shard, first, mut rider) = shard_with_accounts("handover", |_| {});

    // A second client sends transfers without a pause through the handover.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let stop = std::sync::Arc::clone(&stop);
        let mut rider = Rider::new(shard.addrs());
        std::thread::spawn(move || {
            let mut sent: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = transfer(1_000_000 + u128::from(sent));
                let reply = rider.call(request(command_type::CREATE_TRANSFERS, &payload), &|| {
                    String::from("(background client)")
                });
                assert_eq!(event_codes(command_type::CREATE_TRANSFERS, &reply), [0]);
                sent += 1;
            }
            sent
        })
    };
    let mut acknowledged: u64 = 0;
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);

    let old = first.leader;
    let stopped = Instant::now();
    assert_eq!(
        shard.stop(old),
        0,
        "a stopped leader exits 0\n{}",
        shard.logs()
    );
    let next = shard.await_config("a new leader", |c| c.epoch > first.epoch && c.leader != old);
    send_transfers(&mut rider, &shard, &mut acknowledged, 1);
    let handover = stopped.elapsed();
    eprintln!(
        "SIGTERM to the first transfer acknowledged by node {}: {handover:?}",
        next.leader
    );
    assert!(
        handover < Duration::from_secs(2),
        "the handover took {handover:?}: no faster than the 2 s lease would expire\n{}",
        shard.logs()
    );
    send_transfers(&mut rider, &shard, &mut acknowledged, 20);
    shard.start(old);
    shard.await_config("the stopped leader back in sync", |c| c.isr.len() == 3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let background = background.join().unwrap();
    assert!(background > 0);
    assert_eq!(
        credits(&mut rider, &|| shard.logs()),
        u128::from(acknowledged + background),
        "every acknowledged transfer applied exactly once"
    );
    drop(rider);
    stop_and_compare(&mut shard, acknowledged + background);
}
