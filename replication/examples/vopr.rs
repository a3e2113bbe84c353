//! Runs the replication simulator over many seeds, or replays one.
//!
//! ```text
//! cargo run --release -p keel-replication --example vopr -- 1000000        # seeds 0..1,000,000
//! cargo run --release -p keel-replication --example vopr -- 1000 5000000   # 1,000 seeds from 5,000,000
//! cargo run --release -p keel-replication --example vopr -- --seed 983     # replay one, with its trace
//! ```
//! Exit status 1 on the first failing seed (printed with the command that
//! replays it).

use keel_replication::sim::{run, SimOptions, Summary};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--seed") {
        let seed = args.get(1).and_then(|s| s.parse().ok()).expect("--seed N");
        let mut options = SimOptions::from_seed(seed);
        options.trace = true;
        println!("{options:?}");
        match run(&options) {
            Ok(summary) => println!("ok: {summary:?}"),
            Err(failure) => {
                for line in &failure.trace {
                    println!("{line}");
                }
                println!("FAILED: {failure}");
                std::process::exit(1);
            }
        }
        return;
    }
    let count: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let first: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let started = std::time::Instant::now();
    let mut total = Summary::default();
    for seed in first..first + count {
        match run(&SimOptions::from_seed(seed)) {
            Ok(s) => {
                total.acknowledged += s.acknowledged;
                total.proposed += s.proposed;
                total.failovers += s.failovers;
                total.isr_changes += s.isr_changes;
                total.faults += s.faults;
            }
            Err(failure) => {
                println!("FAILED: {failure}");
                println!("replay: cargo run --release -p keel-replication --example vopr -- --seed {seed}");
                std::process::exit(1);
            }
        }
        if (seed - first + 1).is_multiple_of(100_000) {
            println!("{} seeds, {:.0?}", seed - first + 1, started.elapsed());
        }
    }
    println!(
        "{count} seeds from {first} passed in {:.1?}: {} failovers, {} in-sync changes, {} faults, {} of {} proposals acknowledged",
        started.elapsed(),
        total.failovers,
        total.isr_changes,
        total.faults,
        total.acknowledged,
        total.proposed
    );
}
