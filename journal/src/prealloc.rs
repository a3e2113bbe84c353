//! Background preallocation: a thread creates (zero-fills, syncs, renames)
//! the next segment while the current one is being written, so a segment
//! roll never waits for `create` unless the disk is slower than the log.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::storage::Storage;

/// Hands out pre-created segment files, one ahead.
pub(crate) struct Preallocator<S: Storage> {
    /// None only while dropping (closing it ends the thread).
    requests: Option<Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ready: Receiver<(u64, io::Result<S::File>)>,
    /// The id of the last segment the thread finished preparing (0: none).
    prepared: Arc<AtomicU64>,
    /// Set by the writer once it is past half its segment (or waiting):
    /// the preparation stops pacing itself.
    hurry: Arc<AtomicBool>,
}

impl<S: Storage> Preallocator<S> {
    /// Starts the thread and requests segment `first`.
    pub(crate) fn start(storage: Arc<S>, segment_size: u64, first: u64) -> Self {
        let (requests, request_rx) = channel::<u64>();
        let (ready_tx, ready) = channel();
        let prepared = Arc::new(AtomicU64::new(0));
        let prepared_by_thread = Arc::clone(&prepared);
        let hurry = Arc::new(AtomicBool::new(false));
        let hurry_thread = Arc::clone(&hurry);
        let thread = std::thread::Builder::new()
            .name("keel-prealloc".into())
            .spawn(move || {
                for id in request_rx {
                    let file = match storage.list() {
                        Ok(ids) if ids.contains(&id) => storage.open(id),
                        Ok(_) => storage.create_ahead(id, segment_size, &hurry_thread),
                        Err(e) => Err(e),
                    };
                    let ok = file.is_ok();
                    if ready_tx.send((id, file)).is_err() {
                        return;
                    }
                    if ok {
                        prepared_by_thread.store(id, Ordering::Release);
                    }
                    hurry_thread.store(false, Ordering::Release);
                }
            })
            .expect("spawning the preallocation thread");
        let this = Self {
            requests: Some(requests),
            thread: Some(thread),
            ready,
            prepared,
            hurry,
        };
        this.request(first);
        this
    }

    /// The id of the last segment prepared so far (0: none yet).
    pub(crate) fn prepared(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.prepared)
    }

    /// Asks for segment `id` to be prepared.
    pub(crate) fn request(&self, id: u64) {
        // The thread only exits when this sender is dropped.
        if let Some(requests) = &self.requests {
            let _ = requests.send(id);
        }
    }

    /// The writer needs the next segment soon: prepare it flat out.
    pub(crate) fn hurry(&self) {
        self.hurry.store(true, Ordering::Release);
    }

    /// Waits for segment `id` (requested earlier).
    pub(crate) fn take(&self, id: u64) -> io::Result<S::File> {
        self.hurry();
        loop {
            let (got, file) = self
                .ready
                .recv()
                .map_err(|_| io::Error::other("preallocation thread stopped"))?;
            if got == id {
                return file;
            }
        }
    }
}

impl<S: Storage> Drop for Preallocator<S> {
    /// Ends the thread and waits for it (at most one segment's creation),
    /// so the storage — and a writer's directory lock — is released when
    /// the journal is dropped, not some time later.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
