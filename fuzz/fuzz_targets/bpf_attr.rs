//! The `union bpf_attr` prefix of a bpf(2) call. Input: command (4 bytes),
//! the size the caller passed (4 bytes), then the copied attr bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::bpf::attr::parse_attr;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let view = parse_attr(word(0), &data[8..], word(4));
    if let Some(create) = view.create {
        assert!(
            create.name.len() <= 16 * 3,
            "lossy name grew past its field"
        );
    }
});
