//! Fuzz target: the record decoder never panics on arbitrary bytes, and
//! whatever it accepts re-encodes to the same bytes.
#![no_main]

use keel_journal::format::{decode_record, encode_record, record_footprint_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode_record(data) {
        // A chained record carries its hash too: size the buffer for it.
        let chained = record.header.chain.is_some();
        let mut out = vec![0u8; record_footprint_with(record.payload.len(), chained)];
        encode_record(&mut out, &record.header, record.payload);
        let len = record.header.record_len as usize;
        assert_eq!(&out[..len], &data[..len]);
    }
});
