//! `keel journal inspect | verify | dump`: read-only views of a journal
//! directory for operators. Nothing here writes to the journal.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use keel_journal::{read_records, scan, FsStorage, OwnedRecord, ScanError, ScanReport};

use crate::JournalCommand;

use crate::exit::{CANNOT_START as UNREADABLE, FAILED as CORRUPT, FINDING as TORN, OK};

pub fn run(command: JournalCommand) -> ExitCode {
    let dir = match &command {
        JournalCommand::Inspect { dir }
        | JournalCommand::Verify { dir }
        | JournalCommand::Dump { dir, .. } => dir,
    };
    let storage = match open(dir) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("keel journal: {message}");
            return ExitCode::from(UNREADABLE);
        }
    };
    // A writer holds the lock: the tail may be a write in progress, not a torn one.
    let live = FsStorage::writer_active(dir);
    let result = match command {
        JournalCommand::Inspect { .. } => scan(&storage, &mut |_| {}).map(|r| inspect(&r, live)),
        JournalCommand::Verify { .. } => scan(&storage, &mut |_| {}).map(|r| verify(&r, live)),
        JournalCommand::Dump { from, to, .. } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut closed = false;
            // Sessions are read from the start, so a request names its
            // principal even when its registration is before `from`.
            let mut sessions = Sessions::default();
            let scanned = read_records(&storage, 0, to, &mut |r| {
                let r = OwnedRecord::from_record(r);
                let principal = sessions.see(&r);
                // A closed pipe (`| head`) ends the output, not the process.
                if !closed && r.sequence >= from {
                    closed = dump(&mut out, &r, &principal).is_err();
                }
            });
            closed |= out.flush().is_err();
            match closed {
                true => return ExitCode::from(OK),
                false => scanned.map(|r| health(&r, live)),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(ScanError::Corrupt(c)) => {
            eprintln!("CORRUPT: {c}");
            eprintln!("the journal refuses writes until an operator restores or truncates it at that location");
            ExitCode::from(CORRUPT)
        }
        Err(e) => {
            eprintln!("keel journal: {e}");
            ExitCode::from(UNREADABLE)
        }
    }
}

fn open(dir: &Path) -> Result<FsStorage, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // Reading needs no direct I/O; buffered mode also reads journals copied to tmpfs.
    FsStorage::open_read_only(dir).map_err(|e| e.to_string())
}

fn health(report: &ScanReport, live: bool) -> u8 {
    for h in &report.damaged_headers {
        eprintln!(
            "DAMAGED HEADER: segment {}: its header block does not decode; its records are intact \
             and the writer rebuilds the header from them at its next open",
            h.segment_id
        );
    }
    if !report.damaged_headers.is_empty() {
        return CORRUPT;
    }
    match report.torn {
        Some(t) if live => {
            println!(
                "live: a writer holds the journal; its write in progress at segment {} offset {} is not checked",
                t.segment_id, t.offset
            );
            OK
        }
        Some(t) => {
            eprintln!(
                "TORN TAIL: segment {} offset {}: {} bytes after the last valid record (cut on next open)",
                t.segment_id, t.offset, t.bytes
            );
            TORN
        }
        None => OK,
    }
}

fn inspect(report: &ScanReport, live: bool) -> u8 {
    println!(
        "{:>8} {:>14} {:>14} {:>10} {:>12} {:>6}",
        "segment", "first seq", "last seq", "records", "data bytes", "block"
    );
    for s in &report.segments {
        let last = match s.records {
            0 => "-".to_owned(),
            n => (s.header.first_sequence + n - 1).to_string(),
        };
        println!(
            "{:>8} {:>14} {:>14} {:>10} {:>12} {:>6}",
            s.header.segment_id,
            s.header.first_sequence,
            last,
            s.records,
            s.data_end,
            s.header.block_size
        );
    }
    if !report.unused_segments.is_empty() {
        println!("preallocated, unused: {:?}", report.unused_segments);
    }
    println!(
        "records {}, next sequence {}",
        report.records(),
        report.next_sequence
    );
    if let Some(m) = &report.manifest {
        println!(
            "journal id {:032x}, segment size {}, chain {}, newest segment begun {}",
            m.journal_id, m.segment_size, m.chain, m.last_segment
        );
    }
    let code = health(report, live);
    if code == OK {
        println!("health: ok");
    }
    code
}

fn verify(report: &ScanReport, live: bool) -> u8 {
    let code = health(report, live);
    if code == OK {
        println!(
            "ok: {} records in {} segments verified (checksums, positions, sequence continuity, hash chain where present)",
            report.records(),
            report.segments.len()
        );
    }
    if let Some(head) = report.last_record_hash {
        // Anchor this elsewhere: a chained journal is tamper-evident up to a
        // head hash the operator trusts.
        let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
        println!("head hash (BLAKE3 of the last record): {hex}");
    }
    code
}

/// Who each session is, from the journaled registrations (audit: every
/// session request's key names its scope; the registration names the
/// principal and the client's session id).
#[derive(Default)]
struct Sessions {
    by_scope: std::collections::HashMap<u64, (String, u64)>,
}

impl Sessions {
    /// Notes a registration; returns what to print about `r`'s session.
    fn see(&mut self, r: &OwnedRecord) -> String {
        if r.meta.command_type == keel_core::SESSION_REGISTER {
            let Some(reg) = keel_core::Registration::decode(&r.payload) else {
                return " session-register (malformed)".into();
            };
            let principal = String::from_utf8_lossy(reg.principal).into_owned();
            let line = format!(
                " session-register principal {principal:?} session {:#x} scope {:#x}{}",
                reg.session,
                reg.scope,
                if reg.resume { " resume" } else { "" }
            );
            self.by_scope.insert(reg.scope, (principal, reg.session));
            return line;
        }
        if !r.meta.session {
            return String::new();
        }
        let scope = (r.meta.idempotency_key >> 64) as u64;
        match self.by_scope.get(&scope) {
            Some((principal, session)) => format!(
                " principal {principal:?} session {session:#x} request {}",
                r.meta.idempotency_key as u64
            ),
            None => format!(" session scope {scope:#x} (its registration is not in the journal)"),
        }
    }
}

fn dump(out: &mut impl std::io::Write, r: &OwnedRecord, session: &str) -> std::io::Result<()> {
    let preview: String = r
        .payload
        .iter()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect();
    writeln!(
        out,
        "seq {} seg {} off {} epoch {} type {} schema {} ts {} corr {} key {:x} tenant {}{} len {} payload {}{}",
        r.sequence,
        r.segment_id,
        r.offset,
        r.epoch,
        r.meta.command_type,
        r.meta.schema_version,
        r.meta.timestamp_ns,
        r.meta.correlation_id,
        r.meta.idempotency_key,
        r.meta.tenant_id,
        session,
        r.payload.len(),
        preview,
        if r.payload.len() > 32 { "…" } else { "" }
    )
}
