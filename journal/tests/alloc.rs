//! Zero allocations per batch on the journal's write path (real disk,
//! O_DIRECT): a counting global allocator over 1,000 batches of 100 records
//! on the journaller's thread. (The background preallocation thread allocates
//! its file buffers and channel context once per segment, off the write path.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_core::{CommandHeader, CommandRef, Journaller};
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Counting is on for the thread that drives the journal.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: delegates to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn write_path_allocates_nothing_per_batch() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let storage = FsStorage::open(dir.path(), IoMode::DirectSync).unwrap();
    let config = JournalConfig {
        segment_size: 64 << 20,
        sync: keel_journal::SyncPolicy::None,
        ..JournalConfig::default()
    };
    let (mut journal, _) = Journal::open(storage, config).unwrap();
    let status = journal.status();
    while !status.spare_ready() {
        std::thread::yield_now();
    }
    let body = [3u8; 100];
    let header = CommandHeader {
        command_type: 1,
        schema_version: 1,
        payload_len: body.len() as u32,
        ..CommandHeader::default()
    };
    COUNTING.with(|c| c.set(true));
    let mut sequence = 0;
    for _ in 0..1_000 {
        for _ in 0..100 {
            let command = CommandRef {
                sequence,
                header: &header,
                payload: &body,
            };
            journal.append(&command).unwrap();
            sequence += 1;
        }
        journal.end_of_batch(sequence - 1).unwrap();
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(journal.segment_id(), 1, "no roll inside the counted window");
    assert_eq!(status.written_next(), 100_000);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0);
}
