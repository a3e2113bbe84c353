//! The real file system: O_DIRECT on ext4 with the alignment read by statx,
//! and refusal on tmpfs unless buffered development I/O is asked for.

use keel_journal::{FsStorage, IoMode, Journal, Storage, StorageError};

use crate::support::{all_records, append_batch, assert_records, config};

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn direct_io_journal_round_trips_on_a_real_disk() {
    let dir = temp_dir();
    let storage = FsStorage::open(dir.path(), IoMode::DirectSync).unwrap();
    let block = storage.block_size();
    assert!(
        block.is_power_of_two() && block >= 512,
        "block size {block}"
    );
    let (mut journal, _) = Journal::open(storage, config()).unwrap();
    let mut n = 0;
    for batch in 1..30 {
        append_batch(&mut journal, n, n + batch).unwrap();
        n += batch;
    }
    drop(journal);
    let storage = FsStorage::open(dir.path(), IoMode::DirectSync).unwrap();
    assert_records(&all_records(&storage), n);
    let (journal, report) = Journal::open(storage, config()).unwrap();
    assert_eq!(journal.next_sequence(), n);
    assert!(report.truncated.is_none());
    assert!(report.scan.segments.len() > 1, "segments rolled");
}

#[test]
fn tmpfs_is_refused_unless_buffered_development_io_is_allowed() {
    let shm = std::path::Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "this test needs /dev/shm (tmpfs) as on every Linux host here"
    );
    let dir = tempfile::tempdir_in(shm).unwrap();
    match FsStorage::open(dir.path(), IoMode::DirectSync) {
        Err(StorageError::NoDirectIo { .. }) => {}
        other => panic!("tmpfs accepted for direct I/O: {other:?}"),
    }
    let storage = FsStorage::open(dir.path(), IoMode::BufferedDevelopment).unwrap();
    let (mut journal, _) = Journal::open(storage, config()).unwrap();
    append_batch(&mut journal, 0, 10).unwrap();
}
