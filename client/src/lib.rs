//! A blocking client for a Keel node: one session over one TCP connection.
//!
//! A [`Client`] picks a random session id at connect and numbers its
//! requests 1, 2, 3, … . [`Client::call`] sends a whole batch of requests as
//! one frame (the throughput lever: one write, one read, for up to
//! [`keel_protocol::ENTRIES_PER_FRAME_MAX`] commands) and waits for every
//! reply. When the connection breaks, or the node answers `Busy`, it
//! reconnects with back-off (same session) and resends the unanswered
//! requests with their original numbers, so a request that was applied
//! before the reply was lost is answered `Duplicate` with its original
//! outcome instead of running twice. After `deadline` it gives up with
//! [`ClientError::Unknown`]: the outcome is then unknown, never reported as
//! a failure the node did not state.
//!
//! TLS 1.3 (rustls) is on with [`ClientConfig::tls`]: the node's
//! certificate is verified against the given CA and name, and a client
//! certificate can be presented for mutual TLS.
//!
//! The client depends on the protocol crate only (no engine, no journal).

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use keel_protocol::{
    decode_frame, encode_frame, FrameError, Header, Hello, Kind, Refusal, RefusalCode, Replies,
    ReplyEntry, ReplyStatus, RequestEntry, Requests, Welcome, BODY_BYTES_MAX, HEADER_BYTES,
    REQUEST_ENTRY_HEADER_BYTES, VERSION,
};

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
#[derive(Debug, thiserror::Error)]
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
    /// The session id to use (0: a random one). Reusing one resumes it.
    pub session: u64,
    /// TLS 1.3 to the node (`None`: plain TCP, for a node configured
    /// `plaintext = true`).
    pub tls: Option<Tls>,
}

/// TLS settings: whom to trust, the name to verify, and optionally the
/// client's own certificate.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
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

/// The connection: plain TCP or TLS over it.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl ClientConfig {
    /// Defaults for `addr`: anonymous, tenant 0, a 10 s deadline, a new session.
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

/// One session over one connection.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    session: u64,
    next_request: u64,
    stream: Option<Stream>,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    body: Vec<u8>,
    frames: u64,
}

impl Client {
    /// Connects and authenticates.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let session = match config.session {
            0 => random_session(),
            id => id,
        };
        let mut client = Client {
            config,
            session,
            next_request: 1,
            stream: None,
            read_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            write_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            body: Vec::new(),
            frames: 0,
        };
        client.reconnect().map_err(|e| match e {
            Attempt::Fatal(e) => e,
            Attempt::Retry(reason) => ClientError::Unknown {
                session,
                first_request: 1,
                reason,
            },
        })?;
        Ok(client)
    }

    /// This client's session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The number the next request will get.
    pub fn next_request(&self) -> u64 {
        self.next_request
    }

    /// Sets the next request number, e.g. to retry requests of an earlier
    /// `Unknown` outcome on a client connected with the same session. A
    /// number the session already used is a retry: it is answered with that
    /// request's original outcome, whatever the new payload.
    pub fn set_next_request(&mut self, request: u64) {
        assert!(request > 0, "request numbers start at 1");
        self.next_request = request;
    }

    /// Sends `requests` as one frame and returns one reply per request, in
    /// order. `Busy` and broken connections are retried (same numbers)
    /// until the deadline; every reply returned is the node's final word.
    pub fn call(&mut self, requests: &[Request<'_>]) -> Result<Vec<ReplyEntry>, ClientError> {
        let bytes: usize = 4 + requests
            .iter()
            .map(|r| REQUEST_ENTRY_HEADER_BYTES + r.payload.len())
            .sum::<usize>();
        if requests.is_empty()
            || requests.len() > keel_protocol::ENTRIES_PER_FRAME_MAX
            || bytes > BODY_BYTES_MAX
        {
            return Err(ClientError::BatchTooLarge {
                len: requests.len(),
                bytes,
            });
        }
        let first = self.next_request;
        self.next_request += requests.len() as u64;
        let started = Instant::now();
        let mut replies: Vec<Option<ReplyEntry>> = vec![None; requests.len()];
        let mut backoff = Duration::from_millis(1);
        loop {
            let reason = match self.exchange(first, requests, &mut replies) {
                Ok(()) if replies.iter().all(Option::is_some) => {
                    return Ok(replies.into_iter().map(|r| r.expect("all some")).collect())
                }
                Ok(()) => "busy".to_string(),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(reason)) => {
                    self.stream = None;
                    reason
                }
            };
            if started.elapsed() + backoff > self.config.deadline {
                let first_request =
                    first + replies.iter().position(Option::is_none).unwrap_or(0) as u64;
                return Err(ClientError::Unknown {
                    session: self.session,
                    first_request,
                    reason,
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
            if self.stream.is_none() {
                if let Err(Attempt::Fatal(e)) = self.reconnect() {
                    return Err(e);
                }
            }
        }
    }

    /// Sends the still unanswered requests once and reads their replies;
    /// `Busy` ones stay `None`.
    fn exchange(
        &mut self,
        first: u64,
        requests: &[Request<'_>],
        replies: &mut [Option<ReplyEntry>],
    ) -> Result<(), Attempt> {
        if self.stream.is_none() {
            return Err(Attempt::Retry("not connected".into()));
        }
        Requests::begin(&mut self.body);
        let mut first_sent = 0;
        let mut outstanding = 0;
        for (i, request) in requests.iter().enumerate() {
            if replies[i].is_some() {
                continue;
            }
            if outstanding == 0 {
                first_sent = first + i as u64;
            }
            outstanding += 1;
            Requests::push(
                &mut self.body,
                &RequestEntry {
                    request: first + i as u64,
                    correlation: first + i as u64,
                    command_type: request.command_type,
                    schema_version: request.schema_version,
                    payload: request.payload,
                },
            );
        }
        let mut header = Header::new(Kind::Request);
        header.session = self.session;
        header.tenant = self.config.tenant;
        header.request = first_sent;
        self.frames += 1;
        header.correlation = self.frames;
        self.write_buf.clear();
        encode_frame(&header, &self.body, &mut self.write_buf);
        self.write_all()?;
        while outstanding > 0 {
            let (kind, body) = self.read_frame()?;
            if kind != Kind::Reply {
                return Err(unexpected(kind, &body));
            }
            for reply in Replies::decode(&body).map_err(fatal)?.iter() {
                let Some(i) = reply.request.checked_sub(first).map(|i| i as usize) else {
                    continue;
                };
                if i >= replies.len() || replies[i].is_some() {
                    continue;
                }
                outstanding -= 1;
                if reply.status != ReplyStatus::Busy {
                    replies[i] = Some(reply);
                }
            }
        }
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), Attempt> {
        self.stream = None;
        self.read_buf.clear();
        let stream = TcpStream::connect_timeout(&self.config.addr, self.config.deadline)
            .map_err(|e| Attempt::Retry(format!("connect {}: {e}", self.config.addr)))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(self.config.deadline));
        let _ = stream.set_write_timeout(Some(self.config.deadline));
        self.stream = Some(match &self.config.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let connection =
                    rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                        .map_err(|e| Attempt::Fatal(ClientError::Tls(e.to_string())))?;
                // The handshake runs on the first write and read.
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, stream)))
            }
        });
        self.body.clear();
        Hello {
            version_min: VERSION,
            version_max: VERSION,
            token: &self.config.token,
        }
        .encode(&mut self.body);
        let mut header = Header::new(Kind::Hello);
        header.session = self.session;
        header.tenant = self.config.tenant;
        self.write_buf.clear();
        encode_frame(&header, &self.body, &mut self.write_buf);
        self.write_all()?;
        let (kind, body) = self.read_frame()?;
        if kind != Kind::Welcome {
            return Err(unexpected(kind, &body));
        }
        let welcome = Welcome::decode(&body).map_err(fatal)?;
        if welcome.tenant != self.config.tenant {
            return Err(Attempt::Fatal(ClientError::Refused {
                code: RefusalCode::Unauthenticated,
                message: format!(
                    "the token acts for tenant {}, not {}",
                    welcome.tenant, self.config.tenant
                ),
            }));
        }
        Ok(())
    }

    fn write_all(&mut self) -> Result<(), Attempt> {
        let stream = self.stream.as_mut().expect("connected");
        stream
            .write_all(&self.write_buf)
            .and_then(|()| stream.flush())
            .map_err(|e| io_failure("write", e))
    }

    /// Reads one frame; returns its kind and a copy of its body.
    fn read_frame(&mut self) -> Result<(Kind, Vec<u8>), Attempt> {
        let stream = self.stream.as_mut().expect("connected");
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((frame, used)) = decode_frame(&self.read_buf).map_err(fatal)? {
                let out = (frame.header.kind, frame.body.to_vec());
                self.read_buf.drain(..used);
                return Ok(out);
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err(Attempt::Retry("the node closed the connection".into())),
                Ok(n) => self.read_buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(io_failure("read", e)),
            }
        }
    }
}

/// One attempt's failure: retry after reconnecting, or give up.
enum Attempt {
    Retry(String),
    Fatal(ClientError),
}

/// An I/O failure is retried (after a reconnect), except a TLS failure
/// (an untrusted certificate, a wrong name, a refused client certificate):
/// retrying cannot change it.
fn io_failure(what: &str, e: std::io::Error) -> Attempt {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Attempt::Fatal(ClientError::Tls(tls.to_string())),
        None => Attempt::Retry(format!("{what}: {e}")),
    }
}

fn fatal(e: FrameError) -> Attempt {
    Attempt::Fatal(ClientError::BadFrame(e))
}

/// A `Refused` (shutting down is retried: another node or a restart may
/// answer; everything else is final).
fn unexpected(kind: Kind, body: &[u8]) -> Attempt {
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
fn random_session() -> u64 {
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
