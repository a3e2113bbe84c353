//! [`Ledger`]: the double-entry ledger as a Keel [`StateMachine`].
//!
//! Layout (why in `docs/ledger.md`): accounts and transfers live in dense
//! arrays in creation order, found through fixed-capacity [`IdIndex`]es; an
//! account's history is a linked list threaded through the transfers (each
//! transfer remembers the previous transfer of its debit and of its credit
//! account); pending transfers with a timeout sit in a min-heap of expiry
//! times. Every array is allocated at construction with the configured
//! capacity; a full table is a rejection code, never growth.
//!
//! Each command is one batch of events. A linked chain inside the batch runs
//! with an undo log and is rolled back as a whole if any of its events fails.
//! Timestamps come only from the command (the sequencer's clock), made
//! strictly increasing per event, so replay is deterministic; pending
//! transfers expire when a later command's timestamp passes their deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use keel_codecs::Rkyv;
use keel_core::{CommandRef, Outcome, StateMachine};

use crate::commands::{
    self, command_type, outcome_code, set_outcome, AccountBalance, ArchivedAccountBatch,
    ArchivedTransferBatch, EventResults, Lookup, SagaRecord, TransferStatus, WrongShard,
    EVENTS_PER_COMMAND_MAX,
};
use crate::hash::{
    account_static_term, account_term, account_term_with, failed_term, transfer_term,
};
use crate::memory::FixedVec;
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::routing::Ownership;
use crate::table::IdIndex;
use crate::transfer::{Batch, Rules};
use crate::types::{
    account_flags, transfer_flags, Account, ArchivedTransfer, PendingState, Transfer,
};

/// "No transfer" in the history links.
pub(crate) const NONE: u32 = u32::MAX;

/// Entries the undo log of one linked chain holds: per event at most four
/// account images (a void rewrites each account twice), one insert and one
/// pending-state change, rounded up.
const UNDO_ENTRIES_MAX: usize = EVENTS_PER_COMMAND_MAX * 8;

/// Table capacities. Defaults suit a development machine (about 1.5 GiB
/// when full; untouched capacity costs address space, not memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Accounts the ledger can hold.
    pub accounts_max: u32,
    /// Transfers (including posts and voids) the ledger can hold.
    pub transfers_max: u32,
    /// Touch the record arrays' pages at construction too (seconds and the
    /// full tables' memory up front; no page fault on the hot path later).
    /// Otherwise they are reserved and committed as first written; the id
    /// indexes (about 16 bytes per capacity slot) are always touched at
    /// construction. Not part of the state: a replay may use either.
    pub prefault: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            accounts_max: 1 << 20,
            transfers_max: 1 << 23,
            prefault: false,
        }
    }
}

/// An account and the head of its history list.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccountEntry {
    pub(crate) account: Account,
    /// `hash::account_static_term` of the account (its immutable fields).
    pub(crate) static_term: u64,
    /// The account's most recent transfer, or [`NONE`].
    pub(crate) last_transfer: u32,
}

/// A transfer as stored: resolved fields, pending state and history links.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TransferEntry {
    pub(crate) transfer: Transfer,
    pub(crate) state: PendingState,
    /// Expiry deadline (ns) of a pending transfer with a timeout; 0 otherwise.
    pub(crate) expires_at: u64,
    /// The debit account's previous transfer, or [`NONE`].
    pub(crate) prev_debit: u32,
    /// The credit account's previous transfer, or [`NONE`].
    pub(crate) prev_credit: u32,
}

#[derive(Debug, Clone, Copy)]
enum Undo {
    Account { position: u32, before: AccountEntry },
    AccountInserted,
    TransferInserted,
    TransferState { position: u32, before: PendingState },
}

/// Counters of what the ledger did (not part of the state hash).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Events applied.
    pub events_ok: u64,
    /// Events rejected (any non-ok code).
    pub events_rejected: u64,
    /// Pending transfers that expired.
    pub expired: u64,
    /// Commands that were not ledger commands.
    pub malformed: u64,
}

/// The ledger state machine.
#[derive(Debug)]
pub struct Ledger {
    config: LedgerConfig,
    pub(crate) accounts: FixedVec<AccountEntry>,
    account_index: IdIndex,
    pub(crate) transfers: FixedVec<TransferEntry>,
    transfer_index: IdIndex,
    /// Ids of transfers that failed with a transient code, in order: such
    /// an id can never succeed later (`id_already_failed`).
    pub(crate) failed: FixedVec<u128>,
    failed_index: IdIndex,
    /// `(deadline, transfer position)` of pending transfers with a timeout.
    expiries: BinaryHeap<Reverse<(u64, u32)>>,
    /// Timestamp of the last event (ns); the next event gets a later one.
    last_timestamp: u64,
    /// Wrapping sum of the terms of every account and transfer: order
    /// independent, updated in O(1) per change (see `hash.rs`).
    hash_sum: u64,
    undo: [Undo; UNDO_ENTRIES_MAX],
    undo_len: usize,
    /// Whether changes are being recorded for a possible rollback.
    in_chain: bool,
    /// Expiry entries of the current chain, pushed when it commits.
    deferred: [(u64, u32); EVENTS_PER_COMMAND_MAX],
    deferred_len: usize,
    stats: LedgerStats,
    /// The slots this ledger owns, when it is one shard of several: a
    /// command naming an account of another slot is `WRONG_SHARD`.
    ownership: Option<Ownership>,
}

impl Ledger {
    /// Bytes the tables of a ledger with these capacities reserve (what a
    /// full ledger uses; a host checks it against the machine's memory).
    pub fn table_bytes(config: LedgerConfig) -> u64 {
        let index = |n: u32| (u64::from(n) * 2).next_power_of_two().max(16) * 8;
        let a = u64::from(config.accounts_max);
        let t = u64::from(config.transfers_max);
        a * std::mem::size_of::<AccountEntry>() as u64
            + index(config.accounts_max)
            + t * std::mem::size_of::<TransferEntry>() as u64
            + index(config.transfers_max)
            + t * std::mem::size_of::<Reverse<(u64, u32)>>() as u64
            + t * std::mem::size_of::<u128>() as u64
            + index(config.transfers_max)
    }

    /// An empty ledger with every table reserved at its capacity (and
    /// touched, with [`LedgerConfig::prefault`]).
    pub fn new(config: LedgerConfig) -> Self {
        let prefault = config.prefault;
        assert!(config.accounts_max > 0 && config.accounts_max < u32::MAX);
        assert!(config.transfers_max > 0 && config.transfers_max < u32::MAX);
        Self {
            config,
            accounts: FixedVec::new(config.accounts_max as usize, prefault),
            // The indexes are touched at random: a few thousand inserts fault
            // in nearly every (huge) page anyway, so they are always touched
            // now rather than on the hot path; the record arrays grow in
            // order and follow `prefault`.
            account_index: IdIndex::with_capacity(config.accounts_max, true),
            transfers: FixedVec::new(config.transfers_max as usize, prefault),
            transfer_index: IdIndex::with_capacity(config.transfers_max, true),
            // Failed ids are rare: their pages are committed as they come.
            failed: FixedVec::new(config.transfers_max as usize, false),
            failed_index: IdIndex::with_capacity(config.transfers_max, false),
            expiries: BinaryHeap::with_capacity(config.transfers_max as usize),
            last_timestamp: 0,
            hash_sum: 0,
            undo: [Undo::AccountInserted; UNDO_ENTRIES_MAX],
            undo_len: 0,
            in_chain: false,
            deferred: [(0, 0); EVENTS_PER_COMMAND_MAX],
            deferred_len: 0,
            stats: LedgerStats::default(),
            ownership: None,
        }
    }

    /// The slots this ledger owns (`None`: not sharded, owns every account).
    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_ref()
    }

    /// Installs ownership (from a snapshot; commands use `SET_OWNERSHIP`).
    pub(crate) fn install_ownership(&mut self, ownership: Ownership) {
        self.ownership = Some(ownership);
    }

    /// The capacities.
    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// What the ledger did so far.
    pub fn stats(&self) -> LedgerStats {
        self.stats
    }

    /// Accounts held.
    pub fn accounts_len(&self) -> usize {
        self.accounts.len()
    }

    /// Transfers held.
    pub fn transfers_len(&self) -> usize {
        self.transfers.len()
    }

    /// The account with `id`.
    pub fn account(&self, id: u128) -> Option<&Account> {
        self.find_account(id)
            .map(|p| &self.accounts[p as usize].account)
    }

    /// The transfer with `id` and, for a pending transfer, where it stands.
    pub fn transfer(&self, id: u128) -> Option<(&Transfer, PendingState)> {
        self.find_transfer(id).map(|p| {
            let entry = &self.transfers[p as usize];
            (&entry.transfer, entry.state)
        })
    }

    /// Every account, in creation order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().map(|e| &e.account)
    }

    /// Every transfer with its pending state, in creation order.
    pub fn transfers(&self) -> impl Iterator<Item = (&Transfer, PendingState)> {
        self.transfers.iter().map(|e| (&e.transfer, e.state))
    }

    /// Accounts created at or after position `from` of [`Ledger::accounts`]
    /// (a projection reads what a command appended in O(appended)).
    pub fn accounts_from(&self, from: usize) -> impl Iterator<Item = &Account> {
        self.accounts[from.min(self.accounts.len())..]
            .iter()
            .map(|e| &e.account)
    }

    /// Transfers created at or after position `from` of [`Ledger::transfers`].
    pub fn transfers_from(&self, from: usize) -> impl Iterator<Item = (&Transfer, PendingState)> {
        self.transfers[from.min(self.transfers.len())..]
            .iter()
            .map(|e| (&e.transfer, e.state))
    }

    /// The account's transfers, newest first (empty for an unknown account).
    pub fn account_transfers(&self, id: u128) -> impl Iterator<Item = &Transfer> {
        let mut next = self
            .find_account(id)
            .map_or(NONE, |p| self.accounts[p as usize].last_transfer);
        std::iter::from_fn(move || {
            if next == NONE {
                return None;
            }
            let entry = &self.transfers[next as usize];
            next = match entry.transfer.debit_account_id == id {
                true => entry.prev_debit,
                false => entry.prev_credit,
            };
            Some(&entry.transfer)
        })
    }

    /// Timestamp of the last event applied (ns).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    fn find_account(&self, id: u128) -> Option<u32> {
        let accounts = &self.accounts;
        self.account_index
            .find(id, |p| accounts[p as usize].account.id)
    }

    fn find_transfer(&self, id: u128) -> Option<u32> {
        let transfers = &self.transfers;
        self.transfer_index
            .find(id, |p| transfers[p as usize].transfer.id)
    }

    // ---- mutation primitives: each keeps the hash and, in a chain, the undo log

    fn record(&mut self, undo: Undo) {
        if self.in_chain {
            assert!(self.undo_len < UNDO_ENTRIES_MAX, "undo log sized per event");
            self.undo[self.undo_len] = undo;
            self.undo_len += 1;
        }
    }

    pub(crate) fn set_account(&mut self, position: u32, entry: AccountEntry) {
        let before = self.accounts[position as usize];
        self.record(Undo::Account { position, before });
        let slot = &mut self.accounts[position as usize];
        self.hash_sum = self
            .hash_sum
            .wrapping_sub(account_term_with(slot.static_term, &slot.account))
            .wrapping_add(account_term_with(entry.static_term, &entry.account));
        *slot = entry;
    }

    pub(crate) fn insert_account(&mut self, account: Account) {
        let position = self.accounts.len() as u32;
        self.account_index.insert(account.id, position);
        let static_term = account_static_term(&account);
        self.accounts.push(AccountEntry {
            account,
            static_term,
            last_transfer: NONE,
        });
        self.hash_sum = self
            .hash_sum
            .wrapping_add(account_term_with(static_term, &account));
        self.record(Undo::AccountInserted);
    }

    /// Appends a transfer and threads it into both accounts' histories:
    /// `debit` and `credit` are the accounts' positions and their new images
    /// (balances already changed by the caller), written here with the new
    /// history head, so each account is rewritten once per transfer.
    pub(crate) fn insert_transfer(
        &mut self,
        transfer: Transfer,
        state: PendingState,
        expires_at: u64,
        debit: (u32, AccountEntry),
        credit: (u32, AccountEntry),
    ) {
        let position = self.transfers.len() as u32;
        let entry = TransferEntry {
            transfer,
            state,
            expires_at,
            prev_debit: debit.1.last_transfer,
            prev_credit: credit.1.last_transfer,
        };
        self.transfer_index.insert(transfer.id, position);
        self.transfers.push(entry);
        self.hash_sum = self.hash_sum.wrapping_add(transfer_term(&transfer, state));
        self.record(Undo::TransferInserted);
        for (account, mut image) in [debit, credit] {
            image.last_transfer = position;
            self.set_account(account, image);
        }
        if expires_at != 0 {
            assert!(self.deferred_len < EVENTS_PER_COMMAND_MAX);
            self.deferred[self.deferred_len] = (expires_at, position);
            self.deferred_len += 1;
        }
    }

    pub(crate) fn set_transfer_state(&mut self, position: u32, state: PendingState) {
        let entry = &mut self.transfers[position as usize];
        let before = entry.state;
        self.hash_sum = self
            .hash_sum
            .wrapping_sub(transfer_term(&entry.transfer, before))
            .wrapping_add(transfer_term(&entry.transfer, state));
        entry.state = state;
        self.record(Undo::TransferState { position, before });
    }

    fn rollback(&mut self) {
        while self.undo_len > 0 {
            self.undo_len -= 1;
            match self.undo[self.undo_len] {
                Undo::Account { position, before } => {
                    let slot = &mut self.accounts[position as usize];
                    self.hash_sum = self
                        .hash_sum
                        .wrapping_sub(account_term_with(slot.static_term, &slot.account))
                        .wrapping_add(account_term_with(before.static_term, &before.account));
                    *slot = before;
                }
                Undo::AccountInserted => {
                    let entry = self.accounts.pop().expect("undo matches an insert");
                    let position = self.accounts.len() as u32;
                    self.account_index.remove_last(entry.account.id, position);
                    self.hash_sum = self
                        .hash_sum
                        .wrapping_sub(account_term_with(entry.static_term, &entry.account));
                }
                Undo::TransferInserted => {
                    let entry = self.transfers.pop().expect("undo matches an insert");
                    let position = self.transfers.len() as u32;
                    self.transfer_index.remove_last(entry.transfer.id, position);
                    self.hash_sum = self
                        .hash_sum
                        .wrapping_sub(transfer_term(&entry.transfer, entry.state));
                }
                Undo::TransferState { position, before } => {
                    let entry = &mut self.transfers[position as usize];
                    self.hash_sum = self
                        .hash_sum
                        .wrapping_sub(transfer_term(&entry.transfer, entry.state))
                        .wrapping_add(transfer_term(&entry.transfer, before));
                    entry.state = before;
                }
            }
        }
        self.deferred_len = 0;
    }

    fn commit(&mut self) {
        for &(deadline, position) in &self.deferred[..self.deferred_len] {
            self.expiries.push(Reverse((deadline, position)));
        }
        self.deferred_len = 0;
        self.undo_len = 0;
    }

    /// The newest account's timestamp (0: none). Timestamps grow with
    /// creation order, imported ones included (they must not regress).
    pub(crate) fn newest_account_timestamp(&self) -> u64 {
        self.accounts.last().map_or(0, |e| e.account.timestamp)
    }

    /// The newest transfer's timestamp (0: none).
    pub(crate) fn newest_transfer_timestamp(&self) -> u64 {
        self.transfers.last().map_or(0, |e| e.transfer.timestamp)
    }

    /// Whether an account or a transfer has `timestamp` (each timestamp
    /// names one event: an imported one must not reuse another's).
    pub(crate) fn timestamp_taken(&self, timestamp: u64) -> bool {
        self.accounts
            .binary_search_by_key(&timestamp, |e| e.account.timestamp)
            .is_ok()
            || self
                .transfers
                .binary_search_by_key(&timestamp, |e| e.transfer.timestamp)
                .is_ok()
    }

    /// Whether transfer id `id` failed before with a transient code.
    pub(crate) fn has_failed(&self, id: u128) -> bool {
        // Usually none failed: no probe (and no page fault) into an index
        // whose pages are committed only as ids arrive.
        let failed = &self.failed;
        !failed.is_empty() && self.failed_index.find(id, |p| failed[p as usize]).is_some()
    }

    /// Records that transfer id `id` failed with a transient code; `false`
    /// (nothing recorded) when the table of failed ids is full.
    pub(crate) fn record_failed(&mut self, id: u128) -> bool {
        if self.failed_index.is_full() {
            return false;
        }
        debug_assert!(!self.in_chain, "recorded after the chain is settled");
        self.failed_index.insert(id, self.failed.len() as u32);
        self.failed.push(id);
        self.hash_sum = self.hash_sum.wrapping_add(failed_term(id));
        true
    }

    /// Ids of transfers that failed with a transient code, in order.
    pub fn failed_transfer_ids(&self) -> &[u128] {
        &self.failed
    }

    /// Whether the accounts table has room.
    pub(crate) fn accounts_full(&self) -> bool {
        self.account_index.is_full()
    }

    /// Whether the transfers table has room.
    pub(crate) fn transfers_full(&self) -> bool {
        self.transfer_index.is_full()
    }

    pub(crate) fn account_position(&self, id: u128) -> Option<u32> {
        self.find_account(id)
    }

    pub(crate) fn transfer_position(&self, id: u128) -> Option<u32> {
        self.find_transfer(id)
    }

    // ---- commands

    /// Runs a batch of `n` events; `linked(i)` says whether event `i` is linked
    /// to the next, `exec(ledger, i)` applies one and returns its code, and
    /// `failed(ledger, i, code)` runs for an event that failed with its own
    /// code once its chain is settled (rolled back), returning the code it
    /// gets.
    fn run_batch(
        &mut self,
        n: usize,
        linked: impl Fn(usize) -> bool,
        mut exec: impl FnMut(&mut Self, usize) -> u8,
        mut failed: impl FnMut(&mut Self, usize, u8) -> u8,
        chain_open: u8,
        results: &mut EventResults,
    ) {
        const LINKED_EVENT_FAILED: u8 = 1;
        debug_assert!(n <= EVENTS_PER_COMMAND_MAX);
        results.count = n as u8;
        let mut i = 0;
        while i < n {
            let end = (i..n).find(|&j| !linked(j)).unwrap_or(n - 1);
            let open = linked(end);
            if end == i && !open {
                let code = exec(self, i);
                self.commit();
                results.codes[i] = match code {
                    0 => 0,
                    code => failed(self, i, code),
                };
                i += 1;
                continue;
            }
            self.in_chain = true;
            let mut broken = None;
            for j in i..=end {
                let code = if open && j == end {
                    chain_open
                } else {
                    exec(self, j)
                };
                if code != 0 {
                    broken = Some((j, code));
                    break;
                }
                results.codes[j] = 0;
            }
            match broken {
                None => self.commit(),
                Some((at, code)) => {
                    self.rollback();
                    // As TigerBeetle 0.17: the failing event keeps its own
                    // code, the last event of a chain left open is always
                    // `linked_event_chain_open`, the rest `linked_event_failed`.
                    for j in i..=end {
                        results.codes[j] = match j {
                            j if j == at => code,
                            j if open && j == end => chain_open,
                            _ => LINKED_EVENT_FAILED,
                        };
                    }
                }
            }
            self.in_chain = false;
            if let Some((at, code)) = broken {
                if !(open && at == end) {
                    results.codes[at] = failed(self, at, code);
                }
            }
            i = end + 1;
        }
        let rejected = results.codes().iter().filter(|&&c| c != 0).count() as u64;
        self.stats.events_rejected += rejected;
        self.stats.events_ok += n as u64 - rejected;
    }

    fn create_accounts(
        &mut self,
        batch: &ArchivedAccountBatch<'_>,
        base: u64,
        rules: Rules,
        outcome: &mut Outcome,
    ) {
        let events = &batch.accounts;
        let mut results = EventResults::default();
        let first = events
            .first()
            .is_some_and(|e| e.flags.to_native() & account_flags::IMPORTED != 0);
        let context = Batch::new(rules, first, base, events.len());
        self.run_batch(
            events.len(),
            |i| events[i].flags.to_native() & account_flags::LINKED != 0,
            |ledger, i| {
                ledger.create_account(&events[i].to_native(), base + i as u64, context) as u8
            },
            |_, _, code| code,
            CreateAccountResult::linked_event_chain_open as u8,
            &mut results,
        );
        finish_batch(outcome, &results);
    }

    fn create_transfers(
        &mut self,
        batch: &ArchivedTransferBatch<'_>,
        base: u64,
        rules: Rules,
        outcome: &mut Outcome,
    ) {
        let events = &batch.transfers;
        let mut results = EventResults::default();
        let first = events
            .first()
            .is_some_and(|e| e.flags.to_native() & transfer_flags::IMPORTED != 0);
        let context = Batch::new(rules, first, base, events.len());
        self.run_batch(
            events.len(),
            |i| events[i].flags.to_native() & transfer_flags::LINKED != 0,
            |ledger, i| {
                ledger.create_transfer(&events[i].to_native(), base + i as u64, context) as u8
            },
            |ledger, i, code| ledger.transfer_failed(events[i].id.to_native(), code, rules),
            CreateTransferResult::linked_event_chain_open as u8,
            &mut results,
        );
        finish_batch(outcome, &results);
    }

    /// Starts the cache misses of a whole batch at once so they overlap: the
    /// index slots of every id first, then the account records those slots
    /// point at. In a large ledger each is a miss; one at a time they would
    /// be paid in sequence.
    fn prefetch_batch(&self, events: &[ArchivedTransfer]) {
        for event in events {
            self.transfer_index.prefetch(event.id.to_native());
            self.account_index
                .prefetch(event.debit_account_id.to_native());
            self.account_index
                .prefetch(event.credit_account_id.to_native());
        }
        for event in events {
            for id in [event.debit_account_id, event.credit_account_id] {
                if let Some(position) = self.account_index.candidate(id.to_native()) {
                    if let Some(entry) = self.accounts.get(position as usize) {
                        crate::memory::prefetch(entry);
                    }
                }
            }
        }
    }

    fn lookup(&mut self, kind: u16, payload: &[u8], outcome: &mut Outcome) {
        let Ok(lookup) = Rkyv::access::<Lookup>(payload) else {
            return self.malformed(outcome);
        };
        let id = lookup.id.to_native();
        match kind {
            command_type::LOOKUP_ACCOUNT => match self.account(id) {
                Some(a) => set_outcome(
                    outcome,
                    outcome_code::OK,
                    &AccountBalance {
                        debits_pending: a.debits_pending,
                        debits_posted: a.debits_posted,
                        credits_pending: a.credits_pending,
                        credits_posted: a.credits_posted,
                        flags: a.flags,
                    },
                ),
                None => *outcome = Outcome::code(outcome_code::NOT_FOUND),
            },
            _ => match self.transfer(id) {
                Some((t, state)) => set_outcome(
                    outcome,
                    outcome_code::OK,
                    &TransferStatus {
                        amount: t.amount,
                        timestamp: t.timestamp,
                        pending_state: state as u8,
                        flags: t.flags,
                    },
                ),
                None => *outcome = Outcome::code(outcome_code::NOT_FOUND),
            },
        }
    }

    fn malformed(&mut self, outcome: &mut Outcome) {
        self.stats.malformed += 1;
        *outcome = Outcome::code(outcome_code::MALFORMED);
    }

    /// Expires every pending transfer whose deadline is at or before `now`,
    /// releasing its reservation (and reopening accounts a closing transfer closed).
    fn expire(&mut self, now: u64) {
        while let Some(&Reverse((deadline, position))) = self.expiries.peek() {
            if deadline > now {
                return;
            }
            self.expiries.pop();
            let entry = self.transfers[position as usize];
            if entry.state != PendingState::Pending || entry.expires_at != deadline {
                continue; // posted or voided before its deadline
            }
            self.release_pending(&entry.transfer, PendingState::Expired);
            self.stats.expired += 1;
        }
    }

    /// Releases a pending transfer's reservation and sets its final state
    /// (voided or expired: closing flags are undone).
    pub(crate) fn release_pending(&mut self, pending: &Transfer, state: PendingState) {
        let position = self
            .find_transfer(pending.id)
            .expect("a pending transfer is indexed");
        let debit = self
            .find_account(pending.debit_account_id)
            .expect("accounts of a transfer exist");
        let credit = self
            .find_account(pending.credit_account_id)
            .expect("accounts of a transfer exist");
        let mut dr = self.accounts[debit as usize];
        dr.account.debits_pending -= pending.amount;
        if pending.flags & transfer_flags::CLOSING_DEBIT != 0 {
            dr.account.flags &= !account_flags::CLOSED;
        }
        self.set_account(debit, dr);
        let mut cr = self.accounts[credit as usize];
        cr.account.credits_pending -= pending.amount;
        if pending.flags & transfer_flags::CLOSING_CREDIT != 0 {
            cr.account.flags &= !account_flags::CLOSED;
        }
        self.set_account(credit, cr);
        self.set_transfer_state(position, state);
    }

    /// Appends a restored account (snapshot restore; records arrive in
    /// creation order and were checked by the caller).
    pub(crate) fn restore_account(&mut self, mut entry: AccountEntry) {
        entry.static_term = account_static_term(&entry.account);
        let position = self.accounts.len() as u32;
        self.account_index.insert(entry.account.id, position);
        self.hash_sum = self
            .hash_sum
            .wrapping_add(account_term_with(entry.static_term, &entry.account));
        self.accounts.push(entry);
    }

    /// Appends a restored transfer, re-arming its expiry if still pending.
    pub(crate) fn restore_transfer(&mut self, entry: TransferEntry) {
        let position = self.transfers.len() as u32;
        self.transfer_index.insert(entry.transfer.id, position);
        self.hash_sum = self
            .hash_sum
            .wrapping_add(transfer_term(&entry.transfer, entry.state));
        if entry.state == PendingState::Pending && entry.expires_at != 0 {
            self.expiries.push(Reverse((entry.expires_at, position)));
        }
        self.transfers.push(entry);
    }

    /// Sets the restored clock and counters.
    pub(crate) fn restore_clock(&mut self, last_timestamp: u64, stats: LedgerStats) {
        self.last_timestamp = last_timestamp;
        self.stats = stats;
    }

    /// Recomputes the state hash from every record (for tests and `--verify`).
    pub fn recompute_state_hash(&self) -> u64 {
        let sum = self
            .accounts
            .iter()
            .map(|e| account_term(&e.account))
            .chain(
                self.transfers
                    .iter()
                    .map(|e| transfer_term(&e.transfer, e.state)),
            )
            .chain(self.failed.iter().map(|&id| failed_term(id)))
            .fold(0u64, u64::wrapping_add);
        finish_hash(sum, self.last_timestamp, self.ownership.as_ref())
    }

    /// Whether every account id in `ids` (0: none named) is this shard's
    /// (always, when not sharded); else what `WRONG_SHARD` says. Checked
    /// before anything of the command is applied.
    fn owns_all(&self, tenant: u32, mut ids: impl Iterator<Item = u128>) -> Result<(), WrongShard> {
        let Some(own) = &self.ownership else {
            return Ok(());
        };
        match ids.all(|id| id == 0 || own.owns(tenant, id)) {
            true => Ok(()),
            false => Err(WrongShard {
                table_version: own.table_version,
                fingerprint: own.fingerprint(),
            }),
        }
    }

    /// Answers a `SET_OWNERSHIP` whose table is not newer than the
    /// installed one (`true`); `false` for any other. Version 0 is never
    /// newer: it asks what is installed (version 0 and fingerprint 0: none).
    fn refuse_ownership(&self, payload: &[u8], outcome: &mut Outcome) -> bool {
        let Ok(new) = Rkyv::access::<Ownership>(payload) else {
            return false;
        };
        let installed = self.ownership.map_or(0, |o| o.table_version);
        if new.table_version.to_native() > installed {
            return false;
        }
        let body = WrongShard {
            table_version: installed,
            fingerprint: self.ownership.map_or(0, |o| o.fingerprint()),
        };
        set_outcome(outcome, outcome_code::TABLE_NOT_NEWER, &body);
        true
    }

    fn set_ownership(&mut self, payload: &[u8], outcome: &mut Outcome) {
        let Ok(new) = Rkyv::decode::<Ownership>(payload) else {
            return self.malformed(outcome);
        };
        debug_assert!(new.table_version > self.ownership.map_or(0, |o| o.table_version));
        self.ownership = Some(new);
        *outcome = Outcome::code(outcome_code::OK);
    }
}

/// A command refused whole: no event applied.
fn wrong_shard(body: &WrongShard, outcome: &mut Outcome) -> usize {
    set_outcome(outcome, outcome_code::WRONG_SHARD, body);
    0
}

fn finish_batch(outcome: &mut Outcome, results: &EventResults) {
    let code = match results.codes().iter().all(|&c| c == 0) {
        true => outcome_code::OK,
        false => outcome_code::EVENTS_REJECTED,
    };
    outcome.set(code, &results.encode_direct());
}

fn finish_hash(sum: u64, last_timestamp: u64, ownership: Option<&Ownership>) -> u64 {
    match ownership {
        None => crate::hash::fold(&[sum, last_timestamp]),
        Some(o) => crate::hash::fold(&[sum, last_timestamp, o.fingerprint()]),
    }
}

impl StateMachine for Ledger {
    fn prefetch(&self, command: &CommandRef<'_>) {
        if command.command_type() == command_type::CREATE_TRANSFERS {
            if let Some(batch) = commands::access_create_transfers(command.payload) {
                self.prefetch_batch(&batch.transfers);
            }
        }
    }

    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        // A table no newer than the installed one (every restart of a
        // sharded node checks its table so) changes nothing at all, not
        // even the clock: a restart leaves the state hash as it was.
        if command.command_type() == command_type::SET_OWNERSHIP
            && self.refuse_ownership(command.payload, outcome)
        {
            return;
        }
        // Every command advances the ledger's clock, strictly: event i of this
        // command is stamped base + i. Only the journaled timestamp is used.
        let base = command.timestamp_ns().max(self.last_timestamp + 1);
        self.expire(base);
        let kind = command.command_type();
        let payload = command.payload;
        let rules = Rules::for_version(command.header.schema_version);
        let tenant = command.header.tenant_id;
        let events = match kind {
            command_type::CREATE_ACCOUNTS => match commands::access_create_accounts(payload) {
                Some(batch) => {
                    let ids = batch.accounts.iter().map(|a| a.id.to_native());
                    match self.owns_all(tenant, ids) {
                        Err(body) => wrong_shard(&body, outcome),
                        Ok(()) => {
                            self.create_accounts(batch, base, rules, outcome);
                            batch.accounts.len()
                        }
                    }
                }
                None => {
                    self.malformed(outcome);
                    0
                }
            },
            command_type::CREATE_TRANSFERS => match commands::access_create_transfers(payload) {
                Some(batch) => {
                    let ids = batch.transfers.iter().flat_map(|t| {
                        [
                            t.debit_account_id.to_native(),
                            t.credit_account_id.to_native(),
                        ]
                    });
                    match self.owns_all(tenant, ids) {
                        Err(body) => wrong_shard(&body, outcome),
                        Ok(()) => {
                            self.create_transfers(batch, base, rules, outcome);
                            batch.transfers.len()
                        }
                    }
                }
                None => {
                    self.malformed(outcome);
                    0
                }
            },
            command_type::LOOKUP_ACCOUNT => {
                let id = Rkyv::access::<Lookup>(payload).map_or(0, |l| l.id.to_native());
                match self.owns_all(tenant, std::iter::once(id)) {
                    Err(body) => wrong_shard(&body, outcome),
                    Ok(()) => {
                        self.lookup(kind, payload, outcome);
                        0
                    }
                }
            }
            command_type::LOOKUP_TRANSFER => {
                self.lookup(kind, payload, outcome);
                0
            }
            command_type::SET_OWNERSHIP => {
                self.set_ownership(payload, outcome);
                0
            }
            command_type::SAGA_RECORD => {
                match Rkyv::access::<SagaRecord>(payload) {
                    Ok(_) => *outcome = Outcome::code(outcome_code::OK),
                    Err(_) => self.malformed(outcome),
                }
                0
            }
            _ => {
                self.malformed(outcome);
                0
            }
        };
        self.last_timestamp = base + (events.max(1) as u64 - 1);
    }

    fn state_hash(&self) -> u64 {
        finish_hash(self.hash_sum, self.last_timestamp, self.ownership.as_ref())
    }
}
