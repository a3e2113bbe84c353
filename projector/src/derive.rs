//! Rows from the journal: a replica of the ledger replays every record
//! through the same step the business-logic processor runs
//! (`keel_core::apply`, idempotency window included), and the rows are read
//! off what that step changed. Nothing is decoded twice or guessed: new
//! transfers and accounts are the ledger's own appended records; balances are
//! the replica's values at the end of the batch.
//!
//! What a command can change, and where the deriver sees it:
//! - created accounts and transfers: the tail of the ledger's tables (both
//!   are append-only at command granularity; a failed chain is undone inside
//!   the command);
//! - balances and the `closed` flag: the accounts of every created transfer
//!   (a post or void is stored with its pending transfer's accounts);
//! - a pending transfer's state: posted or voided by a created transfer's
//!   `pending_id`; expired when a command's timestamp passes its deadline —
//!   found through the deriver's own deadline heap, mirroring the ledger's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use keel_core::{apply, CommandRef, DedupTable, StateMachine};
use keel_journal::format::{Record, RecordMeta};
use keel_ledger::commands::{command_type, event_results, EVENTS_PER_COMMAND_MAX};
use keel_ledger::{transfer_flags, Account, Ledger, LedgerConfig, PendingState, Transfer};

const NS_PER_SECOND: u64 = 1_000_000_000;

/// One row of `keel_transfers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRow {
    /// Journal sequence of the command that created it.
    pub sequence: u64,
    /// Its index among the command's events.
    pub event: u8,
    /// The transfer as the ledger stored it (resolved, timestamped).
    pub transfer: Transfer,
    /// Where a pending transfer stands at the end of the batch.
    pub state: PendingState,
}

/// One row of `keel_commands` (the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRow {
    /// Journal sequence.
    pub sequence: u64,
    /// Sequencer timestamp (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Command type.
    pub command_type: u16,
    /// Idempotency key (0: none).
    pub idempotency_key: u128,
    /// Caller's correlation id.
    pub correlation_id: u64,
    /// Tenant.
    pub tenant_id: u32,
    /// A retry answered from the idempotency window (nothing applied).
    pub duplicate: bool,
    /// The command's outcome code.
    pub code: u32,
    /// Per-event result codes of a create command (`count` valid).
    pub results: [u8; EVENTS_PER_COMMAND_MAX],
    /// Events in a create command.
    pub events: u8,
}

impl CommandRow {
    /// Per-event result codes.
    pub fn results(&self) -> &[u8] {
        &self.results[..usize::from(self.events)]
    }

    /// Events accepted (result code 0).
    pub fn accepted(&self) -> usize {
        self.results().iter().filter(|&&c| c == 0).count()
    }
}

/// Every row one MySQL transaction writes: the commands `[first, next)`.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// First sequence in the batch (the checkpoint it continues).
    pub first: u64,
    /// One past the last sequence (the checkpoint it writes).
    pub next: u64,
    /// Created transfers, in creation order.
    pub transfers: Vec<TransferRow>,
    /// State changes of pending transfers created in earlier batches.
    pub state_changes: Vec<(u128, PendingState)>,
    /// Accounts created or changed, as of the batch's end, sorted by id.
    pub accounts: Vec<Account>,
    /// One row per command.
    pub commands: Vec<CommandRow>,
    /// The replica's state hash after the batch.
    pub state_hash: u64,
}

impl Batch {
    /// An empty batch continuing at `first`.
    pub fn starting_at(first: u64) -> Self {
        Self {
            first,
            next: first,
            ..Self::default()
        }
    }

    /// Commands in the batch.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// No command in the batch.
    pub fn is_empty(&self) -> bool {
        self.next == self.first
    }

    /// Rows the batch writes (all tables).
    pub fn rows(&self) -> usize {
        self.transfers.len() + self.state_changes.len() + self.accounts.len() + self.commands.len()
    }
}

/// The journal does not continue where the deriver stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("journal gap: expected sequence {expected}, found {found}")]
pub struct Gap {
    /// The sequence the deriver needed.
    pub expected: u64,
    /// The one the journal had.
    pub found: u64,
}

/// A ledger replica that turns journal records into rows.
#[derive(Debug)]
pub struct Deriver {
    ledger: Ledger,
    dedup: DedupTable,
    /// (deadline, id) of pending transfers with a timeout, as the ledger keeps them.
    deadlines: BinaryHeap<Reverse<(u64, u128)>>,
    /// Accounts changed in the open batch (sorted and deduplicated at seal).
    touched: Vec<u128>,
    /// Pending transfers created in the open batch: id → index in `transfers`.
    in_batch: HashMap<u128, usize>,
    next: u64,
}

impl Deriver {
    /// An empty ledger with the node's configuration and idempotency window
    /// size (both must equal the engine's, or replay would diverge).
    pub fn new(config: LedgerConfig, dedup_entries: usize) -> Self {
        Self {
            ledger: Ledger::new(config),
            dedup: DedupTable::with_capacity(dedup_entries),
            deadlines: BinaryHeap::new(),
            touched: Vec::new(),
            in_batch: HashMap::new(),
            next: 0,
        }
    }

    /// The sequence the next record must have.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The replica.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The replica's state hash.
    pub fn state_hash(&self) -> u64 {
        self.ledger.state_hash()
    }

    /// Applies a record without producing rows (catching up to a checkpoint).
    pub fn skip(&mut self, record: &Record<'_>) -> Result<(), Gap> {
        self.step(record, None)
    }

    /// Applies a record and adds its rows to `batch`.
    pub fn derive(&mut self, record: &Record<'_>, batch: &mut Batch) -> Result<(), Gap> {
        debug_assert_eq!(batch.next, self.next, "batch continues the deriver");
        self.step(record, Some(batch))
    }

    /// Closes `batch`: the changed accounts as they stand now (unless
    /// `defer_accounts`: a rebuild writes every account once, at the end,
    /// with [`Deriver::all_accounts`]), the state hash.
    pub fn seal(&mut self, batch: &mut Batch, defer_accounts: bool) {
        self.touched.sort_unstable();
        self.touched.dedup();
        batch.accounts.clear();
        if !defer_accounts {
            batch.accounts.extend(
                self.touched
                    .iter()
                    .map(|&id| *self.ledger.account(id).expect("touched accounts exist")),
            );
        }
        self.touched.clear();
        self.in_batch.clear();
        batch.state_hash = self.ledger.state_hash();
    }

    /// A batch of no commands holding every account as it stands (the end
    /// of a rebuild), sorted by id.
    pub fn all_accounts(&self) -> Batch {
        let mut batch = Batch::starting_at(self.next);
        batch.accounts.extend(self.ledger.accounts().copied());
        batch.accounts.sort_unstable_by_key(|a| a.id);
        batch.state_hash = self.ledger.state_hash();
        batch
    }

    fn step(&mut self, record: &Record<'_>, batch: Option<&mut Batch>) -> Result<(), Gap> {
        self.step_parts(
            record.header.sequence,
            &record.header.meta,
            record.payload,
            batch,
        )
    }

    /// Applies a record held as parts (a copy kept until the journal vouches for it).
    pub fn derive_parts(
        &mut self,
        sequence: u64,
        meta: &RecordMeta,
        payload: &[u8],
        batch: &mut Batch,
    ) -> Result<(), Gap> {
        self.step_parts(sequence, meta, payload, Some(batch))
    }

    fn step_parts(
        &mut self,
        sequence: u64,
        m: &RecordMeta,
        payload: &[u8],
        batch: Option<&mut Batch>,
    ) -> Result<(), Gap> {
        if sequence != self.next {
            return Err(Gap {
                expected: self.next,
                found: sequence,
            });
        }
        let header = m.command_header(payload.len());
        let command = CommandRef {
            sequence,
            header: &header,
            payload,
        };
        let accounts_before = self.ledger.accounts_len();
        let transfers_before = self.ledger.transfers_len();
        // The ledger's clock for this command (see `Ledger::apply`): pending
        // transfers with a deadline at or before it expire first.
        let base = m.timestamp_ns.max(self.ledger.last_timestamp() + 1);
        let applied = apply(&mut self.ledger, &mut self.dedup, &command);
        self.next = sequence + 1;

        let mut batch = batch;
        if applied.executed {
            self.expire(base, batch.as_deref_mut());
        }
        let mut results = [0u8; EVENTS_PER_COMMAND_MAX];
        let mut events = 0;
        let creates = matches!(
            m.command_type,
            command_type::CREATE_ACCOUNTS | command_type::CREATE_TRANSFERS
        );
        if creates {
            if let Ok(decoded) = event_results(m.command_type, &applied.outcome) {
                let codes = decoded.codes();
                results[..codes.len()].copy_from_slice(codes);
                events = codes.len() as u8;
            }
        }
        // Created transfers are the accepted events, in event order.
        let mut accepted = (0..events).filter(|&i| results[usize::from(i)] == 0);
        if batch.is_some() {
            let created = self.ledger.accounts_from(accounts_before).map(|a| a.id);
            self.touched.extend(created);
        }
        for position in transfers_before..self.ledger.transfers_len() {
            let (transfer, state) = self
                .ledger
                .transfers_from(position)
                .next()
                .map(|(t, s)| (*t, s))
                .expect("created transfer");
            if transfer.flags & transfer_flags::PENDING != 0 && transfer.timeout != 0 {
                let deadline = u64::from(transfer.timeout)
                    .saturating_mul(NS_PER_SECOND)
                    .saturating_add(transfer.timestamp);
                self.deadlines.push(Reverse((deadline, transfer.id)));
            }
            let Some(batch) = batch.as_deref_mut() else {
                continue;
            };
            self.touched.push(transfer.debit_account_id);
            self.touched.push(transfer.credit_account_id);
            let resolves = transfer.flags
                & (transfer_flags::POST_PENDING_TRANSFER | transfer_flags::VOID_PENDING_TRANSFER)
                != 0;
            if resolves {
                let (_, pending_state) = self
                    .ledger
                    .transfer(transfer.pending_id)
                    .expect("a resolved pending transfer exists");
                Self::set_state(&self.in_batch, batch, transfer.pending_id, pending_state);
            }
            if state == PendingState::Pending {
                self.in_batch.insert(transfer.id, batch.transfers.len());
            }
            batch.transfers.push(TransferRow {
                sequence,
                event: accepted
                    .next()
                    .expect("a created transfer is an accepted event"),
                transfer,
                state,
            });
        }

        if let Some(batch) = batch {
            batch.commands.push(CommandRow {
                sequence,
                timestamp_ns: m.timestamp_ns,
                command_type: m.command_type,
                idempotency_key: m.idempotency_key,
                correlation_id: m.correlation_id,
                tenant_id: m.tenant_id,
                duplicate: applied.duplicate,
                code: applied.outcome.code.0,
                results,
                events,
            });
            batch.next = self.next;
        }
        Ok(())
    }

    /// Mirrors the ledger's expiry at the start of a command: every pending
    /// transfer with a deadline at or before `now` that the ledger expired.
    fn expire(&mut self, now: u64, mut batch: Option<&mut Batch>) {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                return;
            }
            self.deadlines.pop();
            let (transfer, state) = self
                .ledger
                .transfer(id)
                .expect("deadline of a known transfer");
            if state != PendingState::Expired {
                continue; // posted or voided before its deadline
            }
            let (debit, credit) = (transfer.debit_account_id, transfer.credit_account_id);
            if let Some(batch) = batch.as_deref_mut() {
                self.touched.push(debit);
                self.touched.push(credit);
                Self::set_state(&self.in_batch, batch, id, PendingState::Expired);
            }
        }
    }

    /// Records a pending transfer's new state: in its row if the batch
    /// created it, else as an update of an earlier batch's row.
    fn set_state(
        in_batch: &HashMap<u128, usize>,
        batch: &mut Batch,
        id: u128,
        state: PendingState,
    ) {
        match in_batch.get(&id) {
            Some(&index) => batch.transfers[index].state = state,
            None => batch.state_changes.push((id, state)),
        }
    }
}
