//! Reading the projection back: point reads, range reads and an account's
//! history, over the live tables. Blocking calls (each on the reader's own
//! single-threaded runtime) with the same time limits as the writer.
//!
//! The SQL each call runs is in docs/projector.md ("Read side") for hosts
//! that query the tables directly. The projection lags the engine: for
//! read-your-writes, compare [`ProjectionReader::checkpoint`] with the
//! sequence a command was journaled at.

use std::time::Duration;

use keel_ledger::{Account, PendingState, Transfer};
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Row};

use crate::sink::SinkError;

/// A projected transfer with where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectedTransfer {
    /// Journal sequence of the command that created it.
    pub sequence: u64,
    /// Its index among the command's events.
    pub event: u8,
    /// The transfer.
    pub transfer: Transfer,
    /// A pending transfer's state.
    pub state: PendingState,
}

/// A connection for reads.
#[derive(Debug)]
pub struct ProjectionReader {
    runtime: tokio::runtime::Runtime,
    conn: Conn,
    timeout: Duration,
}

const TRANSFER_COLUMNS: &str = "sequence, event, CAST(id AS CHAR), CAST(debit_account_id AS CHAR), \
    CAST(credit_account_id AS CHAR), amount, CAST(pending_id AS CHAR), CAST(user_data_128 AS CHAR), \
    user_data_64, user_data_32, timeout, ledger, code, flags, timestamp, pending_state";

const ACCOUNT_COLUMNS: &str = "CAST(id AS CHAR), debits_pending, debits_posted, credits_pending, \
    credits_posted, CAST(user_data_128 AS CHAR), user_data_64, user_data_32, ledger, code, flags, timestamp";

fn error(e: mysql_async::Error) -> SinkError {
    SinkError::Transient(e.to_string())
}

fn u128_at(row: &Row, index: usize) -> Result<u128, SinkError> {
    let text: String = row
        .get_opt(index)
        .and_then(Result::ok)
        .ok_or_else(|| SinkError::Poison(format!("column {index} is not text")))?;
    text.parse()
        .map_err(|_| SinkError::Poison(format!("column {index} is not a u128: {text}")))
}

fn get<T: mysql_async::prelude::FromValue>(row: &Row, index: usize) -> Result<T, SinkError> {
    row.get_opt(index)
        .and_then(Result::ok)
        .ok_or_else(|| SinkError::Poison(format!("column {index} has an unexpected type")))
}

fn transfer(row: &Row) -> Result<ProjectedTransfer, SinkError> {
    Ok(ProjectedTransfer {
        sequence: get(row, 0)?,
        event: get(row, 1)?,
        transfer: Transfer {
            id: u128_at(row, 2)?,
            debit_account_id: u128_at(row, 3)?,
            credit_account_id: u128_at(row, 4)?,
            amount: get(row, 5)?,
            pending_id: u128_at(row, 6)?,
            user_data_128: u128_at(row, 7)?,
            user_data_64: get(row, 8)?,
            user_data_32: get(row, 9)?,
            timeout: get(row, 10)?,
            ledger: get(row, 11)?,
            code: get(row, 12)?,
            flags: get(row, 13)?,
            timestamp: get(row, 14)?,
        },
        state: PendingState::from_u8(get(row, 15)?),
    })
}

fn account(row: &Row) -> Result<Account, SinkError> {
    Ok(Account {
        id: u128_at(row, 0)?,
        debits_pending: get(row, 1)?,
        debits_posted: get(row, 2)?,
        credits_pending: get(row, 3)?,
        credits_posted: get(row, 4)?,
        user_data_128: u128_at(row, 5)?,
        user_data_64: get(row, 6)?,
        user_data_32: get(row, 7)?,
        reserved: 0,
        ledger: get(row, 8)?,
        code: get(row, 9)?,
        flags: get(row, 10)?,
        timestamp: get(row, 11)?,
    })
}

impl ProjectionReader {
    /// Connects to the projection's database.
    pub fn connect(url: &str) -> Result<Self, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Transient(e.to_string()))?;
        let timeout = Duration::from_secs(10);
        let conn = runtime.block_on(async {
            tokio::time::timeout(timeout, Conn::from_url(url))
                .await
                .map_err(|_| SinkError::Transient("connect timed out".into()))?
                .map_err(error)
        })?;
        Ok(Self {
            runtime,
            conn,
            timeout,
        })
    }

    fn rows(&mut self, sql: String) -> Result<Vec<Row>, SinkError> {
        let (conn, timeout) = (&mut self.conn, self.timeout);
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, conn.query(sql))
                .await
                .map_err(|_| SinkError::Transient("query timed out".into()))?
                .map_err(error)
        })
    }

    /// The first journal sequence not yet in the projection.
    pub fn checkpoint(&mut self) -> Result<u64, SinkError> {
        let rows =
            self.rows("SELECT next_sequence FROM keel_projection WHERE name = 'ledger'".into())?;
        rows.first().map_or(Ok(0), |row| get(row, 0))
    }

    /// An account by id.
    pub fn account(&mut self, id: u128) -> Result<Option<Account>, SinkError> {
        let rows = self.rows(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM keel_accounts WHERE id = {id}"
        ))?;
        rows.first().map(account).transpose()
    }

    /// A transfer by id.
    pub fn transfer(&mut self, id: u128) -> Result<Option<ProjectedTransfer>, SinkError> {
        let rows = self.rows(format!(
            "SELECT {TRANSFER_COLUMNS} FROM keel_transfers WHERE id = {id}"
        ))?;
        rows.first().map(transfer).transpose()
    }

    /// Transfers created by the commands `from..to` (journal sequences), in order.
    pub fn transfers_between(
        &mut self,
        from: u64,
        to: u64,
    ) -> Result<Vec<ProjectedTransfer>, SinkError> {
        let rows = self.rows(format!(
            "SELECT {TRANSFER_COLUMNS} FROM keel_transfers WHERE sequence >= {from} AND sequence < {to} ORDER BY sequence, event"
        ))?;
        rows.iter().map(transfer).collect()
    }

    /// The account's transfers (debit or credit side), newest first, older
    /// than `before` (ns; `u64::MAX` for the newest), at most `limit`: page
    /// by passing the last timestamp seen.
    pub fn account_history(
        &mut self,
        id: u128,
        before: u64,
        limit: u32,
    ) -> Result<Vec<ProjectedTransfer>, SinkError> {
        // Two index range scans (by_debit, by_credit) merged, not an OR.
        let rows = self.rows(format!(
            "SELECT * FROM (
               (SELECT {TRANSFER_COLUMNS} FROM keel_transfers WHERE debit_account_id = {id} AND timestamp < {before} ORDER BY timestamp DESC LIMIT {limit})
               UNION ALL
               (SELECT {TRANSFER_COLUMNS} FROM keel_transfers WHERE credit_account_id = {id} AND timestamp < {before} ORDER BY timestamp DESC LIMIT {limit})
             ) AS history ORDER BY 15 DESC LIMIT {limit}"
        ))?;
        rows.iter().map(transfer).collect()
    }
}
