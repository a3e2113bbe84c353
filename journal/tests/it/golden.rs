//! Golden files: the version-1 byte format, pinned. A segment written by this
//! test's fixed inputs must equal `tests/it/golden/segment-v1.keel` byte for
//! byte, and that file must always decode to the same records. Regenerate only
//! for a new format version (`KEEL_BLESS=1`), never to make a test pass.

use keel_journal::{FaultConfig, FaultyStorage, Journal, Storage};

use crate::support::{all_records, append_batch, assert_records, config, BLOCK};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/golden/segment-v1.keel"
);

fn write_fixture() -> Vec<u8> {
    let disk = FaultyStorage::new(BLOCK, FaultConfig::default());
    let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
    append_batch(&mut journal, 0, 3).unwrap();
    append_batch(&mut journal, 3, 8).unwrap();
    drop(journal);
    disk.durable_bytes(1)
}

#[test]
fn version_1_segment_is_byte_identical_and_still_decodes() {
    let written = write_fixture();
    if std::env::var_os("KEEL_BLESS").is_some() {
        std::fs::write(GOLDEN, &written).unwrap();
    }
    let golden = std::fs::read(GOLDEN).expect("golden file present");
    assert_eq!(written.len(), golden.len());
    assert!(
        written == golden,
        "the writer's bytes changed: that is a format change"
    );
    // Decode the golden bytes through a storage holding only them.
    let disk = FaultyStorage::new(BLOCK, FaultConfig::default());
    disk.create(1, golden.len() as u64).unwrap();
    disk.corrupt(1, 0, |b| b.copy_from_slice(&golden));
    assert_records(&all_records(&disk), 8);
}
