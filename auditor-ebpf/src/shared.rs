//! State every program shares: the event ring buffer and the drop counters.

use auditor_common::{COUNTER_COUNT, Counter, EventHeader, EventKind};
use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// Userspace resizes this at load time (`--ring-size`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Findings only (overlaps): they must get through when EVENTS is full of
/// accesses.
#[map(name = "FINDINGS")]
pub static FINDINGS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn header(kind: EventKind, pid: u32, tid: u32, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns,
        pid,
        tid,
    }
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}
