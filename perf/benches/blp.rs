//! Criterion: the business-logic processor's cost of one transfer, as the BLP
//! runs it (`keel_core::apply` on the ledger, one-command lookahead
//! prefetch), for commands of 1 and of 7 transfers between 10,000 accounts.
//! `cargo bench -p keel-perf --bench blp`. Never part of `cargo test`.
//!
//! Commands are encoded in blocks of 256 outside the timed region; each
//! timed iteration applies one block. The ledger is rebuilt (untimed) before
//! it fills.

#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_core::{apply, CommandHeader, CommandRef, DedupTable, StateMachine};
use keel_ledger::commands::{self, command_type};
use keel_ledger::{Account, Ledger, LedgerConfig, Transfer};

const ACCOUNTS: u32 = 10_000;
const BLOCK: usize = 256;
const CAPACITY: u32 = 1 << 22;

fn ledger() -> Ledger {
    let mut ledger = Ledger::new(LedgerConfig {
        accounts_max: ACCOUNTS + 1,
        transfers_max: CAPACITY,
        prefault: false,
    });
    let mut dedup = DedupTable::with_capacity(1);
    let mut payload = [0u8; 896];
    let ids: Vec<u128> = (1..=u128::from(ACCOUNTS)).collect();
    for (i, chunk) in ids.chunks(commands::ACCOUNTS_PER_COMMAND_MAX).enumerate() {
        let accounts: Vec<Account> = chunk
            .iter()
            .map(|&id| Account {
                id,
                ledger: 1,
                code: 1,
                ..Account::default()
            })
            .collect();
        let len = commands::encode_create_accounts(&accounts, &mut payload).unwrap();
        run(
            &mut ledger,
            &mut dedup,
            i as u64,
            command_type::CREATE_ACCOUNTS,
            &payload[..len],
            None,
        );
    }
    ledger
}

fn header(kind: u16, len: usize, sequence: u64) -> CommandHeader {
    CommandHeader {
        command_type: kind,
        schema_version: 1,
        payload_len: len as u32,
        timestamp_ns: sequence + 1,
        ..CommandHeader::default()
    }
}

#[inline]
fn run(
    ledger: &mut Ledger,
    dedup: &mut DedupTable,
    sequence: u64,
    kind: u16,
    payload: &[u8],
    ahead: Option<&[u8]>,
) {
    if let Some(ahead) = ahead {
        let h = header(kind, ahead.len(), sequence + 1);
        ledger.prefetch(&CommandRef {
            sequence: sequence + 1,
            header: &h,
            payload: ahead,
        });
    }
    let h = header(kind, payload.len(), sequence);
    apply(
        ledger,
        dedup,
        &CommandRef {
            sequence,
            header: &h,
            payload,
        },
    );
}

fn blp(c: &mut Criterion) {
    let mut group = c.benchmark_group("blp");
    for per_command in [1usize, commands::TRANSFERS_PER_COMMAND_MAX] {
        group.throughput(Throughput::Elements((BLOCK * per_command) as u64));
        group.bench_with_input(
            BenchmarkId::new("transfers_per_command", per_command),
            &per_command,
            |b, &n| {
                let mut state = ledger();
                let mut dedup = DedupTable::with_capacity(1);
                let mut sequence = 10_000u64;
                let mut rng = 0x9e37_79b9_7f4a_7c15u64;
                let mut next_id = 1u128 << 64;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if state.transfers_len() + BLOCK * n >= CAPACITY as usize {
                            state = ledger();
                        }
                        let block: Vec<Vec<u8>> = (0..BLOCK)
                            .map(|_| {
                                let transfers: Vec<Transfer> = (0..n)
                                    .map(|_| {
                                        rng ^= rng << 13;
                                        rng ^= rng >> 7;
                                        rng ^= rng << 17;
                                        let debit = 1 + rng % u64::from(ACCOUNTS);
                                        let credit =
                                            1 + (debit + rng % 9_999) % u64::from(ACCOUNTS);
                                        next_id += 1;
                                        Transfer {
                                            id: next_id,
                                            debit_account_id: u128::from(debit),
                                            credit_account_id: u128::from(credit),
                                            amount: 1 + rng % 1000,
                                            ledger: 1,
                                            code: 1,
                                            ..Transfer::default()
                                        }
                                    })
                                    .collect();
                                let mut payload = vec![0u8; 896];
                                let len =
                                    commands::encode_create_transfers(&transfers, &mut payload)
                                        .unwrap();
                                payload.truncate(len);
                                payload
                            })
                            .collect();
                        let start = Instant::now();
                        for (i, payload) in block.iter().enumerate() {
                            let ahead = block.get(i + 1).map(Vec::as_slice);
                            run(
                                &mut state,
                                &mut dedup,
                                sequence,
                                command_type::CREATE_TRANSFERS,
                                payload,
                                ahead,
                            );
                            sequence += 1;
                        }
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, blp);
criterion_main!(benches);
