//! `keel-perf replication`: what replication costs a client, against a
//! single `keel serve` node measured in the same run.
//!
//! Contenders, each a fresh data directory and `keel bench --connect`'s
//! sessions in this process:
//! - **local**: one `keel serve` (acknowledged after the local fsync): the
//!   baseline.
//! - **`sync:1`**: three `keel-cluster node` processes on a real etcd,
//!   min_isr 2; a command is acknowledged once the leader and one follower
//!   have synced it.
//! - **`async`**: the same three processes, acknowledged after the
//!   leader's own sync (followers are shipped to, not waited for): the
//!   cost of running the replication machinery without waiting on it.
//!
//! Each is run flat out (throughput) and paced at `--rate` (latency from
//! each command's intended send time), `--runs` times; the median is
//! reported, with the leader's commit-wait summary from its `/metrics`.
//! Three replicas share this machine's cores with the client, so the
//! figures are a pessimistic bound for replicas on separate hosts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_harness::load;
use keel_harness::netbench::{self, BenchConfig};

use crate::network::{free_port, wait_listening};

/// Options of `keel-perf replication`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplicationArgs {
    /// Directory for the journals (fresh subdirectories, removed after each run).
    #[arg(long, default_value = "target/keel-perf-replication")]
    pub dir: PathBuf,
    /// etcd's endpoint (scripts/ensure-etcd.sh starts one).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// Transfers per throughput run.
    #[arg(long, default_value_t = 300_000)]
    pub transfers: u64,
    /// Sessions of every run.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Commands per frame in the throughput runs.
    #[arg(long, default_value_t = 8)]
    pub per_frame: usize,
    /// Paced rate of the latency runs (transfers/s).
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Transfers per latency run.
    #[arg(long, default_value_t = 50_000)]
    pub latency_transfers: u64,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Ledger capacities fit the largest run (the bench uses 10,000 accounts);
/// 16 MiB segments keep three replicas' disk use small.
const NODE_TOML: &str = r#"
[journal]
segment_size_mib = 16

[ledger]
accounts_max = 16384
transfers_max = 2097152
"#;

const CONTENDERS: [Contender; 3] = [Contender::Local, Contender::Sync, Contender::Async];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Local,
    Sync,
    Async,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Local => "local fsync (keel serve)",
            Contender::Sync => "3 replicas, sync:1",
            Contender::Async => "3 replicas, async",
        }
    }

    fn policy(self) -> Option<&'static str> {
        match self {
            Contender::Local => None,
            Contender::Sync => Some("sync:1"),
            Contender::Async => Some("async"),
        }
    }
}

/// One run's figures.
struct Run {
    per_second: f64,
    latency: Histogram<u64>,
    /// The leader's commit wait per batch (seconds) at p50 and p99.
    commit_wait: Option<(f64, f64)>,
}

pub fn run(args: &ReplicationArgs) {
    let keel = sibling("keel");
    let cluster = sibling("keel-cluster");
    std::fs::create_dir_all(&args.dir).expect("create the benchmark directory");
    let config = args.dir.join("node.toml");
    std::fs::write(&config, NODE_TOML).expect("write the node configuration");
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };

    let mut throughput: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut waits: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for run in 0..args.runs {
        // Interleaved, so drift on a noisy machine touches every contender.
        for contender in CONTENDERS {
            let bench = |rate| {
                let transfers = match rate {
                    Some(_) => args.latency_transfers,
                    None => args.transfers,
                };
                match contender.policy() {
                    None => local_run(args, &keel, &config, run, rate, transfers),
                    Some(policy) => {
                        cluster_run(args, &cluster, &config, policy, run, rate, transfers)
                    }
                }
            };
            let flat = bench(None);
            let paced = bench(Some(args.rate));
            println!(
                "run {run} {:<26} {:>9.0}/s flat out; paced {}/s: {}{}",
                contender.name(),
                flat.per_second,
                args.rate,
                load::percentiles(&paced.latency),
                paced
                    .commit_wait
                    .map(|(a, b)| format!(
                        "; commit wait p50 {:.0} µs p99 {:.0} µs",
                        a * 1e6,
                        b * 1e6
                    ))
                    .unwrap_or_default()
            );
            let name = contender.name();
            throughput.entry(name).or_default().push(flat.per_second);
            p50.entry(name)
                .or_default()
                .push(paced.latency.value_at_quantile(0.5) as f64);
            p99.entry(name)
                .or_default()
                .push(paced.latency.value_at_quantile(0.99) as f64);
            if let Some(wait) = paced.commit_wait {
                waits.entry(name).or_default().push(wait);
            }
        }
    }
    let base = Contender::Local.name();
    let (base_tps, base_p50, base_p99) = (
        median(throughput[base].clone()),
        median(p50[base].clone()),
        median(p99[base].clone()),
    );
    println!(
        "medians of {} runs; paced at {}/s, latency from each command's intended send time",
        args.runs, args.rate
    );
    for contender in CONTENDERS {
        let name = contender.name();
        let tps = median(throughput[name].clone());
        let (a, b) = (median(p50[name].clone()), median(p99[name].clone()));
        let wait = waits.get(name).map(|w| {
            let mut w = w.clone();
            w.sort_by(|x, y| x.1.total_cmp(&y.1));
            w[w.len() / 2]
        });
        println!(
            "{name:<26} {tps:>9.0}/s ({:.2}x local)  p50 {:.0} µs ({:.2}x)  p99 {:.0} µs ({:.2}x){}",
            tps / base_tps,
            a / 1e3,
            a / base_p50,
            b / 1e3,
            b / base_p99,
            wait.map(|(x, y)| format!(
                "  commit wait p50 {:.0} µs p99 {:.0} µs",
                x * 1e6,
                y * 1e6
            ))
            .unwrap_or_default()
        );
    }
}

/// `target/<profile>/<name>`, beside this binary.
fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let path = me.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --release -p keel-harness -p keel-cluster -p keel-perf)",
        path.display()
    );
    path
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create a run directory");
    path
}

fn bench(args: &ReplicationArgs, addr: SocketAddr, rate: Option<u64>, transfers: u64) -> Run {
    let config = BenchConfig {
        client: netbench::client_config(addr),
        connections: args.connections,
        transfers,
        batch: 7,
        per_frame: match rate {
            Some(_) => 1,
            None => args.per_frame,
        },
        accounts: 10_000,
        rate,
        verify: false,
        nonce: 1,
    };
    let report = netbench::run(&config).expect("network bench");
    Run {
        per_second: report.transfers_per_second,
        latency: report.latency_ns,
        commit_wait: None,
    }
}

/// The baseline: one `keel serve`.
fn local_run(
    args: &ReplicationArgs,
    keel: &Path,
    config: &Path,
    run: usize,
    rate: Option<u64>,
    transfers: u64,
) -> Run {
    let dir = fresh(&args.dir, &format!("local-{run}"));
    let addr = free_port();
    let mut server = Command::new(keel)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir.join("journal"))
        .args(["--plaintext", "--allow-anonymous"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel serve");
    wait_listening(&mut server);
    let result = bench(args, addr, rate, transfers);
    terminate(&mut server, "keel serve");
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Three `keel-cluster node`s under `policy`; the bench talks to the leader.
fn cluster_run(
    args: &ReplicationArgs,
    binary: &Path,
    config: &Path,
    policy: &str,
    run: usize,
    rate: Option<u64>,
    transfers: u64,
) -> Run {
    let dir = fresh(
        &args.dir,
        &format!("cluster-{}-{run}", policy.replace(':', "")),
    );
    let cluster = format!(
        "perf-{}-{}-{run}-{}",
        std::process::id(),
        policy.replace(':', ""),
        if rate.is_some() { "paced" } else { "flat" }
    );
    let status = Command::new(binary)
        .args(["init", "--etcd", &args.etcd, "--cluster", &cluster])
        .args(["--replicas", "1,2,3", "--min-isr", "2", "--policy", policy])
        .stdout(Stdio::null())
        .status()
        .expect("run keel-cluster init");
    assert!(
        status.success(),
        "keel-cluster init failed ({status}): is etcd at {} up? (scripts/ensure-etcd.sh)",
        args.etcd
    );
    struct Node {
        client: SocketAddr,
        metrics: SocketAddr,
        child: Child,
    }
    let replication: Vec<(u16, SocketAddr)> = (1..=3).map(|id| (id, free_port())).collect();
    let mut nodes: Vec<Node> = replication
        .iter()
        .map(|&(id, listen)| {
            let (client, metrics) = (free_port(), free_port());
            let log = std::fs::File::create(dir.join(format!("node{id}.log"))).expect("log");
            let mut command = Command::new(binary);
            command
                .arg("node")
                .args(["--etcd", &args.etcd, "--cluster", &cluster])
                .args(["--id", &id.to_string()])
                .arg("--data-dir")
                .arg(dir.join(format!("node{id}")))
                .arg("--config")
                .arg(config)
                .args(["--listen", &client.to_string()])
                .args(["--replication-listen", &listen.to_string()])
                .args(["--metrics-listen", &metrics.to_string()])
                .args(["--allow-anonymous", "--plaintext", "--peer-plaintext"]);
            for (peer, addr) in &replication {
                command.args(["--peer", &format!("{peer}={addr}")]);
            }
            let child = command
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start keel-cluster node");
            Node {
                client,
                metrics,
                child,
            }
        })
        .collect();
    // The leader: the node whose metrics say it leads a full in-sync set.
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let found = nodes.iter().position(|n| {
            let m = scrape(n.metrics);
            m.get("keel_replication_leader") == Some(&1.0)
                && m.get("keel_replication_in_sync_replicas") == Some(&3.0)
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no leader with a full in-sync set after 60 s (logs in {})",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut result = bench(args, nodes[leader].client, rate, transfers);
    let metrics = scrape(nodes[leader].metrics);
    let quantile = |q: &str| {
        metrics
            .get(&format!(
                "keel_replication_commit_wait_seconds{{quantile=\"{q}\"}}"
            ))
            .copied()
    };
    result.commit_wait = quantile("0.5").zip(quantile("0.99"));
    // Followers first, so the leader's stop has nothing left to wait for.
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != leader {
            terminate(&mut node.child, "a follower");
        }
    }
    terminate(&mut nodes[leader].child, "the leader");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Command::new(binary)
        .args(["forget", "--etcd", &args.etcd, "--cluster", &cluster])
        .stdout(Stdio::null())
        .status();
    result
}

fn terminate(child: &mut Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for a child");
    assert!(status.success(), "{what} did not stop cleanly: {status}");
}

/// `GET /metrics`: every sample by name (with labels).
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return BTreeMap::new();
    };
    let request = b"GET /metrics HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    if stream.write_all(request).is_err() || stream.read_to_string(&mut text).is_err() {
        return BTreeMap::new();
    }
    text.lines()
        .filter(|l| l.starts_with("keel_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}
