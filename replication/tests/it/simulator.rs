//! Seeds through the simulator: every policy, 2–5 replicas, every fault
//! kind. `KEEL_SIM_SEEDS=N` runs N seeds (default 2,000 here);
//! `cargo run --release -p keel-replication --example vopr` runs millions
//! and replays one.

use keel_replication::sim::{run, SimOptions};

fn seeds() -> u64 {
    std::env::var("KEEL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn no_seed_breaks_an_invariant() {
    let mut failovers = 0;
    let mut acknowledged = 0;
    for seed in 0..seeds() {
        let options = SimOptions::from_seed(seed);
        match run(&options) {
            Ok(summary) => {
                failovers += summary.failovers;
                acknowledged += summary.acknowledged;
            }
            Err(failure) => {
                let mut traced = options.clone();
                traced.trace = true;
                let trace = run(&traced)
                    .err()
                    .map(|f| f.trace.join("\n"))
                    .unwrap_or_default();
                panic!("{failure} ({options:?})\n{trace}");
            }
        }
    }
    // The faults must really cause failovers, and the shard must really commit.
    assert!(
        failovers > seeds(),
        "only {failovers} failovers in {} seeds",
        seeds()
    );
    assert!(
        acknowledged > seeds() * 100,
        "only {acknowledged} acknowledgements"
    );
}
