//! Runs every contender `runs` times, interleaved so machine noise hits them
//! alike, and prints a Markdown table with ratios to the raw ring of the same
//! thread shape (four consumer threads, or two: Keel's paired lanes).

use keel_core::{Fusion, WaitStrategy};

use crate::{channel, keel, raw, Measured, PipelineArgs};

/// Which raw ring a contender is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Four consumer threads.
    Four,
    /// Two consumer threads (journaller+replicator, BLP+publisher).
    Two,
}

struct Contender {
    name: &'static str,
    shape: Shape,
    raw: bool,
    measure: Box<dyn Fn(&PipelineArgs) -> Measured>,
}

fn contenders() -> Vec<Contender> {
    let keel = |name, shape, fusion, wait: WaitStrategy| Contender {
        name,
        shape,
        raw: false,
        measure: Box::new(move |a: &PipelineArgs| keel::measure(a, fusion, wait)),
    };
    vec![
        Contender {
            name: "raw disruptor, 4 consumer threads (yield)",
            shape: Shape::Four,
            raw: true,
            measure: Box::new(|a| raw::measure(a, false)),
        },
        Contender {
            name: "raw disruptor, 2 consumer threads (yield)",
            shape: Shape::Two,
            raw: true,
            measure: Box::new(|a| raw::measure(a, true)),
        },
        keel(
            "keel separate lanes (4), spin-then-yield(0)",
            Shape::Four,
            Fusion::Separate,
            WaitStrategy::SpinThenYield { spins: 0 },
        ),
        keel(
            "keel paired lanes (2), spin-then-yield(0)",
            Shape::Two,
            Fusion::Paired,
            WaitStrategy::SpinThenYield { spins: 0 },
        ),
        keel(
            "keel paired lanes (2), blocking (default)",
            Shape::Two,
            Fusion::Paired,
            WaitStrategy::default(),
        ),
        Contender {
            name: "crossbeam channels (4 threads)",
            shape: Shape::Four,
            raw: false,
            measure: Box::new(channel::measure),
        },
    ]
}

fn median_by<T: Clone>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs[runs.len() / 2].clone()
}

/// The median figures of one contender.
struct Summary {
    throughput: f64,
    batch_throughput: Option<f64>,
    latency: Measured,
}

fn summarise(runs: Vec<Measured>) -> Summary {
    let throughput = median_by(runs.iter().map(|m| m.throughput).collect(), |t| *t);
    let batches: Vec<f64> = runs.iter().filter_map(|m| m.batch_throughput).collect();
    let batch_throughput = (!batches.is_empty()).then(|| median_by(batches, |t| *t));
    let latency = median_by(runs, p99);
    Summary {
        throughput,
        batch_throughput,
        latency,
    }
}

fn p99(m: &Measured) -> f64 {
    m.latency_ns.value_at_quantile(0.99) as f64
}

/// `keel-perf pipeline`.
pub fn pipeline(args: &PipelineArgs) {
    let contenders: Vec<Contender> = contenders()
        .into_iter()
        .filter(|c| {
            c.raw
                || args
                    .only
                    .as_ref()
                    .is_none_or(|o| c.name.contains(o.as_str()))
        })
        .collect();
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); contenders.len()];
    for run in 0..args.runs {
        for (i, c) in contenders.iter().enumerate() {
            eprintln!("run {}/{}: {}", run + 1, args.runs, c.name);
            results[i].push((c.measure)(args));
        }
    }
    let summaries: Vec<Summary> = results.into_iter().map(summarise).collect();
    let baseline = |shape: Shape| {
        let i = contenders
            .iter()
            .position(|c| c.raw && c.shape == shape)
            .expect("both raw shapes always run");
        &summaries[i]
    };
    println!(
        "events {} (throughput; batch runs publish {} per claim), {} at {}/s paced (latency, after {} warm-up), ring {}, median of {} runs; ratios are to the raw ring with the same number of consumer threads\n",
        args.events, args.batch, args.latency_events, args.rate, args.warmup(), args.ring_slots, args.runs
    );
    println!("| contender | events/s | vs raw | batch of {} events/s | vs raw | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p99 vs raw |", args.batch);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (c, s) in contenders.iter().zip(&summaries) {
        let raw = baseline(c.shape);
        let (batch, batch_ratio) = match (s.batch_throughput, raw.batch_throughput) {
            (Some(b), Some(r)) => (format!("{b:.0}"), format!("{:.2}", b / r)),
            _ => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let h = &s.latency.latency_ns;
        println!(
            "| {} | {:.0} | {:.2} | {batch} | {batch_ratio} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            c.name,
            s.throughput,
            s.throughput / raw.throughput,
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0,
            p99(&s.latency) / p99(&raw.latency),
        );
    }
}
