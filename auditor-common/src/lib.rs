//! The wire format between map-auditor's kernel programs and its userspace.
//!
//! Every record in the ring buffer starts with an [`EventHeader`]; its `kind`
//! says which struct follows. Every struct is `#[repr(C)]`, padded explicitly
//! and free of pointers, so both sides agree byte for byte. Change a layout,
//! bump [`ABI_VERSION`].
#![no_std]

pub mod bpf_syscall;
pub mod go_map;

/// Version of this ABI. Userspace refuses an object built for another one.
pub const ABI_VERSION: u32 = 3;

/// Name of the ring buffer map all events travel through.
pub const RING_MAP: &str = "EVENTS";
/// Name of the small ring buffer reserved for findings (overlaps), so a
/// flood of access records can never crowd a finding out.
pub const FINDINGS_MAP: &str = "FINDINGS";
/// Name of the per-CPU counter array (indexes are [`Counter`]).
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Kinds of record in the ring buffer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`go_map::GoMapAccess`].
    GoMapAccess = 1,
    /// A [`go_map::GoMapOverlap`].
    GoMapOverlap = 2,
    /// A [`bpf_syscall::BpfSyscallEvent`].
    BpfSyscall = 3,
    /// A [`bpf_syscall::BpfSyscallExit`].
    BpfSyscallExit = 4,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::GoMapAccess),
            2 => Some(Self::GoMapOverlap),
            3 => Some(Self::BpfSyscall),
            4 => Some(Self::BpfSyscallExit),
            _ => None,
        }
    }
}

/// Header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// CPU the event was produced on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the probe.
    pub ts_ns: u64,
    /// Thread-group id (the process id users see).
    pub pid: u32,
    /// Kernel thread id.
    pub tid: u32,
}

/// Indexes into the per-CPU counter array. Userspace sums the CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Probe hits on Go map functions (including ones that were filtered).
    GoProbeHits = 0,
    /// Go access events that could not be reserved in the ring buffer.
    GoAccessDropped = 1,
    /// Overlap events that could not be reserved in the ring buffer.
    GoOverlapDropped = 2,
    /// Go probe hits whose goroutine or map could not be read.
    GoReadFailed = 3,
    /// Per-map state records that could not be inserted (state map full).
    GoStateFull = 4,
    /// Overlaps detected in the kernel (emitted or not).
    GoOverlaps = 5,
    /// bpf(2) syscalls seen (before filtering).
    BpfSyscallsSeen = 6,
    /// bpf(2) events that could not be reserved in the ring buffer.
    BpfSyscallDropped = 7,
    /// bpf(2) enter records that found no room in the in-flight table.
    BpfInflightFull = 8,
    /// Stacks cut at the configured depth.
    StackTruncated = 9,
    /// Interval mode: accessor slots full, an accessor was not tracked.
    GoSlotsFull = 10,
    /// Entries skipped because the stack-growth branch was about to be taken
    /// (the function restarts after `morestack` and is seen again).
    GoMorestackSkipped = 11,
    /// bpf(2) calls whose fd could not be walked to a map (closed or bad fd,
    /// kernel read fault).
    BpfResolveFailed = 12,
    /// bpf(2) mutating calls not tracked for concurrency (writer table full).
    BpfWriterStateFull = 13,
    /// Accesses to maps on the accessing goroutine's own stack (not
    /// escaped, so never shared): reported, but not tracked for overlaps.
    GoStackLocal = 14,
}

/// Number of counters in [`COUNTERS_MAP`].
pub const COUNTER_COUNT: u32 = 16;

/// Plain-old-data marker: safe to read from raw ring-buffer bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain no padding the kernel leaves
/// uninitialised, and every bit pattern is a valid value.
pub unsafe trait Pod: Copy + 'static {}

unsafe impl Pod for EventHeader {}
