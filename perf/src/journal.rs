//! `keel-perf journal`: the journal against the raw device, in one run.
//!
//! Baseline: the benchmark writes the same sizes itself with
//! `O_DIRECT | O_DSYNC` into a preallocated file on the same file system.
//! Then the journal (sync policy) appends records of the same total size per
//! batch. Reported: bandwidth at 1 MiB batches, and the latency of one small
//! record's durable append vs one raw aligned write of the journal's block size.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use keel_core::{CommandHeader, CommandRef, Journaller};
use keel_journal::aligned::AlignedBuf;
use keel_journal::format::record_footprint;
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig, Storage};

use crate::clock::histogram;

/// Options of `keel-perf journal`.
#[derive(clap::Args, Clone, Debug)]
pub struct JournalArgs {
    /// Directory on the disk to measure (a fresh subdirectory is used and removed).
    #[arg(long, default_value = "target/keel-perf-journal")]
    pub dir: PathBuf,
    /// 1 MiB batches per bandwidth run.
    #[arg(long, default_value_t = 256)]
    pub batches: usize,
    /// Single-record appends per latency run.
    #[arg(long, default_value_t = 3000)]
    pub appends: usize,
    /// Repetitions (median reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

const BATCH_BYTES: usize = 1 << 20;
const PAYLOAD: usize = 128;

fn raw_file(dir: &Path, size: u64) -> std::fs::File {
    let path = dir.join("raw.bin");
    let zeros = vec![0u8; 1 << 20];
    let f = std::fs::File::create(&path).expect("create raw file");
    let mut at = 0;
    while at < size {
        f.write_all_at(&zeros, at).expect("zero-fill");
        at += zeros.len() as u64;
    }
    f.sync_all().expect("sync");
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(&path)
        .expect("open O_DIRECT|O_DSYNC")
}

/// Raw: `batches` sequential 1 MiB direct+dsync writes. Returns MiB/s.
pub(crate) fn raw_bandwidth(dir: &Path, batches: usize, block: usize) -> f64 {
    let file = raw_file(dir, (batches * BATCH_BYTES) as u64);
    settle();
    let mut buf = AlignedBuf::new(BATCH_BYTES, block);
    buf.as_mut_slice().fill(0xab);
    let start = Instant::now();
    for i in 0..batches {
        file.write_all_at(buf.as_slice(), (i * BATCH_BYTES) as u64)
            .expect("raw write");
    }
    batches as f64 / start.elapsed().as_secs_f64()
}

/// Raw: `n` sequential single-block direct+dsync writes; latency per write.
pub(crate) fn raw_latency(dir: &Path, n: usize, block: usize) -> Histogram<u64> {
    let file = raw_file(dir, LATENCY_SEGMENT_BYTES);
    settle();
    let buf = AlignedBuf::new(block, block);
    let mut h = histogram();
    for i in 0..n {
        let t = Instant::now();
        file.write_all_at(buf.as_slice(), (i * block) as u64)
            .expect("raw write");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}

fn append(journal: &mut Journal<FsStorage>, sequence: u64, body: &[u8]) {
    let header = CommandHeader {
        command_type: 1,
        schema_version: 1,
        payload_len: body.len() as u32,
        ..CommandHeader::default()
    };
    journal
        .append(&CommandRef {
            sequence,
            header: &header,
            payload: body,
        })
        .expect("append");
}

/// Segment (and raw file) size for the latency runs: small, so the setup
/// writes about the same amount for both before the timed part.
const LATENCY_SEGMENT_BYTES: u64 = 64 << 20;

/// Lets the device finish the setup's writes before a timed part.
pub(crate) fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(std::time::Duration::from_millis(200));
}

fn journal(dir: &Path, segment_size: u64) -> Journal<FsStorage> {
    let storage = FsStorage::open(dir, IoMode::DirectSync).expect("journal storage");
    let config = JournalConfig {
        segment_size,
        write_buffer_bytes: BATCH_BYTES + (1 << 16),
        ..JournalConfig::default()
    };
    let journal = Journal::open(storage, config).expect("open journal").0;
    // Measure the write path, not the background zero-fill of the next
    // segment (its cost is reported separately in docs/performance.md).
    let status = journal.status();
    while !status.spare_ready() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    settle();
    journal
}

/// Journal: batches of records totalling 1 MiB, one end_of_batch each. MiB/s of bytes written.
fn journal_bandwidth(dir: &Path, batches: usize) -> f64 {
    let mut journal = journal(dir, ((batches + 2) * BATCH_BYTES) as u64);
    let per_batch = BATCH_BYTES / record_footprint(PAYLOAD);
    let body = [0xcd; PAYLOAD];
    let mut sequence = journal.next_sequence();
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..per_batch {
            append(&mut journal, sequence, &body);
            sequence += 1;
        }
        journal.end_of_batch(sequence - 1).expect("end of batch");
    }
    let bytes = (batches * per_batch * record_footprint(PAYLOAD)) as f64;
    bytes / BATCH_BYTES as f64 / start.elapsed().as_secs_f64()
}

/// Journal: one record per batch; latency of append + end_of_batch.
fn journal_latency(dir: &Path, n: usize) -> Histogram<u64> {
    let mut journal = journal(dir, LATENCY_SEGMENT_BYTES);
    let body = [0xcd; PAYLOAD];
    let first = journal.next_sequence();
    let mut h = histogram();
    for sequence in first..first + n as u64 {
        let t = Instant::now();
        append(&mut journal, sequence, &body);
        journal.end_of_batch(sequence).expect("end of batch");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}

pub(crate) fn fresh(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `keel-perf journal`.
pub fn run(args: &JournalArgs) {
    let block = FsStorage::open(fresh(&args.dir, "probe"), IoMode::DirectSync)
        .expect("direct I/O on the bench directory")
        .block_size() as usize;
    let (mut raw_bw, mut j_bw) = (Vec::new(), Vec::new());
    let (mut raw_lat, mut j_lat) = (histogram(), histogram());
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        raw_bw.push(raw_bandwidth(&fresh(&args.dir, "raw"), args.batches, block));
        j_bw.push(journal_bandwidth(
            &fresh(&args.dir, "journal"),
            args.batches,
        ));
        raw_lat
            .add(raw_latency(&fresh(&args.dir, "raw"), args.appends, block))
            .expect("same bounds");
        j_lat
            .add(journal_latency(&fresh(&args.dir, "journal"), args.appends))
            .expect("same bounds");
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let (raw_bw, j_bw) = (median(raw_bw), median(j_bw));
    println!(
        "direct-I/O alignment (statx): {block} B; {} runs; record payload {PAYLOAD} B\n",
        args.runs
    );
    println!("| measure | raw device | journal | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| 1 MiB batches, MiB/s | {raw_bw:.0} | {j_bw:.0} | {:.2} |",
        j_bw / raw_bw
    );
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!(
            "| one small durable append vs one {block} B write, {name} µs | {:.0} | {:.0} | {:.2} |",
            us(&raw_lat, q),
            us(&j_lat, q),
            us(&j_lat, q) / us(&raw_lat, q)
        );
    }
    println!(
        "| max µs | {:.0} | {:.0} | {:.2} |",
        raw_lat.max() as f64 / 1000.0,
        j_lat.max() as f64 / 1000.0,
        j_lat.max() as f64 / raw_lat.max() as f64
    );
}
