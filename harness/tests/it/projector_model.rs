//! The deriver without a database: rows from random traffic, cut into
//! batches at random places and applied to an in-memory model of the
//! tables the way the sink applies them (insert transfers, apply state
//! changes, upsert accounts, one audit row per command), must equal the
//! ledger replayed from the same journal, for many seeds — and the
//! deriver's own replica at every batch boundary.

use std::collections::BTreeMap;

use keel_core::StateMachine;
use keel_harness::replay::replay;
use keel_harness::traffic::{self, TrafficConfig};
use keel_journal::{FsStorage, JournalTail};
use keel_ledger::{Account, Ledger, LedgerConfig, PendingState, Transfer};
use keel_projector::{Batch, Deriver};

const LEDGER: LedgerConfig = LedgerConfig {
    accounts_max: 1 << 10,
    transfers_max: 1 << 16,
    prefault: false,
};

#[derive(Default)]
struct Tables {
    transfers: BTreeMap<u128, (u64, u8, Transfer, PendingState)>,
    keys: BTreeMap<(u64, u8), u128>,
    accounts: BTreeMap<u128, Account>,
    commands: BTreeMap<u64, u16>,
}

impl Tables {
    fn apply(&mut self, batch: &Batch) {
        for row in &batch.transfers {
            let id = row.transfer.id;
            assert!(
                self.transfers
                    .insert(id, (row.sequence, row.event, row.transfer, row.state))
                    .is_none(),
                "duplicate id {id}"
            );
            assert!(
                self.keys.insert((row.sequence, row.event), id).is_none(),
                "duplicate key"
            );
        }
        for (id, state) in &batch.state_changes {
            let row = self
                .transfers
                .get_mut(id)
                .expect("a state change of a projected transfer");
            row.3 = *state;
        }
        for window in batch.accounts.windows(2) {
            assert!(
                window[0].id < window[1].id,
                "accounts sorted by id, once each"
            );
        }
        for account in &batch.accounts {
            self.accounts.insert(account.id, *account);
        }
        for command in &batch.commands {
            assert!(self
                .commands
                .insert(command.sequence, command.command_type)
                .is_none());
        }
    }
}

#[test]
fn derived_rows_rebuild_the_ledger_for_any_batch_cuts() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let config = TrafficConfig {
            seed,
            commands: 1_500,
            accounts: 12 + seed * 3,
            ..TrafficConfig::default()
        };
        let end = traffic::write(dir.path(), &config).unwrap();
        let storage = FsStorage::open_read_only(dir.path()).unwrap();
        let (replayed, _) = replay(&storage, Ledger::new(LEDGER), 65_536).unwrap();
        let ledger = replayed.state_machine;

        let mut deriver = Deriver::new(LEDGER, 65_536);
        let mut tables = Tables::default();
        let mut batch = Batch::starting_at(0);
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut cut = 1;
        JournalTail::new(&storage, 0)
            .poll(u64::MAX, &mut |record| {
                deriver.derive(record, &mut batch).unwrap();
                if batch.len() >= cut {
                    deriver.seal(&mut batch, false);
                    tables.apply(&batch);
                    // At every batch boundary the tables equal the replica.
                    for account in deriver.ledger().accounts() {
                        assert_eq!(
                            tables.accounts.get(&account.id),
                            Some(account),
                            "seed {seed}"
                        );
                    }
                    for (t, state) in deriver.ledger().transfers() {
                        assert_eq!(
                            tables.transfers.get(&t.id).map(|r| (r.2, r.3)),
                            Some((*t, state)),
                            "seed {seed}"
                        );
                    }
                    batch = Batch::starting_at(deriver.next_sequence());
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    cut = 1 + rng % 64;
                }
            })
            .unwrap();
        deriver.seal(&mut batch, false);
        tables.apply(&batch);
        assert_eq!(deriver.next_sequence(), end);
        assert_eq!(deriver.state_hash(), ledger.state_hash(), "seed {seed}");

        assert_eq!(
            tables.commands.len() as u64,
            end,
            "seed {seed}: one audit row per command"
        );
        let accounts: BTreeMap<u128, Account> = ledger.accounts().map(|a| (a.id, *a)).collect();
        assert_eq!(tables.accounts, accounts, "seed {seed}: accounts");
        let transfers: BTreeMap<u128, (Transfer, PendingState)> =
            ledger.transfers().map(|(t, s)| (t.id, (*t, s))).collect();
        let projected: BTreeMap<u128, (Transfer, PendingState)> = tables
            .transfers
            .iter()
            .map(|(id, (_, _, t, s))| (*id, (*t, *s)))
            .collect();
        assert!(
            projected == transfers,
            "seed {seed}: transfers and their pending states"
        );
        assert!(
            ledger.stats().expired > 0,
            "seed {seed}: expiries exercised"
        );
    }
}
