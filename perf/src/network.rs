//! `keel-perf network`: the network face's three goals, each against a
//! baseline measured in the same run.
//!
//! - **echo**: the loopback round trip of a frame the size of one request
//!   (a 64-byte header plus a 7-transfer command), through a plain echo
//!   thread: the floor any request/reply over loopback pays.
//! - **throughput**: `keel bench --connect` (the bench's sessions in this
//!   process, `keel serve` a child process) flat out, plain TCP and TLS 1.3,
//!   against the embedded main job (`keel run`'s load in this process) on
//!   the same machine. Goals: network ≥ 0.8× embedded; TLS ≥ 0.9× plain.
//! - **latency**: both paced at `--rate` transfers/s, one command per frame,
//!   both measured from each command's intended send time: the network's
//!   end-to-end p99 against the embedded p99 plus two echo round trips.
//!
//! Each contender runs `--runs` times; the median run is reported.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

use hdrhistogram::Histogram;
use keel_harness::config::NodeConfig;
use keel_harness::load::{self, LoadConfig};
use keel_harness::netbench::{self, BenchConfig};

/// Options of `keel-perf network`.
#[derive(clap::Args, Clone, Debug)]
pub struct NetworkArgs {
    /// Directory for the journals (fresh subdirectories, removed after each run).
    #[arg(long, default_value = "target/keel-perf-network")]
    pub dir: PathBuf,
    /// Transfers per throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: u64,
    /// Sessions of the network runs.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Commands per frame in the throughput runs.
    #[arg(long, default_value_t = 8)]
    pub per_frame: usize,
    /// Paced rate of the latency runs (transfers/s).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Transfers per latency run.
    #[arg(long, default_value_t = 500_000)]
    pub latency_transfers: u64,
    /// Round trips of the echo baseline.
    #[arg(long, default_value_t = 20_000)]
    pub echo_trips: u64,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

pub fn run(args: &NetworkArgs) {
    let keel = keel_binary();
    std::fs::create_dir_all(&args.dir).expect("create the benchmark directory");
    let certs = keel_harness::devcert::generate(
        &args.dir.join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
        &[],
    )
    .expect("development certificates");
    let tls_config = args.dir.join("tls.toml");
    std::fs::write(
        &tls_config,
        format!(
            "[server]\nallow_anonymous = true\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
            certs.node_cert.display().to_string(),
            certs.node_key.display().to_string()
        ),
    )
    .expect("write the TLS configuration");
    let tls = keel_client::Tls::from_pem_files(&certs.ca, "localhost", None).expect("TLS client");

    let echo = echo_round_trip(args.echo_trips);
    println!(
        "echo         loopback round trip of a {ECHO_FRAME_BYTES}-byte frame: {}",
        load::percentiles(&echo)
    );

    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let mut embedded = Vec::new();
    let mut plain = Vec::new();
    let mut encrypted = Vec::new();
    for run in 0..args.runs {
        embedded.push(embedded_run(args, run, None).0);
        plain.push(network_run(args, &keel, run, None, None, args.transfers).0);
        encrypted.push(
            network_run(
                args,
                &keel,
                run,
                Some((&tls_config, tls.clone())),
                None,
                args.transfers,
            )
            .0,
        );
    }
    let (embedded, plain, encrypted) = (median(embedded), median(plain), median(encrypted));
    println!(
        "throughput   embedded {embedded:.0}/s, network plain {plain:.0}/s ({:.2}x embedded; goal >= 0.8), TLS 1.3 {encrypted:.0}/s ({:.2}x plain; goal >= 0.9)",
        plain / embedded,
        encrypted / plain
    );

    let mut embedded_p99 = Vec::new();
    let mut network_p99 = Vec::new();
    let mut last = None;
    for run in 0..args.runs {
        let (_, ack) = embedded_run(args, run, Some(args.rate));
        let (_, latency) = network_run(
            args,
            &keel,
            run,
            None,
            Some(args.rate),
            args.latency_transfers,
        );
        embedded_p99.push(ack.value_at_quantile(0.99) as f64);
        network_p99.push(latency.value_at_quantile(0.99) as f64);
        last = Some((ack, latency));
    }
    let (ack, latency) = last.expect("at least one run");
    println!("paced        {} transfers/s, last run:", args.rate);
    println!("  embedded         {}", load::percentiles(&ack));
    println!("  network e2e      {}", load::percentiles(&latency));
    let (embedded_p99, network_p99) = (median(embedded_p99), median(network_p99));
    let budget = embedded_p99 + 2.0 * echo.value_at_quantile(0.5) as f64;
    println!(
        "latency      p99 (median of runs): network {:.0} µs, embedded {:.0} µs + 2 echo round trips = {:.0} µs ({})",
        network_p99 / 1e3,
        embedded_p99 / 1e3,
        budget / 1e3,
        if network_p99 <= budget { "goal met" } else { "goal NOT met" }
    );
}

/// `target/<profile>/keel`, beside this binary.
fn keel_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let keel = me.with_file_name("keel");
    assert!(
        keel.exists(),
        "{} is missing: build it first (cargo build --release -p keel-harness --bin keel)",
        keel.display()
    );
    keel
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// The embedded main job: (transfers/s, latency per command; from the
/// intended send time when paced).
fn embedded_run(args: &NetworkArgs, run: usize, rate: Option<u64>) -> (f64, Histogram<u64>) {
    let dir = fresh(&args.dir, &format!("embedded-{run}"));
    let mut node = NodeConfig::default();
    node.journal.data_dir = dir.clone();
    let config = LoadConfig {
        node,
        transfers: match rate {
            Some(_) => args.latency_transfers,
            None => args.transfers,
        },
        rate,
        batch: 7,
        progress: false,
        ..LoadConfig::default()
    };
    let report = load::run(&config).expect("main job");
    assert_eq!(
        report.restart.expect("durable").state_hash,
        report.state_hash
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Paced: from each command's intended send time, as the network side is
    // measured; flat out: from submit.
    let latency = report.intended_latency_ns.unwrap_or(report.ack_latency_ns);
    (report.transfers_per_second, latency)
}

/// One `keel bench` run against a fresh `keel serve` child: (transfers/s,
/// end-to-end latency per frame).
fn network_run(
    args: &NetworkArgs,
    keel: &Path,
    run: usize,
    tls: Option<(&Path, keel_client::Tls)>,
    rate: Option<u64>,
    transfers: u64,
) -> (f64, Histogram<u64>) {
    let dir = fresh(&args.dir, &format!("network-{run}"));
    let addr = free_port();
    let mut command = std::process::Command::new(keel);
    command
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(&dir);
    match &tls {
        Some((config, _)) => command.arg("--config").arg(config),
        None => command.args(["--plaintext", "--allow-anonymous"]),
    };
    let mut server = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel serve");
    wait_listening(&mut server);
    let mut client = netbench::client_config(addr);
    client.tls = tls.map(|(_, tls)| tls);
    let config = BenchConfig {
        client,
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
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let status = server.wait().expect("wait for keel serve");
    assert_eq!(status.code(), Some(0), "keel serve stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
    (report.transfers_per_second, report.latency_ns)
}

/// Waits for `keel serve`'s "listening on" line, then drains its stderr.
pub(crate) fn wait_listening(server: &mut Child) {
    let stderr = server.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("server output");
        if line.contains("listening on") {
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return;
        }
    }
    panic!("keel serve exited before listening");
}

pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A request frame of one 7-transfer command: header, entry header, payload.
const ECHO_FRAME_BYTES: usize = 64 + 4 + 24 + 7 * 128 + 16;

/// Loopback round trips of one frame through an echo thread (TCP_NODELAY).
fn echo_round_trip(trips: u64) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; ECHO_FRAME_BYTES];
        while stream.read_exact(&mut buf).is_ok() {
            if stream.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let frame = [7u8; ECHO_FRAME_BYTES];
    let mut back = [0u8; ECHO_FRAME_BYTES];
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    for i in 0..trips + trips / 10 {
        let start = Instant::now();
        stream.write_all(&frame).expect("write");
        stream.read_exact(&mut back).expect("read");
        if i >= trips / 10 {
            histogram.saturating_record(start.elapsed().as_nanos() as u64);
        }
    }
    drop(stream);
    let _ = echo.join();
    histogram
}
