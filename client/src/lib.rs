//! A client for a Keel node: one session over one connection, async
//! ([`AsyncClient`], on tokio) or blocking ([`Client`], the same code driven
//! by its own current-thread runtime).
//!
//! A client picks a random session id at connect and numbers its requests
//! 1, 2, 3, … . `call` sends a whole batch of requests as one frame (the
//! throughput lever: one write, one read, for up to
//! [`keel_protocol::ENTRIES_PER_FRAME_MAX`] commands) and waits for every
//! reply. When the connection breaks, or the node answers `Busy`, it
//! reconnects with back-off (same session) and resends the unanswered
//! requests with their original numbers, so a request that was applied
//! before the reply was lost is answered `Duplicate` with its original
//! outcome instead of running twice. After `deadline` it gives up with
//! [`ClientError::Unknown`]: the outcome is then unknown, never reported as
//! a failure the node did not state. The node's session table is bounded:
//! a session evicted while its client was away is reported as
//! [`ClientError::SessionEvicted`] (or per request as
//! [`Status::SessionEvicted`]), never answered by running a request twice.
//!
//! [`Pool`] (and [`BlockingPool`]) share a few connections among many
//! callers and batch the requests queued at the same moment into one frame.
//!
//! TLS 1.3 (rustls) is on with [`ClientConfig::tls`]: the node's
//! certificate is verified against the given CA and name, and a client
//! certificate can be presented for mutual TLS. A TLS failure is final.
//!
//! The client depends on the protocol crate only (no engine, no journal).

#![forbid(unsafe_code)]

mod async_client;
mod blocking;
mod pool;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use keel_protocol::{FrameError, Kind, Refusal, RefusalCode};

pub use async_client::AsyncClient;
pub use blocking::Client;
pub use keel_protocol::ReplyEntry;
pub use pool::{BlockingPool, OwnedRequest, Pool};

pub use keel_protocol::ReplyStatus as Status;

/// A command to send.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The state machine's command type.
    pub command_type: u16,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The encoded command.
    pub payload: &'a [u8],
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node refused the connection (credentials, version, limits).
    #[error("refused by the node: {code:?}: {message}")]
    Refused {
        /// Why.
        code: RefusalCode,
        /// The node's message.
        message: String,
    },
    /// Could not connect or stay connected until the deadline; the requests
    /// from `first_request` on may or may not have been applied. Retrying
    /// them on a client with the same session (see [`Client::session`])
    /// answers them exactly once.
    #[error("outcome unknown for session {session:#x} from request {first_request}: {reason}")]
    Unknown {
        /// The session id.
        session: u64,
        /// The first request whose outcome is unknown.
        first_request: u64,
        /// The last failure seen.
        reason: String,
    },
    /// The node no longer holds the session (its bounded session table
    /// evicted it while the client was away): the requests from
    /// `first_request` on may or may not have been applied, and the node
    /// can no longer tell. Look their effects up (e.g. the transfers by
    /// id), then go on with a new session. A reply with status
    /// [`Status::SessionEvicted`] says the same of one request.
    #[error("session {session:#x} was evicted by the node; outcome unknown from request {first_request}")]
    SessionEvicted {
        /// The session id.
        session: u64,
        /// The first request whose outcome is unknown.
        first_request: u64,
    },
    /// The node sent bytes that are not a valid frame.
    #[error("bad frame from the node: {0}")]
    BadFrame(#[from] FrameError),
    /// The TLS settings cannot be used (unreadable CA, certificate or key;
    /// a server name that is not a DNS name or IP address).
    #[error("TLS: {0}")]
    Tls(String),
    /// The batch does not fit one frame.
    #[error("batch of {len} requests ({bytes} bytes) does not fit one frame")]
    BatchTooLarge {
        /// Requests.
        len: usize,
        /// Body bytes needed.
        bytes: usize,
    },
}

/// Client options.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The node.
    pub addr: SocketAddr,
    /// Bearer token (empty: anonymous, where the node allows it).
    pub token: Vec<u8>,
    /// The tenant the token acts for (the node checks it).
    pub tenant: u32,
    /// How long one call may take, retries included, before `Unknown`.
    pub deadline: Duration,
    /// 0: start a new session with a random id. Otherwise resume that
    /// session, which must exist on the node (e.g. to retry another
    /// client's `Unknown` requests): if the node no longer holds it,
    /// connecting fails with [`ClientError::SessionEvicted`] instead of
    /// starting it afresh, where old request numbers would run again.
    /// Reconnects always resume. A resumed session's requests are numbered
    /// from the highest the node applied + 1 ([`Client::set_next_request`]
    /// goes back to retry earlier ones).
    pub session: u64,
    /// TLS 1.3 to the node (`None`: plain TCP, for a node configured
    /// `plaintext = true`).
    pub tls: Option<Tls>,
}

impl ClientConfig {
    /// Defaults for `addr`: plain TCP, anonymous, tenant 0, a 10 s
    /// deadline, a new session.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: Vec::new(),
            tenant: 0,
            deadline: Duration::from_secs(10),
            session: 0,
            tls: None,
        }
    }
}

/// TLS settings: whom to trust, the name to verify, and optionally the
/// client's own certificate.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the CA certificates in the PEM file `ca` and expects the node's
    /// certificate to name `server_name` (a DNS name or an IP address);
    /// `identity` is a (certificate chain, private key) pair of PEM files for
    /// mutual TLS.
    pub fn from_pem_files(
        ca: &Path,
        server_name: &str,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Tls, ClientError> {
        let tls_error = |path: &Path, e: &dyn std::fmt::Display| {
            ClientError::Tls(format!("{}: {e}", path.display()))
        };
        let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, ClientError> {
            CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(path, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(path, &e))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| tls_error(ca, &e))?;
        }
        if roots.is_empty() {
            return Err(tls_error(ca, &"no CA certificate in the file"));
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(cert, &e))?
            }
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Tls(format!("server name `{server_name}`: {e}")))?;
        Ok(Tls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// One attempt's failure: retry after reconnecting, or give up.
pub(crate) enum Attempt {
    Retry(String),
    Fatal(ClientError),
}

/// An I/O failure is retried (after a reconnect), except a TLS failure
/// (an untrusted certificate, a wrong name, a refused client certificate):
/// retrying cannot change it.
pub(crate) fn io_failure(what: &str, e: std::io::Error) -> Attempt {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Attempt::Fatal(ClientError::Tls(tls.to_string())),
        None => Attempt::Retry(format!("{what}: {e}")),
    }
}

pub(crate) fn fatal(e: FrameError) -> Attempt {
    Attempt::Fatal(ClientError::BadFrame(e))
}

/// A `Refused` (shutting down is retried: another node or a restart may
/// answer; everything else is final).
pub(crate) fn unexpected(kind: Kind, body: &[u8]) -> Attempt {
    match (kind, Refusal::decode(body)) {
        (Kind::Refused, Ok(r)) if r.code == RefusalCode::ShuttingDown => {
            Attempt::Retry(format!("node shutting down: {}", r.message))
        }
        (Kind::Refused, Ok(r)) => Attempt::Fatal(ClientError::Refused {
            code: r.code,
            message: r.message.to_string(),
        }),
        (Kind::Refused, Err(e)) => fatal(e),
        _ => Attempt::Fatal(ClientError::Refused {
            code: RefusalCode::ProtocolViolation,
            message: format!("unexpected {kind:?} frame from the node"),
        }),
    }
}

/// A random non-zero session id from the OS's hashing randomness (no extra
/// dependency; 64 bits of `RandomState` keyed by the time and the pid).
pub(crate) fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}
