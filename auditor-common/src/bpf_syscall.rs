//! Wire types for bpf(2) syscall auditing: the per-session configuration
//! (kernel struct offsets taken from BTF by userspace) and the event record.
//!
//! The kernel side copies the raw `union bpf_attr` prefix into the record and
//! resolves the map behind a file descriptor at syscall time; everything that
//! can be decided from bytes (flags, batch counts, command names) is decided
//! in userspace, where it is tested.

use crate::{EventHeader, Pod};

/// Name of the configuration array (one [`BpfAuditConfig`] at index 0).
pub const CONFIG_MAP: &str = "BPF_CONFIG";
/// Name of the calibration array (index 0: `f_op` seen, 1: map id read).
pub const CALIB_MAP: &str = "BPF_CALIB";
/// Name of the per-thread in-flight table (key: tid).
pub const INFLIGHT_MAP: &str = "BPF_INFLIGHT";
/// Name of the per-map in-flight writer table (key: map id).
pub const WRITERS_MAP: &str = "BPF_WRITERS";

/// Bytes of `union bpf_attr` copied at enter. Covers every field of the map
/// commands audited here (the batch struct is the longest: 56 bytes).
pub const ATTR_BYTES: usize = 64;
/// Length of a pin path kept in a record (longer paths are cut).
pub const PATH_BYTES: usize = 128;
/// Path components of the executable kept (leaf first).
pub const EXE_PARTS: usize = 8;
/// Bytes per executable path component.
pub const EXE_PART_BYTES: usize = 32;

/// bpf(2) command numbers (include/uapi/linux/bpf.h, stable ABI).
pub mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const MAP_GET_NEXT_KEY: u32 = 4;
    pub const OBJ_PIN: u32 = 6;
    pub const OBJ_GET: u32 = 7;
    pub const MAP_GET_NEXT_ID: u32 = 12;
    pub const MAP_GET_FD_BY_ID: u32 = 14;
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
    pub const MAP_FREEZE: u32 = 22;
    pub const MAP_LOOKUP_BATCH: u32 = 24;
    pub const MAP_LOOKUP_AND_DELETE_BATCH: u32 = 25;
    pub const MAP_UPDATE_BATCH: u32 = 26;
    pub const MAP_DELETE_BATCH: u32 = 27;

    /// Commands the auditor records.
    pub const fn audited(c: u32) -> bool {
        matches!(
            c,
            MAP_CREATE
                | MAP_LOOKUP_ELEM
                | MAP_UPDATE_ELEM
                | MAP_DELETE_ELEM
                | MAP_GET_NEXT_KEY
                | OBJ_PIN
                | OBJ_GET
                | MAP_GET_FD_BY_ID
                | OBJ_GET_INFO_BY_FD
                | MAP_LOOKUP_AND_DELETE_ELEM
                | MAP_FREEZE
                | MAP_LOOKUP_BATCH
                | MAP_LOOKUP_AND_DELETE_BATCH
                | MAP_UPDATE_BATCH
                | MAP_DELETE_BATCH
        )
    }

    /// Commands that change a map's contents (tracked for concurrent writers).
    pub const fn mutates(c: u32) -> bool {
        matches!(
            c,
            MAP_UPDATE_ELEM
                | MAP_DELETE_ELEM
                | MAP_LOOKUP_AND_DELETE_ELEM
                | MAP_UPDATE_BATCH
                | MAP_DELETE_BATCH
                | MAP_LOOKUP_AND_DELETE_BATCH
        )
    }

    /// Offset in `union bpf_attr` of the map fd the command works on, if it
    /// takes one at enter. MAP_CREATE, OBJ_GET and MAP_GET_FD_BY_ID return
    /// the fd instead; it is resolved at exit.
    pub const fn fd_offset(c: u32) -> Option<usize> {
        match c {
            MAP_LOOKUP_ELEM
            | MAP_UPDATE_ELEM
            | MAP_DELETE_ELEM
            | MAP_GET_NEXT_KEY
            | MAP_LOOKUP_AND_DELETE_ELEM
            | MAP_FREEZE
            | OBJ_GET_INFO_BY_FD => Some(0),
            MAP_LOOKUP_BATCH
            | MAP_LOOKUP_AND_DELETE_BATCH
            | MAP_UPDATE_BATCH
            | MAP_DELETE_BATCH => Some(36),
            OBJ_PIN => Some(8),
            _ => None,
        }
    }

    /// Commands whose return value is a new fd on the map.
    pub const fn returns_fd(c: u32) -> bool {
        matches!(c, MAP_CREATE | OBJ_GET | MAP_GET_FD_BY_ID)
    }

    /// Offset of `count` in the batch struct of `union bpf_attr`.
    pub const BATCH_COUNT_OFFSET: usize = 32;
}

/// How the map behind a record was found (bits of [`BpfSyscallEvent::resolved`]).
pub mod resolved {
    /// The fd in the attr was resolved at enter.
    pub const ENTER_FD: u32 = 1;
    /// The returned fd was resolved at exit.
    pub const EXIT_FD: u32 = 2;
    /// The fd named something that is not a BPF map (e.g. a program).
    pub const NOT_A_MAP: u32 = 4;
    /// The fd walk failed (closed fd, bad number, read fault).
    pub const FAILED: u32 = 8;
    /// Another thread was inside a mutating call on the same map at enter.
    pub const CONCURRENT_WRITER: u32 = 16;
    /// The offsets were not calibrated yet: no resolution attempted.
    pub const UNCALIBRATED: u32 = 32;
}

/// Kernel struct member offsets (bytes) read from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_mm: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_op: u32,
    pub file_private_data: u32,
    pub file_f_path: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_name: u32,
    pub mm_exe_file: u32,
    pub map_type: u32,
    pub map_key_size: u32,
    pub map_value_size: u32,
    pub map_max_entries: u32,
    pub map_flags: u32,
    pub map_id: u32,
    pub map_name: u32,
}

/// Session configuration, index 0 of [`CONFIG_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfAuditConfig {
    pub off: KernelOffsets,
    /// The auditor's own tgid: its calls are left out unless `include_self`.
    pub self_tgid: u32,
    pub include_self: u32,
    /// The fd (in the auditor) used to calibrate [`Self::map_fops`].
    pub calib_fd: u32,
    /// Non-zero once offsets are loaded; zero makes the programs idle.
    pub enabled: u32,
    /// Address of the kernel's `bpf_map_fops`; 0 until calibrated.
    pub map_fops: u64,
}

/// One in-flight writer on a map (value of [`WRITERS_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterSlot {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cmd: u32,
    pub _pad: u32,
}

/// The map a record is about, as read from `struct bpf_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapIdentity {
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

/// A completed bpf(2) call on a map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfSyscallEvent {
    /// `ts_ns` is the enter time.
    pub header: EventHeader,
    pub cmd: u32,
    /// Kept for the decode path; equals `map.id`.
    pub map_id: u32,
    /// Syscall return value (negative errno on failure).
    pub ret: i64,
    /// Exit time minus enter time.
    pub latency_ns: u64,
    pub uid: u32,
    /// Bits of [`resolved`].
    pub resolved: u32,
    pub map: MapIdentity,
    /// The concurrent writer seen at enter (valid with
    /// [`resolved::CONCURRENT_WRITER`]).
    pub other: WriterSlot,
    /// `attr` bytes as seen at enter; the batch `count` is re-read at exit
    /// (the kernel writes back how many elements it processed).
    pub attr: [u8; ATTR_BYTES],
    /// Size userspace passed for `attr`.
    pub attr_size: u32,
    /// Length of the valid prefix of `attr`.
    pub attr_len: u32,
    /// User address of `attr` (re-read at exit for batch counts).
    pub uattr: u64,
    pub comm: [u8; 16],
    /// OBJ_PIN / OBJ_GET path (NUL-terminated).
    pub path: [u8; PATH_BYTES],
    /// Executable path components, leaf first, each NUL-terminated;
    /// an empty component ends the list.
    pub exe: [[u8; EXE_PART_BYTES]; EXE_PARTS],
}

unsafe impl Pod for BpfSyscallEvent {}
unsafe impl Pod for BpfAuditConfig {}
unsafe impl Pod for KernelOffsets {}
unsafe impl Pod for WriterSlot {}
unsafe impl Pod for MapIdentity {}

#[cfg(feature = "user")]
mod user {
    use super::*;
    unsafe impl aya::Pod for BpfAuditConfig {}
    unsafe impl aya::Pod for WriterSlot {}
}
