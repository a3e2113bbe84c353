//! `keel bench --connect ADDR`: the main job over the network
//! (`keel_harness::netbench`). With `--serve DIR` it starts `keel serve`
//! itself on ADDR (a child process), and after the load stops it with
//! SIGTERM and checks that a restart from the journal reaches the state hash
//! the server stopped at.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::Duration;

use keel_harness::config::NodeConfig;
use keel_harness::load::{percentiles, transfer_result_name};
use keel_harness::netbench::{self, BenchConfig, BenchReport};
use keel_harness::node::LedgerNode;

use crate::connect_args::ConnectArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The node's address.
    #[arg(long)]
    connect: SocketAddr,
    /// Connections, each its own session.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Transfers in all.
    #[arg(long, default_value_t = 200_000)]
    transfers: u64,
    /// Transfers per command (1..=7).
    #[arg(long, default_value_t = 7)]
    batch: usize,
    /// Commands per frame (each connection keeps one frame in flight; the
    /// network needs more in flight than the embedded job to cover the round trip).
    #[arg(long, default_value_t = 4)]
    per_frame: usize,
    /// Accounts (the first funds the others).
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Pace at this many transfers per second over all connections
    /// (latency then counts from each frame's intended send time).
    #[arg(long)]
    rate: Option<u64>,
    #[command(flatten)]
    connection: ConnectArgs,
    /// Skip reading every balance before and after (the exactly-once check).
    #[arg(long)]
    no_verify: bool,
    /// Start `keel serve` on --connect over this journal directory first,
    /// and after the load stop it and check a restart's state hash.
    #[arg(long)]
    serve: Option<PathBuf>,
    /// With --serve: the server's configuration file (default: plain TCP,
    /// anonymous clients allowed, on loopback).
    #[arg(long, requires = "serve")]
    serve_config: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> ExitCode {
    let client = match args.connection.apply(netbench::client_config(args.connect)) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("keel bench: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let config = BenchConfig {
        client: client.clone(),
        connections: args.connections,
        transfers: args.transfers,
        batch: args.batch,
        per_frame: args.per_frame,
        accounts: args.accounts,
        rate: args.rate,
        verify: !args.no_verify,
        nonce: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    };
    if let Err(e) = config.validate() {
        eprintln!("keel bench: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let mut server = match &args.serve {
        Some(dir) => match spawn_server(args, dir) {
            Ok(child) => Some(child),
            Err(e) => {
                eprintln!("keel bench: {e}");
                return ExitCode::from(exit::CANNOT_START);
            }
        },
        None => None,
    };
    println!(
        "bench        {} transfers over {} connections to {} ({}; {} per command, {} commands per frame; {})",
        args.transfers,
        args.connections,
        args.connect,
        if client.tls.is_some() { "TLS 1.3" } else { "plain TCP" },
        args.batch,
        args.per_frame,
        args.rate
            .map_or("flat out".to_string(), |r| format!("paced at {r}/s")),
    );
    let result = netbench::run(&config);
    let mut code = match &result {
        Ok(report) => print_report(report, args.rate.is_some()),
        Err(e) => {
            eprintln!("keel bench failed: {e}");
            ExitCode::from(exit::FAILED)
        }
    };
    if let Some(server) = server.take() {
        if let Err(e) = stop_and_check(server, args) {
            eprintln!("restart      FAILED: {e}");
            code = ExitCode::from(exit::FAILED);
        }
    }
    code
}

fn print_report(report: &BenchReport, paced: bool) -> ExitCode {
    println!(
        "throughput   {:.0} transfers/s (transfer phase {:.2} s)",
        report.transfers_per_second,
        report.elapsed.as_secs_f64()
    );
    println!(
        "latency      {} per frame, end to end{}",
        percentiles(&report.latency_ns),
        if paced {
            ", from the intended send time (coordinated omission corrected)"
        } else {
            " (flat out: closed loop, service time)"
        }
    );
    let results: Vec<String> = report
        .results
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(code, n)| format!("{} {n}", transfer_result_name(code)))
        .collect();
    println!("results      {}", results.join(", "));
    match report.verified {
        Some((expected, found)) if expected == found => {
            println!("exactly once posted debits grew by {found} = the amounts acknowledged as created: ok");
            ExitCode::from(exit::OK)
        }
        Some((expected, found)) => {
            eprintln!(
                "EXACTLY-ONCE VIOLATED: posted debits grew by {found}, the node acknowledged {expected}"
            );
            ExitCode::from(exit::FAILED)
        }
        None => ExitCode::from(exit::OK),
    }
}

/// A `keel serve` child and the lines it writes to stderr (echoed).
struct ServerChild {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_server(args: &BenchArgs, dir: &std::path::Path) -> Result<ServerChild, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find keel: {e}"))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("serve")
        .arg("--listen")
        .arg(args.connect.to_string())
        .arg("--data-dir")
        .arg(dir);
    match &args.serve_config {
        Some(file) => command.arg("--config").arg(file),
        None => command.args(["--plaintext", "--allow-anonymous"]),
    };
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start keel serve: {e}"))?;
    // Wait for its "listening" line (recovery may take a while).
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("  server: {line}");
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                return Err("keel serve did not start listening".into());
            }
        }
    }
    Ok(ServerChild { child, lines: rx })
}

/// SIGTERM, a clean exit 0 with the state hash it stopped at, then a
/// restart from the journal that must reach the same hash.
fn stop_and_check(server: ServerChild, args: &BenchArgs) -> Result<(), String> {
    let ServerChild { mut child, lines } = server;
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if !signalled.success() {
        return Err("cannot signal keel serve".into());
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.code() != Some(0) {
        return Err(format!("keel serve exited {status} after SIGTERM"));
    }
    // The echo thread ends with the child's stderr.
    let lines: Vec<String> = lines.iter().collect();
    let stopped_at = lines
        .iter()
        .find_map(|l| l.split("stopped cleanly at state hash ").nth(1))
        .and_then(|rest| {
            u64::from_str_radix(rest.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
        })
        .ok_or("keel serve did not report the state hash it stopped at")?;
    let mut node_config = match &args.serve_config {
        Some(file) => NodeConfig::from_file(file).map_err(|e| e.to_string())?,
        None => NodeConfig::default(),
    };
    node_config.journal.data_dir = args.serve.clone().expect("--serve");
    let node = LedgerNode::start_ledger(&node_config).map_err(|e| e.to_string())?;
    let recovered = node.recovery().state_hash;
    let records = node.recovery().records;
    node.shutdown().map_err(|e| e.to_string())?;
    if recovered != stopped_at {
        return Err(format!(
            "the restart reached state hash {recovered:016x}, the server stopped at {stopped_at:016x}"
        ));
    }
    println!(
        "restart      {records} journal records replayed: state hash {recovered:016x} = the server's at SIGTERM: ok"
    );
    Ok(())
}
