//! [`LedgerClient`]: what a host thread holds to talk to a running ledger
//! engine — typed calls that encode the command into a stack buffer, submit
//! it (blocking or async), and decode the per-event results. One per thread,
//! like the [`Submitter`] it wraps.

use keel_codecs::{DecodeError, EncodeError};
use keel_core::constants::PAYLOAD_BYTES_MAX;
use keel_core::{Ack, Command, PendingAck, SubmitError, Submitter};

use crate::commands::{
    self, command_type, outcome_code, AccountBalance, EventResults, SagaRecord, TransferStatus,
};
use crate::routing::Ownership;
use crate::types::{Account, Transfer};

/// Why a client call failed (a business rejection is not an error: it is in
/// the [`EventResults`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The batch does not fit one command (see `*_PER_COMMAND_MAX`).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The engine refused or could not take the command.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The acknowledgement's body is not what the command returns.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A linked chain of a large batch does not fit one command.
    #[error(transparent)]
    ChainTooLong(#[from] commands::ChainTooLong),
    /// The shard does not own an account the command names (a sharded
    /// ledger); nothing was applied. Route by a table of at least this version.
    #[error("wrong shard: the shard's slot table is version {table_version}")]
    WrongShard {
        /// The shard's table version.
        table_version: u64,
        /// The fingerprint of the shard's ownership.
        fingerprint: u64,
    },
    /// A large batch was cut: the commands before the failed one were
    /// applied, with these results (one per event, from the first); the
    /// rest was not sequenced.
    #[error("batch cut after {} events: {error}", codes.len())]
    Incomplete {
        /// Results of the events applied.
        codes: Vec<u8>,
        /// Why the next command was not taken.
        error: SubmitError,
    },
}

/// Options of one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Carried unchanged to the acknowledgement.
    pub correlation_id: u64,
    /// A retry with the same non-zero key returns the first outcome without re-applying.
    pub idempotency_key: u128,
}

/// A typed ledger client over one [`Submitter`].
#[derive(Debug)]
pub struct LedgerClient {
    submitter: Submitter,
    payload: [u8; PAYLOAD_BYTES_MAX],
    tenant: u32,
}

impl LedgerClient {
    /// Wraps a submitter (from `Engine::submitter`).
    pub fn new(submitter: Submitter) -> Self {
        Self {
            submitter,
            payload: [0; PAYLOAD_BYTES_MAX],
            tenant: 0,
        }
    }

    /// Sends every command as `tenant`'s (the tenant is part of an
    /// account's slot on a sharded ledger).
    pub fn with_tenant(mut self, tenant: u32) -> Self {
        self.tenant = tenant;
        self
    }

    /// Sends every later command as `tenant`'s.
    pub fn set_tenant(&mut self, tenant: u32) {
        self.tenant = tenant;
    }

    /// Installs the slots a shard owns (`SET_OWNERSHIP`, journaled); a
    /// table not newer than the installed one is `WrongShard` with the
    /// installed version.
    pub fn set_ownership(&mut self, ownership: &Ownership) -> Result<Ack, ClientError> {
        let len = commands::encode_ownership(ownership, &mut self.payload)?;
        let ack = self.submit(command_type::SET_OWNERSHIP, len, CallOptions::default())?;
        if ack.outcome.code == outcome_code::TABLE_NOT_NEWER {
            return Err(wrong_shard(&ack)?);
        }
        Ok(ack)
    }

    /// Journals a saga's log entry and returns at once (the entry changes
    /// nothing; its acknowledgement says it is durable).
    pub fn saga_record_async(&mut self, record: &SagaRecord) -> Result<PendingAck, ClientError> {
        let len = keel_codecs::Rkyv::encode(record, &mut self.payload)?;
        self.submit_async(command_type::SAGA_RECORD, len, CallOptions::default())
    }

    /// The underlying submitter.
    pub fn submitter(&mut self) -> &mut Submitter {
        &mut self.submitter
    }

    /// Creates up to [`commands::ACCOUNTS_PER_COMMAND_MAX`] accounts; waits for the results.
    pub fn create_accounts(
        &mut self,
        accounts: &[Account],
        options: CallOptions,
    ) -> Result<(Ack, EventResults), ClientError> {
        let len = commands::encode_create_accounts(accounts, &mut self.payload)?;
        self.call(command_type::CREATE_ACCOUNTS, len, options)
    }

    /// Applies up to [`commands::TRANSFERS_PER_COMMAND_MAX`] transfers; waits for the results.
    pub fn create_transfers(
        &mut self,
        transfers: &[Transfer],
        options: CallOptions,
    ) -> Result<(Ack, EventResults), ClientError> {
        let len = commands::encode_create_transfers(transfers, &mut self.payload)?;
        self.call(command_type::CREATE_TRANSFERS, len, options)
    }

    /// Submits accounts and returns at once; await the [`PendingAck`] and
    /// read it with [`commands::event_results`]. Allocates nothing.
    pub fn create_accounts_async(
        &mut self,
        accounts: &[Account],
        options: CallOptions,
    ) -> Result<PendingAck, ClientError> {
        let len = commands::encode_create_accounts(accounts, &mut self.payload)?;
        self.submit_async(command_type::CREATE_ACCOUNTS, len, options)
    }

    /// Submits transfers and returns at once; await the [`PendingAck`] and
    /// read it with [`commands::event_results`]. Allocates nothing.
    pub fn create_transfers_async(
        &mut self,
        transfers: &[Transfer],
        options: CallOptions,
    ) -> Result<PendingAck, ClientError> {
        let len = commands::encode_create_transfers(transfers, &mut self.payload)?;
        self.submit_async(command_type::CREATE_TRANSFERS, len, options)
    }

    /// Creates any number of accounts: split into commands of up to
    /// [`commands::ACCOUNTS_PER_COMMAND_MAX`] without cutting a linked
    /// chain ([`commands::split_batch`]), submitted back to back and
    /// waited for together. Returns one result code per account, in order.
    /// Atomic per chain, not across the batch (as TigerBeetle's batches are
    /// not transactions either).
    pub fn create_accounts_batch(
        &mut self,
        accounts: &[Account],
        correlation_id: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let linked = |i: usize| accounts[i].flags & crate::types::account_flags::LINKED != 0;
        let parts =
            commands::split_batch(accounts.len(), commands::ACCOUNTS_PER_COMMAND_MAX, linked)?;
        self.batch(
            command_type::CREATE_ACCOUNTS,
            parts,
            correlation_id,
            |range, out| commands::encode_create_accounts(&accounts[range], out),
        )
    }

    /// [`LedgerClient::create_accounts_batch`] for transfers (commands of up
    /// to [`commands::TRANSFERS_PER_COMMAND_MAX`]).
    pub fn create_transfers_batch(
        &mut self,
        transfers: &[Transfer],
        correlation_id: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let linked = |i: usize| transfers[i].flags & crate::types::transfer_flags::LINKED != 0;
        let parts =
            commands::split_batch(transfers.len(), commands::TRANSFERS_PER_COMMAND_MAX, linked)?;
        self.batch(
            command_type::CREATE_TRANSFERS,
            parts,
            correlation_id,
            |range, out| commands::encode_create_transfers(&transfers[range], out),
        )
    }

    fn batch(
        &mut self,
        kind: u16,
        parts: Vec<std::ops::Range<usize>>,
        correlation_id: u64,
        encode: impl Fn(std::ops::Range<usize>, &mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<Vec<u8>, ClientError> {
        let options = CallOptions {
            correlation_id,
            idempotency_key: 0,
        };
        let mut pending = Vec::with_capacity(parts.len());
        let mut cut = None;
        for range in parts {
            let len = encode(range, &mut self.payload)?;
            match self.submit_async(kind, len, options) {
                Ok(ack) => pending.push(ack),
                Err(ClientError::Submit(error)) => {
                    cut = Some(error);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut codes = Vec::new();
        for ack in pending {
            match block_on(ack) {
                Ok(ack) => {
                    check_shard(&ack)?;
                    codes.extend_from_slice(commands::event_results(kind, &ack.outcome)?.codes())
                }
                Err(error) => return Err(ClientError::Incomplete { codes, error }),
            }
        }
        match cut {
            None => Ok(codes),
            Some(error) => Err(ClientError::Incomplete { codes, error }),
        }
    }

    /// An account's balances (read through the log, so it sees every earlier write).
    pub fn lookup_account(&mut self, id: u128) -> Result<Option<AccountBalance>, ClientError> {
        let len = commands::encode_lookup(id, &mut self.payload)?;
        let ack = self.submit(command_type::LOOKUP_ACCOUNT, len, CallOptions::default())?;
        check_shard(&ack)?;
        Ok(commands::account_balance(&ack.outcome)?)
    }

    /// A transfer's amount, timestamp and pending state.
    pub fn lookup_transfer(&mut self, id: u128) -> Result<Option<TransferStatus>, ClientError> {
        let len = commands::encode_lookup(id, &mut self.payload)?;
        let ack = self.submit(command_type::LOOKUP_TRANSFER, len, CallOptions::default())?;
        Ok(commands::transfer_status(&ack.outcome)?)
    }

    fn call(
        &mut self,
        kind: u16,
        len: usize,
        options: CallOptions,
    ) -> Result<(Ack, EventResults), ClientError> {
        let ack = self.submit(kind, len, options)?;
        check_shard(&ack)?;
        let results = commands::event_results(kind, &ack.outcome)?;
        Ok((ack, results))
    }

    fn submit_async(
        &mut self,
        kind: u16,
        len: usize,
        options: CallOptions,
    ) -> Result<PendingAck, ClientError> {
        let command = with_options(
            commands::command(kind, &self.payload[..len]),
            options,
            self.tenant,
        );
        Ok(self.submitter.submit_async(&command)?)
    }

    fn submit(&mut self, kind: u16, len: usize, options: CallOptions) -> Result<Ack, ClientError> {
        let command = with_options(
            commands::command(kind, &self.payload[..len]),
            options,
            self.tenant,
        );
        Ok(self.submitter.submit(&command)?)
    }
}

fn with_options(mut command: Command<'_>, options: CallOptions, tenant: u32) -> Command<'_> {
    command.correlation_id = options.correlation_id;
    command.idempotency_key = options.idempotency_key;
    command.tenant_id = tenant;
    command
}

fn wrong_shard(ack: &Ack) -> Result<ClientError, DecodeError> {
    let body = commands::wrong_shard(&ack.outcome)?;
    Ok(ClientError::WrongShard {
        table_version: body.table_version,
        fingerprint: body.fingerprint,
    })
}

/// `WrongShard` for an outcome that says so.
pub fn check_shard(ack: &Ack) -> Result<(), ClientError> {
    match ack.outcome.code == outcome_code::WRONG_SHARD {
        true => Err(wrong_shard(ack)?),
        false => Ok(()),
    }
}

/// Waits for one acknowledgement on this thread (no async runtime needed).
pub fn block_on(mut ack: PendingAck) -> Result<Ack, SubmitError> {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match std::pin::Pin::new(&mut ack).poll(&mut cx) {
            Poll::Ready(result) => return result,
            Poll::Pending => std::thread::park(),
        }
    }
}
