//! Keel's network face (ADR 0012): one I/O thread runs a tokio
//! current-thread runtime that accepts TCP connections, runs TLS 1.3 on
//! them (rustls; plain TCP only when `plaintext` is set), authenticates them
//! (a client certificate, or the `Hello`'s bearer token; then `Welcome`),
//! decodes `Request` frames, submits each entry
//! through the engine's [`Submitter::submit_async`] and writes a `Reply`
//! frame as completions fire.
//!
//! The engine's hot path is untouched: the server is just another producer.
//! Everything is bounded: connections (`connections_max`), requests awaiting
//! a reply per connection (`in_flight_per_connection`; past it the server
//! stops reading that connection and extra entries of a frame are `Busy`),
//! the read buffer (one frame, [`keel_protocol::BODY_BYTES_MAX`]), and the
//! time a frame or a reply write may take (`frame_timeout`). The engine is
//! run with `BackPressure::Fail` by the caller, so a full ring or a full set
//! of completion cells is a typed `Busy` reply at once, never a queue.
//!
//! Exactly-once for retries: an entry's idempotency key is
//! `scope << 64 | request` (`scope` = XXH3 of tenant, principal and
//! session id), so a client that resends a request after a
//! lost reply or a reconnect (same session, same request number) gets the
//! original outcome (`Duplicate`) from the engine's journaled idempotency
//! window, across restarts too. The window is bounded (`engine.dedup_entries`
//! keyed commands, node-wide); see docs/protocol.md for what that means.

#![forbid(unsafe_code)]

mod config;
mod connection;
mod io_thread;
mod limit;
pub mod metrics;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use keel_core::Submitter;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{cert_fingerprint, token_hash, Principal, ServerConfig, TlsConfig};
pub use tls::peer_tls;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The I/O thread or its runtime could not be started.
    #[error("cannot start the I/O thread: {0}")]
    Runtime(std::io::Error),
    /// A principal's credential is missing, malformed or shared.
    #[error("principal `{name}`: {what}")]
    Principal {
        /// The principal.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// Neither TLS nor plain TCP is configured, or both are.
    #[error("{0}")]
    Transport(&'static str),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A limit is out of its range.
    #[error("{0}")]
    Limit(String),
}

/// Counters of a running server (read at any time, never blocking it).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted and authenticated.
    pub connections_accepted: AtomicU64,
    /// Connections refused (limit, credentials, version, bad frames, timeouts).
    pub connections_refused: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicUsize,
    /// Request entries received.
    pub requests: AtomicU64,
    /// Entries answered `Busy`.
    pub busy: AtomicU64,
    /// Entries answered `Throttled` (a principal's rate or in-flight cap).
    pub throttled: AtomicU64,
}

/// A running server. Drop or [`Server::shutdown`] stops it.
#[derive(Debug)]
pub struct Server {
    io: io_thread::IoThread,
    stats: Arc<ServerStats>,
}

impl Server {
    /// Binds `config.listen` and starts the I/O thread. `submitter` must come
    /// from an engine configured with `BackPressure::Fail`.
    pub fn start(config: ServerConfig, submitter: Submitter) -> Result<Server, ServerError> {
        let (principals, tls) = config.prepare()?;
        let stats = Arc::new(ServerStats::default());
        let listen = config.listen;
        let shared = Arc::new(connection::Shared {
            config,
            principals,
            stats: Arc::clone(&stats),
            tls,
        });
        let io = io_thread::IoThread::start("keel-server-io", listen, move |listener, stop| {
            accept_loop(listener, shared, submitter, stop)
        })?;
        Ok(Server { io, stats })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// Its counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Its counters, shared (for a metrics endpoint).
    pub fn stats_handle(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }

    /// Stops accepting and reading, writes the reply of every request
    /// already submitted, closes every connection, and returns once the I/O
    /// thread has ended. The engine is the caller's to shut down after.
    pub fn shutdown(mut self) {
        self.io.stop_and_join();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<connection::Shared>,
    submitter: Submitter,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = connection::Connection::new(
                        Arc::clone(&shared), submitter.clone(), stop.clone(), peer);
                    tasks.spawn_local(conn.start(stream));
                }
                // EMFILE and the like: back off briefly instead of spinning.
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    log::info!(
        "server stopped: {} connections served",
        shared.stats.connections_accepted.load(Ordering::Relaxed)
    );
}
