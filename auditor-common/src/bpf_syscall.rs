//! Wire types for bpf(2) syscall auditing: the per-session configuration
//! (kernel struct offsets taken from BTF by userspace) and the call records.
//!
//! The kernel side copies the raw `union bpf_attr` prefix and resolves the
//! map behind a file descriptor at syscall time; everything that can be
//! decided from bytes (flags, batch counts, command names) is decided in
//! userspace, where it is tested.
//!
//! One record per call, written at exit, in one of three sizes: the fixed
//! [`BpfCall`] (lookups and other plain calls: 168 bytes), [`BpfCallJudged`]
//! (writes, creates, freezes, program commands, mmaps: who made them) and
//! [`BpfCallPath`] (pins and gets: the path).

use crate::{EventHeader, Pod};

/// Name of the configuration array (one [`BpfAuditConfig`] at index 0).
pub const CONFIG_MAP: &str = "BPF_CONFIG";
/// Name of the calibration array (index 0: `f_op` seen, 1: map id read).
pub const CALIB_MAP: &str = "BPF_CALIB";
/// Name of the per-thread call slots (index: tid & [`SLOT_MASK`]).
pub const SLOTS_MAP: &str = "BPF_SLOTS";
/// Name of the per-map in-flight writer table (key: map id).
pub const WRITERS_MAP: &str = "BPF_WRITERS";
/// Call slots: a thread's call waits in slot `tid & SLOT_MASK` between
/// enter and exit. Two threads with the same slot in a call at the same
/// moment: the first call's record is lost and counted
/// ([`crate::Counter::BpfSlotShared`]).
pub const SLOTS: u32 = 16384;
pub const SLOT_MASK: u32 = SLOTS - 1;

/// Bytes of `union bpf_attr` copied at enter. Covers every field the audit
/// reads: the element commands (32 bytes), the batch struct up to
/// `elem_flags` (48) and MAP_CREATE up to `map_name` (44).
pub const ATTR_BYTES: usize = 48;
/// Length of a pin path kept in a record (longer paths are cut).
pub const PATH_BYTES: usize = 128;
/// Map ids of a program kept in a record (`prog_maps`); more are counted in
/// `prog_map_cnt` and reported as cut.
pub const PROG_MAPS: usize = 8;

/// x86-64 system call numbers of bpf(2) and mmap(2).
pub const NR_BPF: u64 = 321;
pub const NR_MMAP: u64 = 9;
/// i386 (`int $0x80`) system call numbers: the `syscalls:*` tracepoints
/// never fire for 32-bit calls; `raw_syscalls` sees them.
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

    /// Commands recorded by the exit program alone: the plain reads, which
    /// neither change a map nor are judged by a guard. At exit the call's
    /// registers still hold the command and the attr pointer, so one
    /// program run reads the attr, resolves the fd and writes the record
    /// (no enter time, so no latency). Of the fields the record keeps, the
    /// kernel writes back only a batch's `count` (which is what the record
    /// reports anyway) and `obj_get_info_by_fd`'s `info_len` (not decoded).
    /// Writes, creates, pins, freezes and program commands stay on the
    /// enter path: their fd and attr are taken when the call enters, before
    /// a racing thread could change them, and a mutating call's window in
    /// the map starts there.
    pub const fn recorded_at_exit(c: u32) -> bool {
        matches!(
            c,
            MAP_LOOKUP_ELEM
                | MAP_GET_NEXT_KEY
                | MAP_GET_FD_BY_ID
                | OBJ_GET
                | OBJ_GET_INFO_BY_FD
                | MAP_LOOKUP_BATCH
        )
    }

    /// Commands whose return value is a new fd on the map.
    pub const fn returns_fd(c: u32) -> bool {
        matches!(c, MAP_CREATE | OBJ_GET | MAP_GET_FD_BY_ID)
    }

    /// Offset of `count` in the batch struct of `union bpf_attr`.
    pub const BATCH_COUNT_OFFSET: usize = 32;
}

/// How the map behind a record was found (bits of [`BpfCall::resolved`]).
pub mod resolved {
    /// The fd in the attr was resolved (at enter; at exit with [`AT_EXIT`]).
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
    /// Recorded by the exit program alone ([`super::cmd::recorded_at_exit`]):
    /// `ts_ns` is the exit time, `latency_ns` is not measured (0), and
    /// [`ENTER_FD`] means the attr's fd was resolved at exit.
    pub const AT_EXIT: u32 = 2048;
}

/// Kernel struct member offsets (bytes) read from the running kernel's BTF.
/// The loader writes them into the object's read-only data
/// ([`OFFSETS_GLOBAL`]) before the programs are verified, so the verifier
/// sees constants: loads through the task's BTF pointer are checked
/// against the kernel's types and run as plain memory loads.
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
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    /// `cred.uid` (the real uid).
    pub cred_uid: u32,
    pub _pad: u32,
}

impl KernelOffsets {
    /// All zero: the kernel object's placeholder until the loader writes
    /// the running kernel's offsets into it.
    pub const ZERO: Self = Self {
        task_files: 0,
        task_mm: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_f_op: 0,
        file_private_data: 0,
        file_f_path: 0,
        path_dentry: 0,
        dentry_d_inode: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        sb_s_dev: 0,
        mm_exe_file: 0,
        task_cred: 0,
        cred_euid: 0,
        cred_cap_effective: 0,
        task_ti_status: 0,
        prog_aux: 0,
        aux_id: 0,
        aux_used_map_cnt: 0,
        aux_used_maps: 0,
        map_type: 0,
        map_key_size: 0,
        map_value_size: 0,
        map_max_entries: 0,
        map_flags: 0,
        map_id: 0,
        map_name: 0,
        task_pid: 0,
        task_tgid: 0,
        task_comm: 0,
        cred_uid: 0,
        _pad: 0,
    };
}

/// Name of the read-only global holding the [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "BPF_OFFSETS";

/// Session configuration, index 0 of [`CONFIG_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfAuditConfig {
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

/// The fixed part of every call record (`EventKind::BpfSyscall` alone):
/// written by the exit program once the call is done, from what the enter
/// program resolved and kept in the thread's slot. One record per call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfCall {
    /// `ts_ns` is the enter time (the exit time with
    /// [`resolved::AT_EXIT`]); `kind` says which parts follow.
    pub header: EventHeader,
    pub cmd: u32,
    /// Bits of [`resolved`].
    pub resolved: u32,
    /// Real uid (`bpf_get_current_uid_gid`).
    pub uid: u32,
    /// The fd the command works on, as passed (signed: -1 stays -1).
    pub fd: i32,
    /// System call return value (negative errno on failure).
    pub ret: i64,
    pub latency_ns: u64,
    /// The map behind the fd passed, or behind the fd returned.
    pub map: MapIdentity,
    /// `attr` bytes as seen at enter (the mmap arguments for [`cmd::MMAP`]);
    /// batches: `count` as the kernel wrote it back.
    pub attr: [u8; ATTR_BYTES],
    /// Size userspace passed for `attr`.
    pub attr_size: u32,
    /// Length of the valid prefix of `attr` (0: unreadable).
    pub attr_len: u32,
    pub comm: [u8; 16],
}

/// Who made a judged call and what it touched besides the map: the part a
/// guard needs (`EventKind::BpfSyscallJudged`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfCallDetail {
    /// Effective uid (valid with [`resolved::CREDS`]).
    pub euid: u32,
    /// Device (kernel encoding: major << 20 | minor) of the executable
    /// (valid with [`resolved::CREDS`], zero with `NO_EXE`).
    pub exe_dev: u32,
    /// `cred->cap_effective` (valid with [`resolved::CREDS`]).
    pub cap_effective: u64,
    pub exe_ino: u64,
    /// The concurrent writer seen at enter (valid with
    /// [`resolved::CONCURRENT_WRITER`]).
    pub other: WriterSlot,
    /// Program commands: the program's id and map ids (with [`resolved::PROG`]).
    pub prog: ProgMaps,
}

/// A judged call: writes, freezes, creates, program commands, mmaps.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfCallJudged {
    pub call: BpfCall,
    pub detail: BpfCallDetail,
}

/// OBJ_PIN / OBJ_GET: the call and its path (`EventKind::BpfSyscallPath`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfCallPath {
    pub call: BpfCall,
    /// NUL-terminated; longer paths are cut.
    pub path: [u8; PATH_BYTES],
}

/// A thread's call between enter and exit (value of [`SLOTS_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallSlot {
    /// The thread whose call this is; 0 when free.
    pub tid: u32,
    /// System call number the call came in by (the exit takes the slot only
    /// from the same call).
    pub nr: u32,
    /// User address of `attr` (batches: `count` is re-read at exit).
    pub uattr: u64,
    pub rec: BpfCallJudged,
}

/// A whole call as userspace assembles it from any of the three records
/// (parts a record does not carry are zero).
#[derive(Clone, Copy, Debug)]
pub struct BpfSyscallEvent {
    pub header: EventHeader,
    pub cmd: u32,
    /// Bits of [`resolved`].
    pub resolved: u32,
    pub uid: u32,
    pub euid: u32,
    pub cap_effective: u64,
    pub exe_dev: u32,
    pub fd: i32,
    pub exe_ino: u64,
    pub ret: i64,
    pub latency_ns: u64,
    pub map: MapIdentity,
    pub other: WriterSlot,
    pub prog: ProgMaps,
    pub attr: [u8; ATTR_BYTES],
    pub attr_size: u32,
    pub attr_len: u32,
    pub comm: [u8; 16],
    /// OBJ_PIN / OBJ_GET path (NUL-terminated).
    pub path: [u8; PATH_BYTES],
}

impl BpfSyscallEvent {
    /// The call, with the optional parts that came with it.
    pub fn assemble(
        c: &BpfCall,
        detail: Option<&BpfCallDetail>,
        path: Option<&[u8; PATH_BYTES]>,
    ) -> Self {
        let d = detail.copied().unwrap_or_default();
        Self {
            header: c.header,
            cmd: c.cmd,
            resolved: c.resolved,
            uid: c.uid,
            euid: d.euid,
            cap_effective: d.cap_effective,
            exe_dev: d.exe_dev,
            fd: c.fd,
            exe_ino: d.exe_ino,
            ret: c.ret,
            latency_ns: c.latency_ns,
            map: c.map,
            other: d.other,
            prog: d.prog,
            attr: c.attr,
            attr_size: c.attr_size,
            attr_len: c.attr_len,
            comm: c.comm,
            path: path.copied().unwrap_or([0; PATH_BYTES]),
        }
    }
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

const _: () = assert!(core::mem::size_of::<BpfCall>() == 168);
const _: () = assert!(core::mem::size_of::<BpfCallJudged>() == 256);
const _: () = assert!(core::mem::size_of::<BpfCallPath>() == 296);
const _: () = assert!(core::mem::size_of::<CallSlot>() == 272);
const _: () = assert!(core::mem::size_of::<BpfAuditConfig>().is_multiple_of(8));

unsafe impl Pod for BpfCall {}
unsafe impl Pod for BpfCallDetail {}
unsafe impl Pod for BpfCallJudged {}
unsafe impl Pod for BpfCallPath {}
unsafe impl Pod for CallSlot {}
unsafe impl Pod for ProgMaps {}
unsafe impl Pod for BpfAuditConfig {}
unsafe impl Pod for KernelOffsets {}
unsafe impl Pod for WriterSlot {}
unsafe impl Pod for MapIdentity {}

#[cfg(feature = "user")]
mod user {
    use super::*;
    unsafe impl aya::Pod for BpfAuditConfig {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for WriterSlot {}
}
