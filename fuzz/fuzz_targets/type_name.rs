//! Go type names from runtime descriptors (`decode_name`: flag byte,
//! varint length, text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::goexe::fuzzing::decode_name;

fuzz_target!(|data: &[u8]| {
    if let Some(name) = decode_name(data) {
        assert!(name.len() < data.len());
    }
});
