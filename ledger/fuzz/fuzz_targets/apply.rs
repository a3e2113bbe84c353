//! Fuzz target: the ledger applies arbitrary commands (any type, any bytes)
//! without panicking, and its maintained state hash always equals the hash
//! recomputed from its records.
#![no_main]

use keel_core::{apply, CommandHeader, CommandRef, DedupTable, StateMachine};
use keel_ledger::{Ledger, LedgerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ledger = Ledger::new(LedgerConfig {
        accounts_max: 8,
        transfers_max: 32,
        prefault: false,
    });
    let mut dedup = DedupTable::with_capacity(4);
    // Commands: [type u8][len u8][timestamp u8][payload...], repeated.
    let mut rest = data;
    let mut sequence = 0;
    while rest.len() >= 3 {
        let (kind, len, ts) = (rest[0], usize::from(rest[1]) * 4, rest[2]);
        let payload = &rest[3..(3 + len).min(rest.len())];
        let header = CommandHeader {
            command_type: u16::from(kind % 6),
            schema_version: 1,
            payload_len: payload.len() as u32,
            timestamp_ns: u64::from(ts) * 100_000_000,
            ..CommandHeader::default()
        };
        let command = CommandRef { sequence, header: &header, payload };
        apply(&mut ledger, &mut dedup, &command);
        sequence += 1;
        rest = &rest[(3 + len).min(rest.len())..];
    }
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash());
});
