//! `keel serve`: a ledger node on the network. Recovers (newest snapshot
//! plus the journal), starts the engine with `BackPressure::Fail` (a full
//! ring is a typed `Busy` reply, never a queue), listens, and on SIGTERM or
//! SIGINT stops accepting and reading, writes every admitted reply, shuts the
//! engine down (journal synced; a snapshot when `[snapshot] on_shutdown`) and
//! exits 0. A second signal exits 130.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_harness::config::NodeConfig;
use keel_harness::node::{LedgerNode, NodeError};
use keel_server::{Server, ServerConfig, TlsConfig};

use crate::exit;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Node configuration file (TOML; `[server]` plus the node's sections, see docs/keel.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (overrides `[server] listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Journal directory (overrides `[journal] data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Accept clients without credentials, as tenant 0 (development only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Serve plain, unencrypted TCP (overrides `[server.tls]`; trusted networks only).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    plaintext: bool,
    /// The node's TLS certificate chain, PEM (with --tls-key; overrides `[server.tls]`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The node's TLS private key, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates are verified against: mutual TLS.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Write a snapshot at shutdown.
    #[arg(long)]
    snapshot: bool,
    /// Serve `GET /metrics` (Prometheus text) here (overrides `[server] metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The node's file, read twice: the node's sections (the node ignores
/// `[server]`) and `[server]` for the server.
fn load(args: &ServeArgs) -> Result<(NodeConfig, ServerConfig), String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => String::new(),
    };
    let mut node = NodeConfig::from_toml(&text).map_err(|e| e.to_string())?;
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
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        server.plaintext = false;
        server.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            client_cert_required: false,
        });
    }
    if let Some(dir) = &args.data_dir {
        node.journal.data_dir = dir.clone();
    }
    node.snapshot.on_shutdown |= args.snapshot;
    // The I/O thread must never wait on the ring: Busy at once.
    node.engine.back_pressure_wait_ms = 0;
    server.check_serving()?;
    Ok((node, server))
}

pub fn serve(args: &ServeArgs) -> ExitCode {
    let (node_config, server_config) = match load(args) {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("keel serve: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(exit::FORCED),
            Arc::clone(&stop),
        );
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let node = match LedgerNode::start_ledger(&node_config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("keel serve: cannot start: {e}");
            return ExitCode::from(match e {
                NodeError::Config(_) | NodeError::Engine(_) | NodeError::FormatSetting { .. } => {
                    exit::CONFIG
                }
                _ => exit::CANNOT_START,
            });
        }
    };
    let recovery = node.recovery();
    eprintln!(
        "keel serve: recovered {} records{} in {:.2} s; next sequence {}, state hash {:016x}",
        recovery.records,
        recovery
            .snapshot
            .as_ref()
            .map(|(p, s)| format!(" after snapshot {} (sequence {s})", p.display()))
            .unwrap_or_default(),
        recovery.elapsed.as_secs_f64(),
        recovery.next_sequence,
        recovery.state_hash,
    );
    let server = match Server::start(server_config.clone(), node.submitter()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("keel serve: {e}");
            let _ = node.shutdown();
            return ExitCode::from(match e {
                keel_server::ServerError::Bind { .. } | keel_server::ServerError::Runtime(_) => {
                    exit::CANNOT_START
                }
                _ => exit::CONFIG,
            });
        }
    };
    let metrics = match server_config.metrics_listen {
        None => None,
        Some(addr) => match start_metrics(addr, &node, &server) {
            Ok(endpoint) => {
                eprintln!(
                    "keel serve: metrics on http://{}/metrics",
                    endpoint.local_addr()
                );
                Some(endpoint)
            }
            Err(e) => {
                eprintln!("keel serve: metrics endpoint: {e}");
                server.shutdown();
                let _ = node.shutdown();
                return ExitCode::from(exit::CANNOT_START);
            }
        },
    };
    let transport = match &server_config.tls {
        None => "plain TCP, unencrypted".to_string(),
        Some(tls) => match (&tls.client_ca, tls.client_cert_required) {
            (None, _) => "TLS 1.3".to_string(),
            (Some(_), false) => "TLS 1.3, client certificates optional".to_string(),
            (Some(_), true) => "TLS 1.3, client certificates required".to_string(),
        },
    };
    eprintln!(
        "keel serve: listening on {} ({transport}{}), journal {}",
        server.local_addr(),
        if server_config.allow_anonymous {
            ", anonymous allowed"
        } else {
            ""
        },
        node_config.journal.data_dir.display()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("keel serve: stopping: no new connections; writing every admitted reply");
    server.shutdown();
    drop(metrics);
    let stopped = match node_config.snapshot.on_shutdown {
        true => node.shutdown_with_snapshot(&node_config),
        false => node.shutdown().map(|s| (s, None)).map_err(NodeError::from),
    };
    match stopped {
        Ok((stopped, snapshot)) => {
            eprintln!(
                "keel serve: stopped cleanly at state hash {:016x}{}",
                keel_core::StateMachine::state_hash(&stopped.state_machine),
                snapshot
                    .map(|p| format!("; snapshot {}", p.display()))
                    .unwrap_or_default()
            );
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("keel serve: shutdown failed: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// The metrics endpoint: the engine's and the server's metrics, and the
/// journal's positions.
fn start_metrics(
    addr: std::net::SocketAddr,
    node: &LedgerNode,
    server: &Server,
) -> Result<keel_server::metrics::MetricsEndpoint, keel_server::ServerError> {
    use keel_server::metrics::{header, render_engine, render_server, sample};
    let engine = node.engine().metrics_handle();
    let stats = server.stats_handle();
    let journal = node.journal_status();
    let snapshots = node.snapshotter().map(|s| s.progress());
    let render = move || {
        let mut out = String::with_capacity(8 << 10);
        render_engine(&mut out, &engine);
        render_server(&mut out, &stats);
        if let Some(journal) = &journal {
            for (name, help, value) in keel_harness::metrics::journal_gauges(journal) {
                header(&mut out, name, "gauge", help);
                sample(&mut out, name, "", value);
            }
        }
        if let Some(snapshots) = &snapshots {
            let name = "keel_snapshots_written_total";
            header(
                &mut out,
                name,
                "counter",
                "Snapshots the shadow replica wrote since start.",
            );
            sample(&mut out, name, "", snapshots.written() as f64);
            let name = "keel_snapshot_covered_sequence";
            header(
                &mut out,
                name,
                "gauge",
                "The sequence the newest snapshot covers (0: none yet).",
            );
            sample(&mut out, name, "", snapshots.covered() as f64);
            if snapshots.written() > 0 {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let age = now_ms.saturating_sub(snapshots.written_at_unix_ms()) as f64 / 1e3;
                let name = "keel_snapshot_age_seconds";
                header(
                    &mut out,
                    name,
                    "gauge",
                    "Seconds since the newest snapshot was written.",
                );
                sample(&mut out, name, "", age);
            }
        }
        out
    };
    keel_server::metrics::MetricsEndpoint::start(addr, Box::new(render))
}

/// `keel token`: 32 bytes from the OS's random source, as hex, and its hash.
pub fn token() -> ExitCode {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        eprintln!("keel token: cannot read /dev/urandom: {e}");
        return ExitCode::from(exit::CANNOT_START);
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    println!("token        {token}");
    println!("token_blake3 {}", keel_server::token_hash(&token));
    ExitCode::from(exit::OK)
}

#[derive(clap::Args)]
pub struct CertArgs {
    /// Directory to write the PEM files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// DNS names and IP addresses the node's certificate is valid for.
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
    /// A client certificate to issue (repeatable): `<name>.pem`, `<name>.key`.
    #[arg(long = "client")]
    clients: Vec<String>,
}

/// `keel cert`: development certificates and the configuration lines.
pub fn cert(args: &CertArgs) -> ExitCode {
    match keel_harness::devcert::generate(&args.out, &args.names, &args.clients) {
        Ok(certs) => {
            println!("[server.tls]");
            println!("cert = {:?}", certs.node_cert.display().to_string());
            println!("key = {:?}", certs.node_key.display().to_string());
            if !certs.clients.is_empty() {
                println!("client_ca = {:?}", certs.ca.display().to_string());
            }
            for (name, cert, key, fingerprint) in &certs.clients {
                println!();
                println!("# client files: {} {}", cert.display(), key.display());
                println!("[[server.principals]]");
                println!("name = {name:?}");
                println!("tenant = 1");
                println!("cert_sha256 = {fingerprint:?}");
            }
            println!();
            println!("# clients trust {}", certs.ca.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("keel cert: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}
