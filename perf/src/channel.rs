//! The second baseline: the same diamond on bounded crossbeam channels, one
//! thread per stage (the producer sends to the journaller and the replicator;
//! the BLP takes one message from each).

use crossbeam_channel::bounded;

use crate::clock::{histogram, now_ns, Pacer};
use crate::{Measured, Mode, PipelineArgs};

#[derive(Clone, Copy)]
struct Message {
    intended_ns: u64,
    value: u64,
}

fn run(args: &PipelineArgs, events: u64, rate: Option<u64>) -> (f64, hdrhistogram::Histogram<u64>) {
    let record_from = rate.map(|_| events - args.latency_events);
    let capacity = args.ring_slots;
    let (to_journal, journal_in) = bounded::<Message>(capacity);
    let (to_replica, replica_in) = bounded::<Message>(capacity);
    let (journal_out, blp_from_journal) = bounded::<Message>(capacity);
    let (replica_out, blp_from_replica) = bounded::<Message>(capacity);
    let (to_publisher, publisher_in) = bounded::<Message>(capacity);
    std::thread::scope(|s| {
        s.spawn(move || {
            journal_in
                .iter()
                .for_each(|m| journal_out.send(m).expect("blp"))
        });
        s.spawn(move || {
            replica_in
                .iter()
                .for_each(|m| replica_out.send(m).expect("blp"))
        });
        s.spawn(move || {
            let mut sum = 0u64;
            for m in blp_from_journal.iter() {
                let r = blp_from_replica.recv().expect("replica sends as many");
                sum = sum.wrapping_add(m.value ^ r.value);
                to_publisher.send(m).expect("publisher");
            }
            std::hint::black_box(sum);
        });
        let publisher = s.spawn(move || {
            let mut histogram = histogram();
            for (n, m) in publisher_in.iter().enumerate() {
                if record_from.is_some_and(|from| n as u64 >= from) {
                    histogram.saturating_record(now_ns().saturating_sub(m.intended_ns).max(1));
                }
            }
            (now_ns(), histogram)
        });
        let start = now_ns();
        let send = |intended_ns: u64| {
            let m = Message {
                intended_ns,
                value: 1,
            };
            to_journal.send(m).expect("journal");
            to_replica.send(m).expect("replica");
        };
        match rate {
            None => (0..events).for_each(|_| send(0)),
            Some(rate) => {
                let pacer = Pacer::new(rate);
                (0..events).for_each(|i| send(pacer.wait_for(i)));
            }
        }
        drop(to_journal);
        drop(to_replica);
        let (end, histogram) = publisher.join().expect("publisher thread");
        (events as f64 * 1e9 / (end - start) as f64, histogram)
    })
}

/// Runs the channel contender.
pub fn measure(args: &PipelineArgs) -> Measured {
    Measured::from_runs(args, false, |events, mode| {
        let rate = match mode {
            Mode::Paced(rate) => Some(rate),
            _ => None,
        };
        run(args, events, rate)
    })
}
