//! `keel replay`: rebuild the ledger from a journal directory (optionally
//! starting from a snapshot), read-only, up to a sequence or a time; verify
//! against the snapshots' recorded state hashes; write a snapshot of the
//! result. Exit codes: 0 done (and verified, with `--verify`); 1 the journal
//! is corrupt (location printed) or does not continue the snapshot; 2
//! `--verify` found a divergence (first one printed); 3 cannot read the
//! directory, the configuration or the snapshot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use keel_core::StateMachine;
use keel_harness::config::NodeConfig;
use keel_harness::replay::Replayer;
use keel_harness::snapshot;
use keel_journal::{read_records, FsStorage, SnapshotStore};
use keel_ledger::Ledger;

use crate::exit::{CANNOT_START as UNREADABLE, FAILED as CORRUPT, FINDING as DIVERGED, OK};

/// Options of `keel replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Journal directory.
    dir: PathBuf,
    /// Node configuration (ledger capacities, dedup window, snapshot directory).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from this snapshot file instead of the first record.
    #[arg(long, conflicts_with = "latest_snapshot")]
    snapshot: Option<PathBuf>,
    /// Start from the newest usable snapshot in the snapshot directory (at or below the target).
    #[arg(long)]
    latest_snapshot: bool,
    /// Stop after the record with this sequence (inclusive).
    #[arg(long)]
    to_sequence: Option<u64>,
    /// Stop before the first record stamped after this time (RFC 3339, e.g.
    /// 2026-11-25T21:00:00Z, or ns since the Unix epoch).
    #[arg(long)]
    to_time: Option<String>,
    /// Compare the replayed state with every snapshot in the snapshot
    /// directory the replay passes; report the first divergence (exit 2).
    #[arg(long)]
    verify: bool,
    /// Write a snapshot of the replayed state to this file.
    #[arg(long)]
    snapshot_out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ns) = text.parse::<u64>() {
        return Ok(ns);
    }
    let t = humantime::parse_rfc3339(text).map_err(|e| format!("--to-time {text}: {e}"))?;
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("--to-time {text}: before 1970"))?;
    Ok(since.as_nanos() as u64)
}

pub fn run(args: &ReplayArgs) -> ExitCode {
    match replay(args) {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("keel replay: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn unreadable(e: impl std::fmt::Display) -> Failure {
    (UNREADABLE, e.to_string())
}

/// Where replay starts: the state, the idempotency window, the sequence.
fn start_point(
    args: &ReplayArgs,
    config: &NodeConfig,
    target: u64,
    journal_id: Option<u128>,
) -> Result<(Ledger, keel_core::DedupTable, u64, Option<PathBuf>), Failure> {
    let ledger_config = config.ledger_config();
    let dedup_entries = config.engine.dedup_entries;
    if let Some(path) = &args.snapshot {
        let loaded = keel_journal::snapshot::read_snapshot(path).map_err(unreadable)?;
        let (ledger, dedup) =
            snapshot::decode::<Ledger>(&loaded.header, &loaded.body, &ledger_config, dedup_entries)
                .map_err(|e| (UNREADABLE, format!("snapshot {}: {e}", path.display())))?;
        return Ok((ledger, dedup, loaded.header.sequence, Some(path.clone())));
    }
    if args.latest_snapshot {
        let store =
            SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep).map_err(unreadable)?;
        let (restored, warnings) = snapshot::load_newest::<Ledger>(
            &store,
            &ledger_config,
            dedup_entries,
            target,
            journal_id,
        )
        .map_err(unreadable)?;
        for warning in warnings {
            eprintln!("WARNING: {warning}");
        }
        if let Some(r) = restored {
            return Ok((r.state_machine, r.dedup, r.sequence, Some(r.path)));
        }
    }
    let dedup = keel_core::DedupTable::with_capacity(dedup_entries);
    Ok((Ledger::new(ledger_config), dedup, 0, None))
}

/// Snapshots to verify against: (sequence, recorded hash, path), ascending.
fn checkpoints(config: &NodeConfig) -> Result<Vec<(u64, u64, PathBuf)>, Failure> {
    let store =
        SnapshotStore::open(config.snapshot_dir(), config.snapshot.keep).map_err(unreadable)?;
    let mut found = Vec::new();
    for (sequence, path) in store.list().map_err(unreadable)? {
        match keel_journal::snapshot::read_snapshot(&path) {
            Ok(s) => found.push((sequence, s.header.state_hash, path)),
            Err(_) => eprintln!(
                "WARNING: snapshot {} is damaged; not verified against",
                path.display()
            ),
        }
    }
    found.sort_by_key(|c| c.0);
    Ok(found)
}

fn replay(args: &ReplayArgs) -> Result<u8, Failure> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path).map_err(unreadable)?,
        None => NodeConfig::default(),
    };
    config.journal.data_dir = args.dir.clone();
    let to_time = args
        .to_time
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|m| (UNREADABLE, m))?;
    let target = args.to_sequence.unwrap_or(u64::MAX);
    if !args.dir.is_dir() {
        return Err(unreadable(format!(
            "{} is not a directory",
            args.dir.display()
        )));
    }
    let storage = FsStorage::open_read_only(&args.dir).map_err(unreadable)?;
    if let Some((option, configured, recorded)) = config.adopt_journal_settings(&storage) {
        eprintln!(
            "note: using the journal's {option} = {recorded} (the configuration says {configured})"
        );
    }
    let journal_id = snapshot::journal_id_in(&args.dir);
    let (ledger, dedup, from, snapshot) = start_point(args, &config, target, journal_id)?;
    let mut checkpoints = match args.verify {
        true => checkpoints(&config)?,
        false => Vec::new(),
    };
    checkpoints.retain(|c| c.0 > from && c.0 <= target);
    let checkpoint_count = checkpoints.len();
    let bar = progress(args, from, target);
    let started = Instant::now();
    let mut replayer = Replayer::resume(ledger, dedup, from);
    let mut last = from.checked_sub(1);
    let mut stopped_by_time = false;
    let mut divergence = None;
    let mut next_checkpoint = 0;
    let scan = read_records(&storage, from, target, &mut |record| {
        if stopped_by_time || divergence.is_some() {
            return;
        }
        if to_time.is_some_and(|t| record.header.meta.timestamp_ns > t) {
            stopped_by_time = true;
            return;
        }
        // A checkpoint at sequence s holds every record below s: compare
        // before applying record s.
        while let Some((at, hash, path)) = checkpoints.get(next_checkpoint) {
            if *at > record.header.sequence {
                break;
            }
            if *at == record.header.sequence {
                let state = replayer_state_hash(&mut replayer);
                if state != *hash {
                    divergence = Some((*at, *hash, state, path.clone()));
                    return;
                }
            }
            next_checkpoint += 1;
        }
        replayer.apply(record);
        last = Some(record.header.sequence);
        if record.header.sequence % 4096 == 0 {
            bar.set_position(record.header.sequence - from);
        }
    });
    bar.finish_and_clear();
    let scan = match scan {
        Ok(scan) => scan,
        Err(e) => return Err((CORRUPT, e.to_string())),
    };
    if let Some((expected, found)) = replayer.gap() {
        return Err((CORRUPT, format!("the journal does not continue the snapshot: expected sequence {expected}, found {found}")));
    }
    let binding = snapshot::Binding {
        journal_id: journal_id.unwrap_or(0),
        last_record_checksum: replayer.last_record_checksum(),
    };
    let replayed = replayer.finish();
    let elapsed = started.elapsed();
    let next = last.map_or(from, |l| l + 1);
    // A checkpoint exactly at the end (e.g. the shutdown snapshot).
    if divergence.is_none() && !stopped_by_time {
        if let Some((at, hash, path)) = checkpoints.iter().find(|c| c.0 == next) {
            let state = replayed.state_machine.state_hash();
            if state != *hash {
                divergence = Some((*at, *hash, state, path.clone()));
            }
        }
    }
    summary(
        &replayed,
        snapshot.as_deref(),
        from,
        last,
        elapsed,
        scan.torn,
    );
    if let Some(path) = &args.snapshot_out {
        snapshot::write_to(
            path,
            binding,
            next,
            &replayed.state_machine,
            &replayed.dedup,
        )
        .map_err(unreadable)?;
        println!(
            "snapshot     written: {} (covers sequences below {next})",
            path.display()
        );
    }
    if let Some((at, recorded, found, path)) = divergence {
        println!(
            "DIVERGED     at sequence {at}: snapshot {} records state hash {recorded:016x}, the replay has {found:016x}",
            path.display()
        );
        return Ok(DIVERGED);
    }
    if args.verify {
        println!(
            "verified     {checkpoint_count} snapshot(s) the replay passed: state hashes match"
        );
    }
    Ok(OK)
}

/// The state hash of everything handed to the replayer so far.
fn replayer_state_hash(replayer: &mut Replayer<Ledger>) -> u64 {
    replayer.flush();
    replayer.state_machine().state_hash()
}

fn progress(args: &ReplayArgs, from: u64, target: u64) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let (bar, template) = match target {
        u64::MAX => (
            ProgressBar::no_length(),
            "{spinner} replay {pos} records {per_sec} {elapsed}",
        ),
        t => (
            ProgressBar::new(t.saturating_sub(from) + 1),
            "{spinner} replay {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
        ),
    };
    bar.set_style(ProgressStyle::with_template(template).expect("static template"));
    bar
}

fn summary(
    replayed: &keel_harness::replay::Replayed<Ledger>,
    snapshot: Option<&Path>,
    from: u64,
    last: Option<u64>,
    elapsed: std::time::Duration,
    torn: Option<keel_journal::TornTail>,
) {
    let ledger = &replayed.state_machine;
    if let Some(path) = snapshot {
        println!("snapshot     {} (sequences below {from})", path.display());
    }
    println!(
        "records      {} replayed in {:.2} s ({:.2} M records/s)",
        replayed.records,
        elapsed.as_secs_f64(),
        replayed.records as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
    );
    match last {
        Some(last) => println!("final        sequence {last}"),
        None => println!("final        no record replayed"),
    }
    println!(
        "ledger       {} accounts, {} transfers, clock {} ns",
        ledger.accounts_len(),
        ledger.transfers_len(),
        ledger.last_timestamp()
    );
    println!("state hash   {:016x}", ledger.state_hash());
    if let Some(t) = torn {
        println!(
            "torn tail    segment {} offset {}: {} bytes after the last valid record (not replayed)",
            t.segment_id, t.offset, t.bytes
        );
    }
}
