//! Model-based property test: random batches, failed syncs and crashes. After
//! every recovery the journal holds every acknowledged record, in order, with
//! the right contents, and nothing corrupt; writing continues gap-free.
//! proptest prints the failing case (including the storage seed) and
//! replays it from `proptest-regressions/`.

use keel_journal::{FaultConfig, Journal};
use proptest::prelude::*;

use crate::support::{all_records, append_batch, assert_records, config, storage};

#[derive(Debug, Clone)]
enum Op {
    Batch(u64),
    FailingSyncBatch(u64),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..40).prop_map(Op::Batch),
        1 => (1u64..40).prop_map(Op::FailingSyncBatch),
        2 => Just(Op::Crash),
    ]
}

proptest! {
    // 64 cases in CI; PROPTEST_CASES=5000 runs thousands locally.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn recovery_keeps_every_acknowledged_record(seed: u64, ops in prop::collection::vec(op(), 1..40)) {
        let mut disk = storage(seed);
        // Half the cases use the tamper-evident chain.
        let config = || keel_journal::JournalConfig { chain: seed % 2 == 1, ..config() };
        let (mut journal, _) = Journal::open(disk.clone(), config()).unwrap();
        let mut acknowledged = 0u64;
        for op in ops {
            match op {
                Op::Batch(n) => {
                    let from = journal.next_sequence();
                    append_batch(&mut journal, from, from + n).unwrap();
                    acknowledged = from + n;
                }
                Op::FailingSyncBatch(n) => {
                    // A failed sync is fail-stop: the writer is abandoned, as
                    // the engine would be, and the process "crashes".
                    disk.set_faults(FaultConfig { eio_on_sync: Some(0), seed, ..FaultConfig::default() });
                    let from = journal.next_sequence();
                    prop_assert!(append_batch(&mut journal, from, from + n).is_err());
                    drop(journal);
                    disk = disk.crash();
                    journal = Journal::open(disk.clone(), config()).unwrap().0;
                }
                Op::Crash => {
                    drop(journal);
                    disk = disk.crash();
                    let (reopened, _) = Journal::open(disk.clone(), config())
                        .map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
                    journal = reopened;
                }
            }
            prop_assert!(journal.next_sequence() >= acknowledged, "seed {}: lost acknowledged records", seed);
        }
        drop(journal);
        let records = all_records(&disk);
        prop_assert!(records.len() as u64 >= acknowledged);
        assert_records(&records, records.len() as u64);
    }
}
