//! [`LedgerClient`]: what a host thread holds to talk to a running ledger
//! engine — typed calls that encode the command into a stack buffer, submit
//! it (blocking or async), and decode the per-event results. One per thread,
//! like the [`Submitter`] it wraps.

use keel_codecs::{DecodeError, EncodeError};
use keel_core::constants::PAYLOAD_BYTES_MAX;
use keel_core::{Ack, Command, PendingAck, SubmitError, Submitter};

use crate::commands::{self, command_type, AccountBalance, EventResults, TransferStatus};
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
}

impl LedgerClient {
    /// Wraps a submitter (from `Engine::submitter`).
    pub fn new(submitter: Submitter) -> Self {
        Self {
            submitter,
            payload: [0; PAYLOAD_BYTES_MAX],
        }
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

    /// An account's balances (read through the log, so it sees every earlier write).
    pub fn lookup_account(&mut self, id: u128) -> Result<Option<AccountBalance>, ClientError> {
        let len = commands::encode_lookup(id, &mut self.payload)?;
        let ack = self.submit(command_type::LOOKUP_ACCOUNT, len, CallOptions::default())?;
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
        let results = commands::event_results(kind, &ack.outcome)?;
        Ok((ack, results))
    }

    fn submit_async(
        &mut self,
        kind: u16,
        len: usize,
        options: CallOptions,
    ) -> Result<PendingAck, ClientError> {
        let command = with_options(commands::command(kind, &self.payload[..len]), options);
        Ok(self.submitter.submit_async(&command)?)
    }

    fn submit(&mut self, kind: u16, len: usize, options: CallOptions) -> Result<Ack, ClientError> {
        let command = with_options(commands::command(kind, &self.payload[..len]), options);
        Ok(self.submitter.submit(&command)?)
    }
}

fn with_options(mut command: Command<'_>, options: CallOptions) -> Command<'_> {
    command.correlation_id = options.correlation_id;
    command.idempotency_key = options.idempotency_key;
    command
}
