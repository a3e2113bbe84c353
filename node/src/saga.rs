//! Cross-shard transfers as sagas of the ledger's own two-phase transfers
//! (ADR 0014): in one round trip a begin record plus a reservation on the
//! debit shard and a begin record plus a pending credit on the credit
//! shard; then the decision, by posting (or voiding) the reservation on
//! the debit shard; then the credit settled as decided; then an end record.
//! Every step's id is derived from the saga id, so a retried step is
//! answered `exists`; the saga's log is in its shards' journals
//! (`SAGA_RECORD`), which recovery (`ShardedNode::recover_sagas`) scans
//! to finish what a dead driver left open.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use keel_core::{Ack, PendingAck};
use keel_journal::{FsStorage, JournalTail};
use keel_ledger::client::block_on;
use keel_ledger::commands::{self, command_type, saga_kind, SagaRecord};
use keel_ledger::routing::{clearing_account_id, saga_step_id};
use keel_ledger::{
    transfer_flags, Account, ClientError, CreateAccountResult, CreateTransferResult, LedgerClient,
    PendingState, Transfer,
};

use crate::sharded::ShardError;

/// Step numbers (the `step` of [`saga_step_id`]).
mod step {
    pub const RESERVE: u8 = 1;
    pub const CREDIT: u8 = 2;
    pub const POST_RESERVE: u8 = 3;
    pub const VOID_RESERVE: u8 = 4;
    pub const POST_CREDIT: u8 = 5;
    pub const VOID_CREDIT: u8 = 6;
}

/// Which side of a cross-shard transfer refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaSide {
    /// The reservation on the debit account's shard.
    Debit,
    /// The pending credit on the credit account's shard.
    Credit,
}

/// How a cross-shard transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaOutcome {
    /// Both sides posted: the amount moved.
    Committed,
    /// A side refused; whatever was reserved is voided. `code` is that
    /// side's result (what a single-shard transfer would have answered).
    Failed {
        /// The side that refused.
        side: SagaSide,
        /// Its result.
        code: CreateTransferResult,
    },
    /// The reservation expired before the saga could post it (its driver
    /// was slower than `shards.reserve_timeout_seconds`); nothing moved.
    Expired,
}

impl SagaOutcome {
    /// The per-event code a batch reports for this saga (`ok`, the refusing
    /// side's code, or `pending_transfer_expired`).
    pub fn code(self) -> CreateTransferResult {
        match self {
            SagaOutcome::Committed => CreateTransferResult::ok,
            SagaOutcome::Failed { code, .. } => code,
            SagaOutcome::Expired => CreateTransferResult::pending_transfer_expired,
        }
    }

    fn to_record(self) -> (u8, u8) {
        match self {
            SagaOutcome::Committed => (1, 0),
            SagaOutcome::Failed { side, code } => match side {
                SagaSide::Debit => (2, code as u8),
                SagaSide::Credit => (3, code as u8),
            },
            SagaOutcome::Expired => (4, 0),
        }
    }
}

/// Where a saga stands, read from its step transfers (`saga_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaStatus {
    /// The debit shard holds no reservation: never begun, or refused.
    NotReserved,
    /// Reserved; not decided yet (a driver or a recovery will decide).
    InProgress,
    /// Decided and settled, or decided with the credit side still pending.
    Committed {
        /// Whether the credit side is posted too.
        settled: bool,
    },
    /// The reservation was voided or expired: nothing moved (the credit
    /// side, if created, is voided or will be).
    Aborted,
}

/// The node's saga bookkeeping: one actor per saga in this process, and
/// which clearing accounts exist.
#[derive(Debug)]
pub(crate) struct Sagas {
    in_flight: Mutex<HashSet<u128>>,
    clearing: Mutex<HashSet<(u16, u16, u32)>>,
    pub(crate) reserve_timeout: u32,
}

/// Holds a saga's id in the in-flight set; removes it when dropped.
struct Claim<'a>(&'a Sagas, u128);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.0.in_flight).remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sagas {
    pub(crate) fn new(reserve_timeout: u32) -> Self {
        Self {
            in_flight: Mutex::default(),
            clearing: Mutex::default(),
            reserve_timeout,
        }
    }

    fn claim(&self, saga: u128) -> Result<Claim<'_>, ShardError> {
        match lock(&self.in_flight).insert(saga) {
            true => Ok(Claim(self, saga)),
            false => Err(ShardError::SagaInFlight { saga }),
        }
    }

    /// Creates the clearing accounts a saga between `s1` and `s2` in
    /// `ledger` needs (once per process; `exists` is success).
    fn ensure_clearing(
        &self,
        clients: &mut [LedgerClient],
        s1: u16,
        s2: u16,
        ledger: u32,
    ) -> Result<(), ShardError> {
        for (owner, peer) in [(s1, s2), (s2, s1)] {
            if lock(&self.clearing).contains(&(owner, peer, ledger)) {
                continue;
            }
            let account = Account {
                id: clearing_account_id(owner, peer, ledger),
                ledger,
                code: 1,
                ..Account::default()
            };
            let client = &mut clients[usize::from(owner)];
            let (_, results) = client
                .create_accounts(&[account], Default::default())
                .map_err(|e| ShardError::client(owner, e))?;
            let code = results.codes()[0];
            if code != CreateAccountResult::ok as u8 && code != CreateAccountResult::exists as u8 {
                return Err(ShardError::Clearing {
                    shard: owner,
                    code: CreateAccountResult::from_u8(code)
                        .unwrap_or(CreateAccountResult::linked_event_failed),
                });
            }
            lock(&self.clearing).insert((owner, peer, ledger));
        }
        Ok(())
    }
}

/// What one saga is: the caller's transfer and where its accounts are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Saga {
    pub transfer: Transfer,
    pub debit_shard: u16,
    pub credit_shard: u16,
    /// The reservation's timeout (seconds), as the begin record holds it.
    pub timeout: u32,
}

impl Saga {
    fn record(&self, kind: u8, outcome: Option<SagaOutcome>) -> SagaRecord {
        let (outcome, code) = outcome.map_or((0, 0), SagaOutcome::to_record);
        let mut transfer = self.transfer;
        transfer.timeout = self.timeout;
        SagaRecord {
            kind,
            transfer,
            debit_shard: self.debit_shard,
            credit_shard: self.credit_shard,
            outcome,
            code,
        }
    }

    fn from_record(record: &SagaRecord) -> Self {
        Self {
            transfer: Transfer {
                timeout: 0,
                ..record.transfer
            },
            debit_shard: record.debit_shard,
            credit_shard: record.credit_shard,
            timeout: record.transfer.timeout,
        }
    }

    fn reserve(&self) -> Transfer {
        let t = &self.transfer;
        Transfer {
            id: saga_step_id(t.id, step::RESERVE),
            credit_account_id: clearing_account_id(self.debit_shard, self.credit_shard, t.ledger),
            pending_id: 0,
            timeout: self.timeout,
            flags: transfer_flags::PENDING,
            timestamp: 0,
            ..*t
        }
    }

    fn credit(&self) -> Transfer {
        let t = &self.transfer;
        Transfer {
            id: saga_step_id(t.id, step::CREDIT),
            debit_account_id: clearing_account_id(self.credit_shard, self.debit_shard, t.ledger),
            pending_id: 0,
            timeout: 0, // never expires: see ADR 0014, "Why the credit side has no timeout"
            flags: transfer_flags::PENDING,
            timestamp: 0,
            ..*t
        }
    }

    fn finish(&self, id_step: u8, of_step: u8, post: bool) -> Transfer {
        Transfer {
            id: saga_step_id(self.transfer.id, id_step),
            pending_id: saga_step_id(self.transfer.id, of_step),
            amount: if post { self.transfer.amount } else { 0 },
            flags: match post {
                true => transfer_flags::POST_PENDING_TRANSFER,
                false => transfer_flags::VOID_PENDING_TRANSFER,
            },
            ..Transfer::default()
        }
    }
}

fn code_of(code: u8) -> CreateTransferResult {
    CreateTransferResult::from_u8(code).unwrap_or(CreateTransferResult::linked_event_failed)
}

fn wait(shard: u16, ack: PendingAck) -> Result<Ack, ShardError> {
    block_on(ack).map_err(|e| ShardError::client(shard, ClientError::Submit(e)))
}

fn applied(code: CreateTransferResult) -> bool {
    code == CreateTransferResult::ok || code == CreateTransferResult::exists
}

/// Runs saga `saga` to its end on `clients` (one per shard, all of the
/// saga's tenant); see [`run_many`].
pub(crate) fn run(
    sagas: &Sagas,
    clients: &mut [LedgerClient],
    saga: &Saga,
    begin: bool,
    abandon_after: Option<u8>,
) -> Result<Option<SagaOutcome>, ShardError> {
    let outcomes = run_many(
        sagas,
        clients,
        std::slice::from_ref(saga),
        begin,
        abandon_after,
    )?;
    Ok(outcomes.map(|o| o[0]))
}

/// Runs `list` to their ends together: each phase's commands for every
/// saga are in the rings at once, so k sagas cost the round trips of one.
/// `begin`: journal the begin records (new sagas); recovered ones have
/// them. `abandon_after`: stop after that phase (1: the debit side's begin
/// and reservation only, 2: both sides', 3: the decision, 4: the
/// settlement) as a driver that died there would (fault-injection tests);
/// `None` from here means abandoned. An error leaves the sagas open for
/// recovery.
pub(crate) fn run_many(
    sagas: &Sagas,
    clients: &mut [LedgerClient],
    list: &[Saga],
    begin: bool,
    abandon_after: Option<u8>,
) -> Result<Option<Vec<SagaOutcome>>, ShardError> {
    let dies_after = |phase: u8| abandon_after == Some(phase);
    let _claims = list
        .iter()
        .map(|saga| sagas.claim(saga.transfer.id))
        .collect::<Result<Vec<_>, _>>()?;
    for saga in list {
        let t = &saga.transfer;
        sagas.ensure_clearing(clients, saga.debit_shard, saga.credit_shard, t.ledger)?;
    }

    // 1. Begin, reserve and credit: on each shard a begin record per saga,
    // then the steps packed into commands of up to 7 events, all in the
    // rings at once (one round trip). Both shards hold the begin record, so
    // whichever reaches its journal before a crash, recovery finds the
    // saga. The credit is pending with no timeout: it holds no money, and
    // the decision below settles it.
    let mut first: Vec<(u16, Transfer)> =
        list.iter().map(|s| (s.debit_shard, s.reserve())).collect();
    if !dies_after(1) {
        first.extend(list.iter().map(|s| (s.credit_shard, s.credit())));
    }
    // Each shard's begin records go into its ring right before its steps,
    // so one journal write usually carries both.
    let mut records = Vec::new();
    let first = submit_packed(clients, &first, |client, shard| {
        if !begin {
            return Ok(());
        }
        for saga in list {
            let credit_side = saga.credit_shard == shard && !dies_after(1);
            if saga.debit_shard == shard || credit_side {
                let ack = client
                    .saga_record_async(&saga.record(saga_kind::BEGIN, None))
                    .map_err(|e| ShardError::client(shard, e))?;
                records.push((shard, ack));
            }
        }
        Ok(())
    })?;
    for (shard, ack) in records {
        wait(shard, ack)?;
    }
    let first = finish_packed(first)?;
    if dies_after(1) || dies_after(2) {
        return Ok(None);
    }
    let steps: Vec<(CreateTransferResult, CreateTransferResult)> = (0..list.len())
        .map(|i| (first[i], first[list.len() + i]))
        .collect();

    // 2. The decision, on the debit shard alone: post the reservation if
    // both sides took their step, else void it (a refused reservation:
    // nothing to decide, its credit is voided in 3). The debit shard's BLP
    // decides whether the post lands before the reservation's deadline;
    // any answer but ok/exists (expired, already voided, a retry's failed
    // id) is settled by what the reservation now is.
    let mut decide: Vec<(u16, Transfer)> = Vec::new();
    let mut deciding: Vec<usize> = Vec::new();
    for (i, (saga, &(reserved, credited))) in list.iter().zip(&steps).enumerate() {
        if applied(reserved) {
            let (id_step, post) = match applied(credited) {
                true => (step::POST_RESERVE, true),
                false => (step::VOID_RESERVE, false),
            };
            decide.push((saga.debit_shard, saga.finish(id_step, step::RESERVE, post)));
            deciding.push(i);
        }
    }
    let decided = finish_packed(submit_packed(clients, &decide, |_, _| Ok(()))?)?;
    let mut committed = vec![false; list.len()];
    for (&i, code) in deciding.iter().zip(decided) {
        let saga = &list[i];
        let s1 = saga.debit_shard;
        committed[i] = match code {
            code if applied(code) => applied(steps[i].1),
            code => {
                let reserve = saga_step_id(saga.transfer.id, step::RESERVE);
                match pending_state(clients, s1, reserve)? {
                    Some(PendingState::Posted) => true,
                    Some(PendingState::Voided | PendingState::Expired) => false,
                    _ => return Err(ShardError::Step { shard: s1, code }),
                }
            }
        };
    }
    if dies_after(3) {
        return Ok(None);
    }

    // 3. Settle every credit side as decided.
    let settle: Vec<(u16, Transfer)> = list
        .iter()
        .zip(&committed)
        .map(|(saga, &commit)| {
            let finish = match commit {
                true => saga.finish(step::POST_CREDIT, step::CREDIT, true),
                false => saga.finish(step::VOID_CREDIT, step::CREDIT, false),
            };
            (saga.credit_shard, finish)
        })
        .collect();
    let settles = finish_packed(submit_packed(clients, &settle, |_, _| Ok(()))?)?;
    for ((saga, &commit), code) in list.iter().zip(&committed).zip(settles) {
        settled(clients, saga, code, commit)?;
    }
    if dies_after(4) {
        return Ok(None);
    }

    // 4. The end records, on the debit shards.
    let mut outcomes = Vec::with_capacity(list.len());
    let mut ends = Vec::new();
    for ((saga, &(reserved, credited)), &commit) in list.iter().zip(&steps).zip(&committed) {
        let outcome = match (commit, applied(reserved), applied(credited)) {
            (true, _, _) => SagaOutcome::Committed,
            (false, false, _) => SagaOutcome::Failed {
                side: SagaSide::Debit,
                code: reserved,
            },
            (false, true, false) => SagaOutcome::Failed {
                side: SagaSide::Credit,
                code: credited,
            },
            (false, true, true) => SagaOutcome::Expired,
        };
        let s1 = saga.debit_shard;
        let ack = clients[usize::from(s1)]
            .saga_record_async(&saga.record(saga_kind::END, Some(outcome)))
            .map_err(|e| ShardError::client(s1, e))?;
        ends.push((s1, ack));
        outcomes.push(outcome);
    }
    // A caller is not kept waiting: the sagas are settled, and a lost end
    // record only costs a recovery an idempotent re-run. A recovery waits,
    // so the next one does not run them again.
    if !begin {
        for (s1, ack) in ends {
            wait(s1, ack)?;
        }
    }
    Ok(Some(outcomes))
}

/// Commands submitted by [`submit_packed`]: per command its shard, the
/// indices of its items, and its acknowledgement.
struct Packed {
    commands: Vec<(u16, Vec<usize>, PendingAck)>,
    items: usize,
}

/// Submits each item's transfer to its shard, the items of one shard
/// packed into commands of up to 7 independent (unlinked) events, each
/// shard's right after what `before` submits to it.
fn submit_packed(
    clients: &mut [LedgerClient],
    items: &[(u16, Transfer)],
    mut before: impl FnMut(&mut LedgerClient, u16) -> Result<(), ShardError>,
) -> Result<Packed, ShardError> {
    let mut commands = Vec::new();
    for shard in 0..clients.len() as u16 {
        before(&mut clients[usize::from(shard)], shard)?;
        let mine: Vec<usize> = (0..items.len()).filter(|&i| items[i].0 == shard).collect();
        for chunk in mine.chunks(keel_ledger::commands::TRANSFERS_PER_COMMAND_MAX) {
            let transfers: Vec<Transfer> = chunk.iter().map(|&i| items[i].1).collect();
            let ack = clients[usize::from(shard)]
                .create_transfers_async(&transfers, Default::default())
                .map_err(|e| ShardError::client(shard, e))?;
            commands.push((shard, chunk.to_vec(), ack));
        }
    }
    Ok(Packed {
        commands,
        items: items.len(),
    })
}

/// Each item's result, in the items' order.
fn finish_packed(packed: Packed) -> Result<Vec<CreateTransferResult>, ShardError> {
    let mut codes = vec![CreateTransferResult::ok; packed.items];
    for (shard, indices, ack) in packed.commands {
        let ack = wait(shard, ack)?;
        keel_ledger::client::check_shard(&ack).map_err(|e| ShardError::client(shard, e))?;
        let results = commands::event_results(command_type::CREATE_TRANSFERS, &ack.outcome)
            .map_err(|e| ShardError::client(shard, e.into()))?;
        for (&i, &code) in indices.iter().zip(results.codes()) {
            codes[i] = code_of(code);
        }
    }
    Ok(codes)
}

/// Checks a settlement's answer: anything but ok/exists must leave the
/// credit transfer posted (`post`) or voided / never made.
fn settled(
    clients: &mut [LedgerClient],
    saga: &Saga,
    code: CreateTransferResult,
    post: bool,
) -> Result<(), ShardError> {
    if applied(code) {
        return Ok(());
    }
    let s2 = saga.credit_shard;
    let credit = pending_state(clients, s2, saga_step_id(saga.transfer.id, step::CREDIT))?;
    let done = match post {
        true => credit == Some(PendingState::Posted),
        false => matches!(credit, None | Some(PendingState::Voided)),
    };
    match done {
        true => Ok(()),
        false => Err(ShardError::Step { shard: s2, code }),
    }
}

/// The pending state of transfer `id` on `shard` (`None`: no such transfer).
fn pending_state(
    clients: &mut [LedgerClient],
    shard: u16,
    id: u128,
) -> Result<Option<PendingState>, ShardError> {
    let status = clients[usize::from(shard)]
        .lookup_transfer(id)
        .map_err(|e| ShardError::client(shard, e))?;
    Ok(status.map(|s| PendingState::from_u8(s.pending_state)))
}

/// Where saga `saga` (debit on `s1`, credit on `s2`) stands.
pub(crate) fn status(
    clients: &mut [LedgerClient],
    saga: u128,
    s1: u16,
    s2: u16,
) -> Result<SagaStatus, ShardError> {
    let reserve = pending_state(clients, s1, saga_step_id(saga, step::RESERVE))?;
    Ok(match reserve {
        None => SagaStatus::NotReserved,
        Some(PendingState::Pending) => SagaStatus::InProgress,
        Some(PendingState::Posted) => {
            let credit = pending_state(clients, s2, saga_step_id(saga, step::CREDIT))?;
            SagaStatus::Committed {
                settled: credit == Some(PendingState::Posted),
            }
        }
        Some(_) => SagaStatus::Aborted,
    })
}

/// What `ShardedNode::recover_sagas` found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SagaRecovery {
    /// Sagas begun, over every shard's journal.
    pub begun: u64,
    /// Sagas with no end record, driven to their end now.
    pub resumed: u64,
    /// Of those, committed.
    pub committed: u64,
    /// Skipped: another caller in this process is driving them.
    pub in_flight: u64,
}

/// The sagas begun and not ended, as read from the shards' journals. Every
/// shard of a saga journals its begin record and the debit shard its end
/// record, in no order across journals: an ended saga is remembered (for
/// [`ENDED_TICKS`] reads of a follower) so a begin read after its end does
/// not reopen it.
#[derive(Default)]
struct SagaLog {
    /// Open sagas: their tenant, the saga, and its begin record's time (ns).
    open: HashMap<u128, (u32, Saga, u64)>,
    /// Ended sagas, with the read (tick) that saw them end.
    ended: HashMap<u128, u64>,
}

impl SagaLog {
    /// Takes in the records `tail` hands over below `bound`.
    fn read(
        &mut self,
        tail: &mut JournalTail<'_, FsStorage>,
        bound: u64,
        tick: u64,
    ) -> Result<(), keel_journal::TailError> {
        tail.poll(bound, &mut |r| {
            if r.header.meta.command_type != command_type::SAGA_RECORD {
                return;
            }
            let Ok(record) = keel_codecs::Rkyv::decode::<SagaRecord>(r.payload) else {
                return; // the BLP answered it malformed: no saga's
            };
            let id = record.transfer.id;
            match record.kind {
                saga_kind::BEGIN if !self.ended.contains_key(&id) => {
                    let meta = &r.header.meta;
                    let saga = Saga::from_record(&record);
                    self.open
                        .entry(id)
                        .or_insert((meta.tenant_id, saga, meta.timestamp_ns));
                }
                saga_kind::BEGIN => {}
                _ => self.end(id, tick),
            }
        })?;
        Ok(())
    }

    fn end(&mut self, id: u128, tick: u64) {
        self.open.remove(&id);
        self.ended.insert(id, tick);
    }

    /// Open sagas whose begin is at least `age` old at `now` (ns).
    fn due(&self, now: u64, age: u64) -> Vec<u128> {
        self.open
            .iter()
            .filter(|(_, (_, _, begun))| now.saturating_sub(*begun) >= age)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Drives open saga `id` to its end on `clients` (switched to its
    /// tenant); its outcome, `None` if another caller is driving it.
    fn resume(
        &mut self,
        sagas: &Sagas,
        clients: &mut [LedgerClient],
        id: u128,
        tick: u64,
    ) -> Result<Option<SagaOutcome>, ShardError> {
        let (tenant, saga, _) = self.open[&id];
        for client in clients.iter_mut() {
            client.set_tenant(tenant);
        }
        match run(sagas, clients, &saga, false, None) {
            Ok(outcome) => {
                self.end(id, tick);
                Ok(outcome)
            }
            Err(ShardError::SagaInFlight { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Scans each shard's journal (`journals[i]`: its directory and durable
/// bound) for sagas begun and not ended, and drives each to its end on
/// `clients` (one per shard). Safe while sagas run: one in flight
/// elsewhere is skipped.
pub(crate) fn recover(
    sagas: &Sagas,
    journals: &[(std::path::PathBuf, u64)],
    clients: &mut [LedgerClient],
) -> Result<SagaRecovery, ShardError> {
    let mut log = SagaLog::default();
    for (shard, (dir, durable)) in journals.iter().enumerate() {
        let recovery = |e: String| ShardError::Recovery(format!("shard {shard}: {e}"));
        let storage = FsStorage::open_read_only(dir).map_err(|e| recovery(e.to_string()))?;
        log.read(&mut JournalTail::new(&storage, 0), *durable, 0)
            .map_err(|e| recovery(e.to_string()))?;
    }
    let mut report = SagaRecovery {
        begun: (log.open.len() + log.ended.len()) as u64,
        ..SagaRecovery::default()
    };
    for id in log.due(u64::MAX, 0) {
        match log.resume(sagas, clients, id, 0)? {
            Some(outcome) => {
                report.resumed += 1;
                report.committed += u64::from(outcome == SagaOutcome::Committed);
            }
            None => report.in_flight += 1,
        }
    }
    Ok(report)
}

/// What the background recoverer did so far.
#[derive(Debug, Default)]
pub struct RecovererStats {
    /// Sagas it drove to their end.
    pub resumed: std::sync::atomic::AtomicU64,
    /// Of those, committed.
    pub committed: std::sync::atomic::AtomicU64,
    /// Attempts that failed (the saga stays open and is tried again).
    pub errors: std::sync::atomic::AtomicU64,
}

/// The background saga recoverer: a thread that follows every shard's
/// journal (each record read once) and drives to its end every saga whose
/// begin record is older than `age` and that has no end record, so a
/// caller that died mid-saga is made up for without a restart.
#[derive(Debug)]
pub(crate) struct Recoverer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) stats: std::sync::Arc<RecovererStats>,
}

/// One shard as the recoverer sees it.
pub(crate) struct Followed {
    pub dir: std::path::PathBuf,
    pub status: keel_journal::JournalStatus,
    pub client: LedgerClient,
}

impl Recoverer {
    pub(crate) fn spawn(
        sagas: std::sync::Arc<Sagas>,
        shards: Vec<Followed>,
        interval: std::time::Duration,
        age: std::time::Duration,
    ) -> Result<Self, String> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats = std::sync::Arc::new(RecovererStats::default());
        // Opened here, so a journal it cannot read fails the start instead
        // of a thread that silently does nothing.
        let (mut statuses, mut clients, mut storages) = (Vec::new(), Vec::new(), Vec::new());
        for shard in shards {
            let storage = FsStorage::open_read_only(&shard.dir)
                .map_err(|e| format!("{}: {e}", shard.dir.display()))?;
            statuses.push(shard.status);
            clients.push(shard.client);
            storages.push(storage);
        }
        let thread = std::thread::Builder::new()
            .name("keel-saga-recoverer".into())
            .spawn({
                let (stop, stats) = (stop.clone(), stats.clone());
                move || {
                    let followed = Following {
                        storages,
                        statuses,
                        clients,
                    };
                    follow(&sagas, followed, interval, age, &stop, &stats)
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }
}

impl Drop for Recoverer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Ticks a saga stays in the recently-ended set: a begin record on the
/// credit shard can be read a tick after the end record on the debit shard.
const ENDED_TICKS: u64 = 8;

/// The shards as the recoverer thread holds them, index by index.
struct Following {
    storages: Vec<FsStorage>,
    statuses: Vec<keel_journal::JournalStatus>,
    clients: Vec<LedgerClient>,
}

fn follow(
    sagas: &Sagas,
    followed: Following,
    interval: std::time::Duration,
    age: std::time::Duration,
    stop: &std::sync::atomic::AtomicBool,
    stats: &RecovererStats,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let Following {
        storages,
        statuses,
        mut clients,
    } = followed;
    let mut tails: Vec<JournalTail<'_, FsStorage>> =
        storages.iter().map(|s| JournalTail::new(s, 0)).collect();
    let mut log = SagaLog::default();
    for tick in 0u64.. {
        std::thread::park_timeout(interval);
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        for (tail, status) in tails.iter_mut().zip(&statuses) {
            if log.read(tail, status.durable_next(), tick).is_err() {
                stats.errors.fetch_add(1, Relaxed);
            }
        }
        log.ended.retain(|_, at| tick - *at < ENDED_TICKS);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for id in log.due(now, age.as_nanos() as u64) {
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            match log.resume(sagas, &mut clients, id, tick) {
                Ok(Some(outcome)) => {
                    stats.resumed.fetch_add(1, Relaxed);
                    let committed = outcome == SagaOutcome::Committed;
                    stats.committed.fetch_add(u64::from(committed), Relaxed);
                }
                Ok(None) => {}
                Err(_) => {
                    stats.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
}
