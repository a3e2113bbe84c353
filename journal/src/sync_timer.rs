//! The `async(interval)` policy's timer: a background thread that syncs the
//! segment the writer last wrote, at most `interval` after the write, so an
//! idle journal does not keep acknowledged bytes unsynced indefinitely. A
//! failed background sync is handed to the writer, whose next batch fails
//! with it (fail-stop).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::storage::{SegmentFile, Storage};

#[derive(Debug, Default)]
struct TimerShared {
    /// A segment with unsynced writes and one past the last sequence written
    /// to it (None: nothing unsynced). One lock so the pair is consistent: a
    /// sync of segment n never publishes sequences written to segment n + 1.
    dirty: Mutex<Option<(u64, u64)>>,
    stop: AtomicBool,
    error: Mutex<Option<(u64, io::Error)>>,
}

/// Handle to the timer thread; stops it on drop.
#[derive(Debug)]
pub(crate) struct SyncTimer {
    shared: Arc<TimerShared>,
    thread: Option<JoinHandle<()>>,
}

impl SyncTimer {
    /// Starts the timer; after each successful sync it raises `durable_next`
    /// to the sequence written before the sync began.
    pub(crate) fn start<S: Storage>(
        storage: Arc<S>,
        interval: Duration,
        durable_next: Arc<AtomicU64>,
    ) -> Self {
        let shared = Arc::new(TimerShared::default());
        let timer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keel-journal-sync".into())
            .spawn(move || {
                // A timer: parking for the interval is its purpose.
                while !timer.stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    let dirty = timer.dirty.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let Some((id, written_next)) = dirty else {
                        continue;
                    };
                    match storage.open(id).and_then(|mut file| file.sync()) {
                        Ok(()) => {
                            durable_next.fetch_max(written_next, Ordering::AcqRel);
                        }
                        Err(e) => {
                            *timer.error.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, e));
                        }
                    }
                }
            })
            .expect("spawning the journal sync timer");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// The writer wrote sequences below `written_next` to `segment_id`
    /// without syncing (an uncontended lock per write: no allocation).
    pub(crate) fn mark_dirty(&self, segment_id: u64, written_next: u64) {
        *self.shared.dirty.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((segment_id, written_next));
    }

    /// A background sync failure, if one happened: (segment id, error).
    pub(crate) fn take_error(&self) -> Option<(u64, io::Error)> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Drop for SyncTimer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
