//! Kernel BTF: `KernelBtf::parse`, then the member look-ups the kernel-side
//! walk needs (through anonymous struct and union members).
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::bpf::btf::KernelBtf;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = KernelBtf::parse(data) else {
        return;
    };
    let _ = btf.kernel_offsets();
    let _ = btf.member_offset("task_struct", "mm");
    let _ = btf.member_offset("bpf_map", "name");
});
