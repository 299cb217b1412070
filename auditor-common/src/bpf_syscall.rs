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
/// Map ids of a program kept in a record (`prog_maps`); more are counted in
/// `prog_map_cnt` and reported as cut.
pub const PROG_MAPS: usize = 8;

/// i386 (`int $0x80`) system call numbers handled through
/// `raw_syscalls:sys_enter`: the `syscalls:*` tracepoints never fire for
/// 32-bit calls.
pub const COMPAT_NR_BPF: u64 = 357;
pub const COMPAT_NR_MMAP2: u64 = 192;
/// `TS_COMPAT` in x86 `thread_info.status`: set while a 32-bit call runs.
pub const TS_COMPAT: u32 = 0x0002;
/// `BPF_F_MMAPABLE` map flag.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// bpf(2) command numbers (include/uapi/linux/bpf.h, stable ABI).
pub mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const MAP_GET_NEXT_KEY: u32 = 4;
    pub const PROG_LOAD: u32 = 5;
    pub const OBJ_PIN: u32 = 6;
    pub const OBJ_GET: u32 = 7;
    pub const PROG_ATTACH: u32 = 8;
    pub const PROG_TEST_RUN: u32 = 10;
    pub const MAP_GET_NEXT_ID: u32 = 12;
    pub const MAP_GET_FD_BY_ID: u32 = 14;
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const RAW_TRACEPOINT_OPEN: u32 = 17;
    pub const MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
    pub const MAP_FREEZE: u32 = 22;
    pub const MAP_LOOKUP_BATCH: u32 = 24;
    pub const MAP_LOOKUP_AND_DELETE_BATCH: u32 = 25;
    pub const MAP_UPDATE_BATCH: u32 = 26;
    pub const MAP_DELETE_BATCH: u32 = 27;
    pub const LINK_CREATE: u32 = 28;
    pub const LINK_UPDATE: u32 = 29;
    /// Not a bpf(2) command: a writable shared `mmap` of a map fd, recorded
    /// with the same record (number outside the kernel's command space).
    pub const MMAP: u32 = 0x1000;

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
                | PROG_LOAD
                | PROG_ATTACH
                | PROG_TEST_RUN
                | RAW_TRACEPOINT_OPEN
                | LINK_CREATE
                | LINK_UPDATE
        )
    }

    /// Commands that work on a program fd: its map references are read.
    pub const fn takes_prog(c: u32) -> bool {
        matches!(
            c,
            PROG_ATTACH | PROG_TEST_RUN | RAW_TRACEPOINT_OPEN | LINK_CREATE | LINK_UPDATE
        )
    }

    /// Commands that need only a map fd: a non-map fd there is reported
    /// (the call fails with EINVAL) rather than left out, unlike OBJ_PIN,
    /// OBJ_GET and OBJ_GET_INFO_BY_FD which serve every object type.
    pub const fn map_only(c: u32) -> bool {
        matches!(
            c,
            MAP_LOOKUP_ELEM
                | MAP_UPDATE_ELEM
                | MAP_DELETE_ELEM
                | MAP_GET_NEXT_KEY
                | MAP_LOOKUP_AND_DELETE_ELEM
                | MAP_FREEZE
                | MAP_LOOKUP_BATCH
                | MAP_LOOKUP_AND_DELETE_BATCH
                | MAP_UPDATE_BATCH
                | MAP_DELETE_BATCH
                | MMAP
        )
    }

    /// Calls whose caller's credentials and executable identity are read:
    /// the ones a guard judges (writes, freezes, programs, creates). Plain
    /// reads skip those reads to stay cheap.
    pub const fn judged(c: u32) -> bool {
        mutates(c) || takes_prog(c) || matches!(c, MAP_FREEZE | MAP_CREATE | PROG_LOAD | MMAP)
    }

    /// Commands the exit program has work for (release a writer slot,
    /// resolve a returned fd, re-read a batch count).
    pub const fn exit_work(c: u32) -> bool {
        mutates(c) || returns_fd(c) || is_batch(c) || c == PROG_LOAD || c == MMAP
    }

    pub const fn is_batch(c: u32) -> bool {
        matches!(
            c,
            MAP_LOOKUP_BATCH | MAP_LOOKUP_AND_DELETE_BATCH | MAP_UPDATE_BATCH | MAP_DELETE_BATCH
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
            // Program fds: test.prog_fd, link_create.prog_fd,
            // link_update.new_prog_fd, attach_bpf_fd, raw_tracepoint.prog_fd.
            PROG_TEST_RUN | LINK_CREATE => Some(0),
            PROG_ATTACH | LINK_UPDATE => Some(4),
            RAW_TRACEPOINT_OPEN => Some(8),
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
    /// The call came through the 32-bit (`int $0x80`) entry.
    pub const COMPAT: u32 = 64;
    /// The attr could not be read at enter (NULL or unmapped pointer).
    pub const ATTR_UNREADABLE: u32 = 128;
    /// `prog_id`/`prog_maps` describe the program behind the fd.
    pub const PROG: u32 = 256;
    /// `euid`, `cap_effective`, `exe_dev`, `exe_ino` were read.
    pub const CREDS: u32 = 512;
    /// The task had no executable (kernel thread) or it could not be read.
    pub const NO_EXE: u32 = 1024;
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
    pub dentry_d_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub mm_exe_file: u32,
    pub task_cred: u32,
    pub cred_euid: u32,
    pub cred_cap_effective: u32,
    /// `task_struct.thread_info` + `thread_info.status` (x86).
    pub task_ti_status: u32,
    pub prog_aux: u32,
    pub aux_id: u32,
    pub aux_used_map_cnt: u32,
    pub aux_used_maps: u32,
    pub map_type: u32,
    pub map_key_size: u32,
    pub map_value_size: u32,
    pub map_max_entries: u32,
    pub map_flags: u32,
    pub map_id: u32,
    pub map_name: u32,
    pub _pad: u32,
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
    /// Address of the kernel's `bpf_prog_fops`; 0 until calibrated.
    pub prog_fops: u64,
    /// A program fd of the auditor's, used to calibrate [`Self::prog_fops`].
    pub calib_prog_fd: u32,
    pub _pad: u32,
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

/// A bpf(2) call (or writable map mmap) as seen at enter. The outcome
/// follows in a [`BpfSyscallExit`] from the same thread; userspace joins
/// the two by tid (a thread has one system call in flight, and the ring
/// buffer keeps the order of reservations).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfSyscallEvent {
    /// `ts_ns` is the enter time.
    pub header: EventHeader,
    pub cmd: u32,
    /// Bits of [`resolved`].
    pub resolved: u32,
    /// Real uid (`bpf_get_current_uid_gid`).
    pub uid: u32,
    /// Effective uid (valid with [`resolved::CREDS`]).
    pub euid: u32,
    /// `cred->cap_effective` (valid with [`resolved::CREDS`]).
    pub cap_effective: u64,
    /// Device (kernel encoding: major << 20 | minor) and inode of the
    /// executable (valid with [`resolved::CREDS`], zero with `NO_EXE`).
    pub exe_dev: u32,
    /// The fd the command works on, as passed (signed: -1 stays -1).
    pub fd: i32,
    pub exe_ino: u64,
    /// Filled in userspace from the [`BpfSyscallExit`] (zero from the kernel).
    pub ret: i64,
    pub latency_ns: u64,
    pub map: MapIdentity,
    /// The concurrent writer seen at enter (valid with
    /// [`resolved::CONCURRENT_WRITER`]).
    pub other: WriterSlot,
    /// Program commands: the program's id and map ids (with [`resolved::PROG`]).
    pub prog: ProgMaps,
    /// `attr` bytes as seen at enter (the mmap arguments for [`cmd::MMAP`]).
    pub attr: [u8; ATTR_BYTES],
    /// Size userspace passed for `attr`.
    pub attr_size: u32,
    /// Length of the valid prefix of `attr` (0: unreadable).
    pub attr_len: u32,
    /// User address of `attr`.
    pub uattr: u64,
    pub comm: [u8; 16],
    /// OBJ_PIN / OBJ_GET path (NUL-terminated).
    pub path: [u8; PATH_BYTES],
}

/// A program and the maps it references (`aux->used_maps`), whether they
/// came through instructions or `fd_array`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgMaps {
    pub prog_id: u32,
    /// All maps the program uses; only the first [`PROG_MAPS`] are listed.
    pub map_cnt: u32,
    pub map_ids: [u32; PROG_MAPS],
}

/// The outcome of a call, written by the exit program for every bpf(2)
/// call not made by the auditor (it cannot tell audited commands apart
/// without per-call state) and for recorded mmaps.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfSyscallExit {
    /// `ts_ns` is the exit time.
    pub header: EventHeader,
    /// Syscall return value (negative errno on failure).
    pub ret: i64,
    /// Bits of [`resolved`] found at exit (`EXIT_FD`, `NOT_A_MAP`, `PROG`).
    pub resolved: u32,
    /// Batches: elements processed, as written back by the kernel.
    pub batch_count: u32,
    /// The map behind a returned fd (create / get commands).
    pub map: MapIdentity,
    /// PROG_LOAD: the new program and its maps.
    pub prog: ProgMaps,
}

/// Per-thread state between enter and exit, only for commands with
/// [`cmd::exit_work`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingExit {
    pub cmd: u32,
    pub map_id: u32,
    pub uattr: u64,
}

const _: () = assert!(core::mem::size_of::<BpfSyscallEvent>() == 408);
const _: () = assert!(core::mem::size_of::<BpfSyscallExit>() == 120);
const _: () = assert!(core::mem::size_of::<BpfAuditConfig>().is_multiple_of(8));

unsafe impl Pod for BpfSyscallExit {}
unsafe impl Pod for ProgMaps {}
unsafe impl Pod for PendingExit {}
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
