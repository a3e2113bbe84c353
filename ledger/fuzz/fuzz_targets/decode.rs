//! Fuzz target: every ledger decoder (payloads and result bodies, through
//! `keel-codecs`) returns a typed error or a value on arbitrary bytes, never
//! a panic; whatever decodes re-encodes to the same bytes.
#![no_main]

use keel_codecs::Rkyv;
use keel_ledger::commands::{
    AccountBalance, CreateAccounts, CreateTransfers, EventResults, Lookup, TransferStatus,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // rkyv validation alone accepts unreferenced bytes; the canonical
    // accessors (what the ledger and the validator use) accept one encoding.
    let _ = Rkyv::access::<CreateTransfers<'_>>(data);
    let _ = Rkyv::access::<CreateAccounts<'_>>(data);
    if let Some(batch) = keel_ledger::commands::access_create_transfers(data) {
        let transfers: Vec<_> = batch.transfers.iter().map(|t| t.to_native()).collect();
        let mut out = vec![0u8; data.len() + 64];
        let len = keel_ledger::commands::encode_create_transfers(&transfers, &mut out).unwrap();
        assert_eq!(&out[..len], data);
    }
    if let Some(batch) = keel_ledger::commands::access_create_accounts(data) {
        let accounts: Vec<_> = batch.accounts.iter().map(|a| a.to_native()).collect();
        let mut out = vec![0u8; data.len() + 64];
        let len = keel_ledger::commands::encode_create_accounts(&accounts, &mut out).unwrap();
        assert_eq!(&out[..len], data);
    }
    let _ = Rkyv::decode::<Lookup>(data);
    let _ = Rkyv::decode::<EventResults>(data);
    let _ = Rkyv::decode::<AccountBalance>(data);
    let _ = Rkyv::decode::<TransferStatus>(data);
});
