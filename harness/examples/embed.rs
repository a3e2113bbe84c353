//! A host embedding Keel: a durable engine with a small state machine,
//! submissions from several threads (blocking with idempotency keys, async,
//! a batch), a validator, metrics, and a clean shutdown that hands the state
//! back. Run it twice: the second run recovers the first from the journal.
//!
//! Run: `cargo run --release -p keel-harness --example embed -- /path/on/a/real/disk`

use keel_core::{
    Command, CommandRef, Engine, EngineConfig, Outcome, ResultCode, StateMachine, ValidationError,
    Validator,
};
use keel_harness::replay::Replayer;
use keel_journal::{FsStorage, IoMode, Journal, JournalConfig};

/// Counts orders per instrument; rejects sells beyond the position.
struct Positions {
    position: [i64; 16],
}

const BUY: u16 = 1;
const SELL: u16 = 2;
const SHORT_SELL: ResultCode = ResultCode(1);

impl StateMachine for Positions {
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        let instrument = usize::from(command.payload[0]) % 16;
        let quantity = i64::from(command.payload[1]);
        match command.command_type() {
            BUY => self.position[instrument] += quantity,
            SELL if self.position[instrument] < quantity => {
                *outcome = Outcome::code(SHORT_SELL);
                return;
            }
            _ => self.position[instrument] -= quantity,
        }
        outcome.set(ResultCode::OK, &self.position[instrument].to_le_bytes());
    }

    fn state_hash(&self) -> u64 {
        self.position
            .iter()
            .fold(0u64, |h, p| h.rotate_left(7) ^ *p as u64)
    }
}

/// Stateless checks on the submitting thread: shape and tenant.
struct OnlyTenantSeven;

impl Validator for OnlyTenantSeven {
    fn validate(&self, command: &Command<'_>) -> Result<(), ValidationError> {
        match (command.tenant_id, command.payload.len()) {
            (7, 2) => Ok(()),
            (7, _) => Err(ValidationError { code: 400 }),
            _ => Err(ValidationError { code: 403 }),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "keel-data-embed".to_owned());
    // Recover the journal and replay it into the state machine (and the
    // idempotency window) in one scan, before serving.
    let storage = FsStorage::open(&dir, IoMode::DirectSync)?;
    let config = EngineConfig::default();
    let mut replayed = Replayer::new(Positions { position: [0; 16] }, config.dedup_entries);
    let (journal, _report) =
        Journal::open_replaying(storage, JournalConfig::default(), &mut |r| {
            replayed.apply(r)
        })?;
    let config = EngineConfig {
        first_sequence: journal.next_sequence(),
        ..config
    };
    let engine = Engine::builder(config, replayed.state_machine)
        .dedup(replayed.dedup)
        .journaller(journal)
        .validator(OnlyTenantSeven)
        .start()?;

    std::thread::scope(|s| {
        for t in 0..3u8 {
            let mut submitter = engine.submitter();
            s.spawn(move || {
                let (buy_body, sell_body) = ([t, 5], [t, 3]);
                for i in 0..1_000u64 {
                    let mut buy = Command::new(BUY, &buy_body);
                    buy.tenant_id = 7;
                    buy.correlation_id = i;
                    buy.idempotency_key = 1 << 100 | u128::from(t) << 64 | u128::from(i);
                    let ack = submitter.submit(&buy).expect("engine running");
                    assert_eq!(ack.correlation_id, i);
                    // A retry with the same key returns the first outcome.
                    assert!(submitter.submit(&buy).expect("engine running").duplicate);
                    let mut sell = Command::new(SELL, &sell_body);
                    sell.tenant_id = 7;
                    let pending = submitter.submit_async(&sell).expect("engine running");
                    futures::executor::block_on(pending).expect("acknowledged");
                }
                // A burst as one claim on the ring.
                let mut burst = [Command::new(BUY, &buy_body); 32];
                burst.iter_mut().for_each(|c| c.tenant_id = 7);
                submitter
                    .submit_batch_detached(&burst)
                    .expect("engine running");
            });
        }
    });

    let metrics = engine.metrics();
    let acks = &metrics.ack_latency_ns;
    println!(
        "{} acks: p50 {} µs, p99 {} µs",
        acks.len(),
        acks.value_at_quantile(0.5) / 1000,
        acks.value_at_quantile(0.99) / 1000
    );
    let stopped = engine.shutdown()?;
    println!(
        "{} commands this run; state hash {:016x}; positions {:?}",
        stopped.commands,
        stopped.state_machine.state_hash(),
        &stopped.state_machine.position[..3]
    );
    Ok(())
}
