//! The journal's gauges as `keel serve` and a replicated leader export them
//! (Prometheus names and help; the endpoint lives in `keel-server`, which
//! knows no journal).

use keel_journal::JournalStatus;

/// `(name, help, value)` of every journal gauge, read now.
pub fn journal_gauges(journal: &JournalStatus) -> [(&'static str, &'static str, f64); 4] {
    [
        (
            "keel_journal_durable_next",
            "One past the last sequence synced.",
            journal.durable_next() as f64,
        ),
        (
            "keel_journal_written_next",
            "One past the last sequence written.",
            journal.written_next() as f64,
        ),
        (
            "keel_journal_out_of_space",
            "1 while the journal waits for disk space.",
            u8::from(journal.out_of_space()) as f64,
        ),
        (
            "keel_journal_spare_ready",
            "1 when the next segment is prepared.",
            u8::from(journal.spare_ready()) as f64,
        ),
    ]
}
