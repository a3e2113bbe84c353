//! The ledger's wire: command types, their encoded payloads (rkyv, through
//! `keel-codecs`) and the result bodies, plus the helpers a host uses to build
//! commands and read acknowledgements. Byte layouts: `docs/codecs.md`.

use keel_codecs::{DecodeError, EncodeError, Migrate, Rkyv, Schema};
use keel_core::constants::{PAYLOAD_BYTES_MAX, RESULT_BYTES_MAX};
use keel_core::{Command, Outcome, ResultCode};
use rkyv::with::InlineAsBox;
use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Account, Transfer};

/// Command types (`Command::command_type`).
pub mod command_type {
    /// A batch of up to [`super::ACCOUNTS_PER_COMMAND_MAX`] accounts.
    pub const CREATE_ACCOUNTS: u16 = 1;
    /// A batch of up to [`super::TRANSFERS_PER_COMMAND_MAX`] transfers.
    pub const CREATE_TRANSFERS: u16 = 2;
    /// Balances of one account (read through the log: linearized with writes).
    pub const LOOKUP_ACCOUNT: u16 = 3;
    /// State of one transfer (read through the log).
    pub const LOOKUP_TRANSFER: u16 = 4;
    /// Installs the slots a shard owns ([`crate::routing::Ownership`]): a
    /// journaled write, so replay makes every routing decision again.
    pub const SET_OWNERSHIP: u16 = 5;
    /// A cross-shard saga's log entry ([`super::SagaRecord`]): journaled
    /// in the source shard, answered ok, no change to the ledger.
    pub const SAGA_RECORD: u16 = 6;
}

/// Accounts one command carries (a linked chain is at most this long).
pub const ACCOUNTS_PER_COMMAND_MAX: usize = 9;
/// Transfers one command carries (a linked chain is at most this long).
pub const TRANSFERS_PER_COMMAND_MAX: usize = 7;
/// Events of either kind one command carries.
pub const EVENTS_PER_COMMAND_MAX: usize = ACCOUNTS_PER_COMMAND_MAX;

/// Batch overhead: codec header (4) and the archived slice's relative pointer and length (8).
const BATCH_OVERHEAD_BYTES: usize = keel_codecs::HEADER_BYTES + 8;
/// Bytes of one archived account.
const ACCOUNT_BYTES: usize = std::mem::size_of::<crate::types::ArchivedAccount>();
/// Bytes of one archived transfer.
const TRANSFER_BYTES: usize = std::mem::size_of::<crate::types::ArchivedTransfer>();
const _: () = assert!(BATCH_OVERHEAD_BYTES + ACCOUNTS_PER_COMMAND_MAX * 96 <= PAYLOAD_BYTES_MAX);
const _: () =
    assert!(BATCH_OVERHEAD_BYTES + (ACCOUNTS_PER_COMMAND_MAX + 1) * 96 > PAYLOAD_BYTES_MAX);
const _: () = assert!(BATCH_OVERHEAD_BYTES + TRANSFERS_PER_COMMAND_MAX * 120 <= PAYLOAD_BYTES_MAX);
const _: () =
    assert!(BATCH_OVERHEAD_BYTES + (TRANSFERS_PER_COMMAND_MAX + 1) * 120 > PAYLOAD_BYTES_MAX);
const _: () = assert!(TRANSFERS_PER_COMMAND_MAX <= EVENTS_PER_COMMAND_MAX);

/// Engine-level result codes of a ledger command ([`Outcome::code`]).
pub mod outcome_code {
    use keel_core::ResultCode;
    /// Every event applied (creates), or the record was found (lookups).
    pub const OK: ResultCode = ResultCode(0);
    /// At least one event was rejected: per-event codes are in the [`super::EventResults`] body.
    pub const EVENTS_REJECTED: ResultCode = ResultCode(1);
    /// A lookup found no such id.
    pub const NOT_FOUND: ResultCode = ResultCode(2);
    /// The payload or command type is not a ledger command (the validator
    /// refuses these before the ring; a crafted journal can still hold one).
    pub const MALFORMED: ResultCode = ResultCode(3);
    /// The command names an account whose slot this shard does not own;
    /// nothing was applied. Body: [`super::WrongShard`].
    pub const WRONG_SHARD: ResultCode = ResultCode(4);
    /// `SET_OWNERSHIP` with a table version not above the installed one;
    /// nothing changed. Body: [`super::WrongShard`] (the installed version).
    pub const TABLE_NOT_NEWER: ResultCode = ResultCode(5);
}

/// Body of `WRONG_SHARD` and `TABLE_NOT_NEWER`: the shard's table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongShard {
    /// The version of the table the shard's ownership came from.
    pub table_version: u64,
    /// [`crate::routing::Ownership::fingerprint`] of what the shard holds.
    pub fingerprint: u64,
}

impl Schema for WrongShard {
    const SCHEMA_ID: u16 = 19;
    const VERSION: u16 = 1;
    const NAME: &'static str = "wrong_shard";
}

impl Migrate for WrongShard {}

impl Schema for crate::routing::Ownership {
    const SCHEMA_ID: u16 = 5;
    const VERSION: u16 = 1;
    const NAME: &'static str = "ownership";
}

impl Migrate for crate::routing::Ownership {}

/// What a [`SagaRecord`] marks.
pub mod saga_kind {
    /// The saga starts; the record carries the whole transfer.
    pub const BEGIN: u8 = 1;
    /// The saga settled; the record carries its outcome.
    pub const END: u8 = 2;
}

/// Payload of `SAGA_RECORD`: one entry of a cross-shard saga's log, in the
/// debit (source) shard's journal (ADR 0014).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaRecord {
    /// [`saga_kind`].
    pub kind: u8,
    /// The transfer as the caller gave it (its id is the saga id).
    pub transfer: Transfer,
    /// The shard holding the debit account.
    pub debit_shard: u16,
    /// The shard holding the credit account.
    pub credit_shard: u16,
    /// `END`: the outcome (`SagaOutcome` as a number in keel-node); 0 at `BEGIN`.
    pub outcome: u8,
    /// `END`: the refusing step's `CreateTransferResult`, if any.
    pub code: u8,
}

impl Schema for SagaRecord {
    const SCHEMA_ID: u16 = 6;
    const VERSION: u16 = 1;
    const NAME: &'static str = "saga_record";
}

impl Migrate for SagaRecord {}

/// Payload of `CREATE_ACCOUNTS`: encoded from a borrowed slice, read in place.
#[derive(Archive, Serialize, Debug)]
pub struct CreateAccounts<'a> {
    /// The accounts, in order (linked chains are runs of `LINKED` flags).
    #[rkyv(with = InlineAsBox)]
    pub accounts: &'a [Account],
}

impl Schema for CreateAccounts<'_> {
    const SCHEMA_ID: u16 = 1;
    const VERSION: u16 = 1;
    const NAME: &'static str = "create_accounts";
}

/// Payload of `CREATE_TRANSFERS`: encoded from a borrowed slice, read in place.
#[derive(Archive, Serialize, Debug)]
pub struct CreateTransfers<'a> {
    /// The transfers, in order (linked chains are runs of `LINKED` flags).
    #[rkyv(with = InlineAsBox)]
    pub transfers: &'a [Transfer],
}

impl Schema for CreateTransfers<'_> {
    const SCHEMA_ID: u16 = 2;
    const VERSION: u16 = 1;
    const NAME: &'static str = "create_transfers";
}

/// Payload of both lookups.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The id looked up.
    pub id: u128,
}

impl Schema for Lookup {
    const SCHEMA_ID: u16 = 3;
    const VERSION: u16 = 1;
    const NAME: &'static str = "lookup";
}

impl Migrate for Lookup {}

/// Result body of a create command: one code per event, in order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventResults {
    /// Events in the command.
    pub count: u8,
    /// `CreateAccountResult` or `CreateTransferResult` values; `codes[..count]` are valid.
    pub codes: [u8; EVENTS_PER_COMMAND_MAX],
}

/// Version 2: the codes are TigerBeetle 0.17's numbers. Version 1 (the
/// same layout) holds Keel's earlier numbers; [`event_results`] translates
/// them, knowing the command type.
impl Schema for EventResults {
    const SCHEMA_ID: u16 = 16;
    const VERSION: u16 = 2;
    const NAME: &'static str = "event_results";
}

impl Migrate for EventResults {
    fn migrate(version: u16, body: &[u8]) -> Result<Self, DecodeError> {
        match version {
            // Same layout; the codes are translated by `event_results`.
            1 => {
                let archived = Rkyv::access_body::<EventResults>(version, body)?;
                Ok(EventResults {
                    count: archived.count,
                    codes: archived.codes,
                })
            }
            _ => Err(DecodeError::NoMigration {
                schema: Self::NAME,
                version,
                current: Self::VERSION,
            }),
        }
    }
}

impl EventResults {
    /// Bytes of an encoded `EventResults` (codec header + archive).
    pub const ENCODED_BYTES: usize = keel_codecs::HEADER_BYTES + 1 + EVENTS_PER_COMMAND_MAX;

    /// The encoding `Rkyv::encode` produces, written directly: the archive of
    /// two `u8` fields is those bytes in declaration order (unaligned
    /// layout), and this runs once per command on the BLP. Pinned by
    /// `event_results-v1.bin` and checked against rkyv in a test.
    pub fn encode_direct(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut out = [0u8; Self::ENCODED_BYTES];
        out[0..2].copy_from_slice(&Self::SCHEMA_ID.to_le_bytes());
        out[2..4].copy_from_slice(&Self::VERSION.to_le_bytes());
        out[4] = self.count;
        out[5..].copy_from_slice(&self.codes);
        out
    }

    /// The valid codes.
    pub fn codes(&self) -> &[u8] {
        &self.codes[..usize::from(self.count).min(EVENTS_PER_COMMAND_MAX)]
    }
}

/// Result body of `LOOKUP_ACCOUNT`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountBalance {
    /// Pending debits.
    pub debits_pending: u64,
    /// Posted debits.
    pub debits_posted: u64,
    /// Pending credits.
    pub credits_pending: u64,
    /// Posted credits.
    pub credits_posted: u64,
    /// Account flags (e.g. closed).
    pub flags: u16,
}

impl Schema for AccountBalance {
    const SCHEMA_ID: u16 = 17;
    const VERSION: u16 = 1;
    const NAME: &'static str = "account_balance";
}

impl Migrate for AccountBalance {}

/// Result body of `LOOKUP_TRANSFER`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferStatus {
    /// The amount moved (resolved: balancing caps and full posts applied).
    pub amount: u64,
    /// When the ledger applied it (ns).
    pub timestamp: u64,
    /// `PendingState` as a number.
    pub pending_state: u8,
    /// Transfer flags.
    pub flags: u16,
}

impl Schema for TransferStatus {
    const SCHEMA_ID: u16 = 18;
    const VERSION: u16 = 1;
    const NAME: &'static str = "transfer_status";
}

impl Migrate for TransferStatus {}

/// A `CREATE_ACCOUNTS` payload read in place.
pub type ArchivedAccountBatch<'a> = <CreateAccounts<'a> as Archive>::Archived;
/// A `CREATE_TRANSFERS` payload read in place.
pub type ArchivedTransferBatch<'a> = <CreateTransfers<'a> as Archive>::Archived;

/// Whether a batch payload of `n` events of `event_bytes` each is in the one
/// canonical form the encoder produces: 1..=`max` events, the events right
/// after the header, the root last, no other bytes. rkyv's validation alone
/// accepts unreferenced bytes and (for an empty slice) any offset; requiring
/// the canonical form means one command has one encoding.
/// A batch of `n` events, at most `max`; an empty batch is valid and gets
/// an empty result (as in TigerBeetle).
fn canonical(payload: &[u8], n: usize, event_bytes: usize, max: usize) -> bool {
    n <= max && payload.len() == BATCH_OVERHEAD_BYTES + n * event_bytes
}

/// The accounts of a `CREATE_ACCOUNTS` payload, validated and canonical.
pub fn access_create_accounts(payload: &[u8]) -> Option<&ArchivedAccountBatch<'_>> {
    let batch = Rkyv::access::<CreateAccounts<'_>>(payload).ok()?;
    let n = batch.accounts.len();
    canonical(payload, n, ACCOUNT_BYTES, ACCOUNTS_PER_COMMAND_MAX).then_some(batch)
}

/// The transfers of a `CREATE_TRANSFERS` payload, validated and canonical.
pub fn access_create_transfers(payload: &[u8]) -> Option<&ArchivedTransferBatch<'_>> {
    let batch = Rkyv::access::<CreateTransfers<'_>>(payload).ok()?;
    let n = batch.transfers.len();
    canonical(payload, n, TRANSFER_BYTES, TRANSFERS_PER_COMMAND_MAX).then_some(batch)
}

/// A linked chain longer than one command holds: it cannot be applied
/// atomically, so it is refused before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the linked chain from event {first} has {len} events; one command holds at most {max}")]
pub struct ChainTooLong {
    /// Index of the chain's first event in the batch.
    pub first: usize,
    /// Events in the chain.
    pub len: usize,
    /// Events one command holds.
    pub max: usize,
}

/// Splits a batch of `n` events into commands of at most `max` events
/// without cutting a linked chain (`linked(i)`: event `i` is linked to the
/// next), so each chain stays atomic and the per-event results, joined in
/// order, are what one large batch would give: a chain left open at the end
/// stays open in the last command. A batch of 0 events is one empty command.
pub fn split_batch(
    n: usize,
    max: usize,
    linked: impl Fn(usize) -> bool,
) -> Result<Vec<std::ops::Range<usize>>, ChainTooLong> {
    let mut commands = Vec::new();
    let mut start = 0;
    let mut chain = 0;
    while chain < n {
        // The chain (or lone event) starting at `chain` ends at `end`.
        let end = (chain..n).find(|&i| !linked(i)).unwrap_or(n - 1) + 1;
        if end - chain > max {
            return Err(ChainTooLong {
                first: chain,
                len: end - chain,
                max,
            });
        }
        if end - start > max {
            commands.push(start..chain);
            start = chain;
        }
        chain = end;
    }
    commands.push(start..n);
    Ok(commands)
}

/// Encodes a `CREATE_ACCOUNTS` payload into `out`; returns its length.
pub fn encode_create_accounts(accounts: &[Account], out: &mut [u8]) -> Result<usize, EncodeError> {
    Rkyv::encode(&CreateAccounts { accounts }, out)
}

/// Encodes a `CREATE_TRANSFERS` payload into `out`; returns its length.
pub fn encode_create_transfers(
    transfers: &[Transfer],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    Rkyv::encode(&CreateTransfers { transfers }, out)
}

/// Encodes a `SET_OWNERSHIP` payload into `out`; returns its length.
pub fn encode_ownership(
    ownership: &crate::routing::Ownership,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    Rkyv::encode(ownership, out)
}

/// Encodes a lookup payload into `out`; returns its length.
pub fn encode_lookup(id: u128, out: &mut [u8]) -> Result<usize, EncodeError> {
    Rkyv::encode(&Lookup { id }, out)
}

/// The schema version `create_transfers` commands are written with: 2,
/// TigerBeetle 0.17's post/void rules and imported transfers
/// ([`crate::Rules::Tb017`]). Version 1
/// (the same bytes, Keel's earlier rules, [`crate::Rules::Keel1`]) is still
/// accepted and replays as written.
pub const CREATE_TRANSFERS_VERSION: u16 = 2;

/// The schema version `create_accounts` commands are written with: 2,
/// which accepts imported accounts (`account_flags::IMPORTED`); in version 1
/// that flag is `reserved_flag`, as it always was.
pub const CREATE_ACCOUNTS_VERSION: u16 = 2;

/// The schema versions a command type accepts (`None`: not a ledger command).
pub fn schema_versions(command_type: u16) -> Option<std::ops::RangeInclusive<u16>> {
    match command_type {
        command_type::CREATE_TRANSFERS => Some(1..=CREATE_TRANSFERS_VERSION),
        command_type::CREATE_ACCOUNTS => Some(1..=CREATE_ACCOUNTS_VERSION),
        command_type::LOOKUP_ACCOUNT
        | command_type::LOOKUP_TRANSFER
        | command_type::SET_OWNERSHIP
        | command_type::SAGA_RECORD => Some(1..=1),
        _ => None,
    }
}

/// The schema version this build writes for `command_type`.
pub fn schema_version(command_type: u16) -> u16 {
    schema_versions(command_type).map_or(1, |versions| *versions.end())
}

/// A command of `command_type` carrying `payload`, with the schema version
/// this build writes.
pub fn command(command_type: u16, payload: &[u8]) -> Command<'_> {
    let mut command = Command::new(command_type, payload);
    command.schema_version = schema_version(command_type);
    command
}

/// The per-event codes of the outcome of a `command_type` create command,
/// in today's numbers (TigerBeetle 0.17's): an outcome written with Keel's
/// earlier numbers (version 1, e.g. held in an idempotency window restored
/// from an older snapshot) is translated.
pub fn event_results(command_type: u16, outcome: &Outcome) -> Result<EventResults, DecodeError> {
    let mut results: EventResults = Rkyv::decode(outcome.data())?;
    let version = outcome
        .data()
        .get(2..4)
        .map(|v| u16::from_le_bytes([v[0], v[1]]));
    if version == Some(1) {
        let count = usize::from(results.count).min(EVENTS_PER_COMMAND_MAX);
        for code in &mut results.codes[..count] {
            *code = match command_type {
                command_type::CREATE_TRANSFERS => crate::results::TRANSFER_CODES_V1
                    .get(usize::from(*code))
                    .copied()
                    .unwrap_or(*code),
                _ => crate::results::account_code_from_v1(*code),
            };
        }
    }
    Ok(results)
}

/// The table a `WRONG_SHARD` (or `TABLE_NOT_NEWER`) outcome names.
pub fn wrong_shard(outcome: &Outcome) -> Result<WrongShard, DecodeError> {
    Rkyv::decode::<WrongShard>(outcome.data())
}

/// The balances a `LOOKUP_ACCOUNT` returned (`None`: not found).
pub fn account_balance(outcome: &Outcome) -> Result<Option<AccountBalance>, DecodeError> {
    match outcome.code {
        outcome_code::NOT_FOUND => Ok(None),
        _ => Rkyv::decode(outcome.data()).map(Some),
    }
}

/// The state a `LOOKUP_TRANSFER` returned (`None`: not found).
pub fn transfer_status(outcome: &Outcome) -> Result<Option<TransferStatus>, DecodeError> {
    match outcome.code {
        outcome_code::NOT_FOUND => Ok(None),
        _ => Rkyv::decode(outcome.data()).map(Some),
    }
}

/// Writes `value` as the outcome body with `code`.
pub(crate) fn set_outcome<T>(outcome: &mut Outcome, code: ResultCode, value: &T)
where
    T: Schema + for<'a> Serialize<keel_codecs::Serializer<'a>>,
{
    let mut body = [0u8; RESULT_BYTES_MAX];
    let len = Rkyv::encode(value, &mut body).expect("result bodies fit RESULT_BYTES_MAX");
    outcome.set(code, &body[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_event_results_encoding_is_rkyvs() {
        for count in 0..=EVENTS_PER_COMMAND_MAX as u8 {
            let results = EventResults {
                count,
                codes: std::array::from_fn(|i| (i as u8 * 7 + count) % 60),
            };
            let mut via_rkyv = [0u8; 64];
            let len = Rkyv::encode(&results, &mut via_rkyv).unwrap();
            assert_eq!(&via_rkyv[..len], &results.encode_direct()[..]);
            assert_eq!(
                Rkyv::decode::<EventResults>(&results.encode_direct()).unwrap(),
                results
            );
        }
    }
}
