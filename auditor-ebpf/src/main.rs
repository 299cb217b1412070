//! map-auditor's kernel programs.
//!
//! - `go_map`: uprobes on the Go runtime's map functions, with the per-map
//!   state that decides overlaps where the interleaving is visible.
//! - `go_agg`: access counts, the default way accesses are streamed.
//! - `bpf_syscall`: tracepoints on bpf(2).
//! - `shared`: the ring buffer and counters every program reports through.
#![no_std]
#![no_main]
// `atomic_xadd` (go_agg): the BPF target's core has no 64-bit atomics.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod bpf_syscall;
mod go_agg;
mod go_map;
mod shared;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// The ABI this object speaks; the loader reads this section and refuses
/// an object built for another version (section name: `ABI_SECTION`).
#[unsafe(link_section = "abi_version")]
#[unsafe(no_mangle)]
static ABI_VERSION: u32 = auditor_common::ABI_VERSION;
