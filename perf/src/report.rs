//! Runs every contender `runs` times, interleaved so machine noise hits them
//! alike, and prints a Markdown table with ratios to the raw ring.

use keel_core::{Fusion, WaitStrategy};

use crate::{channel, keel, raw, Measured, PipelineArgs};

type Contender = (&'static str, Box<dyn Fn(&PipelineArgs) -> Measured>);

fn contenders() -> Vec<Contender> {
    vec![
        (
            "raw disruptor (multi-producer, 4 consumer threads, yield)",
            Box::new(raw::measure),
        ),
        (
            "keel separate lanes, spin-then-yield(0)",
            Box::new(|a| {
                keel::measure(
                    a,
                    Fusion::Separate,
                    WaitStrategy::SpinThenYield { spins: 0 },
                )
            }),
        ),
        (
            "keel paired lanes, spin-then-yield(0)",
            Box::new(|a| {
                keel::measure(a, Fusion::Paired, WaitStrategy::SpinThenYield { spins: 0 })
            }),
        ),
        (
            "keel paired lanes, blocking (default)",
            Box::new(|a| keel::measure(a, Fusion::Paired, WaitStrategy::default())),
        ),
        ("crossbeam channels (4 threads)", Box::new(channel::measure)),
    ]
}

fn median_by<T: Clone>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs[runs.len() / 2].clone()
}

/// `keel-perf pipeline`.
pub fn pipeline(args: &PipelineArgs) {
    let contenders: Vec<Contender> = contenders()
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            *i == 0 || args.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
        })
        .map(|(_, c)| c)
        .collect();
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); contenders.len()];
    for run in 0..args.runs {
        for (i, (name, measure)) in contenders.iter().enumerate() {
            eprintln!("run {}/{}: {name}", run + 1, args.runs);
            results[i].push(measure(args));
        }
    }
    let throughput: Vec<f64> = results
        .iter()
        .map(|r| median_by(r.iter().map(|m| m.throughput).collect(), |t| *t))
        .collect();
    let batch_throughput: Vec<Option<f64>> = results
        .iter()
        .map(|r| {
            let runs: Vec<f64> = r.iter().filter_map(|m| m.batch_throughput).collect();
            (!runs.is_empty()).then(|| median_by(runs, |t| *t))
        })
        .collect();
    let p99 = |m: &Measured| m.latency_ns.value_at_quantile(0.99) as f64;
    let latency: Vec<Measured> = results.into_iter().map(|r| median_by(r, p99)).collect();
    println!(
        "events {} (throughput; batch runs publish {} per claim), {} at {}/s paced (latency, after {} warm-up), ring {}, median of {} runs\n",
        args.events,
        args.batch,
        args.latency_events,
        args.rate,
        args.warmup(),
        args.ring_slots,
        args.runs
    );
    println!("| contender | events/s | vs raw | batch of {} events/s | vs raw | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p99 vs raw |", args.batch);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (i, (name, _)) in contenders.iter().enumerate() {
        let h = &latency[i].latency_ns;
        let (batch, batch_ratio) = match (batch_throughput[i], batch_throughput[0]) {
            (Some(b), Some(raw)) => (format!("{b:.0}"), format!("{:.2}", b / raw)),
            _ => ("n/a".to_owned(), "n/a".to_owned()),
        };
        println!(
            "| {name} | {:.0} | {:.2} | {batch} | {batch_ratio} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            throughput[i],
            throughput[i] / throughput[0],
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0,
            p99(&latency[i]) / p99(&latency[0]),
        );
    }
}
