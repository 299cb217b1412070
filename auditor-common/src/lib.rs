//! The wire format between map-auditor's kernel programs and its userspace.
//!
//! Every record in the ring buffer starts with an [`EventHeader`]; its `kind`
//! says which struct follows. Every struct is `#[repr(C)]`, padded explicitly
//! and free of pointers, so both sides agree byte for byte. Change a layout,
//! bump [`ABI_VERSION`]: the const assertions at the end of this file fail
//! to compile until the new size is written down, and the loader refuses an
//! object whose [`ABI_SECTION`] names another version.
//!
//! With the `user` feature, [`decode`] turns ring-buffer bytes back into
//! these records (the decoder lives beside the layouts it reads).
#![no_std]

pub mod bpf_syscall;
#[cfg(any(feature = "user", test))]
pub mod decode;
pub mod go_map;

/// Version of this ABI. Userspace refuses an object built for another one.
pub const ABI_VERSION: u32 = 10;

/// ELF section of the kernel object holding its [`ABI_VERSION`] (a
/// little-endian `u32`), read by the loader before anything is loaded.
pub const ABI_SECTION: &str = "abi_version";

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
    /// A [`bpf_syscall::BpfCall`].
    BpfSyscall = 3,
    /// A [`bpf_syscall::BpfCallJudged`].
    BpfSyscallJudged = 4,
    /// A [`go_map::GoEscalate`].
    GoEscalate = 5,
    /// A [`bpf_syscall::BpfCallPath`].
    BpfSyscallPath = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::GoMapAccess),
            2 => Some(Self::GoMapOverlap),
            3 => Some(Self::BpfSyscall),
            4 => Some(Self::BpfSyscallJudged),
            5 => Some(Self::GoEscalate),
            6 => Some(Self::BpfSyscallPath),
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
    /// bpf(2) calls whose record was lost because another thread's call
    /// took the same call slot (tids equal modulo `bpf_syscall::SLOTS`).
    BpfSlotShared = 8,
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
    /// Maps a second goroutine touched (per-map state created).
    GoSharedMaps = 15,
    /// Call sites the kernel asked userspace to escalate (exit probes).
    GoEscalations = 16,
    /// Identical overlaps held back by the kernel's rate limit (counted,
    /// and carried by the pair's next report).
    GoOverlapsSuppressed = 17,
    /// The runtime died of a concurrent map error inside a call no probe
    /// recorded (outside the probed scope, or an unprobed iteration step):
    /// nothing named, nothing guessed.
    GoFatalUnattributed = 18,
    /// Accesses not counted because the access-count table was full.
    GoAccessCountsFull = 19,
    /// Probe hits while the target's sampling window was closed.
    GoProbesPaused = 20,
    /// Hits on exit probes (RET sites, escalated call sites): the kind a
    /// cost estimate charges as single-stepped.
    GoExitHits = 21,
    /// Exit or fatal-error probes that found their goroutine's
    /// current-access slot taken by another goroutine (or torn): that
    /// exit made no decision.
    GoCurrentLost = 22,
    /// Hits on the goroutine-change probes (`goexit0`, `copystack`): a
    /// goroutine's cached `g` fields dropped.
    GoGoroutineChanges = 23,
}

impl Counter {
    /// Every counter, in index order (checked below: `ALL[i] as u32 == i`).
    /// A new counter goes at the end of the enum and of this list.
    pub const ALL: [Counter; 24] = [
        Self::GoProbeHits,
        Self::GoAccessDropped,
        Self::GoOverlapDropped,
        Self::GoReadFailed,
        Self::GoStateFull,
        Self::GoOverlaps,
        Self::BpfSyscallsSeen,
        Self::BpfSyscallDropped,
        Self::BpfSlotShared,
        Self::StackTruncated,
        Self::GoSlotsFull,
        Self::GoMorestackSkipped,
        Self::BpfResolveFailed,
        Self::BpfWriterStateFull,
        Self::GoStackLocal,
        Self::GoSharedMaps,
        Self::GoEscalations,
        Self::GoOverlapsSuppressed,
        Self::GoFatalUnattributed,
        Self::GoAccessCountsFull,
        Self::GoProbesPaused,
        Self::GoExitHits,
        Self::GoCurrentLost,
        Self::GoGoroutineChanges,
    ];
}

/// Number of counters in [`COUNTERS_MAP`]: one slot per [`Counter`].
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

/// Plain-old-data marker: safe to read from raw ring-buffer bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain no padding the kernel leaves
/// uninitialised, and every bit pattern is a valid value.
pub unsafe trait Pod: Copy + 'static {}

unsafe impl Pod for EventHeader {}

// The layouts both sides rely on. A failure here means a record changed:
// write the new size down and bump ABI_VERSION.
const _: () = {
    use core::mem::size_of;

    use bpf_syscall::{
        BpfAuditConfig, BpfCall, BpfCallJudged, BpfCallPath, CallSlot, KernelOffsets, MapIdentity,
        ProgMaps, WriterSlot,
    };
    use go_map::{
        AccessCount, AccessCountKey, CurrentAccess, GoEscalate, GoMapAccess, GoMapOverlap,
        GoTargetConfig, MapKey, MapOwner, MapState, Party, PidLosses,
    };

    assert!(size_of::<EventHeader>() == 24);
    assert!(size_of::<GoMapAccess>() == 200);
    assert!(size_of::<GoMapOverlap>() == 352);
    assert!(size_of::<GoTargetConfig>() == 712);
    assert!(size_of::<MapKey>() == 16);
    assert!(size_of::<Party>() == 152);
    assert!(size_of::<CurrentAccess>() == 96);
    assert!(size_of::<PidLosses>() == 16);
    assert!(size_of::<MapState>() == 464);
    assert!(size_of::<MapOwner>() == 72);
    assert!(size_of::<GoEscalate>() == 48);
    assert!(size_of::<AccessCountKey>() == 32);
    assert!(size_of::<AccessCount>() == 40);
    assert!(size_of::<GoEscalate>().is_multiple_of(8));
    assert!(size_of::<BpfCall>() == 168);
    assert!(size_of::<BpfCallJudged>() == 256);
    assert!(size_of::<BpfCallPath>() == 296);
    assert!(size_of::<CallSlot>() == 272);
    assert!(size_of::<ProgMaps>() == 40);
    assert!(size_of::<BpfAuditConfig>() == 40);
    assert!(size_of::<KernelOffsets>() == 136);
    assert!(size_of::<WriterSlot>() == 24);
    assert!(size_of::<MapIdentity>() == 40);
    // Ring-buffer records are 8-byte aligned by the kernel: a record whose
    // size is not a multiple of 8 would leave bytes the reader misreads.
    assert!(size_of::<GoMapAccess>().is_multiple_of(8));
    assert!(size_of::<GoMapOverlap>().is_multiple_of(8));
    assert!(size_of::<BpfCall>().is_multiple_of(8));
    assert!(size_of::<BpfCallJudged>().is_multiple_of(8));
    assert!(size_of::<BpfCallPath>().is_multiple_of(8));

    // Counter indexes are dense: the counter array has exactly one slot each.
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_kind_decodes_from_its_number() {
        for kind in [
            EventKind::GoMapAccess,
            EventKind::GoMapOverlap,
            EventKind::BpfSyscall,
            EventKind::BpfSyscallJudged,
            EventKind::GoEscalate,
            EventKind::BpfSyscallPath,
        ] {
            assert_eq!(EventKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(7), None);
    }

    #[test]
    fn cookie_fields_do_not_overlap_and_round_trip() {
        use go_map::cookie;
        let flags = cookie::EXIT | cookie::STACKCHECK | cookie::FATAL;
        let c = cookie::encode(0xff, 0xffff, flags, 0xff);
        assert_eq!(cookie::op(c), 0xff);
        assert_eq!(cookie::probe_id(c), 0xffff);
        assert_eq!(cookie::map_arg(c), 0xff);
        assert_eq!(c & flags, flags);
        // Each field alone sets only its own documented bits.
        assert_eq!(cookie::encode(0xff, 0, 0, 0), 0xff);
        assert_eq!(cookie::encode(0, 0xffff, 0, 0), 0xffff << 8);
        assert_eq!(flags, 0b111 << 24);
        assert_eq!(cookie::encode(0, 0, 0, 0xff), 0xff << 32);
        let c = cookie::encode(3, 517, cookie::EXIT, 2);
        assert_eq!(
            (cookie::op(c), cookie::probe_id(c), cookie::map_arg(c)),
            (3, 517, 2)
        );
        assert_eq!(c & (cookie::STACKCHECK | cookie::FATAL), 0);
    }

    #[test]
    fn counter_array_has_one_slot_per_counter() {
        assert_eq!(COUNTER_COUNT as usize, Counter::ALL.len());
        assert_eq!(
            Counter::ALL.last().map(|c| *c as u32),
            Some(COUNTER_COUNT - 1)
        );
    }
}
