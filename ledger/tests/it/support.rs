//! Drives a ledger the way the engine does: encoded commands through
//! `keel_core::apply`, with a sequencer timestamp per command.

use keel_core::{apply, CommandHeader, CommandRef, DedupTable, Outcome};
use keel_ledger::commands::{self, command_type, EventResults};
use keel_ledger::{Account, Ledger, LedgerConfig, Transfer};

/// A ledger plus the envelope state the engine would keep.
pub struct Harness {
    pub ledger: Ledger,
    dedup: DedupTable,
    pub sequence: u64,
    /// The next command's timestamp (ns); advanced by 1 ms per command.
    pub now_ns: u64,
    /// The schema version commands are sent with (`None`: the current one
    /// of each command type).
    pub schema_version: Option<u16>,
}

impl Harness {
    pub fn new(accounts_max: u32, transfers_max: u32) -> Self {
        Self {
            ledger: Ledger::new(LedgerConfig {
                accounts_max,
                transfers_max,
                prefault: false,
            }),
            dedup: DedupTable::with_capacity(16),
            sequence: 0,
            now_ns: 1_000_000_000,
            schema_version: None,
        }
    }

    /// A harness around an existing ledger (e.g. one restored from a snapshot).
    pub fn with_ledger(ledger: Ledger, sequence: u64, now_ns: u64) -> Self {
        Self {
            ledger,
            dedup: DedupTable::with_capacity(16),
            sequence,
            now_ns,
            schema_version: None,
        }
    }

    pub fn raw(&mut self, command_type: u16, payload: &[u8]) -> Outcome {
        let header = CommandHeader {
            command_type,
            schema_version: self
                .schema_version
                .unwrap_or_else(|| commands::schema_version(command_type)),
            payload_len: payload.len() as u32,
            timestamp_ns: self.now_ns,
            ..CommandHeader::default()
        };
        let command = CommandRef {
            sequence: self.sequence,
            header: &header,
            payload,
        };
        self.sequence += 1;
        self.now_ns += 1_000_000;
        apply(&mut self.ledger, &mut self.dedup, &command).outcome
    }

    pub fn accounts(&mut self, accounts: &[Account]) -> Vec<u8> {
        let mut buf = [0u8; 896];
        let len = commands::encode_create_accounts(accounts, &mut buf).unwrap();
        let outcome = self.raw(command_type::CREATE_ACCOUNTS, &buf[..len]);
        codes(command_type::CREATE_ACCOUNTS, &outcome)
    }

    pub fn transfers(&mut self, transfers: &[Transfer]) -> Vec<u8> {
        let mut buf = [0u8; 896];
        let len = commands::encode_create_transfers(transfers, &mut buf).unwrap();
        let outcome = self.raw(command_type::CREATE_TRANSFERS, &buf[..len]);
        codes(command_type::CREATE_TRANSFERS, &outcome)
    }

    pub fn account(&self, id: u128) -> Account {
        *self.ledger.account(id).expect("account exists")
    }
}

fn codes(command_type: u16, outcome: &Outcome) -> Vec<u8> {
    let results: EventResults = commands::event_results(command_type, outcome).unwrap();
    results.codes().to_vec()
}

pub fn account(id: u128, flags: u16) -> Account {
    Account {
        id,
        ledger: 1,
        code: 10,
        flags,
        ..Account::default()
    }
}

pub fn transfer(id: u128, debit: u128, credit: u128, amount: u64) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}
