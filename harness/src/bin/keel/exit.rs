//! Exit codes shared by every `keel` command: one table, in
//! docs/operating.md ("Exit codes"), pinned by `harness/tests/it/hardening.rs`.

/// Success.
pub const OK: u8 = 0;
/// Failed: a corrupt journal (location printed), a halted projection, a
/// failed run (engine stopped, invariant or restart check failed).
pub const FAILED: u8 = 1;
/// `journal verify`: a torn tail is present; `replay --verify`: a divergence.
pub const FINDING: u8 = 2;
/// Cannot read or cannot start: no journal, unreadable, locked by another
/// writer, no direct I/O, no database for `project status`.
pub const CANNOT_START: u8 = 3;
/// `keel run` was stopped by SIGINT/SIGTERM: it drained, stopped cleanly
/// (snapshot if asked) and printed its summary.
pub const INTERRUPTED: u8 = 4;
/// A bad command-line argument (usage error).
pub const USAGE: u8 = 64;
/// An invalid configuration value (the message names the option).
pub const CONFIG: u8 = 78;
/// A second SIGINT/SIGTERM forced an immediate exit.
pub const FORCED: u8 = 130;
