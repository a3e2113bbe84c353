//! `keel-cluster`: a replicated shard's processes (ADR 0013).
//!
//! - `init` writes a shard's first configuration to etcd (once; a second
//!   `init` keeps what is there and prints it).
//! - `node` runs one replica: it follows, or leads and serves clients, as
//!   etcd's configuration says (`keel_cluster::member`).
//! - `status` prints the configuration, the live nodes and the controller.
//! - `forget` deletes a cluster's keys once none of its nodes is alive.
//!
//! Exit codes are the table in docs/operating.md ("Exit codes").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use keel_cluster::member::{self, Exit, MemberConfig, MemberError};
use keel_cluster::transport::PeerTls;
use keel_cluster::{ControlError, EtcdControl};
use keel_node::config::NodeConfig;
use keel_replication::{NodeId, ShardConfig, Timing};
use keel_server::ServerConfig;

/// Success (`node`: stopped by SIGTERM/SIGINT, lease revoked).
const OK: u8 = 0;
/// Refused: `forget` while a node of the cluster is alive.
const REFUSED: u8 = 1;
/// etcd cannot be reached, or the node cannot start (journal, bind).
const CANNOT_START: u8 = 3;
/// `node` stepped down (deposed, fenced, lease lost, replication error):
/// restart it; it rejoins as a follower in a new incarnation.
const STEPPED_DOWN: u8 = keel_cluster::member::EXIT_STEPPED_DOWN;
/// A bad command-line argument.
const USAGE: u8 = 64;
/// An invalid configuration value.
const CONFIG: u8 = 78;
/// A second SIGINT/SIGTERM forced an immediate exit.
const FORCED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "keel-cluster",
    about = "A replicated Keel shard: init, node, status, forget"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(clap::Args, Clone)]
struct Etcd {
    /// etcd endpoint.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// Cluster name: every key is under /keel/v1/<cluster>/.
    #[arg(long, default_value = "keel")]
    cluster: String,
    /// The shard.
    #[arg(long, default_value_t = 0)]
    shard: u32,
}

#[derive(Subcommand)]
enum Commands {
    /// Write the shard's first configuration (no leader yet: the
    /// controller elects the first one among the live replicas).
    Init {
        #[command(flatten)]
        etcd: Etcd,
        /// The replica ids, comma-separated (e.g. 1,2,3).
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<NodeId>,
        /// Fewest in-sync replicas (leader included) under which the leader refuses writes.
        #[arg(long, default_value_t = 2)]
        min_isr: u8,
        /// Replication policy: sync:<k>, sync:all, mem:<k>, mem:all or async.
        #[arg(long, default_value = "sync:1")]
        policy: String,
    },
    /// Run one replica of the shard.
    Node(Box<NodeArgs>),
    /// Print the shard's configuration, the live nodes and the controller.
    Status {
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Delete every key of the cluster (a decommissioned or test cluster);
    /// refused while any of its nodes holds a live lease.
    Forget {
        #[command(flatten)]
        etcd: Etcd,
    },
}

#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    etcd: Etcd,
    /// This replica's id.
    #[arg(long)]
    id: NodeId,
    /// The replica's directory (journal/, replica.state, divergent/).
    #[arg(long)]
    data_dir: PathBuf,
    /// Node configuration (TOML: the engine's sections and `[server]`, as for `keel serve`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where clients connect while this node leads (overrides `[server] listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where peers connect for replication.
    #[arg(long)]
    replication_listen: SocketAddr,
    /// Serve `GET /metrics` (Prometheus text) here, leading or following
    /// (overrides `[server] metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Every replica's replication address, this one's included: `<id>=<addr>` (repeat).
    #[arg(long = "peer", value_parser = parse_peer, required = true)]
    peers: Vec<(NodeId, SocketAddr)>,
    /// Lease TTL in seconds: how long a dead leader goes unnoticed.
    #[arg(long, default_value_t = 2)]
    lease_ttl: i64,
    /// A follower not caught up for this long leaves the in-sync set (ms).
    #[arg(long, default_value_t = 2000)]
    lag_timeout_ms: u64,
    /// Accept clients without credentials, as tenant 0 (development only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Serve clients plain, unencrypted TCP (trusted networks only).
    #[arg(long)]
    plaintext: bool,
    /// Replication links: the CA (PEM) every replica's certificate must
    /// chain to (mutual TLS 1.3; with --peer-tls-cert and --peer-tls-key).
    #[arg(long)]
    peer_tls_ca: Option<PathBuf>,
    /// Replication links: this replica's certificate chain (PEM), presented
    /// both when it accepts and when it connects.
    #[arg(long)]
    peer_tls_cert: Option<PathBuf>,
    /// Replication links: this replica's private key (PEM).
    #[arg(long)]
    peer_tls_key: Option<PathBuf>,
    /// Replication links: the name peers' certificates must carry.
    #[arg(long, default_value = "localhost")]
    peer_tls_name: String,
    /// Replication links in plain, unauthenticated TCP: anyone who reaches
    /// --replication-listen can send this replica replication messages
    /// (trusted networks only).
    #[arg(long)]
    peer_plaintext: bool,
}

/// The replication links' TLS from the `--peer-tls-*` flags, or `None`
/// with `--peer-plaintext`; one of the two is required.
fn peer_tls(args: &NodeArgs) -> Result<Option<PeerTls>, String> {
    let files = (&args.peer_tls_ca, &args.peer_tls_cert, &args.peer_tls_key);
    match (files, args.peer_plaintext) {
        ((None, None, None), true) => Ok(None),
        ((None, None, None), false) => Err(
            "replication links need --peer-tls-ca, --peer-tls-cert and --peer-tls-key \
             (mutual TLS), or --peer-plaintext for a trusted network"
                .into(),
        ),
        ((Some(ca), Some(cert), Some(key)), false) => {
            let (acceptor, connector) =
                keel_server::peer_tls(ca, cert, key).map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from(args.peer_tls_name.clone())
                .map_err(|e| format!("--peer-tls-name {:?}: {e}", args.peer_tls_name))?;
            Ok(Some(PeerTls {
                acceptor,
                connector,
                name,
            }))
        }
        (_, true) => Err("--peer-plaintext and --peer-tls-*: choose one".into()),
        _ => Err("--peer-tls-ca, --peer-tls-cert and --peer-tls-key go together".into()),
    }
}

fn parse_peer(text: &str) -> Result<(NodeId, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected <id>=<address>"))?;
    let id = id.parse().map_err(|e| format!("{id:?}: {e}"))?;
    let addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    Ok((id, addr))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { USAGE } else { OK });
        }
    };
    match cli.command {
        Commands::Init {
            etcd,
            replicas,
            min_isr,
            policy,
        } => init(&etcd, replicas, min_isr, &policy),
        Commands::Node(args) => node(*args),
        Commands::Status { etcd } => status(&etcd),
        Commands::Forget { etcd } => forget(&etcd),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn init(etcd: &Etcd, replicas: Vec<NodeId>, min_isr: u8, policy: &str) -> ExitCode {
    let Some(policy) = member::parse_policy(policy) else {
        eprintln!("keel-cluster init: --policy {policy:?}: expected sync:<k>, sync:all, mem:<k>, mem:all or async");
        return ExitCode::from(USAGE);
    };
    let mut isr = replicas.clone();
    isr.sort_unstable();
    isr.dedup();
    if isr.len() != replicas.len() || replicas.is_empty() {
        eprintln!("keel-cluster init: --replicas must name distinct ids");
        return ExitCode::from(USAGE);
    }
    if usize::from(min_isr) > replicas.len() || min_isr == 0 {
        eprintln!(
            "keel-cluster init: --min-isr {min_isr} with {} replicas",
            replicas.len()
        );
        return ExitCode::from(CONFIG);
    }
    // Epoch 0 names the first replica at incarnation 0, which no process
    // ever has (a process's first incarnation is 1): nobody leads it, and
    // the controller elects epoch 1's leader from the replicas' seals.
    let config = ShardConfig {
        epoch: 0,
        leader: replicas[0],
        leader_incarnation: 0,
        replicas,
        isr,
        min_isr,
        policy,
    };
    runtime().block_on(async {
        let control = match EtcdControl::connect(&etcd.etcd, &etcd.cluster).await {
            Ok(control) => control,
            Err(e) => return cannot_start("init", &e),
        };
        match control.bootstrap(etcd.shard, &config).await {
            Ok((stored, revision)) => {
                let note = if stored == config {
                    "written"
                } else {
                    "already there (kept)"
                };
                println!(
                    "{}: {note} at revision {revision}\n{stored:?}",
                    control.config_key(etcd.shard)
                );
                ExitCode::from(OK)
            }
            Err(e) => cannot_start("init", &e),
        }
    })
}

fn cannot_start(command: &str, e: &ControlError) -> ExitCode {
    eprintln!("keel-cluster {command}: {e}");
    ExitCode::from(CANNOT_START)
}

fn status(etcd: &Etcd) -> ExitCode {
    runtime().block_on(async {
        let control = match EtcdControl::connect(&etcd.etcd, &etcd.cluster).await {
            Ok(control) => control,
            Err(e) => return cannot_start("status", &e),
        };
        let (config, revision) = match control.config(etcd.shard).await {
            Ok(read) => read,
            Err(e) => return cannot_start("status", &e),
        };
        let live = match control.live_nodes().await {
            Ok(live) => live,
            Err(e) => return cannot_start("status", &e),
        };
        let mut text = format!(
            "shard {} at revision {revision}:\n  epoch {} leader {} (incarnation {})\n  \
             replicas {:?} in-sync {:?} min_isr {} policy {:?}\n",
            etcd.shard,
            config.epoch,
            config.leader,
            config.leader_incarnation,
            config.replicas,
            config.isr,
            config.min_isr,
            config.policy
        );
        for (node, incarnation) in live {
            text.push_str(&format!("  live: node {node} incarnation {incarnation}\n"));
        }
        // A closed pipe (`| head`) is the reader's choice, not an error.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        ExitCode::from(OK)
    })
}

fn forget(etcd: &Etcd) -> ExitCode {
    runtime().block_on(async {
        let control = match EtcdControl::connect(&etcd.etcd, &etcd.cluster).await {
            Ok(control) => control,
            Err(e) => return cannot_start("forget", &e),
        };
        match control.live_nodes().await {
            Ok(live) if !live.is_empty() => {
                let nodes: Vec<String> = live.keys().map(|n| n.to_string()).collect();
                eprintln!(
                    "keel-cluster forget: refused: nodes {} of cluster {:?} are alive; stop them first",
                    nodes.join(", "),
                    etcd.cluster
                );
                return ExitCode::from(REFUSED);
            }
            Ok(_) => {}
            Err(e) => return cannot_start("forget", &e),
        }
        match control.delete_cluster().await {
            Ok(keys) => {
                println!("cluster {:?}: {keys} keys deleted", etcd.cluster);
                ExitCode::from(OK)
            }
            Err(e) => cannot_start("forget", &e),
        }
    })
}

/// The node file, as `keel serve` reads it: the engine's sections, and
/// `[server]` for the client server.
fn load(args: &NodeArgs) -> Result<(NodeConfig, ServerConfig), String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => String::new(),
    };
    let node = NodeConfig::from_toml(&text).map_err(|e| e.to_string())?;
    let mut server = ServerConfig::from_node_toml(&text)?;
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    if let Some(metrics) = args.metrics_listen {
        server.metrics_listen = Some(metrics);
    }
    server.allow_anonymous |= args.allow_anonymous;
    if args.plaintext {
        server.plaintext = true;
        server.tls = None;
    }
    server.check_serving()?;
    Ok((node, server))
}

fn node(args: NodeArgs) -> ExitCode {
    let (node, server, peer_tls) = match load(&args).and_then(|(n, s)| Ok((n, s, peer_tls(&args)?)))
    {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("keel-cluster node: {e}");
            return ExitCode::from(CONFIG);
        }
    };
    let mut peers = BTreeMap::new();
    for (id, addr) in &args.peers {
        if peers.insert(*id, *addr).is_some() {
            eprintln!("keel-cluster node: --peer {id} given twice");
            return ExitCode::from(USAGE);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(FORCED),
            Arc::clone(&stop),
        );
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let config = MemberConfig {
        id: args.id,
        shard: args.etcd.shard,
        etcd: args.etcd.etcd,
        cluster: args.etcd.cluster,
        data_dir: args.data_dir,
        node,
        server,
        replication_listen: args.replication_listen,
        peers,
        peer_tls,
        lease_ttl_s: args.lease_ttl,
        timing: Timing {
            lag_timeout: args.lag_timeout_ms,
            ..Timing::default()
        },
    };
    match member::run(config, stop) {
        Ok(Exit::Stopped) => {
            eprintln!("keel-cluster node: stopped");
            ExitCode::from(OK)
        }
        Ok(Exit::SteppedDown(why)) => {
            eprintln!("keel-cluster node: stepped down: {why}");
            ExitCode::from(STEPPED_DOWN)
        }
        Err(e @ MemberError::Config(_)) => {
            eprintln!("keel-cluster node: {e}");
            ExitCode::from(CONFIG)
        }
        Err(e) => {
            eprintln!("keel-cluster node: cannot go on: {e}");
            ExitCode::from(CANNOT_START)
        }
    }
}
