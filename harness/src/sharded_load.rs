//! The main job on a sharded node, behind `keel shards`: accounts spread
//! over the shards by slot, transfers from several threads of which a
//! chosen share cross shards (sagas), then the money check (Σ of every
//! balance 0, each pair of clearing accounts nets 0, nothing pending), and
//! a restart that must reach every shard's state hash again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_ledger::routing::clearing_account_id;
use keel_ledger::{Account, CreateAccountResult, Transfer};

use crate::config::NodeConfig;
use crate::load::{plain_accounts, XorShift};
use crate::saga::SagaRecovery;
use crate::sharded::{ShardError, ShardStopped, ShardedNode, ShardedNodeError};

/// What to run.
#[derive(Debug, Clone)]
pub struct ShardedLoadConfig {
    /// The node; `[shards]` says how many.
    pub node: NodeConfig,
    /// Transfers to push.
    pub transfers: u64,
    /// Submitting threads.
    pub producers: usize,
    /// Transfers per call (split by shard into commands of 7).
    pub batch: usize,
    /// Accounts over all shards.
    pub accounts: u32,
    /// Percentage of transfers between accounts of two shards (0..=100).
    pub cross_percent: u32,
    /// Set (e.g. by SIGTERM) to stop pushing early.
    pub stop: Arc<AtomicBool>,
}

/// What a run measured and checked.
#[derive(Debug)]
pub struct ShardedLoadReport {
    /// Sagas a previous run left open and this start finished.
    pub recovered: SagaRecovery,
    /// Wall time of the transfer phase.
    pub elapsed: Duration,
    /// Transfers acknowledged per second in that phase.
    pub transfers_per_second: f64,
    /// Per-code counts of the transfers' results, indexed by code.
    pub results: Vec<u64>,
    /// Transfers that crossed shards.
    pub cross: u64,
    /// Latency per call (ns): the batch's commands on every shard, and its
    /// sagas, until the last answer.
    pub call_latency_ns: Histogram<u64>,
    /// Transfers each shard holds at the end (saga steps included).
    pub per_shard_transfers: Vec<usize>,
    /// Σ of every account's net balance over every shard (must be 0).
    pub total_net: i128,
    /// Per pair of shards, the net of their two clearing accounts (0 each).
    pub clearing_pairs: Vec<i128>,
    /// Pending amounts left anywhere (0 once sagas settle).
    pub pending: u64,
    /// Each shard's state hash at shutdown, and after the restart.
    pub hashes: (Vec<u64>, Vec<u64>),
    /// The run was stopped early.
    pub interrupted: bool,
}

impl ShardedLoadReport {
    /// Whether every check held.
    pub fn ok(&self) -> bool {
        self.total_net == 0
            && self.clearing_pairs.iter().all(|&p| p == 0)
            && self.pending == 0
            && self.hashes.0 == self.hashes.1
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardedLoadError {
    /// The node did not start.
    #[error(transparent)]
    Start(#[from] ShardedNodeError),
    /// A call failed with something other than a business rejection.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A shard did not stop cleanly.
    #[error("shard {0} stopped: {1}")]
    Stopped(usize, crate::node::NodeError),
}

/// Runs the job.
pub fn run(config: &ShardedLoadConfig) -> Result<ShardedLoadReport, ShardedLoadError> {
    let node = ShardedNode::start(&config.node)?;
    let recovered = node.recover_sagas()?;
    // Each start journals a table check on every shard: shard 0's next
    // sequence grows from run to run, so ids stay unique.
    let nonce = u128::from(node.shards()[0].recovery().next_sequence + 1);
    let mut client = node.client(0);
    let accounts = plain_accounts(config.accounts);
    for chunk in accounts.chunks(900) {
        for code in client.create_accounts(chunk)? {
            let fine = [CreateAccountResult::ok, CreateAccountResult::exists];
            assert!(
                fine.iter().any(|&c| c as u8 == code),
                "account refused: {code}"
            );
        }
    }
    let shards = node.shards().len();
    let mut per_shard = vec![Vec::new(); shards];
    for a in &accounts {
        per_shard[usize::from(client.shard_of(a.id))].push(a.id);
    }
    let per_shard = Arc::new(per_shard);
    let results = Arc::new(Mutex::new((vec![0u64; 256], 0u64, histogram())));
    let started = Instant::now();
    let per_producer = config.transfers.div_ceil(config.producers as u64);
    let threads: Vec<_> = (0..config.producers)
        .map(|p| {
            let mut client = node.client(0);
            let (per_shard, results, stop) =
                (per_shard.clone(), results.clone(), config.stop.clone());
            let (batch, cross_percent) = (config.batch, u64::from(config.cross_percent));
            std::thread::spawn(move || -> Result<(), ShardError> {
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((p as u64 + 1) << 17));
                let (mut codes, mut cross, mut latency) = (vec![0u64; 256], 0u64, histogram());
                let mut sent = 0u64;
                let mut transfers = Vec::with_capacity(batch);
                while sent < per_producer && !stop.load(Ordering::Relaxed) {
                    transfers.clear();
                    for _ in 0..batch.min((per_producer - sent) as usize) {
                        let n = per_shard.len() as u64;
                        let s1 = (rng.next_u64() % n) as usize;
                        let crossing = n > 1 && rng.next_u64() % 100 < cross_percent;
                        let s2 = match crossing {
                            true => (s1 + 1 + (rng.next_u64() % (n - 1)) as usize) % n as usize,
                            false => s1,
                        };
                        let pick = |s: usize, r: u64| {
                            per_shard[s][(r % per_shard[s].len() as u64) as usize]
                        };
                        let debit = pick(s1, rng.next_u64());
                        let mut credit = pick(s2, rng.next_u64());
                        if credit == debit {
                            credit = pick(s2, rng.next_u64() + 1);
                        }
                        sent += 1;
                        cross += u64::from(crossing);
                        transfers.push(Transfer {
                            id: nonce << 64 | (p as u128) << 40 | u128::from(sent),
                            debit_account_id: debit,
                            credit_account_id: credit,
                            amount: 1 + rng.next_u64() % 100,
                            ledger: 1,
                            code: 1,
                            ..Transfer::default()
                        });
                    }
                    let call = Instant::now();
                    for code in client.create_transfers(&transfers)? {
                        codes[usize::from(code)] += 1;
                    }
                    let _ = latency.record(call.elapsed().as_nanos().max(1) as u64);
                }
                let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                for (total, n) in all.0.iter_mut().zip(&codes) {
                    *total += n;
                }
                all.1 += cross;
                let _ = all.2.add(&latency);
                Ok(())
            })
        })
        .collect();
    let mut failed = None;
    for t in threads {
        if let Err(e) = t.join().expect("producer thread") {
            failed = failed.or(Some(e));
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = failed {
        return Err(e.into());
    }
    drop(client);
    let interrupted = config.stop.load(Ordering::Relaxed);
    let stopped = node
        .shutdown()
        .map_err(|(i, e)| ShardedLoadError::Stopped(i, e))?;
    let (total_net, clearing_pairs, pending) = audit(&stopped);
    let per_shard_transfers = stopped
        .iter()
        .map(|s| s.state_machine.transfers_len())
        .collect();
    let before = hashes(&stopped);
    drop(stopped); // the journals' locks, before the restart takes them
    let node = ShardedNode::start(&config.node)?;
    let again = node.recover_sagas()?;
    assert_eq!(again.resumed, 0, "a clean stop leaves no saga open");
    let after = hashes(
        &node
            .shutdown()
            .map_err(|(i, e)| ShardedLoadError::Stopped(i, e))?,
    );
    let (results, cross, call_latency_ns) = Arc::try_unwrap(results)
        .expect("producers joined")
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok(ShardedLoadReport {
        recovered,
        elapsed,
        transfers_per_second: results.iter().sum::<u64>() as f64 / elapsed.as_secs_f64(),
        results,
        cross,
        call_latency_ns,
        per_shard_transfers,
        total_net,
        clearing_pairs,
        pending,
        hashes: (before, after),
        interrupted,
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

fn hashes(stopped: &[ShardStopped]) -> Vec<u64> {
    stopped
        .iter()
        .map(|s| keel_core::StateMachine::state_hash(&s.state_machine))
        .collect()
}

/// Σ of net balances, the clearing pairs' nets (ledger 1), pending left.
pub fn audit(stopped: &[ShardStopped]) -> (i128, Vec<i128>, u64) {
    let net = |a: &Account| i128::from(a.credits_posted) - i128::from(a.debits_posted);
    let ledgers: Vec<_> = stopped.iter().map(|s| &s.state_machine).collect();
    let total = ledgers.iter().flat_map(|l| l.accounts()).map(net).sum();
    let mut pairs = Vec::new();
    for s1 in 0..ledgers.len() as u16 {
        for s2 in s1 + 1..ledgers.len() as u16 {
            let side = |o: u16, p: u16| {
                ledgers[usize::from(o)]
                    .account(clearing_account_id(o, p, 1))
                    .map_or(0, net)
            };
            pairs.push(side(s1, s2) + side(s2, s1));
        }
    }
    let pending = ledgers
        .iter()
        .flat_map(|l| l.accounts())
        .map(|a| a.debits_pending + a.credits_pending)
        .sum();
    (total, pairs, pending)
}
