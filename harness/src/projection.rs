//! A MySQL projector behind a running node: it follows the node's journal
//! up to the engine's durable watermark (exactly the committed prefix) on
//! its own threads. The engine never waits for it: the journaller publishes
//! the watermark with one atomic store it makes anyway, and a slow or absent
//! database only makes the projector lag. While it runs, journal retention
//! keeps every segment from its checkpoint on (a retention hold).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_journal::RetentionHold;
use keel_ledger::Ledger;
use keel_projector::{Bound, ProjectorConfig, ProjectorError, Status, Summary, Until};

use crate::config::NodeConfig;
use crate::node::Node;

/// A projector running behind a node.
#[derive(Debug)]
pub struct Projection {
    /// Keeps the segments the projector has not passed.
    _hold: RetentionHold,
    stop: Arc<AtomicBool>,
    status: Arc<Status>,
    thread: JoinHandle<Result<Summary, ProjectorError>>,
}

impl Projection {
    /// Live counters: checkpoint, lag histogram, breaker.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Commits the batch in flight and stops; returns what the run did.
    pub fn stop(self) -> Result<Summary, ProjectorError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(ProjectorError::Process("projector thread panicked".into())))
    }

    /// Stops once everything below `durable_next` is projected, at the
    /// first error, or after `within` (a database that stays away must not
    /// hang the host), e.g. at the end of a benchmark or before shutdown.
    pub fn finish(self, durable_next: u64, within: Duration) -> Result<Summary, ProjectorError> {
        let deadline = Instant::now() + within;
        while self.status.checkpoint.load(Ordering::Relaxed) < durable_next
            && !self.thread.is_finished()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stop()
    }
}

/// Runs the MySQL projector behind a ledger node, in its process (the
/// projector lives outside `keel-node`, so a host that does not project
/// does not link a database driver): `use keel_harness::projection::StartProjection`.
pub trait StartProjection {
    /// Starts a projector of this ledger node's journal into `mysql_url`
    /// (`config` is the one the node started with). A node without a
    /// journal has nothing to project.
    fn start_projection(
        &self,
        config: &NodeConfig,
        mysql_url: &str,
    ) -> Result<Projection, ProjectorError>;
}

impl StartProjection for Node<Ledger> {
    fn start_projection(
        &self,
        config: &NodeConfig,
        mysql_url: &str,
    ) -> Result<Projection, ProjectorError> {
        let status_handle = self
            .journal_status()
            .ok_or_else(|| ProjectorError::Journal("the node has no journal to project".into()))?;
        let mut projector = ProjectorConfig::new(&config.journal.data_dir, mysql_url);
        projector.ledger = config.ledger_config();
        projector.dedup_entries = config.engine.dedup_entries;
        projector.until = Until::Stopped;
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Status::default());
        // Held at 0 until the projector has read its checkpoint.
        let hold = status_handle.hold(Arc::clone(&status.checkpoint));
        projector.bound = Bound::Durable(status_handle);
        let thread = {
            let (stop, status) = (Arc::clone(&stop), Arc::clone(&status));
            std::thread::Builder::new()
                .name("keel-projector".into())
                .spawn(move || keel_projector::run(&projector, &stop, &status))
                .map_err(|e| ProjectorError::Process(format!("projector thread: {e}")))?
        };
        Ok(Projection {
            _hold: hold,
            stop,
            status,
            thread,
        })
    }
}
