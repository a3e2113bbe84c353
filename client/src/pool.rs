//! [`Pool`]: many callers over a few connections, their small requests
//! batched into shared frames — the throughput lever TigerBeetle's clients
//! use. Each connection is an [`AsyncClient`] (its own session) in a task;
//! a free connection takes every request queued at that moment (up to one
//! frame) and sends them as one frame, so under load one round trip carries
//! many callers' commands. [`BlockingPool`] is the same for threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_protocol::{
    ReplyEntry, BODY_BYTES_MAX, ENTRIES_PER_FRAME_MAX, PAYLOAD_BYTES_MAX,
    REQUEST_ENTRY_HEADER_BYTES,
};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{AsyncClient, ClientConfig, ClientError, Request};

/// A request the pool owns until it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// The state machine's command type.
    pub command_type: u16,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The encoded command (at most [`PAYLOAD_BYTES_MAX`] bytes).
    pub payload: Vec<u8>,
}

struct Job {
    request: OwnedRequest,
    reply: oneshot::Sender<Result<ReplyEntry, ClientError>>,
}

/// Connections shared by many callers, with batching across callers.
/// Dropping it closes the queue; connections end when it is empty.
#[derive(Debug)]
pub struct Pool {
    queue: mpsc::Sender<Job>,
    frames: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request", &self.request)
            .finish()
    }
}

impl Pool {
    /// Opens `connections` connections (each its own session) with `config`
    /// and starts their tasks on the current tokio runtime.
    pub async fn connect(config: ClientConfig, connections: usize) -> Result<Pool, ClientError> {
        let connections = connections.max(1);
        let (queue, receiver) = mpsc::channel::<Job>(connections * ENTRIES_PER_FRAME_MAX);
        let receiver = Arc::new(Mutex::new(receiver));
        let frames = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        for _ in 0..connections {
            let mut session = config.clone();
            session.session = 0;
            let client = AsyncClient::connect(session).await?;
            tokio::spawn(serve(
                client,
                Arc::clone(&receiver),
                Arc::clone(&frames),
                Arc::clone(&requests),
            ));
        }
        Ok(Pool {
            queue,
            frames,
            requests,
        })
    }

    /// Sends one request (batched with whatever other callers send at the
    /// same time) and returns its reply. Errors are as [`AsyncClient::call`]'s;
    /// an [`ClientError::Unknown`] names this request's own number.
    pub async fn call(&self, request: OwnedRequest) -> Result<ReplyEntry, ClientError> {
        if request.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(ClientError::BatchTooLarge {
                len: 1,
                bytes: 4 + REQUEST_ENTRY_HEADER_BYTES + request.payload.len(),
            });
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { request, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Frames sent so far (compare with [`Pool::requests_sent`]: the batching).
    pub fn frames_sent(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn closed() -> ClientError {
    ClientError::Unknown {
        session: 0,
        first_request: 0,
        reason: "the pool's connection task ended".into(),
    }
}

/// One connection: take what is queued (up to a frame), send it, answer each.
async fn serve(
    mut client: AsyncClient,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    frames: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) {
    let mut carry: Option<Job> = None;
    let mut jobs: Vec<Job> = Vec::with_capacity(ENTRIES_PER_FRAME_MAX);
    loop {
        {
            let mut queue = receiver.lock().await;
            let first = match carry.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut bytes = 4 + REQUEST_ENTRY_HEADER_BYTES + first.request.payload.len();
            jobs.push(first);
            while jobs.len() < ENTRIES_PER_FRAME_MAX {
                let Ok(job) = queue.try_recv() else { break };
                let more = REQUEST_ENTRY_HEADER_BYTES + job.request.payload.len();
                if bytes + more > BODY_BYTES_MAX {
                    carry = Some(job);
                    break;
                }
                bytes += more;
                jobs.push(job);
            }
        }
        let first_request = client.next_request();
        let batch: Vec<Request<'_>> = jobs
            .iter()
            .map(|job| Request {
                command_type: job.request.command_type,
                schema_version: job.request.schema_version,
                payload: &job.request.payload,
            })
            .collect();
        let result = client.call(&batch).await;
        drop(batch);
        frames.fetch_add(1, Ordering::Relaxed);
        requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        match result {
            Ok(replies) => {
                for (job, reply) in jobs.drain(..).zip(replies) {
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Err(e) => {
                if matches!(e, ClientError::SessionEvicted { .. }) {
                    // Those requests are reported; later ones go on a new session.
                    client.new_session();
                }
                for (i, job) in jobs.drain(..).enumerate() {
                    let e = match &e {
                        ClientError::Unknown {
                            session, reason, ..
                        } => ClientError::Unknown {
                            session: *session,
                            first_request: first_request + i as u64,
                            reason: reason.clone(),
                        },
                        ClientError::SessionEvicted { session, .. } => {
                            ClientError::SessionEvicted {
                                session: *session,
                                first_request: first_request + i as u64,
                            }
                        }
                        other => other.clone(),
                    };
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}

/// A [`Pool`] for threads: its connections run on a runtime of its own (one
/// worker thread); [`BlockingPool::call`] may be called from any number of
/// threads at once.
#[derive(Debug)]
pub struct BlockingPool {
    runtime: tokio::runtime::Runtime,
    pool: Pool,
}

impl BlockingPool {
    /// Opens `connections` connections with `config`.
    pub fn connect(config: ClientConfig, connections: usize) -> Result<BlockingPool, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keel-client-pool")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Unknown {
                session: 0,
                first_request: 0,
                reason: format!("cannot start the pool's runtime: {e}"),
            })?;
        let pool = runtime.block_on(Pool::connect(config, connections))?;
        Ok(BlockingPool { runtime, pool })
    }

    /// See [`Pool::call`].
    pub fn call(&self, request: OwnedRequest) -> Result<ReplyEntry, ClientError> {
        self.runtime.block_on(self.pool.call(request))
    }

    /// See [`Pool::frames_sent`].
    pub fn frames_sent(&self) -> u64 {
        self.pool.frames_sent()
    }

    /// See [`Pool::requests_sent`].
    pub fn requests_sent(&self) -> u64 {
        self.pool.requests_sent()
    }
}
