//! Golden files: the version-1 byte format, pinned. A segment written by this
//! test's fixed inputs must equal `tests/it/golden/segment-v1.keel` (and the
//! chained variant `segment-v1-chained.keel`) byte for byte, and those files
//! must always decode to the same records. Regenerate only
//! for a new format version (`KEEL_BLESS=1`), never to make a test pass.

use keel_journal::{FaultConfig, FaultyStorage, Journal, Storage};

use crate::support::{all_records, append_batch, assert_records, config, BLOCK};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/golden/segment-v1.keel"
);

const GOLDEN_CHAINED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/golden/segment-v1-chained.keel"
);

fn write_fixture(chain: bool) -> Vec<u8> {
    let disk = FaultyStorage::new(BLOCK, FaultConfig::default());
    let config = keel_journal::JournalConfig { chain, ..config() };
    let (mut journal, _) = Journal::open(disk.clone(), config).unwrap();
    append_batch(&mut journal, 0, 3).unwrap();
    append_batch(&mut journal, 3, 8).unwrap();
    drop(journal);
    disk.durable_bytes(1)
}

#[test]
fn version_1_segment_is_byte_identical_and_still_decodes() {
    check(GOLDEN, false);
}

#[test]
fn version_1_chained_segment_is_byte_identical_and_still_decodes() {
    check(GOLDEN_CHAINED, true);
}

fn check(path: &str, chain: bool) {
    let written = write_fixture(chain);
    if std::env::var_os("KEEL_BLESS").is_some() {
        std::fs::write(path, &written).unwrap();
    }
    let golden = std::fs::read(path).expect("golden file present");
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
