//! Seeded random ledger traffic written straight to a journal, with
//! simulated sequencer time: what the projector's tests and benchmarks
//! replay. Every kind of change a projection must follow appears: account
//! creation (with balance limits), single-phase, pending (with timeouts that
//! expire as simulated time passes), posts (full and partial) and voids,
//! linked chains that fail as a whole, rejected transfers, closing
//! transfers, lookups, and keyed retries answered from the idempotency
//! window.
//!
//! The journal is written through `Journal` as the engine's journaller
//! stage would (append, then `end_of_batch`), `sync` policy.

use std::path::Path;

use keel_core::{CommandHeader, CommandRef, Journaller};
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig, Retention};
use keel_ledger::commands::{
    command_type, encode_create_accounts, encode_create_transfers, encode_lookup,
};
use keel_ledger::{account_flags, transfer_flags, Account, Transfer};

/// Any failure writing the journal (storage, journal or encoding).
pub type TrafficError = Box<dyn std::error::Error + Send + Sync>;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct TrafficConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Commands after the account creations.
    pub commands: u64,
    /// Accounts (ids 1..=accounts).
    pub accounts: u64,
    /// Simulated time between commands at most (ns); expiries need a few seconds in all.
    pub max_step_ns: u64,
    /// Commands per journal batch (group commit).
    pub batch: u64,
    /// Sequencer time of the first command (ns since the Unix epoch).
    pub start_ns: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            commands: 2_000,
            accounts: 40,
            max_step_ns: 200_000_000,
            batch: 16,
            start_ns: 1_700_000_000_000_000_000,
        }
    }
}

/// Small xorshift: the traffic is a function of the seed alone.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Appends the traffic to the journal in `dir` (created if missing; an
/// existing journal is continued). Returns the journal's next sequence.
pub fn write(dir: &Path, config: &TrafficConfig) -> Result<u64, TrafficError> {
    std::fs::create_dir_all(dir)?;
    let storage = FsStorage::open(dir, IoMode::BufferedDevelopment)?;
    let journal_config = JournalConfig {
        segment_size: 4 << 20,
        retention: Retention::KeepAll,
        ..JournalConfig::default()
    };
    let (mut journal, _) = Journal::open(storage, journal_config)?;
    let mut writer = Writer {
        journal: &mut journal,
        rng: Rng(config.seed.max(1)),
        now: config.start_ns,
        in_batch: 0,
        config: *config,
        payload: vec![0; keel_core::constants::PAYLOAD_BYTES_MAX],
    };
    writer.now = writer
        .now
        .max(writer.journal.next_sequence() * 1_000 + config.start_ns);
    let first_account = 1u128;
    if writer.journal.next_sequence() == 0 {
        let ids: Vec<u128> = (first_account..=u128::from(config.accounts)).collect();
        for chunk in ids.chunks(keel_ledger::commands::ACCOUNTS_PER_COMMAND_MAX) {
            let accounts: Vec<Account> = chunk
                .iter()
                .map(|&id| Account {
                    id,
                    ledger: 1,
                    code: 10,
                    flags: match id % 7 {
                        0 => account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                        _ => 0,
                    },
                    user_data_64: id as u64 * 3,
                    ..Account::default()
                })
                .collect();
            writer.accounts(&accounts)?;
        }
    }
    let mut next_id: u128 = 1_000_000 + u128::from(writer.journal.next_sequence()) * 16;
    let mut pending: Vec<u128> = Vec::new();
    let mut keyed: Vec<(u128, Vec<Transfer>)> = Vec::new();
    for _ in 0..config.commands {
        let roll = writer.rng.below(100);
        if roll < 3 {
            let id = u128::from(writer.rng.below(config.accounts + 3));
            writer.lookup(id)?;
            continue;
        }
        if roll < 8 && !keyed.is_empty() {
            // A retry of an earlier keyed command: answered from the window.
            let (key, transfers) = keyed[writer.rng.below(keyed.len() as u64) as usize].clone();
            writer.transfers(&transfers, key)?;
            continue;
        }
        let count = 1 + writer.rng.below(7) as usize;
        let mut transfers = Vec::with_capacity(count);
        let chain = writer.rng.chance(15);
        for i in 0..count {
            next_id += 1;
            let account = |rng: &mut Rng| 1 + u128::from(rng.below(config.accounts));
            let debit = account(&mut writer.rng);
            let mut credit = account(&mut writer.rng);
            if !writer.rng.chance(3) && credit == debit {
                credit = debit % u128::from(config.accounts) + 1;
            }
            let mut t = Transfer {
                id: next_id,
                debit_account_id: debit,
                credit_account_id: credit,
                amount: 1 + writer.rng.below(1_000),
                ledger: 1,
                code: 1,
                user_data_32: i as u32,
                ..Transfer::default()
            };
            match writer.rng.below(100) {
                0..=19 => {
                    t.flags = transfer_flags::PENDING;
                    t.timeout = writer.rng.below(4) as u32; // 0: never expires
                    pending.push(t.id);
                }
                20..=34 if !pending.is_empty() => {
                    let index = writer.rng.below(pending.len() as u64) as usize;
                    let pending_id = pending[index];
                    if writer.rng.chance(70) {
                        pending.swap_remove(index);
                    }
                    t = Transfer {
                        id: next_id,
                        pending_id,
                        amount: if writer.rng.chance(50) {
                            0
                        } else {
                            writer.rng.below(500)
                        },
                        flags: if writer.rng.chance(60) {
                            transfer_flags::POST_PENDING_TRANSFER
                        } else {
                            transfer_flags::VOID_PENDING_TRANSFER
                        },
                        ..Transfer::default()
                    };
                }
                35..=39 => t.flags = transfer_flags::BALANCING_DEBIT,
                40 => {
                    // Closes the debit account until it expires (which reopens it).
                    t.flags = transfer_flags::CLOSING_DEBIT | transfer_flags::PENDING;
                    t.timeout = 1 + writer.rng.below(2) as u32;
                }
                41..=44 => t.amount = u64::MAX / 2, // exceeds limits or overflows later
                _ => {}
            }
            if chain && i + 1 < count {
                t.flags |= transfer_flags::LINKED;
            }
            transfers.push(t);
        }
        let key = if writer.rng.chance(10) {
            let key = u128::from(writer.rng.next()) << 1 | 1;
            keyed.push((key, transfers.clone()));
            key
        } else {
            0
        };
        writer.transfers(&transfers, key)?;
    }
    writer.flush()?;
    Ok(journal.next_sequence())
}

struct Writer<'j> {
    journal: &'j mut Journal<FsStorage>,
    rng: Rng,
    now: u64,
    in_batch: u64,
    config: TrafficConfig,
    payload: Vec<u8>,
}

impl Writer<'_> {
    fn accounts(&mut self, accounts: &[Account]) -> Result<(), TrafficError> {
        let len = encode_create_accounts(accounts, &mut self.payload)?;
        self.append(command_type::CREATE_ACCOUNTS, len, 0)
    }

    fn transfers(&mut self, transfers: &[Transfer], key: u128) -> Result<(), TrafficError> {
        let len = encode_create_transfers(transfers, &mut self.payload)?;
        self.append(command_type::CREATE_TRANSFERS, len, key)
    }

    fn lookup(&mut self, id: u128) -> Result<(), TrafficError> {
        let len = encode_lookup(id.max(1), &mut self.payload)?;
        let kind = match self.rng.chance(50) {
            true => command_type::LOOKUP_ACCOUNT,
            false => command_type::LOOKUP_TRANSFER,
        };
        self.append(kind, len, 0)
    }

    fn append(&mut self, kind: u16, len: usize, key: u128) -> Result<(), TrafficError> {
        self.now += 1 + self.rng.below(self.config.max_step_ns);
        let sequence = self.journal.next_sequence();
        let header = CommandHeader {
            idempotency_key: key,
            correlation_id: sequence,
            timestamp_ns: self.now,
            command_type: kind,
            schema_version: keel_ledger::commands::schema_version(kind),
            tenant_id: 0,
            payload_len: len as u32,
            completion: keel_core::completion::NO_COMPLETION,
            flags: 0,
        };
        self.journal.append(&CommandRef {
            sequence,
            header: &header,
            payload: &self.payload[..len],
        })?;
        self.in_batch += 1;
        if self.in_batch >= self.config.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrafficError> {
        if self.in_batch > 0 {
            let last = self.journal.next_sequence() - 1;
            self.journal.end_of_batch(last)?;
            self.in_batch = 0;
        }
        Ok(())
    }
}
