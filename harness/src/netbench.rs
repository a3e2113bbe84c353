//! `keel bench --connect`: the main job over the network. Many sessions
//! (one connection each, on one tokio thread) create and fund accounts, then
//! push transfers flat out or paced, measuring end-to-end latency per frame
//! in an HDR histogram; paced runs measure from each frame's *intended* send
//! time, so a stall delays the schedule's latency, not the schedule itself
//! (corrected for coordinated omission). Afterwards the accounts' posted
//! debits are read back through the log and must have grown by exactly the
//! amounts the node acknowledged as created: nothing lost, nothing twice.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use keel_client::{AsyncClient, ClientConfig, ClientError, Request, Status};
use keel_core::{Outcome, ResultCode};
use keel_ledger::commands::{self, command_type};
use keel_ledger::{Account, Transfer};
use keel_protocol::ENTRIES_PER_FRAME_MAX;
use tokio::time::Instant;

use crate::load::{account, funding, latency_histogram, random_transfer, XorShift};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Connection settings (address, credentials, TLS); each connection
    /// gets its own session.
    pub client: ClientConfig,
    /// Connections (sessions), each one task.
    pub connections: usize,
    /// Transfers in all.
    pub transfers: u64,
    /// Transfers per command (1..=7).
    pub batch: usize,
    /// Commands per frame (each connection has one frame in flight).
    pub per_frame: usize,
    /// Accounts the transfers move between (at least 3).
    pub accounts: u32,
    /// Transfers per second over all connections (`None`: flat out).
    pub rate: Option<u64>,
    /// Read every account's balance before and after, and check the growth.
    pub verify: bool,
    /// Distinguishes this run's transfer ids from earlier runs' on the same
    /// node (e.g. the Unix time).
    pub nonce: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Wall time of the transfer phase.
    pub elapsed: Duration,
    /// Transfers acknowledged (any result) per second.
    pub transfers_per_second: f64,
    /// End-to-end latency per frame, ns (from the intended send time when paced).
    pub latency_ns: Histogram<u64>,
    /// Transfers per result code (index = `CreateTransferResult`).
    pub results: Vec<u64>,
    /// Sum of the amounts of the transfers acknowledged as created.
    pub created_amount: u128,
    /// `(expected, found)` growth of all posted debits, when verified.
    pub verified: Option<(u128, u128)>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A call failed (refused, unknown outcome at the deadline, …).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The node answered something the workload cannot explain.
    #[error("{0}")]
    Unexpected(String),
    /// An option is out of range.
    #[error("bench option `{option}`: expected {expected}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What is allowed.
        expected: &'static str,
    },
}

/// Runs the benchmark on a current-thread runtime of its own.
pub fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Unexpected(format!("runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_async(config))
}

impl BenchConfig {
    /// Checks every option's range (`run` does too; a caller checks first
    /// to refuse bad options before starting anything).
    pub fn validate(&self) -> Result<(), BenchError> {
        validate(self)
    }
}

fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    let invalid = |option, expected| Err(BenchError::Invalid { option, expected });
    if !(1..=commands::TRANSFERS_PER_COMMAND_MAX).contains(&config.batch) {
        return invalid("batch", "1..=7 transfers per command");
    }
    if !(1..=ENTRIES_PER_FRAME_MAX).contains(&config.per_frame) {
        return invalid("per-frame", "1..=256 commands per frame");
    }
    if config.accounts < 3 {
        return invalid("accounts", "at least 3");
    }
    if config.connections == 0 {
        return invalid("connections", "at least 1");
    }
    if config.rate == Some(0) {
        return invalid("rate", "at least 1 transfer per second");
    }
    Ok(())
}

async fn run_async(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let mut setup = AsyncClient::connect(config.client.clone()).await?;
    create_and_fund(&mut setup, config.accounts).await?;
    let before = match config.verify {
        true => Some(posted_debits(&mut setup, config.accounts).await?),
        false => None,
    };
    // Connect every session before the clock starts.
    let mut clients = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        clients.push(AsyncClient::connect(config.client.clone()).await?);
    }
    let started = Instant::now();
    let per_connection = config.transfers / config.connections as u64;
    let extra = config.transfers % config.connections as u64;
    let pacer = config.rate.map(|rate| Pacer::start(config, rate, started));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let count = per_connection + u64::from((i as u64) < extra);
            let config = config.clone();
            let schedule = pacer.as_ref().map(|p| p.schedule(i));
            tokio::task::spawn_local(async move {
                produce(client, &config, i as u64, count, schedule).await
            })
        })
        .collect();
    let mut latency_ns = latency_histogram();
    let mut results = vec![0u64; 64];
    let mut created_amount = 0u128;
    for task in tasks {
        let produced = task
            .await
            .map_err(|e| BenchError::Unexpected(format!("a session task failed: {e}")))??;
        latency_ns.add(&produced.latency_ns).expect("same bounds");
        results
            .iter_mut()
            .zip(&produced.results)
            .for_each(|(r, p)| *r += p);
        created_amount += produced.created_amount;
    }
    let elapsed = started.elapsed();
    drop(pacer);
    let verified = match before {
        Some(before) => {
            let after = posted_debits(&mut setup, config.accounts).await?;
            Some((created_amount, after - before))
        }
        None => None,
    };
    Ok(BenchReport {
        elapsed,
        transfers_per_second: results.iter().sum::<u64>() as f64 / elapsed.as_secs_f64(),
        latency_ns,
        results,
        created_amount,
        verified,
    })
}

/// Creates accounts 1..=n (an earlier run's are answered `exists`) and funds
/// every one from the operator account (once: the funding ids are fixed).
async fn create_and_fund(client: &mut AsyncClient, n: u32) -> Result<(), BenchError> {
    let ids: Vec<u128> = (1..=u128::from(n)).collect();
    let mut payloads = Vec::new();
    for chunk in ids.chunks(commands::ACCOUNTS_PER_COMMAND_MAX) {
        let accounts: Vec<Account> = chunk.iter().map(|&id| account(id)).collect();
        payloads.push(encode(|out| {
            commands::encode_create_accounts(&accounts, out)
        }));
    }
    send_all(client, command_type::CREATE_ACCOUNTS, &payloads).await?;
    payloads.clear();
    for chunk in ids[1..].chunks(commands::TRANSFERS_PER_COMMAND_MAX) {
        let funding: Vec<Transfer> = chunk.iter().map(|&id| funding(id)).collect();
        payloads.push(encode(|out| {
            commands::encode_create_transfers(&funding, out)
        }));
    }
    send_all(client, command_type::CREATE_TRANSFERS, &payloads).await
}

fn encode(f: impl FnOnce(&mut [u8]) -> Result<usize, keel_codecs::EncodeError>) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(&mut buf, f);
    buf
}

/// Encodes into `buf`, reusing its allocation (the load loop's buffers).
fn encode_into(
    buf: &mut Vec<u8>,
    f: impl FnOnce(&mut [u8]) -> Result<usize, keel_codecs::EncodeError>,
) {
    buf.resize(keel_protocol::PAYLOAD_BYTES_MAX, 0);
    let len = f(buf).expect("a ledger command fits a slot");
    buf.truncate(len);
}

/// Sends the payloads in full frames and checks each was executed.
async fn send_all(
    client: &mut AsyncClient,
    command_type: u16,
    payloads: &[Vec<u8>],
) -> Result<(), BenchError> {
    for chunk in payloads.chunks(64) {
        let requests: Vec<Request<'_>> = chunk
            .iter()
            .map(|payload| Request {
                command_type,
                schema_version: keel_ledger::commands::schema_version(command_type),
                payload,
            })
            .collect();
        for reply in client.call(&requests).await? {
            if !reply.status.executed() {
                return Err(BenchError::Unexpected(format!(
                    "setup command answered {:?} (code {})",
                    reply.status, reply.code
                )));
            }
        }
    }
    Ok(())
}

/// The sum of every account's posted debits, read through the log.
async fn posted_debits(client: &mut AsyncClient, n: u32) -> Result<u128, BenchError> {
    let payloads: Vec<Vec<u8>> = (1..=u128::from(n))
        .map(|id| encode(|out| commands::encode_lookup(id, out)))
        .collect();
    let mut sum = 0u128;
    for chunk in payloads.chunks(ENTRIES_PER_FRAME_MAX) {
        let requests: Vec<Request<'_>> = chunk
            .iter()
            .map(|payload| Request {
                command_type: command_type::LOOKUP_ACCOUNT,
                schema_version: keel_ledger::commands::schema_version(command_type::LOOKUP_ACCOUNT),
                payload,
            })
            .collect();
        for reply in client.call(&requests).await? {
            let balance = outcome(&reply)
                .and_then(|o| commands::account_balance(&o).ok().flatten())
                .ok_or_else(|| {
                    BenchError::Unexpected(format!("lookup answered {:?}", reply.status))
                })?;
            sum += u128::from(balance.debits_posted);
        }
    }
    Ok(sum)
}

fn outcome(reply: &keel_client::ReplyEntry) -> Option<Outcome> {
    if !reply.status.executed() {
        return None;
    }
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    Some(outcome)
}

struct Produced {
    latency_ns: Histogram<u64>,
    results: Vec<u64>,
    created_amount: u128,
}

/// One session: `count` transfers, `batch` per command, `per_frame`
/// commands per frame, one frame in flight.
async fn produce(
    mut client: AsyncClient,
    config: &BenchConfig,
    connection: u64,
    count: u64,
    mut schedule: Option<Schedule>,
) -> Result<Produced, BenchError> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ (connection + 1).wrapping_mul(0x9e37_79b9));
    let mut latency_ns = latency_histogram();
    let mut results = vec![0u64; 64];
    let mut created_amount = 0u128;
    let mut payloads: Vec<Vec<u8>> = vec![Vec::new(); config.per_frame];
    let mut amounts = vec![[0u64; commands::TRANSFERS_PER_COMMAND_MAX]; config.per_frame];
    let mut batch = [Transfer::default(); commands::TRANSFERS_PER_COMMAND_MAX];
    let mut sent = 0u64;
    while sent < count {
        let intended = match schedule.as_mut() {
            Some(schedule) => schedule.next().await,
            None => Instant::now(),
        };
        let mut commands_in_frame = 0;
        let mut in_frame = 0u64;
        while commands_in_frame < config.per_frame && sent + in_frame < count {
            let n = (count - sent - in_frame).min(config.batch as u64) as usize;
            for (i, t) in batch[..n].iter_mut().enumerate() {
                let id = u128::from(config.nonce) << 64
                    | u128::from(connection) << 40
                    | u128::from(sent + in_frame + i as u64 + 1);
                *t = random_transfer(&mut rng, config.accounts, id);
                amounts[commands_in_frame][i] = t.amount;
            }
            encode_into(&mut payloads[commands_in_frame], |out| {
                commands::encode_create_transfers(&batch[..n], out)
            });
            commands_in_frame += 1;
            in_frame += n as u64;
        }
        let requests: Vec<Request<'_>> = payloads[..commands_in_frame]
            .iter()
            .map(|payload| Request {
                command_type: command_type::CREATE_TRANSFERS,
                schema_version: keel_ledger::commands::schema_version(
                    command_type::CREATE_TRANSFERS,
                ),
                payload,
            })
            .collect();
        let replies = client.call(&requests).await?;
        let now = Instant::now();
        latency_ns.saturating_record((now - intended).as_nanos().max(1) as u64);
        for (reply, amounts) in replies.iter().zip(&amounts) {
            if reply.status == Status::Rejected || !reply.status.executed() {
                return Err(BenchError::Unexpected(format!(
                    "a transfer command answered {:?} (code {})",
                    reply.status, reply.code
                )));
            }
            let results_of = outcome(reply)
                .and_then(|o| commands::event_results(command_type::CREATE_TRANSFERS, &o).ok())
                .ok_or_else(|| BenchError::Unexpected("no event results".into()))?;
            for (&code, &amount) in results_of.codes().iter().zip(amounts) {
                results[usize::from(code).min(63)] += 1;
                if code == 0 {
                    created_amount += u128::from(amount);
                }
            }
        }
        sent += in_frame;
    }
    Ok(Produced {
        latency_ns,
        results,
        created_amount,
    })
}

/// Paced sends: one thread wakes the sessions in turn, frame by frame, at
/// the aggregate frame rate, sleeping with the kernel's high-resolution
/// timer between (tokio's timer has millisecond resolution, and a spinning
/// load generator would starve the node it measures on 2 cores). Frame `k`
/// of the run is due at `start + k / frame_rate` and belongs to session
/// `k % connections`; a session that is behind finds its wake-up stored and
/// sends at once, and its latency still counts from the due time.
struct Pacer {
    start: Instant,
    frame_interval: Duration,
    connections: usize,
    wakers: std::sync::Arc<Vec<tokio::sync::Notify>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    fn start(config: &BenchConfig, rate: u64, start: Instant) -> Pacer {
        let transfers_per_frame = (config.batch * config.per_frame) as f64;
        let frame_interval = Duration::from_secs_f64(transfers_per_frame / rate as f64);
        let connections = config.connections;
        let wakers: std::sync::Arc<Vec<tokio::sync::Notify>> = std::sync::Arc::new(
            (0..connections)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (wakers, stop) = (std::sync::Arc::clone(&wakers), std::sync::Arc::clone(&stop));
            let start = start.into_std();
            std::thread::Builder::new()
                .name("keel-bench-pacer".into())
                .spawn(move || {
                    let mut frame: u64 = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let due = start + frame_interval.mul_f64(frame as f64);
                        let now = std::time::Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        wakers[(frame % connections as u64) as usize].notify_one();
                        frame += 1;
                    }
                })
                .expect("spawn the pacer thread")
        };
        Pacer {
            start,
            frame_interval,
            connections,
            wakers,
            stop,
            thread: Some(thread),
        }
    }

    fn schedule(&self, connection: usize) -> Schedule {
        Schedule {
            start: self.start,
            frame_interval: self.frame_interval,
            connections: self.connections as u64,
            connection: connection as u64,
            wakers: std::sync::Arc::clone(&self.wakers),
            frame: 0,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One session's share of the pacer's schedule.
struct Schedule {
    start: Instant,
    frame_interval: Duration,
    connections: u64,
    connection: u64,
    wakers: std::sync::Arc<Vec<tokio::sync::Notify>>,
    frame: u64,
}

impl Schedule {
    /// Waits for this session's next frame; returns when it was due.
    async fn next(&mut self) -> Instant {
        let k = self.frame * self.connections + self.connection;
        self.frame += 1;
        let due = self.start + self.frame_interval.mul_f64(k as f64);
        // A wake-up only says "look at the clock": a stored one from a
        // frame that was already late must not send this one early, and a
        // late session sends at once.
        while Instant::now() < due {
            self.wakers[self.connection as usize].notified().await;
        }
        due
    }
}

/// A bench session's settings for `addr`: the defaults with a 30 s deadline
/// (flat-out runs queue deeply on 2 vCPUs).
pub fn client_config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(addr);
    config.deadline = Duration::from_secs(30);
    config
}
