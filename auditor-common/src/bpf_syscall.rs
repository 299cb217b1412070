//! Wire types for bpf(2) syscall auditing.

use crate::{EventHeader, Pod};

/// A completed bpf(2) call on a map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfSyscallEvent {
    pub header: EventHeader,
    pub cmd: u32,
    pub map_id: u32,
    pub ret: i64,
    pub latency_ns: u64,
}

unsafe impl Pod for BpfSyscallEvent {}
