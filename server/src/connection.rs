//! One client connection: the handshake, then a loop that reads request
//! frames while the connection's window has room, submits their entries,
//! and writes one reply frame per batch of completions that are ready.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use keel_core::session::{REQUEST_EXPIRED, SESSION_UNKNOWN};
use keel_core::{Ack, Command, Registered, Registration, SubmitError, Submitter, SESSION_REGISTER};
use keel_protocol::{
    decode_frame, encode_frame, FrameError, Header, Hello, Kind, Refusal, RefusalCode, Replies,
    ReplyEntry, ReplyStatus, Requests, Welcome, BODY_BYTES_MAX, ENTRIES_PER_FRAME_MAX, FLAG_RESUME,
    HEADER_BYTES, VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{Identity, PrincipalTable};
use crate::{ServerConfig, ServerStats};

/// What every connection shares.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub principals: PrincipalTable,
    pub stats: Arc<ServerStats>,
    /// `None`: plain TCP (configured explicitly).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A byte stream a connection runs on: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// The authenticated peer.
struct Session {
    id: u64,
    tenant: u32,
    /// `None`: anonymous (no limits).
    principal: Option<Identity>,
    /// The high half of this session's idempotency keys: the session id
    /// scoped by tenant and principal, so one principal reusing another's
    /// session id neither collides with nor reads its replies.
    key_prefix: u64,
}

/// `XXH3(tenant, principal name, session id)`, never 0: fixed, so keys are
/// the same across restarts and replay.
fn key_prefix(tenant: u32, principal: &str, session: u64) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&tenant.to_le_bytes());
    hasher.update(&(principal.len() as u32).to_le_bytes());
    hasher.update(principal.as_bytes());
    hasher.update(&session.to_le_bytes());
    hasher.digest().max(1)
}

/// Why a connection ends (logged; the peer got a `Refused` where one applies).
enum End {
    /// The peer closed, or the server is stopping and everything is written.
    Closed,
    /// Refused with this code and message.
    Refused(RefusalCode, String),
    /// An I/O error or a write that timed out.
    Io,
}

pub(crate) struct Connection {
    shared: Arc<Shared>,
    submitter: Submitter,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    body: Vec<u8>,
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = ReplyEntry>>>;

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        submitter: Submitter,
        stop: watch::Receiver<bool>,
        peer: SocketAddr,
    ) -> Self {
        Self {
            shared,
            submitter,
            stop,
            peer,
            read_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            write_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            body: Vec::with_capacity(BODY_BYTES_MAX),
        }
    }

    /// Runs the TLS handshake (within the frame timeout) where TLS is
    /// configured, then the connection.
    /// A connection counts against `connections_max` from its accept, so a
    /// flood of connections that never finish their TLS handshake is
    /// bounded like any other.
    pub(crate) async fn start(self, stream: TcpStream) {
        let stats = Arc::clone(&self.shared.stats);
        let open = stats.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        let over_limit = open > self.shared.config.connections_max;
        self.start_counted(stream, over_limit).await;
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn start_counted(self, stream: TcpStream, over_limit: bool) {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.run(stream, None, over_limit).await;
        };
        let timeout = self.shared.config.frame_timeout();
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let identity = crate::tls::cert_identity(
                    &self.shared.principals,
                    stream.get_ref().1.peer_certificates(),
                );
                self.run(stream, identity, over_limit).await
            }
            // No frame can carry a refusal without TLS: count it and close.
            Ok(Err(e)) => {
                self.shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                log::info!("refused {}: TLS handshake failed: {e}", self.peer);
            }
            Err(_) => {
                self.shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                log::info!("refused {}: no TLS handshake within {timeout:?}", self.peer);
            }
        }
    }

    async fn run<S: Io>(mut self, mut stream: S, cert: Option<Identity>, over_limit: bool) {
        let stats = Arc::clone(&self.shared.stats);
        let end = if over_limit {
            End::Refused(
                RefusalCode::TooManyConnections,
                format!(
                    "the node holds its maximum of {} connections",
                    self.shared.config.connections_max
                ),
            )
        } else {
            match self.handshake(&mut stream, cert).await {
                Ok(session) => {
                    stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    self.serve(&mut stream, session).await
                }
                Err(end) => end,
            }
        };
        if let End::Refused(code, message) = &end {
            if *code != RefusalCode::ShuttingDown {
                stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                log::info!("refused {}: {code:?}: {message}", self.peer);
            }
            self.body.clear();
            Refusal {
                code: *code,
                message,
            }
            .encode(&mut self.body);
            self.write_buf.clear();
            encode_frame(&Header::new(Kind::Refused), &self.body, &mut self.write_buf);
            let _ = self.flush(&mut stream).await;
        }
        // A TLS close_notify, so the peer reads the refusal as the end.
        let _ = tokio::time::timeout(self.shared.config.frame_timeout(), stream.shutdown()).await;
    }

    /// Reads one whole, checksum-verified frame within the frame timeout
    /// and returns its header and length; its body is
    /// `read_buf[HEADER_BYTES..len]` (decoded once: the checksum runs once
    /// per frame). With `idle_ok`, waits as long as it takes for a frame to
    /// start (an idle authenticated connection is fine); the timeout runs
    /// from its first byte.
    async fn read_frame<S: Io>(
        &mut self,
        stream: &mut S,
        idle_ok: bool,
    ) -> Result<(Header, usize), End> {
        let timeout = self.shared.config.frame_timeout();
        if idle_ok && self.read_buf.is_empty() {
            match stream.read_buf(&mut self.read_buf).await {
                Ok(0) => return Err(End::Closed),
                Ok(_) => {}
                Err(_) => return Err(End::Io),
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match decode_frame(&self.read_buf) {
                Ok(Some((frame, used))) => return Ok((frame.header, used)),
                Ok(None) => {}
                Err(e) => return Err(bad_frame(e)),
            }
            let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut self.read_buf));
            match read.await {
                Err(_) => {
                    return Err(End::Refused(
                        RefusalCode::Timeout,
                        format!("no complete frame within {} ms", timeout.as_millis()),
                    ))
                }
                Ok(Ok(0)) => return Err(End::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(End::Io),
            }
        }
    }

    async fn handshake<S: Io>(
        &mut self,
        stream: &mut S,
        cert: Option<Identity>,
    ) -> Result<Session, End> {
        let (header, used) = self.read_frame(stream, false).await?;
        if header.kind != Kind::Hello {
            return Err(violation("the first frame must be Hello"));
        }
        let hello = Hello::decode(&self.read_buf[HEADER_BYTES..used]).map_err(bad_frame)?;
        if !(hello.version_min..=hello.version_max).contains(&VERSION) {
            return Err(End::Refused(
                RefusalCode::UnsupportedVersion,
                format!(
                    "this node speaks protocol version {VERSION}; the client offered {}..={}",
                    hello.version_min, hello.version_max
                ),
            ));
        }
        if header.session == 0 {
            return Err(violation("session id 0 is reserved"));
        }
        let principal = self.authenticate(hello.token, cert)?;
        let tenant = principal.as_ref().map_or(0, |p| p.tenant);
        let name = principal.as_ref().map_or("", |p| p.name.as_str());
        let session = Session {
            id: header.session,
            tenant,
            key_prefix: key_prefix(tenant, name, header.session),
            principal,
        };
        let resume = header.flags & FLAG_RESUME != 0;
        self.read_buf.drain(..used);
        let highest = self.register(&session, resume).await?;
        self.body.clear();
        Welcome {
            version: VERSION,
            tenant,
            in_flight_max: self.shared.config.in_flight_per_connection as u32,
            entries_per_frame_max: ENTRIES_PER_FRAME_MAX as u16,
            body_bytes_max: BODY_BYTES_MAX as u32,
        }
        .encode(&mut self.body);
        let mut header = Header::new(Kind::Welcome);
        header.session = session.id;
        header.tenant = tenant;
        if let Some(highest) = highest {
            header.flags = FLAG_RESUME;
            header.request = highest;
        }
        self.write_buf.clear();
        encode_frame(&header, &self.body, &mut self.write_buf);
        self.flush(stream).await?;
        Ok(session)
    }

    /// Registers (or resumes) the session: a journaled command, so the
    /// session table survives restart and replay. Returns the highest
    /// request number applied when the session existed. A resume of a
    /// session the node does not hold is refused `SessionEvicted`.
    async fn register(&mut self, session: &Session, resume: bool) -> Result<Option<u64>, End> {
        // Config checks names are at most 255 bytes, as a registration holds.
        let name = session.principal.as_ref().map_or("", |p| p.name.as_str());
        self.body.clear();
        Registration {
            scope: session.key_prefix,
            session: session.id,
            resume,
            principal: name.as_bytes(),
        }
        .encode(&mut self.body);
        let command = Command {
            command_type: SESSION_REGISTER,
            schema_version: 1,
            correlation_id: session.id,
            idempotency_key: 0,
            tenant_id: session.tenant,
            session: false,
            payload: &self.body,
        };
        let timeout = self.shared.config.frame_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let unavailable = |what: &str| End::Refused(RefusalCode::ShuttingDown, what.to_string());
        let ack = loop {
            match self.submitter.submit_async(&command) {
                Ok(ack) => break ack,
                Err(SubmitError::Busy | SubmitError::Paused)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await
                }
                Err(SubmitError::Busy | SubmitError::Paused) => {
                    return Err(End::Refused(
                        RefusalCode::Timeout,
                        format!(
                            "the engine took no session registration within {} ms",
                            timeout.as_millis()
                        ),
                    ))
                }
                Err(SubmitError::EngineStopped(_)) => {
                    return Err(unavailable("the engine stopped"))
                }
                Err(e) => unreachable!("a well-formed registration is refused: {e}"),
            }
        };
        let ack = match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(_)) => return Err(unavailable("the engine stopped")),
            Err(_) => {
                return Err(End::Refused(
                    RefusalCode::Timeout,
                    format!(
                        "the session registration was not durable within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
        };
        if ack.outcome.code == SESSION_UNKNOWN {
            return Err(End::Refused(
                RefusalCode::SessionEvicted,
                format!(
                    "session {:#x} is not held by this node (evicted, or never registered)",
                    session.id
                ),
            ));
        }
        match Registered::from_outcome(&ack.outcome) {
            Some(Registered::New) => Ok(None),
            Some(Registered::Resumed { highest }) => Ok(Some(highest)),
            None => unreachable!("a registration answered {:?}", ack.outcome.code),
        }
    }

    /// A known client certificate names the principal (a token sent with
    /// it must name the same one); otherwise the token does; otherwise the
    /// connection is anonymous where that is allowed.
    fn authenticate(&self, token: &[u8], cert: Option<Identity>) -> Result<Option<Identity>, End> {
        let refuse = |message: &str| End::Refused(RefusalCode::Unauthenticated, message.into());
        let by_token = match token.is_empty() {
            true => None,
            false => Some(
                self.shared
                    .principals
                    .tokens
                    .get(blake3::hash(token).as_bytes())
                    .ok_or_else(|| refuse("unknown token"))?,
            ),
        };
        let identity = match (cert.as_ref(), by_token) {
            (Some(cert), Some(by_token))
                if (&cert.name, cert.tenant) != (&by_token.name, by_token.tenant) =>
            {
                return Err(refuse(
                    "the client certificate and the token name different principals",
                ))
            }
            (Some(identity), _) | (None, Some(identity)) => identity,
            (None, None) if self.shared.config.allow_anonymous => return Ok(None),
            (None, None) => return Err(refuse("missing credentials")),
        };
        log::info!(
            "{} authenticated as {} (tenant {})",
            self.peer,
            identity.name,
            identity.tenant
        );
        Ok(Some(Arc::clone(identity)))
    }

    /// The request loop.
    async fn serve<S: Io>(&mut self, stream: &mut S, session: Session) -> End {
        let window = self.shared.config.in_flight_per_connection;
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        loop {
            if stopping && pending.is_empty() {
                // Every admitted request is answered; say why the
                // connection ends, so the client knows to go elsewhere or
                // wait for the restart rather than see a bare close.
                return End::Refused(
                    RefusalCode::ShuttingDown,
                    "the node is shutting down; every request it took was answered".into(),
                );
            }
            let can_read = !stopping && pending.len() < window;
            tokio::select! {
                biased;
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    if let Err(end) = self.write_replies(stream, &session, reply, &mut pending).await {
                        return end;
                    }
                }
                _ = stop.changed(), if !stopping => stopping = true,
                read = self.read_frame(stream, true), if can_read => {
                    let (header, used) = match read {
                        Ok(read) => read,
                        Err(end) => return end,
                    };
                    let result = self.handle_frame(stream, &session, header, used, &mut pending).await;
                    self.read_buf.drain(..used);
                    if let Err(end) = result {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes `first` and every other completion already ready as one frame.
    async fn write_replies<S: Io>(
        &mut self,
        stream: &mut S,
        session: &Session,
        first: ReplyEntry,
        pending: &mut FuturesUnordered<Pending>,
    ) -> Result<(), End> {
        Replies::begin(&mut self.body);
        Replies::push(&mut self.body, &first);
        while Replies::count(&self.body) < ENTRIES_PER_FRAME_MAX {
            match pending.next().now_or_never() {
                Some(Some(reply)) => Replies::push(&mut self.body, &reply),
                _ => break,
            }
        }
        self.send_replies(stream, session).await
    }

    async fn send_replies<S: Io>(&mut self, stream: &mut S, session: &Session) -> Result<(), End> {
        let mut header = Header::new(Kind::Reply);
        header.session = session.id;
        header.tenant = session.tenant;
        self.write_buf.clear();
        encode_frame(&header, &self.body, &mut self.write_buf);
        self.flush(stream).await
    }

    async fn handle_frame<S: Io>(
        &mut self,
        stream: &mut S,
        session: &Session,
        header: Header,
        used: usize,
        pending: &mut FuturesUnordered<Pending>,
    ) -> Result<(), End> {
        match header.kind {
            Kind::Request => {}
            Kind::Ping => {
                let mut pong = Header::new(Kind::Pong);
                pong.correlation = header.correlation;
                self.write_buf.clear();
                encode_frame(&pong, &[], &mut self.write_buf);
                return self.flush(stream).await;
            }
            kind => return Err(violation(&format!("unexpected {kind:?} frame"))),
        }
        if header.session != session.id {
            return Err(violation("the frame names another session"));
        }
        let requests = Requests::decode(&self.read_buf[HEADER_BYTES..used]).map_err(bad_frame)?;
        let immediate = submit_all(
            header.tenant,
            requests,
            session,
            &mut self.submitter,
            pending,
            self.shared.config.in_flight_per_connection,
            &self.shared.stats,
            &mut self.body,
        );
        match immediate {
            true => self.send_replies(stream, session).await,
            false => Ok(()),
        }
    }

    async fn flush<S: Io>(&mut self, stream: &mut S) -> Result<(), End> {
        let timeout = self.shared.config.frame_timeout();
        let write = async {
            stream.write_all(&self.write_buf).await?;
            // TLS buffers records until flushed; plain TCP's flush is a no-op.
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            // A peer that does not read its replies is cut, so it cannot pin
            // completion cells and buffers forever.
            _ => Err(End::Io),
        }
    }
}

/// Submits every entry; immediate answers (busy, invalid, rejected, wrong
/// tenant) go into `body` as a reply body. Returns whether it holds any.
#[allow(clippy::too_many_arguments)]
fn submit_all(
    frame_tenant: u32,
    requests: Requests<'_>,
    session: &Session,
    submitter: &mut Submitter,
    pending: &mut FuturesUnordered<Pending>,
    window: usize,
    stats: &ServerStats,
    body: &mut Vec<u8>,
) -> bool {
    Replies::begin(body);
    stats
        .requests
        .fetch_add(requests.len() as u64, Ordering::Relaxed);
    for entry in requests.iter() {
        let refuse = |status| ReplyEntry::new(entry.request, entry.correlation, status);
        if frame_tenant != session.tenant {
            Replies::push(body, &refuse(ReplyStatus::WrongTenant));
            continue;
        }
        if entry.request == 0 {
            Replies::push(body, &refuse(ReplyStatus::Invalid));
            continue;
        }
        if pending.len() >= window {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            Replies::push(body, &refuse(ReplyStatus::Busy));
            continue;
        }
        let permit = match session.principal.as_ref().map(|p| p.admit()) {
            Some(Err(wait_ms)) => {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
                let mut reply = refuse(ReplyStatus::Throttled);
                reply.code = wait_ms;
                Replies::push(body, &reply);
                continue;
            }
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        let command = Command {
            command_type: entry.command_type,
            schema_version: entry.schema_version,
            correlation_id: entry.correlation,
            idempotency_key: (u128::from(session.key_prefix) << 64) | u128::from(entry.request),
            tenant_id: session.tenant,
            session: true,
            payload: entry.payload,
        };
        match submitter.submit_async(&command) {
            Ok(ack) => {
                let (request, correlation) = (entry.request, entry.correlation);
                pending.push(Box::pin(ack.map(move |result| {
                    drop(permit);
                    reply_for(request, correlation, result)
                })));
            }
            Err(e) => {
                let reply = reply_for(entry.request, entry.correlation, Err(e));
                if reply.status == ReplyStatus::Busy {
                    stats.busy.fetch_add(1, Ordering::Relaxed);
                }
                Replies::push(body, &reply);
            }
        }
    }
    Replies::count(body) > 0
}

fn reply_for(request: u64, correlation: u64, result: Result<Ack, SubmitError>) -> ReplyEntry {
    match result {
        Ok(ack) if matches!(ack.outcome.code, SESSION_UNKNOWN | REQUEST_EXPIRED) => {
            let mut reply = ReplyEntry::new(request, correlation, ReplyStatus::SessionEvicted);
            reply.sequence = ack.sequence;
            reply.code = match ack.outcome.code {
                SESSION_UNKNOWN => 1,
                _ => 2,
            };
            reply
        }
        Ok(ack) => {
            let status = match ack.duplicate {
                true => ReplyStatus::Duplicate,
                false => ReplyStatus::Applied,
            };
            let mut reply =
                ReplyEntry::new(request, correlation, status).with_data(ack.outcome.data());
            reply.sequence = ack.sequence;
            reply.code = ack.outcome.code.0;
            reply
        }
        Err(SubmitError::Rejected { code }) => {
            let mut reply = ReplyEntry::new(request, correlation, ReplyStatus::Rejected);
            reply.code = code;
            reply
        }
        Err(SubmitError::Busy | SubmitError::Paused) => {
            ReplyEntry::new(request, correlation, ReplyStatus::Busy)
        }
        Err(SubmitError::EngineStopped(_)) => {
            ReplyEntry::new(request, correlation, ReplyStatus::Unavailable)
        }
        Err(_) => ReplyEntry::new(request, correlation, ReplyStatus::Invalid),
    }
}

fn bad_frame(e: FrameError) -> End {
    End::Refused(RefusalCode::BadFrame, e.to_string())
}

fn violation(what: &str) -> End {
    End::Refused(RefusalCode::ProtocolViolation, what.to_string())
}
