//! The Go build-info blob: both encodings (the pointer form resolves
//! through a reader that serves bytes from the input itself), the module
//! info text, and the toolchain version string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::goexe::{fuzzing, parse_go_version};

fuzz_target!(|data: &[u8]| {
    // Pre-1.18 blobs hold pointers to Go strings; serve "string at address
    // A" as the input bytes from offset A (length from the next byte).
    let read = |addr: u64| -> Option<Vec<u8>> {
        let at = usize::try_from(addr).ok()?;
        let len = usize::from(*data.get(at)?);
        Some(data.get(at + 1..at + 1 + len)?.to_vec())
    };
    if let Ok(bi) = fuzzing::parse_buildinfo(data, &read) {
        let _ = parse_go_version(&bi.go_version);
    }
    let _ = fuzzing::parse_modinfo(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_go_version(s);
    }
});
