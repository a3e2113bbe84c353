//! The projector: a reader thread that derives batches from the journal and
//! a writer that commits them, one transaction each, behind a circuit
//! breaker.
//!
//! ```text
//! journal ──► reader thread (JournalTail → Deriver → Batch) ──► bounded channel ──► writer (MySQL)
//! ```
//!
//! The engine never waits for either: the reader only reads journal files
//! (or the in-process durable watermark); a slow database fills the channel
//! and stalls the reader, which is the projector's lag and nothing else.
//!
//! Exactly-once in effect: batches are deterministic functions of the
//! journal, so after any error of unknown outcome the writer reconnects,
//! re-reads the checkpoint and either finds its batch committed (same
//! writer, same position) or commits it again (checkpoint unmoved).
//! Anything else is another writer: this one stops ([`SinkError::Fenced`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use keel_journal::format::RecordMeta;
use keel_journal::{FsStorage, JournalStatus, JournalTail, OwnedRecord, ScanError, TailError};
use keel_ledger::LedgerConfig;
use tokio::sync::mpsc;

use crate::derive::{Batch, Deriver, Gap};
use crate::schema::TableSet;
use crate::sink::{Checkpoint, Sink, SinkError, Timeouts};

/// Where the reader may read up to.
#[derive(Debug, Clone)]
pub enum Bound {
    /// From another process: a record once a later record vouches that it
    /// was durable (its `synced_next`), or once the journal has been still
    /// for [`ProjectorConfig::settle`] (docs/projector.md, "Committed prefix").
    Files,
    /// The engine's durable watermark (in the node's process): exactly the
    /// committed prefix.
    Durable(JournalStatus),
}

impl Bound {
    fn limit(&self) -> u64 {
        match self {
            Bound::Files => u64::MAX,
            Bound::Durable(status) => status.durable_next(),
        }
    }
}

/// When the projector returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Follow the journal until stopped.
    Stopped,
    /// Return once everything in the journal is committed.
    CaughtUp,
}

/// What a projector run needs.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// The node's journal directory.
    pub journal_dir: PathBuf,
    /// `mysql://user:password@host:port/database`.
    pub mysql_url: String,
    /// The node's ledger configuration (replay must match the engine's).
    pub ledger: LedgerConfig,
    /// The node's idempotency window size (likewise).
    pub dedup_entries: usize,
    /// Commands per transaction at most.
    pub batch_commands: u64,
    /// Database time limits.
    pub timeouts: Timeouts,
    /// Which tables.
    pub set: TableSet,
    /// Follow, or stop when caught up.
    pub until: Until,
    /// How often an idle reader looks for new records.
    pub poll_interval: Duration,
    /// With [`Bound::Files`]: how long the journal must stay unchanged
    /// before records no later record vouches for are taken as durable
    /// (longer than the writer's `async` sync interval).
    pub settle: Duration,
    /// How long a batch may wait for more commands before it is handed to
    /// the writer (fewer, larger transactions: less CPU taken from the
    /// engine on a small host, at most this much added lag).
    pub linger: Duration,
    /// What counts as committed.
    pub bound: Bound,
    /// Batches derived ahead of the database.
    pub queue_batches: usize,
    /// `LOAD DATA LOCAL INFILE` for inserted rows where the server allows
    /// it (else multi-row `INSERT`s).
    pub bulk_load: bool,
    /// Write accounts once, when caught up, instead of per batch (rebuilds:
    /// the tables are invisible until the swap).
    pub defer_accounts: bool,
}

impl ProjectorConfig {
    /// Defaults for `journal_dir` and `mysql_url`.
    pub fn new(journal_dir: impl Into<PathBuf>, mysql_url: impl Into<String>) -> Self {
        Self {
            journal_dir: journal_dir.into(),
            mysql_url: mysql_url.into(),
            ledger: LedgerConfig::default(),
            dedup_entries: 65_536,
            batch_commands: 5_000,
            timeouts: Timeouts::default(),
            set: TableSet::Live,
            until: Until::Stopped,
            poll_interval: Duration::from_millis(1),
            linger: Duration::from_millis(20),
            settle: Duration::from_millis(100),
            bound: Bound::Files,
            queue_batches: 4,
            bulk_load: true,
            defer_accounts: false,
        }
    }
}

/// Why the projector stopped short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The projector's own threads or runtime could not run.
    #[error("projector process: {0}")]
    Process(String),
    /// A poison database error or a fence: the projection halts; a
    /// financial projection never skips an event.
    #[error("projection halted: {0}")]
    Halted(SinkError),
    /// The journal cannot be read (or there is none).
    #[error("journal: {0}")]
    Journal(String),
    /// The journal is corrupt where the projector reads: it stops there
    /// (nothing after a bad record is projected).
    #[error("journal corrupt: {0}")]
    Corrupt(keel_journal::Corruption),
    /// The journal does not continue where the projection stands.
    #[error("{0} (a projection needs the journal from sequence 0: nothing may have been dropped)")]
    Gap(Gap),
    /// The projection is ahead of the journal (records it projected are gone).
    #[error("the projection's checkpoint is at {checkpoint} but the journal ends at {journal_end}: the journal lost records the projection holds; rebuild it")]
    Ahead {
        /// The checkpoint.
        checkpoint: u64,
        /// One past the journal's last record.
        journal_end: u64,
    },
    /// Replaying the journal to the checkpoint gave another state.
    #[error("replaying the journal to the checkpoint {checkpoint} gives state hash {replayed:016x}, the projection recorded {recorded:016x}: it was built from another journal; rebuild it")]
    Diverged {
        /// The checkpoint.
        checkpoint: u64,
        /// The deriver's hash.
        replayed: u64,
        /// The checkpoint's hash.
        recorded: u64,
    },
}

/// Circuit breaker states, as reported in [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Breaker {
    /// Writing.
    Closed = 0,
    /// Backing off after a transient error.
    Open = 1,
    /// Probing with a reconnect.
    HalfOpen = 2,
}

/// Live counters of a running projector (shared with the host).
#[derive(Debug)]
pub struct Status {
    /// The committed checkpoint (first sequence not projected); shared, so
    /// a node can hold journal retention at it (`JournalStatus::hold`).
    pub checkpoint: Arc<AtomicU64>,
    /// One past the newest record the reader has seen.
    pub journal_next: AtomicU64,
    /// Transient errors survived.
    pub transient_errors: AtomicU64,
    /// The database was reached at least once (schema ensured, checkpoint read).
    pub connected: AtomicBool,
    breaker: AtomicU8,
    /// Sequencer timestamp → commit, per command (µs).
    pub lag_us: Mutex<Histogram<u64>>,
    /// The last transient error.
    pub last_error: Mutex<Option<String>>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            checkpoint: Arc::new(AtomicU64::new(0)),
            journal_next: AtomicU64::new(0),
            transient_errors: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            breaker: AtomicU8::new(Breaker::Closed as u8),
            lag_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")),
            last_error: Mutex::new(None),
        }
    }
}

impl Status {
    /// Whether the projector has failed to reach its database so far, i.e.
    /// a host waiting for it to catch up would wait for nothing.
    pub fn never_connected(&self) -> bool {
        !self.connected.load(Ordering::Relaxed) && self.transient_errors.load(Ordering::Relaxed) > 0
    }

    /// The breaker's state.
    pub fn breaker(&self) -> Breaker {
        match self.breaker.load(Ordering::Relaxed) {
            0 => Breaker::Closed,
            1 => Breaker::Open,
            _ => Breaker::HalfOpen,
        }
    }

    fn set_breaker(&self, state: Breaker) {
        self.breaker.store(state as u8, Ordering::Relaxed);
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// The checkpoint at the start.
    pub started_at: u64,
    /// The checkpoint at the end.
    pub checkpoint: u64,
    /// Commands projected by this run.
    pub commands: u64,
    /// Rows written by this run.
    pub rows: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// Exponential back-off with jitter, capped so that a returning server is
/// found within about two seconds.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_millis(1_000);

    fn next(&mut self) -> Duration {
        let full = Self::FIRST
            .saturating_mul(1 << self.attempt.min(10))
            .min(Self::CAP);
        self.attempt += 1;
        // Half fixed, half random: writers that lost the server together
        // do not come back together.
        full / 2 + full.mul_f64(fastrand::f64() / 2.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs a projector until `stop` is set (or, with [`Until::CaughtUp`], until
/// the journal is projected). A stop lets the batch being committed finish.
pub fn run(
    config: &ProjectorConfig,
    stop: &AtomicBool,
    status: &Arc<Status>,
) -> Result<Summary, ProjectorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProjectorError::Process(format!("runtime: {e}")))?;
    runtime.block_on(run_async(config, stop, status))
}

/// The writer's identity in the checkpoint row: random per run, so a
/// restarted or second projector is a different writer.
fn writer_id() -> u64 {
    fastrand::u64(1..)
}

async fn connect(
    config: &ProjectorConfig,
    stop: &AtomicBool,
    status: &Status,
) -> Result<Option<(Sink, Checkpoint)>, ProjectorError> {
    let mut backoff = Backoff { attempt: 0 };
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let attempt = async {
            let mut sink = Sink::connect(&config.mysql_url, config.set, config.timeouts).await?;
            let checkpoint = sink.ensure_schema().await?;
            Ok::<_, SinkError>((sink, checkpoint))
        };
        match attempt.await {
            Ok(connected) => {
                status.set_breaker(Breaker::Closed);
                status.connected.store(true, Ordering::Relaxed);
                return Ok(Some(connected));
            }
            Err(SinkError::Transient(e)) => {
                transient(status, &e);
                tokio::time::sleep(backoff.next()).await;
                status.set_breaker(Breaker::HalfOpen);
            }
            Err(e) => return Err(ProjectorError::Halted(e)),
        }
    }
}

fn transient(status: &Status, error: &str) {
    if status.breaker() == Breaker::Closed {
        log::warn!("projector: database unavailable, backing off: {error}");
    }
    status.set_breaker(Breaker::Open);
    status.transient_errors.fetch_add(1, Ordering::Relaxed);
    *status.last_error.lock().expect("status") = Some(error.to_string());
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn run_async(
    config: &ProjectorConfig,
    stop: &AtomicBool,
    status: &Arc<Status>,
) -> Result<Summary, ProjectorError> {
    let started = Instant::now();
    let Some((mut sink, checkpoint)) = connect(config, stop, status).await? else {
        return Ok(Summary {
            started_at: 0,
            checkpoint: 0,
            commands: 0,
            rows: 0,
            elapsed: started.elapsed(),
        });
    };
    status
        .checkpoint
        .store(checkpoint.next_sequence, Ordering::Relaxed);
    log::info!(
        "projector: {:?} tables at schema version {}, checkpoint {}, {} inserts",
        config.set,
        checkpoint.schema_version,
        checkpoint.next_sequence,
        match config.bulk_load && sink.bulk_available() {
            true => "LOAD DATA",
            false => "multi-row INSERT",
        }
    );
    let writer = writer_id();
    let (tx, mut rx) = mpsc::channel::<Batch>(config.queue_batches.max(1));
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let config = config.clone();
        let status = Arc::clone(status);
        let reader_stop = Arc::clone(&reader_stop);
        std::thread::Builder::new()
            .name("keel-projector-reader".into())
            .spawn(move || read_loop(&config, checkpoint, &tx, &reader_stop, &status))
            .map_err(|e| ProjectorError::Process(format!("reader thread: {e}")))?
    };

    let mut backoff = Backoff { attempt: 0 };
    let mut position = checkpoint.next_sequence;
    let mut rows = 0u64;
    let outcome: Result<(), ProjectorError> = loop {
        // A stop ends after the batch being committed; batches derived but
        // not committed are dropped (the next run derives them again).
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let batch = match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => break Ok(()), // the reader finished (caught up, stopped or failed)
            Err(_) => continue,
        };
        debug_assert_eq!(batch.first, position);
        match commit_batch(
            &mut sink,
            &batch,
            writer,
            config.bulk_load,
            &mut backoff,
            stop,
            status,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break Ok(()), // stopped during an outage: re-derived next start
            Err(e) => break Err(e),
        }
        if status.breaker() != Breaker::Closed {
            log::info!("projector: database back, resuming at {}", batch.first);
            status.set_breaker(Breaker::Closed);
        }
        backoff.reset();
        position = batch.next;
        rows += batch.rows() as u64;
        status.checkpoint.store(position, Ordering::Relaxed);
        let now = unix_now_ns();
        let mut lag = status.lag_us.lock().expect("status");
        for command in &batch.commands {
            let _ = lag.record((now.saturating_sub(command.timestamp_ns) / 1_000).max(1));
        }
    };
    reader_stop.store(true, Ordering::Relaxed);
    drop(rx);
    let read = reader
        .join()
        .unwrap_or_else(|_| Err(ProjectorError::Process("reader thread panicked".into())));
    outcome?;
    read?;
    Ok(Summary {
        started_at: checkpoint.next_sequence,
        checkpoint: position,
        commands: position - checkpoint.next_sequence,
        rows,
        elapsed: started.elapsed(),
    })
}

/// Commits one batch, riding out transient errors: back off, reconnect,
/// read the checkpoint, and either find the batch committed (an earlier
/// attempt of unknown outcome went through), retry it, or stop fenced.
/// `Ok(false)`: stopped before it committed.
async fn commit_batch(
    sink: &mut Sink,
    batch: &Batch,
    writer: u64,
    bulk: bool,
    backoff: &mut Backoff,
    stop: &AtomicBool,
    status: &Status,
) -> Result<bool, ProjectorError> {
    loop {
        match sink.commit(batch, writer, bulk).await {
            Ok(_) => return Ok(true),
            Err(SinkError::Transient(e)) => transient(status, &e),
            Err(e) => return Err(ProjectorError::Halted(e)),
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            tokio::time::sleep(backoff.next()).await;
            status.set_breaker(Breaker::HalfOpen);
            match sink.read_checkpoint().await {
                Ok(Some(found)) if found.next_sequence == batch.next && found.writer == writer => {
                    return Ok(true);
                }
                Ok(Some(found)) if found.next_sequence == batch.first => break, // retry
                Ok(Some(found)) => {
                    return Err(ProjectorError::Halted(SinkError::Fenced {
                        expected: batch.first,
                        found: found.next_sequence,
                        writer: found.writer,
                    }))
                }
                Ok(None) => {
                    return Err(ProjectorError::Halted(SinkError::Poison(
                        "the checkpoint row is gone".into(),
                    )))
                }
                Err(SinkError::Transient(e)) => transient(status, &e),
                Err(e) => return Err(ProjectorError::Halted(e)),
            }
        }
    }
}

/// The reader: replays to the checkpoint (checking the state hash), then
/// derives and hands over batches until stopped or caught up.
fn read_loop(
    config: &ProjectorConfig,
    checkpoint: Checkpoint,
    tx: &mpsc::Sender<Batch>,
    stop: &AtomicBool,
    status: &Status,
) -> Result<(), ProjectorError> {
    let storage = FsStorage::open_read_only(&config.journal_dir)
        .map_err(|e| ProjectorError::Journal(e.to_string()))?;
    // The journal records the capacities and window its replay must repeat.
    let recorded = keel_journal::manifest::read_manifest(&storage)
        .and_then(|m| keel_ledger::JournalSettings::decode(&m.settings));
    let (ledger, dedup_entries) = match recorded {
        Some(s) => (s.ledger, s.dedup_entries as usize),
        None => (config.ledger, config.dedup_entries),
    };
    let mut deriver = Deriver::new(ledger, dedup_entries);
    let mut tail = JournalTail::new(&storage, 0);
    let tail_error = |e: TailError| match e {
        TailError::Corrupt(c) => ProjectorError::Corrupt(c),
        e => ProjectorError::Journal(e.to_string()),
    };
    let target = checkpoint.next_sequence;
    while deriver.next_sequence() < target {
        let mut gap = None;
        let visited = tail
            .poll(target, &mut |record| {
                if gap.is_none() {
                    gap = deriver.skip(record).err();
                }
            })
            .map_err(tail_error)?;
        if let Some(gap) = gap {
            return Err(ProjectorError::Gap(gap));
        }
        if visited == 0 {
            return Err(ProjectorError::Ahead {
                checkpoint: target,
                journal_end: deriver.next_sequence(),
            });
        }
    }
    if target > 0 && deriver.state_hash() != checkpoint.state_hash {
        return Err(ProjectorError::Diverged {
            checkpoint: target,
            replayed: deriver.state_hash(),
            recorded: checkpoint.state_hash,
        });
    }

    let vouching = matches!(config.bound, Bound::Files);
    let mut feeder = Feeder {
        batch: Batch::starting_at(deriver.next_sequence()),
        deriver,
        opened: Instant::now(),
        gap: None,
        closed: false,
        tx,
        config,
    };
    // Records read but not yet known durable (`Bound::Files` only).
    let mut held: VecDeque<OwnedRecord> = VecDeque::new();
    let mut vouched_below = 0u64;
    let mut last_new = Instant::now();
    let mut stuck = Stuck::default();
    loop {
        let limit = config.bound.limit();
        let visited = tail
            .poll(limit, &mut |record| {
                if feeder.gap.is_some() || feeder.closed || stop.load(Ordering::Relaxed) {
                    return;
                }
                status
                    .journal_next
                    .store(record.header.sequence + 1, Ordering::Relaxed);
                if !vouching {
                    feeder.feed(record.header.sequence, &record.header.meta, record.payload);
                    return;
                }
                // A record's `synced_next` says every earlier one was durable
                // when it was written: those may be projected.
                vouched_below = vouched_below.max(record.header.synced_next);
                held.push_back(OwnedRecord::from_record(record));
                while held.front().is_some_and(|h| h.sequence < vouched_below) {
                    let h = held.pop_front().expect("front");
                    feeder.feed(h.sequence, &h.meta, &h.payload);
                }
            })
            .map_err(tail_error);
        let checked = match visited {
            // Stopping at the end of the journal: a bad spot there must be
            // classified now, not after a second.
            Ok(0) if vouching => stuck
                .check(&storage, &tail, config.until == Until::CaughtUp)
                .map(|()| 0),
            other => other,
        };
        let visited = match checked {
            Ok(visited) => visited,
            Err(corrupt @ ProjectorError::Corrupt(_)) => {
                // Everything before the bad record is durable (later records
                // vouch for it): project it, then halt there.
                for h in held.drain(..) {
                    feeder.feed(h.sequence, &h.meta, &h.payload);
                }
                if !feeder.batch.is_empty() && feeder.gap.is_none() {
                    feeder.hand_over();
                }
                return Err(corrupt);
            }
            Err(e) => return Err(e),
        };
        if visited > 0 {
            last_new = Instant::now();
        } else if !held.is_empty() && last_new.elapsed() >= config.settle {
            // Nothing new for `settle`: the writer is idle and its last
            // batch has long been synced.
            for h in held.drain(..) {
                feeder.feed(h.sequence, &h.meta, &h.payload);
            }
        }
        if let Some(gap) = feeder.gap {
            return Err(ProjectorError::Gap(gap));
        }
        if feeder.closed {
            return Ok(()); // the writer stopped
        }
        let stopping = stop.load(Ordering::Relaxed);
        let finished = visited == 0 && held.is_empty() && config.until == Until::CaughtUp;
        // Only this thread sends, so room seen here is still there.
        let ripe = feeder.opened.elapsed() >= config.linger && feeder.tx.capacity() > 0;
        if !feeder.batch.is_empty() && (ripe || stopping || finished) {
            feeder.hand_over();
            if feeder.closed {
                return Ok(());
            }
        }
        if stopping {
            return Ok(());
        }
        if finished {
            if config.defer_accounts {
                let _ = feeder.tx.blocking_send(feeder.deriver.all_accounts());
            }
            return Ok(());
        }
        if visited == 0 {
            std::thread::sleep(config.poll_interval);
        }
    }
}

/// A follower in another process stopped on a bad spot: a write in
/// progress (gone in microseconds), a torn tail the node will cut when it
/// recovers (wait), or corruption (halt, with the location). After a
/// second at the same spot the journal's own scan tells which.
#[derive(Debug, Default)]
struct Stuck {
    since: Option<(Instant, (u64, u64))>,
    checked: Option<Instant>,
    warned: bool,
}

impl Stuck {
    const CHECK_AFTER: Duration = Duration::from_secs(1);

    fn check(
        &mut self,
        storage: &FsStorage,
        tail: &JournalTail<'_, FsStorage>,
        at_once: bool,
    ) -> Result<(), ProjectorError> {
        let Some((segment, offset, reason)) = tail.bad_spot() else {
            *self = Self::default();
            return Ok(());
        };
        let (since, at) = *self
            .since
            .get_or_insert((Instant::now(), (segment, offset)));
        if at != (segment, offset) {
            *self = Self::default();
            return Ok(());
        }
        let due = self
            .checked
            .is_none_or(|t| t.elapsed() >= Self::CHECK_AFTER);
        if !at_once && (since.elapsed() < Self::CHECK_AFTER || !due) {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        match keel_journal::scan_from(storage, tail.next_sequence(), &mut |_| {}) {
            Err(ScanError::Corrupt(c)) => Err(ProjectorError::Corrupt(c)),
            Err(e) => Err(ProjectorError::Journal(e.to_string())),
            Ok(_) => {
                if !self.warned {
                    log::warn!(
                        "projector: the journal ends in a torn write at segment {segment} offset {offset} ({reason}); waiting for the node to recover it"
                    );
                    self.warned = true;
                }
                Ok(())
            }
        }
    }
}

/// Derives records into the open batch and hands full batches over. A
/// batch is handed over as soon as the writer has room (and it lingered);
/// while it has none the open batch keeps growing (to `batch_commands`):
/// small batches and low lag when the database keeps up, large ones when
/// it does not.
struct Feeder<'a> {
    deriver: Deriver,
    batch: Batch,
    /// When the open batch got its first command.
    opened: Instant,
    gap: Option<Gap>,
    /// The writer is gone.
    closed: bool,
    tx: &'a mpsc::Sender<Batch>,
    config: &'a ProjectorConfig,
}

impl Feeder<'_> {
    fn feed(&mut self, sequence: u64, meta: &RecordMeta, payload: &[u8]) {
        if self.gap.is_some() || self.closed {
            return;
        }
        if self.batch.is_empty() {
            self.opened = Instant::now();
        }
        if let Err(gap) = self
            .deriver
            .derive_parts(sequence, meta, payload, &mut self.batch)
        {
            self.gap = Some(gap);
            return;
        }
        if self.batch.len() >= self.config.batch_commands {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        self.deriver
            .seal(&mut self.batch, self.config.defer_accounts);
        let next = Batch::starting_at(self.deriver.next_sequence());
        let full = std::mem::replace(&mut self.batch, next);
        self.closed = self.tx.blocking_send(full).is_err();
    }
}

/// Rebuilds the projection from the whole journal into the `__rebuild`
/// tables (bulk loads), then swaps them in with one `RENAME TABLE`. An
/// interrupted rebuild resumes from its own checkpoint (`restart` drops it
/// and starts over). Returns `None` if stopped before the swap.
pub fn rebuild(
    config: &ProjectorConfig,
    restart: bool,
    stop: &AtomicBool,
    status: &Arc<Status>,
) -> Result<Option<Summary>, ProjectorError> {
    let mut config = config.clone();
    config.set = TableSet::Rebuild;
    config.until = Until::CaughtUp;
    config.bulk_load = true;
    config.defer_accounts = true;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProjectorError::Process(format!("runtime: {e}")))?;
    runtime.block_on(async {
        let mut sink = Sink::connect(&config.mysql_url, TableSet::Rebuild, config.timeouts)
            .await
            .map_err(ProjectorError::Halted)?;
        if restart {
            sink.drop_set().await.map_err(ProjectorError::Halted)?;
        }
        let checkpoint = sink.ensure_schema().await.map_err(ProjectorError::Halted)?;
        if checkpoint.next_sequence == 0 {
            sink.defer_indexes().await.map_err(ProjectorError::Halted)?;
        }
        drop(sink);
        let summary = run_async(&config, stop, status).await?;
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut sink = Sink::connect(&config.mysql_url, TableSet::Rebuild, config.timeouts)
            .await
            .map_err(ProjectorError::Halted)?;
        sink.add_deferred_indexes()
            .await
            .map_err(ProjectorError::Halted)?;
        sink.swap_rebuilt().await.map_err(ProjectorError::Halted)?;
        log::info!(
            "projector: rebuilt tables swapped in at checkpoint {}",
            summary.checkpoint
        );
        Ok(Some(summary))
    })
}

/// The checkpoint of a table set, if the set exists (for `keel project status`).
pub fn checkpoint(
    url: &str,
    set: TableSet,
    timeouts: Timeouts,
) -> Result<Option<Checkpoint>, SinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SinkError::Transient(format!("runtime: {e}")))?;
    runtime.block_on(async {
        let mut sink = Sink::connect(url, set, timeouts).await?;
        match sink.read_checkpoint().await {
            Ok(found) => Ok(found),
            // No such table: the set was never created.
            Err(e) if e.is_server_code(&[1146]) => Ok(None),
            Err(e) => Err(e),
        }
    })
}
