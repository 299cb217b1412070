//! map-auditor's kernel programs.
//!
//! - `go_map`: uprobes on the Go runtime's map functions, with the per-map
//!   state that decides overlaps where the interleaving is visible.
//! - `bpf_syscall`: tracepoints on bpf(2).
//! - `shared`: the ring buffer and counters every program reports through.
#![no_std]
#![no_main]

mod bpf_syscall;
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
