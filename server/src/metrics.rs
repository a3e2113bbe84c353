//! The metrics endpoint: `GET /metrics` in the Prometheus text format
//! (version 0.0.4, which OpenMetrics scrapers read too), on its own
//! thread and listener so a scrape never delays the client I/O thread.
//!
//! What is exported is rendered by the caller's closure at each scrape
//! ([`render_engine`] and [`render_server`] write the engine's and the
//! server's parts); reading them copies histograms under their locks for a
//! moment (a stage skips one sample meanwhile; ADR 0006) and loads atomics,
//! so scraping never blocks the pipeline.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hdrhistogram::Histogram;
use keel_core::{MetricsHandle, StageName};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::io_thread::IoThread;
use crate::{ServerError, ServerStats};

/// What a scrape returns: the full exposition text.
pub type Render = Box<dyn Fn() -> String + Send + Sync + 'static>;

/// Scrape connections served at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 16;

/// Quantiles exported for every latency summary (1 = the maximum).
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

fn stage_label(stage: StageName) -> &'static str {
    match stage {
        StageName::Journaller => "journaller",
        StageName::Replicator => "replicator",
        StageName::BusinessLogic => "blp",
        StageName::Publisher => "publisher",
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line, `labels` already formatted (`a="b",c="d"` or empty).
pub fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    match labels.is_empty() {
        true => {
            let _ = writeln!(out, "{name} {value}");
        }
        false => {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Writes a summary's quantiles, `_sum` and `_count` from an HDR histogram,
/// each value multiplied by `scale` (1e-9 for nanoseconds → seconds).
pub fn summary(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>, scale: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    for q in QUANTILES {
        let value = match h.is_empty() {
            true => 0.0,
            false => h.value_at_quantile(q) as f64 * scale,
        };
        sample(out, name, &format!("{labels}{sep}quantile=\"{q}\""), value);
    }
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        h.mean() * h.len() as f64 * scale,
    );
    sample(out, &format!("{name}_count"), labels, h.len() as f64);
}

/// The engine's part: acknowledgement latency, per-stage batch service
/// time and commands released, ring occupancy.
pub fn render_engine(out: &mut String, engine: &MetricsHandle) {
    let snapshot = engine.snapshot();
    header(
        out,
        "keel_ack_latency_seconds",
        "summary",
        "Submit to acknowledgement, every waited-for command (detached ones sampled).",
    );
    summary(
        out,
        "keel_ack_latency_seconds",
        "",
        &snapshot.ack_latency_ns,
        1e-9,
    );
    header(
        out,
        "keel_stage_batch_seconds",
        "summary",
        "Batch service time per stage (every journal batch; 1 in 16 elsewhere).",
    );
    for stage in StageName::ALL {
        let labels = format!("stage=\"{}\"", stage_label(stage));
        summary(
            out,
            "keel_stage_batch_seconds",
            &labels,
            snapshot.stage(stage),
            1e-9,
        );
    }
    header(
        out,
        "keel_stage_commands_total",
        "counter",
        "Commands released by each stage since the engine started.",
    );
    for stage in StageName::ALL {
        let labels = format!("stage=\"{}\"", stage_label(stage));
        sample(
            out,
            "keel_stage_commands_total",
            &labels,
            engine.processed(stage) as f64,
        );
    }
    header(
        out,
        "keel_ring_occupancy_slots",
        "summary",
        "Ring slots published and not yet acknowledged (1 publisher batch in 16).",
    );
    summary(
        out,
        "keel_ring_occupancy_slots",
        "",
        &snapshot.ring_occupancy,
        1.0,
    );
}

/// The network face's counters.
pub fn render_server(out: &mut String, stats: &ServerStats) {
    let counters = [
        (
            "keel_server_connections_accepted_total",
            "Connections accepted and authenticated.",
            &stats.connections_accepted,
        ),
        (
            "keel_server_connections_refused_total",
            "Connections refused (limit, credentials, version, bad frames, timeouts).",
            &stats.connections_refused,
        ),
        (
            "keel_server_requests_total",
            "Request entries received.",
            &stats.requests,
        ),
        (
            "keel_server_busy_total",
            "Entries answered Busy (ring or completion table full).",
            &stats.busy,
        ),
        (
            "keel_server_throttled_total",
            "Entries answered Throttled (a principal's rate or in-flight cap).",
            &stats.throttled,
        ),
    ];
    for (name, help, value) in counters {
        header(out, name, "counter", help);
        sample(out, name, "", value.load(Ordering::Relaxed) as f64);
    }
    header(
        out,
        "keel_server_connections_open",
        "gauge",
        "Connections open now.",
    );
    sample(
        out,
        "keel_server_connections_open",
        "",
        stats.connections_open.load(Ordering::Relaxed) as f64,
    );
}

/// A running metrics endpoint. Drop or [`MetricsEndpoint::shutdown`] stops it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    io: IoThread,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves `GET /metrics` (anything else: 404) with
    /// what `render` returns, on a thread of its own.
    pub fn start(addr: SocketAddr, render: Render) -> Result<Self, ServerError> {
        let render = Arc::new(render);
        let io = IoThread::start("keel-metrics", addr, move |listener, stop| {
            serve(listener, render, stop)
        })?;
        Ok(Self { io })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// Stops serving and waits for the thread.
    pub fn shutdown(mut self) {
        self.io.stop_and_join();
    }
}

async fn serve(listener: TcpListener, render: Arc<Render>, mut stop: watch::Receiver<bool>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Method, Request, Response, StatusCode};

    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let render = Arc::clone(&render);
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let render = Arc::clone(&render);
            async move {
                let response = match (request.method(), request.uri().path()) {
                    (&Method::GET, "/metrics") => Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from((render)()))),
                    _ => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"only GET /metrics\n"))),
                };
                Ok::<_, hyper::http::Error>(response.expect("static response parts"))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        // A scraper that stalls is cut after 10 s; it holds one slot meanwhile.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
            drop(slot);
        });
    }
}
