//! The projection's tables and their versions.
//!
//! A *table set* is four tables with one suffix: `keel_projection` (the
//! checkpoint row and the schema version), `keel_accounts`, `keel_transfers`
//! and `keel_commands`. The live set has no suffix; a rebuild fills the
//! `__rebuild` set and swaps it in with one `RENAME TABLE`. The checkpoint
//! lives in the set it describes, so it moves with the rows it counts.
//!
//! Versions: [`MIGRATIONS`]`[v - 1]` takes a set from version `v - 1` to `v`.
//! Every step after the first is additive (a new index or nullable column)
//! and runs online; a change that is not additive gets a new base version
//! and needs `keel project rebuild`. A set newer than this build is refused
//! (a poison error: an older binary must not write a newer schema).

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The name of the projection's checkpoint row.
pub const PROJECTION_NAME: &str = "ledger";

/// Statements per version step; `{s}` is the table set's suffix.
pub const MIGRATIONS: &[&[&str]] = &[
    // 1: the base tables.
    &[
        "CREATE TABLE IF NOT EXISTS keel_projection{s} (
            name VARCHAR(32) NOT NULL PRIMARY KEY,
            schema_version INT UNSIGNED NOT NULL,
            next_sequence BIGINT UNSIGNED NOT NULL,
            state_hash BIGINT UNSIGNED NOT NULL,
            writer BIGINT UNSIGNED NOT NULL,
            updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS keel_accounts{s} (
            id DECIMAL(39,0) UNSIGNED NOT NULL PRIMARY KEY,
            ledger INT UNSIGNED NOT NULL,
            code SMALLINT UNSIGNED NOT NULL,
            flags SMALLINT UNSIGNED NOT NULL,
            debits_pending BIGINT UNSIGNED NOT NULL,
            debits_posted BIGINT UNSIGNED NOT NULL,
            credits_pending BIGINT UNSIGNED NOT NULL,
            credits_posted BIGINT UNSIGNED NOT NULL,
            user_data_128 DECIMAL(39,0) UNSIGNED NOT NULL,
            user_data_64 BIGINT UNSIGNED NOT NULL,
            user_data_32 INT UNSIGNED NOT NULL,
            timestamp BIGINT UNSIGNED NOT NULL
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS keel_transfers{s} (
            sequence BIGINT UNSIGNED NOT NULL,
            event TINYINT UNSIGNED NOT NULL,
            id DECIMAL(39,0) UNSIGNED NOT NULL,
            debit_account_id DECIMAL(39,0) UNSIGNED NOT NULL,
            credit_account_id DECIMAL(39,0) UNSIGNED NOT NULL,
            amount BIGINT UNSIGNED NOT NULL,
            pending_id DECIMAL(39,0) UNSIGNED NOT NULL,
            user_data_128 DECIMAL(39,0) UNSIGNED NOT NULL,
            user_data_64 BIGINT UNSIGNED NOT NULL,
            user_data_32 INT UNSIGNED NOT NULL,
            timeout INT UNSIGNED NOT NULL,
            ledger INT UNSIGNED NOT NULL,
            code SMALLINT UNSIGNED NOT NULL,
            flags SMALLINT UNSIGNED NOT NULL,
            timestamp BIGINT UNSIGNED NOT NULL,
            pending_state TINYINT UNSIGNED NOT NULL,
            PRIMARY KEY (sequence, event),
            UNIQUE KEY by_id (id),
            KEY by_debit (debit_account_id, timestamp),
            KEY by_credit (credit_account_id, timestamp)
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS keel_commands{s} (
            sequence BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            timestamp BIGINT UNSIGNED NOT NULL,
            command_type SMALLINT UNSIGNED NOT NULL,
            idempotency_key DECIMAL(39,0) UNSIGNED NOT NULL,
            correlation_id BIGINT UNSIGNED NOT NULL,
            tenant_id INT UNSIGNED NOT NULL,
            duplicate TINYINT UNSIGNED NOT NULL,
            code INT UNSIGNED NOT NULL,
            events TINYINT UNSIGNED NOT NULL,
            accepted TINYINT UNSIGNED NOT NULL,
            results VARBINARY(16) NOT NULL
        ) ENGINE=InnoDB",
    ],
    // 2 (additive, online): audit reads by time.
    &["ALTER TABLE keel_commands{s} ADD KEY by_time (timestamp), ALGORITHM=INPLACE, LOCK=NONE"],
];

/// Secondary indexes a rebuild drops while its tables are empty and builds
/// by sorting after the load (table, index, definition). Each must be what
/// [`MIGRATIONS`] creates: a test compares the swapped-in tables with
/// migrated ones.
pub const DEFERRED_INDEXES: [(&str, &str, &str); 4] = [
    ("keel_transfers", "by_id", "UNIQUE KEY by_id (id)"),
    (
        "keel_transfers",
        "by_debit",
        "KEY by_debit (debit_account_id, timestamp)",
    ),
    (
        "keel_transfers",
        "by_credit",
        "KEY by_credit (credit_account_id, timestamp)",
    ),
    ("keel_commands", "by_time", "KEY by_time (timestamp)"),
];

/// Which table set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSet {
    /// The tables readers use.
    Live,
    /// The tables a rebuild fills before the swap.
    Rebuild,
}

/// The four tables of a set.
pub const TABLES: [&str; 4] = [
    "keel_projection",
    "keel_accounts",
    "keel_transfers",
    "keel_commands",
];

impl TableSet {
    /// The suffix of the set's table names.
    pub fn suffix(self) -> &'static str {
        match self {
            TableSet::Live => "",
            TableSet::Rebuild => "__rebuild",
        }
    }

    /// `table` in this set.
    pub fn table(self, table: &str) -> String {
        format!("{table}{}", self.suffix())
    }

    /// The statements of migration step `index` for this set.
    pub fn migration(self, index: usize) -> Vec<String> {
        MIGRATIONS[index]
            .iter()
            .map(|sql| sql.replace("{s}", self.suffix()))
            .collect()
    }

    /// One `RENAME TABLE` that retires the live tables that exist (`live`:
    /// per table of [`TABLES`], whether it exists; an operator may have
    /// dropped some) and puts the rebuilt set in their place (atomic on
    /// MariaDB and MySQL).
    pub fn swap_statement(live: [bool; TABLES.len()]) -> String {
        let mut parts = Vec::new();
        for (table, exists) in TABLES.iter().zip(live) {
            if exists {
                parts.push(format!("{table} TO {table}__retired"));
            }
            parts.push(format!("{table}__rebuild TO {table}"));
        }
        format!("RENAME TABLE {}", parts.join(", "))
    }
}

/// The server's SQL dialect (upserts differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB: `ON DUPLICATE KEY UPDATE c = VALUES(c)`.
    MariaDb,
    /// MySQL 8.0.19+: `AS new ON DUPLICATE KEY UPDATE c = new.c`
    /// (`VALUES()` is deprecated there).
    MySql,
}

impl Flavor {
    /// From `SELECT VERSION()`.
    pub fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// The clause after a multi-row `VALUES` list that updates `columns`
    /// from the inserted row.
    pub fn upsert_clause(self, columns: &[&str]) -> String {
        let (head, value) = match self {
            Flavor::MariaDb => (" ON DUPLICATE KEY UPDATE ", "VALUES({c})"),
            Flavor::MySql => (" AS new ON DUPLICATE KEY UPDATE ", "new.{c}"),
        };
        let sets: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = {}", value.replace("{c}", c)))
            .collect();
        format!("{head}{}", sets.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_names_its_set() {
        for (i, step) in MIGRATIONS.iter().enumerate() {
            for sql in TableSet::Rebuild.migration(i) {
                assert!(sql.contains("__rebuild"), "{sql}");
            }
            assert_eq!(step.len(), TableSet::Live.migration(i).len());
        }
    }

    #[test]
    fn upserts_in_both_dialects() {
        let cols = ["a", "b"];
        assert_eq!(
            Flavor::MariaDb.upsert_clause(&cols),
            " ON DUPLICATE KEY UPDATE a = VALUES(a), b = VALUES(b)"
        );
        assert_eq!(
            Flavor::MySql.upsert_clause(&cols),
            " AS new ON DUPLICATE KEY UPDATE a = new.a, b = new.b"
        );
        assert_eq!(
            Flavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            Flavor::MariaDb
        );
        assert_eq!(Flavor::from_version("8.0.36"), Flavor::MySql);
    }

    #[test]
    fn swap_renames_all_four_tables_at_once() {
        let sql = TableSet::swap_statement([true; 4]);
        assert!(sql.starts_with("RENAME TABLE keel_projection TO keel_projection__retired, keel_projection__rebuild TO keel_projection"));
        assert_eq!(sql.matches(" TO ").count(), 8);
        assert_eq!(
            TableSet::swap_statement([false; 4]).matches(" TO ").count(),
            4
        );
        // A dropped live table is not retired (renaming it would fail: 1146).
        let dropped = TableSet::swap_statement([true, false, true, true]);
        assert_eq!(dropped.matches(" TO ").count(), 7);
        assert!(!dropped.contains(&format!("{} TO", TABLES[1])));
    }
}
