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
use keel_server::{Server, ServerConfig};

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
    /// Accept clients without a token, as tenant 0 (development only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Write a snapshot at shutdown.
    #[arg(long)]
    snapshot: bool,
}

/// The node's file split in two: `[server]` for the server, the rest for the
/// node (whose parser refuses sections it does not know).
fn load(args: &ServeArgs) -> Result<(NodeConfig, ServerConfig), String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => String::new(),
    };
    let mut table: toml::Table = text.parse().map_err(|e| format!("config: {e}"))?;
    let mut server: ServerConfig = match table.remove("server") {
        Some(section) => section
            .try_into()
            .map_err(|e| format!("config [server]: {e}"))?,
        None => ServerConfig::default(),
    };
    let mut node = NodeConfig::from_toml(&table.to_string()).map_err(|e| e.to_string())?;
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    server.allow_anonymous |= args.allow_anonymous;
    if let Some(dir) = &args.data_dir {
        node.journal.data_dir = dir.clone();
    }
    node.snapshot.on_shutdown |= args.snapshot;
    // The I/O thread must never wait on the ring: Busy at once.
    node.engine.back_pressure_wait_ms = 0;
    if server.principals.is_empty() && !server.allow_anonymous {
        return Err(
            "config [server]: no principals and allow_anonymous = false: nobody could connect"
                .into(),
        );
    }
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
            return ExitCode::from(exit::CANNOT_START);
        }
    };
    eprintln!(
        "keel serve: listening on {} (plain TCP{}), journal {}",
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
