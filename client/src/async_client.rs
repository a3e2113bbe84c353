//! [`AsyncClient`]: one session over one connection, on tokio.

use std::sync::Arc;
use std::time::Duration;

use keel_protocol::{
    decode_frame, encode_frame, Header, Hello, Kind, Replies, ReplyEntry, ReplyStatus,
    RequestEntry, Requests, Welcome, BODY_BYTES_MAX, ENTRIES_PER_FRAME_MAX, FLAG_RESUME,
    HEADER_BYTES, REQUEST_ENTRY_HEADER_BYTES, VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::{
    fatal, io_failure, random_session, unexpected, Attempt, ClientConfig, ClientError, RefusalCode,
    Request,
};

/// Exponential back-off (1 ms doubling to 200 ms) bounded by a deadline.
struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    fn new(deadline: Instant) -> Self {
        Self {
            next: Duration::from_millis(1),
            deadline,
        }
    }

    /// Sleeps the next interval; `false` (without sleeping) when that would
    /// pass the deadline.
    async fn wait(&mut self) -> bool {
        if Instant::now() + self.next > self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_millis(200));
        true
    }
}

/// A byte stream to the node: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One session over one connection, async. Not `Clone`: one call at a time
/// per session (a call is a whole batch; open more clients for more
/// concurrency, each its own session).
pub struct AsyncClient {
    config: ClientConfig,
    session: u64,
    next_request: u64,
    /// Every `Hello` after the first accepted one resumes the session, so
    /// a session the node evicted meanwhile is reported, not re-created.
    resume: bool,
    /// What the last `Welcome` said: `Some(highest request applied)` if
    /// the session existed.
    resumed: Option<u64>,
    stream: Option<Box<dyn Io>>,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    body: Vec<u8>,
    frames: u64,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("addr", &self.config.addr)
            .field("session", &self.session)
            .field("next_request", &self.next_request)
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl AsyncClient {
    /// Connects and authenticates, retrying with back-off until the
    /// deadline while the node cannot be reached or is shutting down (e.g.
    /// while it starts or restarts); a refusal or a TLS failure is final.
    pub async fn connect(config: ClientConfig) -> Result<AsyncClient, ClientError> {
        let session = match config.session {
            0 => random_session(),
            id => id,
        };
        let resume = config.session != 0;
        let mut client = AsyncClient {
            config,
            session,
            next_request: 1,
            resume,
            resumed: None,
            stream: None,
            read_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            write_buf: Vec::with_capacity(HEADER_BYTES + BODY_BYTES_MAX),
            body: Vec::new(),
            frames: 0,
        };
        let deadline = Instant::now() + client.config.deadline;
        let mut backoff = Backoff::new(deadline);
        loop {
            let reason = match client.reconnect(deadline).await {
                Ok(()) => {
                    // A resumed session goes on after its last applied
                    // request (set_next_request goes back to retry).
                    if let Some(highest) = client.resumed {
                        client.next_request = highest + 1;
                    }
                    return Ok(client);
                }
                Err(Attempt::Fatal(e)) => return Err(client.evicted_from(1, e)),
                Err(Attempt::Retry(reason)) => reason,
            };
            if !backoff.wait().await {
                return Err(ClientError::Unknown {
                    session,
                    first_request: 1,
                    reason,
                });
            }
        }
    }

    /// This client's session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// When the node's last `Welcome` said the session already existed:
    /// the highest request number it has applied (0: none). `None`: the
    /// session was new on that connection.
    pub fn resumed(&self) -> Option<u64> {
        self.resumed
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
    /// order. `Busy`, `Unavailable` and broken connections are retried
    /// (same numbers) until the deadline; every reply returned is the node's
    /// final word. `Throttled` is returned (not sequenced; `code` is the
    /// milliseconds the node asks to wait), as are `Rejected` and `Invalid`.
    pub async fn call(&mut self, requests: &[Request<'_>]) -> Result<Vec<ReplyEntry>, ClientError> {
        let bytes: usize = 4 + requests
            .iter()
            .map(|r| REQUEST_ENTRY_HEADER_BYTES + r.payload.len())
            .sum::<usize>();
        if requests.is_empty() || requests.len() > ENTRIES_PER_FRAME_MAX || bytes > BODY_BYTES_MAX {
            return Err(ClientError::BatchTooLarge {
                len: requests.len(),
                bytes,
            });
        }
        let first = self.next_request;
        self.next_request += requests.len() as u64;
        let deadline = Instant::now() + self.config.deadline;
        let mut replies: Vec<Option<ReplyEntry>> = vec![None; requests.len()];
        let mut backoff = Backoff::new(deadline);
        loop {
            let reason = match self.exchange(first, requests, &mut replies, deadline).await {
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
            if !backoff.wait().await {
                let first_request =
                    first + replies.iter().position(Option::is_none).unwrap_or(0) as u64;
                return Err(ClientError::Unknown {
                    session: self.session,
                    first_request,
                    reason,
                });
            }
            if self.stream.is_none() {
                if let Err(Attempt::Fatal(e)) = self.reconnect(deadline).await {
                    let unanswered = replies.iter().position(Option::is_none).unwrap_or(0);
                    return Err(self.evicted_from(first + unanswered as u64, e));
                }
            }
        }
    }

    /// Sends the still unanswered requests once and reads their replies;
    /// `Busy` ones stay `None`.
    async fn exchange(
        &mut self,
        first: u64,
        requests: &[Request<'_>],
        replies: &mut [Option<ReplyEntry>],
        deadline: Instant,
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
        self.write_all(deadline).await?;
        while outstanding > 0 {
            let kind = self.read_frame(deadline).await?.kind;
            if kind != Kind::Reply {
                return Err(unexpected(kind, &self.body));
            }
            for reply in Replies::decode(&self.body).map_err(fatal)?.iter() {
                let Some(i) = reply.request.checked_sub(first).map(|i| i as usize) else {
                    continue;
                };
                if i >= replies.len() || replies[i].is_some() {
                    continue;
                }
                outstanding -= 1;
                // Busy: not sequenced; Unavailable: the engine stopped and
                // the outcome is unknown. Both are resent (same number)
                // until an answer or the deadline.
                if !matches!(reply.status, ReplyStatus::Busy | ReplyStatus::Unavailable) {
                    replies[i] = Some(reply);
                }
            }
        }
        Ok(())
    }

    /// Drops the session (and the connection) and starts a new random one,
    /// numbered from 1: what to do after [`ClientError::SessionEvicted`],
    /// once the old session's unknown requests are looked up.
    pub fn new_session(&mut self) {
        self.session = random_session();
        self.next_request = 1;
        self.resume = false;
        self.resumed = None;
        self.stream = None;
    }

    /// A refusal `SessionEvicted` as [`ClientError::SessionEvicted`].
    fn evicted_from(&self, first_request: u64, e: ClientError) -> ClientError {
        match e {
            ClientError::Refused {
                code: RefusalCode::SessionEvicted,
                ..
            } => ClientError::SessionEvicted {
                session: self.session,
                first_request,
            },
            e => e,
        }
    }

    async fn reconnect(&mut self, deadline: Instant) -> Result<(), Attempt> {
        self.stream = None;
        self.read_buf.clear();
        let addr = self.config.addr;
        let tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Attempt::Retry(format!("connect {addr}: {e}"))),
            Err(_) => return Err(Attempt::Retry(format!("connect {addr}: timed out"))),
        };
        let _ = tcp.set_nodelay(true);
        self.stream = Some(match &self.config.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
                let handshake = connector.connect(tls.server_name.clone(), tcp);
                match timeout_at(deadline, handshake).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => return Err(io_failure("TLS handshake", e)),
                    Err(_) => return Err(Attempt::Retry("TLS handshake: timed out".into())),
                }
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
        if self.resume {
            header.flags = FLAG_RESUME;
        }
        self.write_buf.clear();
        encode_frame(&header, &self.body, &mut self.write_buf);
        self.write_all(deadline).await?;
        let header = self.read_frame(deadline).await?;
        if header.kind != Kind::Welcome {
            return Err(unexpected(header.kind, &self.body));
        }
        let welcome = Welcome::decode(&self.body).map_err(fatal)?;
        if welcome.tenant != self.config.tenant {
            return Err(Attempt::Fatal(ClientError::Refused {
                code: RefusalCode::Unauthenticated,
                message: format!(
                    "the credentials act for tenant {}, not {}",
                    welcome.tenant, self.config.tenant
                ),
            }));
        }
        self.resume = true;
        self.resumed = (header.flags & FLAG_RESUME != 0).then_some(header.request);
        Ok(())
    }

    async fn write_all(&mut self, deadline: Instant) -> Result<(), Attempt> {
        let stream = self.stream.as_mut().expect("connected");
        let write = async {
            stream.write_all(&self.write_buf).await?;
            stream.flush().await
        };
        match timeout_at(deadline, write).await {
            Ok(result) => result.map_err(|e| io_failure("write", e)),
            Err(_) => Err(Attempt::Retry("write: timed out".into())),
        }
    }

    /// Reads one frame into `self.body`; returns its header.
    async fn read_frame(&mut self, deadline: Instant) -> Result<Header, Attempt> {
        let stream = self.stream.as_mut().expect("connected");
        loop {
            if let Some((frame, used)) = decode_frame(&self.read_buf).map_err(fatal)? {
                let header = frame.header;
                self.body.clear();
                self.body.extend_from_slice(frame.body);
                self.read_buf.drain(..used);
                return Ok(header);
            }
            match timeout_at(deadline, stream.read_buf(&mut self.read_buf)).await {
                Ok(Ok(0)) => return Err(Attempt::Retry("the node closed the connection".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(io_failure("read", e)),
                Err(_) => return Err(Attempt::Retry("read: timed out".into())),
            }
        }
    }
}
