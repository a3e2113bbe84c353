//! Writing batches to MySQL: one transaction per batch, fenced by the
//! checkpoint row.
//!
//! Order inside the transaction (docs/projector.md, "Commit protocol"):
//! 1. `UPDATE keel_projection SET next_sequence = batch.next ... WHERE
//!    next_sequence = batch.first` — the fence, first, so it also takes the
//!    row lock that serialises writers. Zero rows: someone else moved the
//!    checkpoint (a stale writer is fenced), or our own earlier commit of
//!    unknown outcome went through (same writer id and position: done).
//! 2. transfers (`LOAD DATA LOCAL INFILE` served from memory where the
//!    server allows it, else multi-row `INSERT`s; never `IGNORE`: a
//!    duplicate is a poison error, since the fence makes one impossible);
//! 3. state changes of earlier pending transfers;
//! 4. accounts, upserted in ascending id order (no lock-order deadlocks);
//! 5. the audit rows; `COMMIT`.
//!
//! Every await has a timeout ([`Timeouts`]); the driver has none.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts, OptsBuilder, TxOpts};

use keel_ledger::{Account, PendingState};

use crate::derive::{Batch, CommandRow, TransferRow};
use crate::schema::{
    Flavor, TableSet, DEFERRED_INDEXES, MIGRATIONS, PROJECTION_NAME, SCHEMA_VERSION,
};

/// Time limits on every database call.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting (TCP + handshake + session setup).
    pub connect: Duration,
    /// One statement or commit.
    pub statement: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            statement: Duration::from_secs(10),
        }
    }
}

/// Why a database step failed, by what the projector does about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Connection lost, timeout, lock wait, deadlock, server shutting
    /// down: back off, reconnect, re-read the checkpoint, retry.
    #[error("transient: {0}")]
    Transient(String),
    /// The server refused a statement for good (schema mismatch,
    /// impossible duplicate, bad value, access denied): retrying cannot
    /// help; the projection halts (it never skips an event).
    #[error("MySQL error {code}: {message}")]
    Server {
        /// The server's error code (e.g. 1054 unknown column).
        code: u16,
        /// The server's message.
        message: String,
    },
    /// A condition of the projector's own that retrying cannot mend (a
    /// newer schema, a missing checkpoint row, a bad URL): it halts.
    #[error("{0}")]
    Poison(String),
    /// Another writer moved the checkpoint.
    #[error("fenced: the checkpoint is at {found} (writer {writer:016x}), this writer expected {expected}; another projector owns the projection")]
    Fenced {
        /// Where this writer thought it was.
        expected: u64,
        /// Where the checkpoint is.
        found: u64,
        /// Who wrote it.
        writer: u64,
    },
}

impl SinkError {
    /// Whether this is the server's error with one of `codes` (e.g. 1146
    /// no such table, 1061 duplicate key name).
    pub fn is_server_code(&self, codes: &[u16]) -> bool {
        matches!(self, SinkError::Server { code, .. } if codes.contains(code))
    }
}

/// Server error codes a retry can outlive.
const TRANSIENT_CODES: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1158, 1159, 1160, 1161, // network read/write errors and timeouts
    1180, // error during commit
    1203, // too many user connections
    1205, // lock wait timeout
    1213, // deadlock
    1290, // read-only (e.g. a replica being promoted)
    1317, // query interrupted
    1927, // connection killed
    1969, // MariaDB max_statement_time
    3024, // MySQL max_execution_time
];

fn classify(error: mysql_async::Error) -> SinkError {
    match &error {
        mysql_async::Error::Server(server) if !TRANSIENT_CODES.contains(&server.code) => {
            SinkError::Server {
                code: server.code,
                message: server.message.clone(),
            }
        }
        mysql_async::Error::Url(_) => SinkError::Poison(error.to_string()),
        _ => SinkError::Transient(error.to_string()),
    }
}

/// Runs `future` under `limit`; a timeout is transient.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(SinkError::Transient(format!(
            "{what} timed out after {limit:?}"
        ))),
    }
}

/// The checkpoint row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first sequence not yet projected.
    pub next_sequence: u64,
    /// The ledger's state hash after `next_sequence` commands.
    pub state_hash: u64,
    /// The writer that moved it last.
    pub writer: u64,
    /// The set's schema version.
    pub schema_version: u32,
}

/// One connection to the projection's database.
#[derive(Debug)]
pub struct Sink {
    conn: Option<Conn>,
    opts: Opts,
    flavor: Flavor,
    timeouts: Timeouts,
    set: TableSet,
    /// The server accepts `LOAD DATA LOCAL INFILE` (MariaDB's default;
    /// MySQL 8 needs `local_infile=ON`); without it bulk writes fall back to
    /// multi-row statements.
    local_infile: bool,
    /// `LOAD DATA LOCAL INFILE` contents by file name, handed to the
    /// driver's infile handler (only these names are ever served).
    infiles: Infiles,
}

type Infiles = Arc<Mutex<HashMap<Vec<u8>, Bytes>>>;

/// `data` as a `LOAD DATA LOCAL INFILE` stream, in pieces: the driver
/// sends each piece as one packet, and a packet may not exceed the
/// server's `max_allowed_packet`.
pub fn infile_stream(data: Bytes) -> mysql_async::InfileData {
    const PIECE: usize = 1 << 20;
    let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
        .step_by(PIECE)
        .map(|at| Ok(data.slice(at..(at + PIECE).min(data.len()))))
        .collect();
    Box::pin(futures_util::stream::iter(pieces))
}

/// Serves `LOAD DATA LOCAL INFILE 'name'` from memory: a batch's rows are
/// never written to a file, and a server cannot ask for any other file.
fn infile_handler(infiles: Infiles) -> impl mysql_async::prelude::GlobalHandler {
    move |name: &[u8]| {
        let data = infiles.lock().expect("infiles").remove(name);
        let name = String::from_utf8_lossy(name).into_owned();
        async move {
            let data = data.ok_or_else(|| {
                mysql_async::LocalInfileError::OtherError(format!("no such infile: {name}").into())
            })?;
            Ok(infile_stream(data))
        }
        .boxed()
    }
}

impl Sink {
    /// Connects and prepares the session (lock waits bounded below our own
    /// statement timeout, so a lock held by a dead session is an error, not
    /// a hang).
    pub async fn connect(url: &str, set: TableSet, timeouts: Timeouts) -> Result<Self, SinkError> {
        let opts = Opts::from_url(url).map_err(|e| SinkError::Poison(format!("MYSQL_URL: {e}")))?;
        let infiles = Infiles::default();
        // The driver would switch a TCP connection to 127.0.0.1 over to the
        // server's Unix socket; the URL is what the operator asked for
        // (a proxy, a tunnel), so keep to it unless the URL says otherwise.
        let prefer_socket = url.contains("prefer_socket=true");
        // Lock waits (row locks and metadata locks) end below our own
        // statement timeout, so a lock left by a dead session is an error
        // from the server, not a hang; run on every (re)connection.
        let lock_wait = timeouts.statement.as_secs().clamp(1, 50);
        let session = vec![
            format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}, SESSION lock_wait_timeout = {lock_wait}"),
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string(),
        ];
        let opts: Opts = OptsBuilder::from_opts(opts)
            .prefer_socket(prefer_socket)
            .stmt_cache_size(0)
            .tcp_nodelay(true)
            .init(session)
            // Affected rows = matched rows: the fence counts the checkpoint
            // row even when an update leaves its values unchanged.
            .client_found_rows(true)
            .local_infile_handler(Some(infile_handler(Arc::clone(&infiles))))
            .into();
        let mut conn = within(timeouts.connect, "connect", Conn::new(opts.clone())).await?;
        let version: Option<String> = within(
            timeouts.connect,
            "version",
            conn.query_first("SELECT VERSION()"),
        )
        .await?;
        let flavor = Flavor::from_version(version.as_deref().unwrap_or(""));
        let local_infile: Option<u64> = within(
            timeouts.connect,
            "local_infile",
            conn.query_first("SELECT @@local_infile"),
        )
        .await?;
        Ok(Self {
            local_infile: local_infile == Some(1),
            conn: Some(conn),
            opts,
            flavor,
            timeouts,
            set,
            infiles,
        })
    }

    /// Whether bulk writes use `LOAD DATA LOCAL INFILE` on this server.
    pub fn bulk_available(&self) -> bool {
        self.local_infile
    }

    async fn reconnect_if_needed(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let conn = within(
                self.timeouts.connect,
                "connect",
                Conn::new(self.opts.clone()),
            )
            .await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// The first row of a read (`what` names it in a timeout): reconnects
    /// if needed; after an error the connection is dropped (its state is
    /// unknown) and the next call reconnects.
    async fn first<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        what: &str,
        sql: String,
    ) -> Result<Option<T>, SinkError> {
        let limit = self.timeouts.statement;
        let conn = self.reconnect_if_needed().await?;
        let result = within(limit, what, conn.query_first(sql)).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Whether `table` exists in the connection's database (table names
    /// are the projector's own constants).
    async fn table_exists(&mut self, table: &str) -> Result<bool, SinkError> {
        let sql = format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{table}'"
        );
        Ok(self.first::<String>("schema lookup", sql).await?.is_some())
    }

    /// Runs a schema statement (DDL): these may rewrite a large table, so
    /// their limit is an hour, not the statement timeout.
    async fn ddl(&mut self, sql: String) -> Result<u64, SinkError> {
        let limit = self.timeouts.statement.max(DDL_TIMEOUT);
        let conn = self.reconnect_if_needed().await?;
        let result = within(limit, "statement", conn.query_drop(sql)).await;
        match result {
            Ok(()) => Ok(conn.affected_rows()),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Creates the set at this build's version, or migrates it forward
    /// (additive steps only). A set newer than this build is refused.
    pub async fn ensure_schema(&mut self) -> Result<Checkpoint, SinkError> {
        let projection = self.set.table("keel_projection");
        let exists = self.table_exists(&projection).await?;
        let found = match exists {
            true => self
                .read_checkpoint()
                .await?
                .map_or(0, |c| c.schema_version),
            false => 0,
        };
        if found > SCHEMA_VERSION {
            return Err(SinkError::Poison(format!(
                "{projection} is at schema version {found}, newer than this build's {SCHEMA_VERSION}: upgrade keel"
            )));
        }
        for step in found as usize..MIGRATIONS.len() {
            for sql in self.set.migration(step) {
                match self.ddl(sql).await {
                    Ok(_) => {}
                    // Applied already (a crash before the version was
                    // recorded, or another projector migrating at once).
                    Err(e) if e.is_server_code(&[1060, 1061]) => {}
                    Err(e) => return Err(e),
                }
            }
            let version = step as u32 + 1;
            let sql = format!(
                "INSERT INTO {projection} (name, schema_version, next_sequence, state_hash, writer) \
                 VALUES ('{PROJECTION_NAME}', {version}, 0, 0, 0) \
                 ON DUPLICATE KEY UPDATE schema_version = {version}"
            );
            self.ddl(sql).await?;
        }
        self.read_checkpoint().await?.ok_or_else(|| {
            SinkError::Poison(format!("{projection} has no '{PROJECTION_NAME}' row"))
        })
    }

    /// Reads the checkpoint row.
    pub async fn read_checkpoint(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        let sql = format!(
            "SELECT next_sequence, state_hash, writer, schema_version FROM {} WHERE name = '{PROJECTION_NAME}'",
            self.set.table("keel_projection")
        );
        let row: Option<(u64, u64, u64, u32)> = self.first("checkpoint read", sql).await?;
        Ok(row.map(
            |(next_sequence, state_hash, writer, schema_version)| Checkpoint {
                next_sequence,
                state_hash,
                writer,
                schema_version,
            },
        ))
    }

    /// Writes `batch` in one transaction, fenced on `batch.first`. Returns
    /// `Ok(false)` if the checkpoint already stands at `batch.next` by this
    /// `writer` (an earlier attempt of unknown outcome committed).
    /// `bulk`: insert the transfers and the audit rows with `LOAD DATA
    /// LOCAL INFILE` where the server allows it (fastest for rows that are
    /// only ever inserted).
    pub async fn commit(
        &mut self,
        batch: &Batch,
        writer: u64,
        bulk: bool,
    ) -> Result<bool, SinkError> {
        let limit = self.timeouts.statement;
        let result = self.commit_inner(batch, writer, limit, bulk).await;
        if matches!(result, Err(SinkError::Transient(_))) {
            self.conn = None;
        }
        result
    }

    async fn commit_inner(
        &mut self,
        batch: &Batch,
        writer: u64,
        limit: Duration,
        bulk: bool,
    ) -> Result<bool, SinkError> {
        let set = self.set;
        let flavor = self.flavor;
        let infiles = Arc::clone(&self.infiles);
        let bulk = bulk && self.local_infile;
        let conn = self.reconnect_if_needed().await?;
        let mut tx = within(limit, "begin", conn.start_transaction(TxOpts::default())).await?;

        let fence = format!(
            "UPDATE {} SET next_sequence = {}, state_hash = {}, writer = {writer}, updated_at = CURRENT_TIMESTAMP(6) \
             WHERE name = '{PROJECTION_NAME}' AND next_sequence = {}",
            set.table("keel_projection"),
            batch.next,
            batch.state_hash,
            batch.first
        );
        within(limit, "fence", tx.query_drop(fence)).await?;
        if tx.affected_rows() != 1 {
            let read = format!(
                "SELECT next_sequence, writer FROM {} WHERE name = '{PROJECTION_NAME}'",
                set.table("keel_projection")
            );
            let row: Option<(u64, u64)> = within(limit, "fence read", tx.query_first(read)).await?;
            within(limit, "rollback", tx.rollback()).await?;
            return match row {
                Some((found, by)) if found == batch.next && by == writer => Ok(false),
                Some((found, by)) => Err(SinkError::Fenced {
                    expected: batch.first,
                    found,
                    writer: by,
                }),
                None => Err(SinkError::Poison("the checkpoint row is gone".into())),
            };
        }
        let statements = match bulk {
            false => statements(batch, set, flavor, false),
            true => {
                let (statements, files) = bulk_statements(batch, set, flavor);
                infiles.lock().expect("infiles").extend(files);
                statements
            }
        };
        for statement in statements {
            within(limit, "write", tx.query_drop(statement)).await?;
        }
        within(limit, "commit", tx.commit()).await?;
        Ok(true)
    }

    /// Drops the secondary indexes of a set that is still empty, so a
    /// rebuild loads into bare clustered indexes; [`Sink::add_deferred_indexes`]
    /// builds them (by sorting) before the swap.
    pub async fn defer_indexes(&mut self) -> Result<(), SinkError> {
        for (table, index, _) in DEFERRED_INDEXES {
            if self.has_index(table, index).await? {
                let table = self.set.table(table);
                self.ddl(format!("ALTER TABLE {table} DROP INDEX {index}"))
                    .await?;
            }
        }
        Ok(())
    }

    /// Adds whichever deferred indexes are missing (one `ALTER` per table).
    pub async fn add_deferred_indexes(&mut self) -> Result<(), SinkError> {
        let mut by_table: Vec<(&str, Vec<&str>)> = Vec::new();
        for (table, index, definition) in DEFERRED_INDEXES {
            if !self.has_index(table, index).await? {
                match by_table.iter_mut().find(|(t, _)| **t == *table) {
                    Some((_, adds)) => adds.push(definition),
                    None => by_table.push((table, vec![definition])),
                }
            }
        }
        for (table, adds) in by_table {
            let adds: Vec<String> = adds.iter().map(|d| format!("ADD {d}")).collect();
            let table = self.set.table(table);
            let sql = format!("ALTER TABLE {table} {}", adds.join(", "));
            self.ddl(sql).await?;
        }
        Ok(())
    }

    async fn has_index(&mut self, table: &str, index: &str) -> Result<bool, SinkError> {
        let sql = format!(
            "SELECT index_name FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = '{}' AND index_name = '{index}' LIMIT 1",
            self.set.table(table)
        );
        Ok(self.first::<String>("index lookup", sql).await?.is_some())
    }

    /// Swaps the rebuilt set in: one atomic `RENAME TABLE` retiring the live
    /// tables that exist (an operator may have dropped some — the case
    /// rebuild is the remedy for), then drops the retired set. A retired set
    /// left by a swap interrupted before its drop is dropped first.
    pub async fn swap_rebuilt(&mut self) -> Result<(), SinkError> {
        let tables = crate::schema::TABLES;
        let retired: Vec<String> = tables.iter().map(|t| format!("{t}__retired")).collect();
        let drop_retired = format!("DROP TABLE IF EXISTS {}", retired.join(", "));
        self.ddl(drop_retired.clone()).await?;
        let mut live = [false; crate::schema::TABLES.len()];
        for (exists, table) in live.iter_mut().zip(tables) {
            *exists = self.table_exists(table).await?;
        }
        self.ddl(TableSet::swap_statement(live)).await?;
        self.ddl(drop_retired).await?;
        Ok(())
    }

    /// Drops the rebuild set (an abandoned rebuild starts over).
    pub async fn drop_set(&mut self) -> Result<(), SinkError> {
        let tables: Vec<String> = crate::schema::TABLES
            .iter()
            .map(|t| self.set.table(t))
            .collect();
        self.ddl(format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
            .await?;
        Ok(())
    }
}

/// Time limit of a schema statement (`ALTER TABLE` of a large table).
const DDL_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Rows per multi-row statement (keeps each packet far below the default
/// 16 MiB `max_allowed_packet`).
const ROWS_PER_STATEMENT: usize = 2_000;

const TRANSFER_COLUMNS: &str = "sequence, event, id, debit_account_id, credit_account_id, amount, \
    pending_id, user_data_128, user_data_64, user_data_32, timeout, ledger, code, flags, timestamp, pending_state";
const ACCOUNT_COLUMNS: &str =
    "id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
    credits_posted, user_data_128, user_data_64, user_data_32, timestamp";
/// The audit columns before `results` (written as hex).
const COMMAND_COLUMNS: &str =
    "sequence, timestamp, command_type, idempotency_key, correlation_id, \
    tenant_id, duplicate, code, events, accepted";

/// A transfer row's [`TRANSFER_COLUMNS`], separated by `sep`.
fn write_transfer(out: &mut String, row: &TransferRow, sep: char) {
    let t = &row.transfer;
    let _ = write!(
        out,
        "{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}",
        row.sequence,
        row.event,
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.pending_id,
        t.user_data_128,
        t.user_data_64,
        t.user_data_32,
        t.timeout,
        t.ledger,
        t.code,
        t.flags,
        t.timestamp,
        row.state as u8
    );
}

/// An account's [`ACCOUNT_COLUMNS`], separated by commas.
fn write_account(out: &mut String, a: &Account) {
    let _ = write!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{},{}",
        a.id,
        a.ledger,
        a.code,
        a.flags,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
        a.user_data_128,
        a.user_data_64,
        a.user_data_32,
        a.timestamp
    );
}

/// An audit row's [`COMMAND_COLUMNS`], separated by `sep`.
fn write_command(out: &mut String, c: &CommandRow, sep: char) {
    let _ = write!(
        out,
        "{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}",
        c.sequence,
        c.timestamp_ns,
        c.command_type,
        c.idempotency_key,
        c.correlation_id,
        c.tenant_id,
        u8::from(c.duplicate),
        c.code,
        c.events,
        c.accepted()
    );
}

/// The per-event result codes in hex (the `results` column).
fn write_results_hex(out: &mut String, c: &CommandRow) {
    for byte in c.results() {
        let _ = write!(out, "{byte:02x}");
    }
}

/// Transfer rows as `LOAD DATA` reads them: tab-separated, one per line.
pub fn transfers_tsv(rows: &[TransferRow]) -> String {
    let mut text = String::with_capacity(rows.len() * 160);
    for row in rows {
        write_transfer(&mut text, row, '\t');
        text.push('\n');
    }
    text
}

/// Multi-row `INSERT`s of `rows` into `table`, `ROWS_PER_STATEMENT` rows
/// each, every row written by `write` between parentheses.
fn inserts<T>(
    out: &mut Vec<String>,
    table: &str,
    columns: &str,
    rows: &[T],
    suffix: &str,
    write: impl Fn(&mut String, &T),
) {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
        for (i, row) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ",(" });
            write(&mut sql, row);
            sql.push(')');
        }
        sql.push_str(suffix);
        out.push(sql);
    }
}

/// The batch's write statements, in commit-protocol order: transfers (as
/// `INSERT`s unless `bulk`, which leaves them and the audit rows to
/// `LOAD DATA`), state changes, accounts, audit rows.
fn statements(batch: &Batch, set: TableSet, flavor: Flavor, bulk: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !bulk {
        inserts(
            &mut out,
            &set.table("keel_transfers"),
            TRANSFER_COLUMNS,
            &batch.transfers,
            "",
            |sql, row| write_transfer(sql, row, ','),
        );
    }
    // State changes, grouped by the new state (at most three statements).
    for state in [
        PendingState::Posted,
        PendingState::Voided,
        PendingState::Expired,
    ] {
        let ids: Vec<String> = batch
            .state_changes
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(id, _)| id.to_string())
            .collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            out.push(format!(
                "UPDATE {} SET pending_state = {} WHERE id IN ({})",
                set.table("keel_transfers"),
                state as u8,
                chunk.join(",")
            ));
        }
    }
    let upsert = flavor.upsert_clause(&[
        "flags",
        "debits_pending",
        "debits_posted",
        "credits_pending",
        "credits_posted",
    ]);
    inserts(
        &mut out,
        &set.table("keel_accounts"),
        ACCOUNT_COLUMNS,
        &batch.accounts,
        &upsert,
        write_account,
    );
    if !bulk {
        let columns = format!("{COMMAND_COLUMNS}, results");
        inserts(
            &mut out,
            &set.table("keel_commands"),
            &columns,
            &batch.commands,
            "",
            |sql, c| {
                write_command(sql, c, ',');
                sql.push_str(",X'");
                write_results_hex(sql, c);
                sql.push('\'');
            },
        );
    }
    out
}

/// The bulk form: `LOAD DATA LOCAL INFILE` of tab-separated rows for the
/// transfers and the audit trail (served from memory by name, returned as
/// files), statements for the state changes and account upserts.
fn bulk_statements(
    batch: &Batch,
    set: TableSet,
    flavor: Flavor,
) -> (Vec<String>, Vec<(Vec<u8>, Bytes)>) {
    let mut statements = Vec::new();
    let mut files = Vec::new();
    if !batch.transfers.is_empty() {
        let name = format!("keel_transfers_{}", batch.first);
        statements.push(format!(
            "LOAD DATA LOCAL INFILE '{name}' INTO TABLE {} ({TRANSFER_COLUMNS})",
            set.table("keel_transfers")
        ));
        files.push((
            name.into_bytes(),
            Bytes::from(transfers_tsv(&batch.transfers)),
        ));
    }
    statements.extend(self::statements(batch, set, flavor, true));
    if !batch.commands.is_empty() {
        let mut text = String::with_capacity(batch.commands.len() * 80);
        for c in &batch.commands {
            write_command(&mut text, c, '\t');
            text.push('\t');
            write_results_hex(&mut text, c);
            text.push('\n');
        }
        let name = format!("keel_commands_{}", batch.first);
        statements.push(format!(
            "LOAD DATA LOCAL INFILE '{name}' INTO TABLE {} ({COMMAND_COLUMNS}, @results) SET results = UNHEX(@results)",
            set.table("keel_commands")
        ));
        files.push((name.into_bytes(), Bytes::from(text)));
    }
    (statements, files)
}
