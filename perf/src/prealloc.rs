//! `keel-perf prealloc`: what preparing the next segment costs a durable
//! write, in one run (issue 17's acknowledgement stall).
//!
//! A writer thread issues 4 KiB `O_DIRECT|O_DSYNC` writes (the shape of a
//! group commit) every 200 µs into a prepared file, from 200 ms before to
//! 200 ms after a segment is created beside it. Contenders, interleaved:
//! - `none`: no segment created (the baseline);
//! - `buffered`: the journal's old preparation — 1 MiB buffered writes of
//!   zeros, then `fsync` (reimplemented here as the reference);
//! - `keel`: `FsStorage::create_ahead` as the journal's preallocation thread
//!   calls it (direct writes, paced while not hurried);
//! - `keel-hurried`: the same once the writer is past half its segment
//!   (direct writes, flat out).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_journal::aligned::AlignedBuf;
use keel_journal::{FsStorage, IoMode, Storage};

use crate::clock::histogram;

/// Options of `keel-perf prealloc`.
#[derive(clap::Args, Clone, Debug)]
pub struct PreallocArgs {
    /// Directory on the disk to measure (a fresh subdirectory is used and removed).
    #[arg(long, default_value = "target/keel-perf-prealloc")]
    pub dir: PathBuf,
    /// Size of the segment created, MiB.
    #[arg(long, default_value_t = 64)]
    pub segment_mib: u64,
    /// Rounds (each runs every contender once); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

const CONTENDERS: [&str; 4] = ["none", "buffered", "keel", "keel-hurried"];
const WRITE_BYTES: usize = 4096;

struct Measured {
    writes: Histogram<u64>,
    create: Duration,
}

fn buffered_fill(path: &Path, size: u64) {
    let file = std::fs::File::create(path).expect("create");
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        file.write_all_at(&zeros, at).expect("fill");
        at += zeros.len() as u64;
    }
    file.sync_all().expect("sync");
}

fn measure(dir: &Path, contender: &str, round: usize, segment_bytes: u64) -> Measured {
    let target = dir.join("writes.bin");
    if !target.exists() {
        buffered_fill(&target, 64 << 20);
    }
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(&target)
        .expect("open O_DIRECT|O_DSYNC");
    crate::journal::settle();
    let storage =
        Arc::new(FsStorage::open(dir.join("segments"), IoMode::DirectSync).expect("storage"));
    let id = round as u64 * 10 + 1;
    let done = Arc::new(AtomicBool::new(false));
    let creator = {
        let (done, storage, contender) = (
            Arc::clone(&done),
            Arc::clone(&storage),
            contender.to_string(),
        );
        let path = dir.join(format!("buffered-{round}.bin"));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let started = Instant::now();
            match contender.as_str() {
                "buffered" => buffered_fill(&path, segment_bytes),
                "keel" => drop(
                    storage
                        .create_ahead(id, segment_bytes, &AtomicBool::new(false))
                        .expect("create"),
                ),
                "keel-hurried" => drop(storage.create(id, segment_bytes).expect("create")),
                _ => {}
            }
            let took = started.elapsed();
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, Ordering::Release);
            took
        })
    };
    let buf = AlignedBuf::new(WRITE_BYTES, 4096);
    let mut writes = histogram();
    let mut at = 0u64;
    while !done.load(Ordering::Acquire) {
        let t = Instant::now();
        writer.write_all_at(buf.as_slice(), at).expect("write");
        writes.saturating_record(t.elapsed().as_nanos() as u64);
        at = (at + WRITE_BYTES as u64) % (64 << 20);
        std::thread::sleep(Duration::from_micros(200));
    }
    let create = creator.join().expect("creator");
    let _ = std::fs::remove_file(dir.join(format!("buffered-{round}.bin")));
    let _ = storage.remove(id);
    Measured { writes, create }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Runs the benchmark and prints the table docs/performance.md keeps.
pub fn run(args: &PreallocArgs) {
    let dir = args.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let segment_bytes = args.segment_mib << 20;
    let mut results: Vec<Vec<Measured>> = CONTENDERS.iter().map(|_| Vec::new()).collect();
    for round in 0..args.runs {
        for (i, contender) in CONTENDERS.iter().enumerate() {
            results[i].push(measure(
                &dir,
                contender,
                round * CONTENDERS.len() + i,
                segment_bytes,
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "4 KiB O_DIRECT|O_DSYNC writes every 200 µs while a {} MiB segment is prepared (median of {} rounds)",
        args.segment_mib, args.runs
    );
    println!(
        "| preparation | create ms | write p50 µs | p99 µs | p99.9 µs | max µs | max ÷ none |"
    );
    println!("|---|---|---|---|---|---|---|");
    let median = |runs: &mut Vec<Measured>, key: &dyn Fn(&Measured) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(key).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let none_max = median(&mut results[0], &|m| us(m.writes.max()));
    for (i, contender) in CONTENDERS.iter().enumerate() {
        let r = &mut results[i];
        let max = median(r, &|m| us(m.writes.max()));
        println!(
            "| {contender} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}× |",
            median(r, &|m| m.create.as_secs_f64() * 1e3),
            median(r, &|m| us(m.writes.value_at_quantile(0.5))),
            median(r, &|m| us(m.writes.value_at_quantile(0.99))),
            median(r, &|m| us(m.writes.value_at_quantile(0.999))),
            max,
            max / none_max
        );
    }
}
