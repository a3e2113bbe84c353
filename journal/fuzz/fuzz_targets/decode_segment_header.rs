//! Fuzz target: the segment-header decoder never panics on arbitrary bytes,
//! and whatever it accepts re-encodes to the same bytes.
#![no_main]

use keel_journal::format::{SegmentHeader, SEGMENT_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        header.encode(&mut out);
        assert_eq!(&out[..], &data[..SEGMENT_HEADER_BYTES]);
    }
});
