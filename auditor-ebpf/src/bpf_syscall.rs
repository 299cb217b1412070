//! Tracepoints on bpf(2) (and on writable mmaps of map fds): who touched
//! which BPF map, with the map resolved inside the kernel at syscall time.
//!
//! Why here and not in userspace: a one-shot process (`bpftool map update`)
//! closes its fd and exits long before userspace could look at
//! `/proc/PID/fd`. So at enter the fd in the attr is walked
//! `current->files->fdt->fd[fd]` → `struct file` → `private_data` (the
//! `struct bpf_map` or `struct bpf_prog`), and at exit the same is done for
//! commands that return a new fd. Struct offsets come from the running
//! kernel's BTF (userspace writes them into `BPF_CONFIG`).
//!
//! A file is a map when its `f_op` is the kernel's `bpf_map_fops`, a
//! program when it is `bpf_prog_fops`. Both are data symbols, absent from
//! /proc/kallsyms without CONFIG_KALLSYMS_ALL, so userspace calibrates them:
//! it makes one call on its own config map fd and one on its own program fd
//! and this program records the `f_op` it finds there (see `calibrate`).
//!
//! Cost: the enter program writes its record straight into the ring buffer
//! (no staging copy, no per-call hash entry); the exit program writes a
//! small completion record that userspace joins by thread id. Only
//! commands with exit work (writes, batches, fd-returning commands,
//! PROG_LOAD) keep a 16-byte per-thread entry. Credentials and the
//! executable's identity are read only for calls a guard judges.
//!
//! 32-bit calls (`int $0x80`) fire no `syscalls:*` tracepoint; the
//! `raw_syscalls` programs take the i386 bpf and mmap2 numbers, checked
//! against `TS_COMPAT`, through the same code.

use auditor_common::{
    Counter, EventKind,
    bpf_syscall::{
        ATTR_BYTES, BPF_F_MMAPABLE, BpfAuditConfig, BpfSyscallEvent, BpfSyscallExit, COMPAT_NR_BPF,
        COMPAT_NR_MMAP2, KernelOffsets, MapIdentity, PROG_MAPS, PendingExit, ProgMaps, TS_COMPAT,
        WriterSlot, cmd, resolved,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::shared::{EVENTS, count, header, now};

#[map(name = "BPF_CONFIG")]
static BPF_CONFIG: Array<BpfAuditConfig> = Array::with_max_entries(1, 0);

/// 0: `f_op` of the map calibration fd; 1: the map id read through it;
/// 2: `f_op` of the program calibration fd; 3: the program id read.
#[map(name = "BPF_CALIB")]
static BPF_CALIB: Array<u64> = Array::with_max_entries(4, 0);

/// Calls with exit work between enter and exit, by thread id.
#[map(name = "BPF_INFLIGHT")]
static BPF_INFLIGHT: HashMap<u32, PendingExit> = HashMap::with_max_entries(16384, 0);

/// The mutating call currently inside each map, by map id.
#[map(name = "BPF_WRITERS")]
static BPF_WRITERS: HashMap<u32, WriterSlot> = HashMap::with_max_entries(16384, 0);

/// Records written on this CPU since the last forced wakeup.
#[map(name = "BPF_WAKE")]
static BPF_WAKE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Wake the reader once per this many records per CPU. A wakeup per record
/// (the ring buffer's default when the reader is idle) costs ~3.5 us of
/// irq_work per bpf() call here; userspace also polls every 50 ms, which
/// bounds how long a lone record waits.
const WAKE_EVERY: u32 = 32;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// A writer slot older than this no longer counts as inside the map (its
/// exit was missed, e.g. the auditor attached between enter and exit).
const WRITER_STALE_NS: u64 = 5_000_000_000;
const BPF_NOEXIST: u64 = 1;

const PROT_WRITE: u64 = 2;
const MAP_SHARED: u64 = 1;
const MAP_SHARED_VALIDATE: u64 = 3;
const MAP_TYPE_MASK: u64 = 0x0f;

// Field offsets in the tracepoints' records (/sys/kernel/tracing/events/
// {syscalls/sys_{enter,exit}_{bpf,mmap},raw_syscalls/sys_{enter,exit}}/format).
const TP_ENTER_ARG0: usize = 16;
const TP_EXIT_RET: usize = 16;
const RAW_ID: usize = 8;
const RAW_ARG0: usize = 16;
const RAW_RET: usize = 16;

#[tracepoint]
pub fn bpf_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = enter_bpf(&ctx, TP_ENTER_ARG0, 0);
    0
}

#[tracepoint]
pub fn bpf_sys_exit(ctx: TracePointContext) -> u32 {
    let ret = unsafe { ctx.read_at::<i64>(TP_EXIT_RET) }.unwrap_or(0);
    let _ = exit_bpf(ret);
    0
}

#[tracepoint]
pub fn bpf_mmap_enter(ctx: TracePointContext) -> u32 {
    let _ = enter_mmap(&ctx, TP_ENTER_ARG0, 0);
    0
}

#[tracepoint]
pub fn bpf_mmap_exit(ctx: TracePointContext) -> u32 {
    let ret = unsafe { ctx.read_at::<i64>(TP_EXIT_RET) }.unwrap_or(0);
    let _ = exit_mmap(ret);
    0
}

/// `raw_syscalls:sys_enter`: every system call; only 32-bit bpf and mmap2
/// go further.
#[tracepoint]
pub fn bpf_compat_enter(ctx: TracePointContext) -> u32 {
    let id = unsafe { ctx.read_at::<u64>(RAW_ID) }.unwrap_or(0);
    if id == COMPAT_NR_BPF || id == COMPAT_NR_MMAP2 {
        let _ = enter_compat(&ctx, id);
    }
    0
}

#[tracepoint]
pub fn bpf_compat_exit(ctx: TracePointContext) -> u32 {
    let id = unsafe { ctx.read_at::<u64>(RAW_ID) }.unwrap_or(0);
    if id == COMPAT_NR_BPF {
        let ret = unsafe { ctx.read_at::<i64>(RAW_RET) }.unwrap_or(0);
        let _ = exit_bpf(ret);
    } else if id == COMPAT_NR_MMAP2 {
        let ret = unsafe { ctx.read_at::<i64>(RAW_RET) }.unwrap_or(0);
        let _ = exit_mmap(ret);
    }
    0
}

#[inline(always)]
fn enter_compat(ctx: &TracePointContext, id: u64) -> Option<()> {
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    let status: u32 = read_k(task + cfg.off.task_ti_status as u64)?;
    if status & TS_COMPAT == 0 {
        // A 64-bit call with the same number (ENOSYS): not bpf.
        return None;
    }
    if id == COMPAT_NR_BPF {
        enter_bpf(ctx, RAW_ARG0, resolved::COMPAT)
    } else {
        enter_mmap(ctx, RAW_ARG0, resolved::COMPAT)
    }
}

#[inline(always)]
fn read_k<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

#[inline(always)]
fn arg(ctx: &TracePointContext, base: usize, i: usize) -> Option<u64> {
    unsafe { ctx.read_at::<u64>(base + i * 8) }.ok()
}

#[inline(always)]
fn attr_u32(attr: &[u8; ATTR_BYTES], at: usize) -> u32 {
    // Constant offsets only (see `fd_at`), so the verifier sees fixed reads.
    u32::from_ne_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]])
}

#[inline(always)]
fn fd_at(c: u32, attr: &[u8; ATTR_BYTES]) -> Option<u32> {
    match cmd::fd_offset(c) {
        Some(0) => Some(attr_u32(attr, 0)),
        Some(4) => Some(attr_u32(attr, 4)),
        Some(8) => Some(attr_u32(attr, 8)),
        Some(36) => Some(attr_u32(attr, 36)),
        _ => None,
    }
}

/// `max_fds` and `fd` of `struct fdtable`, read together (userspace checks
/// that `fd` follows `max_fds` at +8).
#[repr(C)]
struct FdtHead {
    max_fds: u32,
    _pad: u32,
    fd: u64,
}

/// `current->files->fdt->fd[fd]`, or None when the fd is out of range or
/// empty.
#[inline(always)]
fn fd_to_file(task: u64, fd: u32, off: &KernelOffsets) -> Option<u64> {
    let files: u64 = read_k(task + off.task_files as u64)?;
    if files == 0 {
        return None;
    }
    let fdt: u64 = read_k(files + off.files_fdt as u64)?;
    if fdt == 0 {
        return None;
    }
    let head: FdtHead = read_k(fdt + off.fdt_max_fds as u64)?;
    if fd >= head.max_fds {
        return None;
    }
    let file: u64 = read_k(head.fd + fd as u64 * 8)?;
    (file != 0).then_some(file)
}

/// `map_type` .. `id` of `struct bpf_map`, read in one go (userspace checks
/// the layout against BTF before enabling the programs).
#[repr(C)]
struct MapHead {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_extra: u64,
    map_flags: u32,
    id: u32,
}

#[inline(always)]
fn read_map(map: u64, off: &KernelOffsets, out: &mut MapIdentity) -> u32 {
    let Some(h) = read_k::<MapHead>(map + off.map_type as u64) else {
        return resolved::FAILED;
    };
    out.id = h.id;
    out.map_type = h.map_type;
    out.key_size = h.key_size;
    out.value_size = h.value_size;
    out.max_entries = h.max_entries;
    out.map_flags = h.map_flags;
    out.name = read_k(map + off.map_name as u64).unwrap_or([0; 16]);
    if out.id == 0 { resolved::FAILED } else { 0 }
}

/// The object behind an fd: a map (filled into `map`), a program (filled
/// into `prog`), or something else. Returns a [`resolved`] bit or 0 for a
/// map.
#[inline(always)]
fn resolve_fd(
    task: u64,
    fd: u32,
    cfg: &BpfAuditConfig,
    map: &mut MapIdentity,
    prog: &mut ProgMaps,
) -> u32 {
    if cfg.map_fops == 0 {
        return resolved::UNCALIBRATED;
    }
    let off = &cfg.off;
    let Some(file) = fd_to_file(task, fd, off) else {
        return resolved::FAILED;
    };
    let Some(fop) = read_k::<u64>(file + off.file_f_op as u64) else {
        return resolved::FAILED;
    };
    let Some(obj) = read_k::<u64>(file + off.file_private_data as u64) else {
        return resolved::FAILED;
    };
    if obj == 0 {
        return resolved::FAILED;
    }
    if fop == cfg.map_fops {
        return read_map(obj, off, map);
    }
    if fop == cfg.prog_fops && cfg.prog_fops != 0 {
        return read_prog(obj, off, prog) | resolved::NOT_A_MAP;
    }
    resolved::NOT_A_MAP
}

/// Program id and `aux->used_maps` ids: every map the verifier bound to the
/// program, whether named in its instructions or in `fd_array`.
#[inline(always)]
fn read_prog(prog: u64, off: &KernelOffsets, out: &mut ProgMaps) -> u32 {
    let Some(aux) = read_k::<u64>(prog + off.prog_aux as u64) else {
        return 0;
    };
    out.prog_id = read_k(aux + off.aux_id as u64).unwrap_or(0);
    out.map_cnt = read_k(aux + off.aux_used_map_cnt as u64).unwrap_or(0);
    let used: u64 = read_k(aux + off.aux_used_maps as u64).unwrap_or(0);
    if used != 0 {
        for i in 0..PROG_MAPS {
            if i as u32 >= out.map_cnt {
                break;
            }
            let Some(m) = read_k::<u64>(used + i as u64 * 8) else {
                break;
            };
            out.map_ids[i] = read_k(m + off.map_id as u64).unwrap_or(0);
        }
    }
    resolved::PROG
}

/// The auditor's own calls on its config map fd and on one of its program
/// fds tell which `f_op` marks a map or a program file, and prove the
/// offsets by reading back the ids.
#[inline(always)]
fn calibrate(task: u64, fd: u32, cfg: &BpfAuditConfig) -> Option<()> {
    let off = &cfg.off;
    let file = fd_to_file(task, fd, off)?;
    let fop: u64 = read_k(file + off.file_f_op as u64)?;
    let obj: u64 = read_k(file + off.file_private_data as u64)?;
    if fd == cfg.calib_fd {
        let id: u32 = read_k(obj + off.map_id as u64)?;
        BPF_CALIB.set(0, fop, 0).ok()?;
        BPF_CALIB.set(1, id as u64, 0).ok()?;
    } else {
        let aux: u64 = read_k(obj + off.prog_aux as u64)?;
        let id: u32 = read_k(aux + off.aux_id as u64)?;
        BPF_CALIB.set(2, fop, 0).ok()?;
        BPF_CALIB.set(3, id as u64, 0).ok()?;
    }
    Some(())
}

/// Effective uid, effective capabilities and the executable's device and
/// inode (as `stat` on its path reports them: through `f_path`'s dentry).
#[inline(always)]
fn read_creds(task: u64, off: &KernelOffsets, ev: &mut BpfSyscallEvent) {
    ev.euid = u32::MAX;
    ev.cap_effective = 0;
    ev.exe_dev = 0;
    ev.exe_ino = 0;
    if let Some(cred) = read_k::<u64>(task + off.task_cred as u64) {
        ev.euid = read_k(cred + off.cred_euid as u64).unwrap_or(u32::MAX);
        ev.cap_effective = read_k(cred + off.cred_cap_effective as u64).unwrap_or(0);
    }
    ev.resolved |= resolved::CREDS;
    if read_exe_id(task, off, ev).is_none() {
        ev.resolved |= resolved::NO_EXE;
    }
}

#[inline(always)]
fn read_exe_id(task: u64, off: &KernelOffsets, ev: &mut BpfSyscallEvent) -> Option<()> {
    let mm: u64 = read_k(task + off.task_mm as u64)?;
    if mm == 0 {
        return None;
    }
    let exe: u64 = read_k(mm + off.mm_exe_file as u64)?;
    if exe == 0 {
        return None;
    }
    let dentry: u64 = read_k(exe + (off.file_f_path + off.path_dentry) as u64)?;
    let inode: u64 = read_k(dentry + off.dentry_d_inode as u64)?;
    ev.exe_ino = read_k(inode + off.inode_i_ino as u64)?;
    let sb: u64 = read_k(inode + off.inode_i_sb as u64)?;
    ev.exe_dev = read_k(sb + off.sb_s_dev as u64)?;
    Some(())
}

/// Fill the fields every record shares.
#[inline(always)]
fn begin(ev: &mut BpfSyscallEvent, c: u32, flags: u32, pid: u32, tid: u32) {
    ev.header = header(EventKind::BpfSyscall, pid, tid, now());
    ev.cmd = c;
    ev.resolved = flags;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.euid = 0;
    ev.cap_effective = 0;
    ev.exe_dev = 0;
    ev.fd = -1;
    ev.exe_ino = 0;
    ev.ret = 0;
    ev.latency_ns = 0;
    ev.map = MapIdentity::default();
    ev.other = WriterSlot::default();
    ev.prog = ProgMaps::default();
    ev.attr_size = 0;
    ev.attr_len = 0;
    ev.uattr = 0;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.path[0] = 0;
}

#[inline(always)]
fn enter_bpf(ctx: &TracePointContext, base: usize, flags: u32) -> Option<()> {
    count(Counter::BpfSyscallsSeen);
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let c = arg(ctx, base, 0)? as u32;
    if !cmd::audited(c) {
        return None;
    }
    let uattr = arg(ctx, base, 1)?;
    let size = arg(ctx, base, 2)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let task = unsafe { bpf_get_current_task() };

    if pid == cfg.self_tgid {
        if (cfg.map_fops == 0 || cfg.prog_fops == 0)
            && (c == cmd::MAP_LOOKUP_ELEM || c == cmd::OBJ_GET_INFO_BY_FD)
            && let Ok(fd) = unsafe { bpf_probe_read_user(uattr as *const u32) }
            && (fd == cfg.calib_fd || fd == cfg.calib_prog_fd)
        {
            calibrate(task, fd, cfg);
            return None;
        }
        if cfg.include_self == 0 {
            return None;
        }
    }

    let Some(mut entry) = EVENTS.reserve::<BpfSyscallEvent>(0) else {
        count(Counter::BpfSyscallDropped);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    begin(ev, c, flags, pid, tid);
    ev.attr_size = size as u32;
    ev.uattr = uattr;
    // The attr may end near the end of a mapped page: fall back to the
    // 32-byte prefix every element command fits in. Unreadable (NULL or
    // unmapped): the call fails with EFAULT and is reported as such.
    if unsafe { bpf_probe_read_user_buf(uattr as *const u8, &mut ev.attr) }.is_ok() {
        ev.attr_len = ATTR_BYTES as u32;
    } else {
        ev.attr = [0; ATTR_BYTES];
        let head = unsafe { &mut *(ev.attr.as_mut_ptr() as *mut [u8; 32]) };
        if unsafe { bpf_probe_read_user_buf(uattr as *const u8, head) }.is_ok() {
            ev.attr_len = 32;
        } else {
            ev.resolved |= resolved::ATTR_UNREADABLE;
        }
    }

    if ev.attr_len != 0
        && let Some(fd) = fd_at(c, &ev.attr)
    {
        ev.fd = fd as i32;
        let r = resolve_fd(task, fd, cfg, &mut ev.map, &mut ev.prog);
        ev.resolved |= if r == 0 { resolved::ENTER_FD } else { r };
        if r & resolved::FAILED != 0 {
            count(Counter::BpfResolveFailed);
        }
    }
    // Claim the map before the slower reads below, so the window in which
    // this call counts as "inside" starts as close to the enter as it can.
    if cmd::mutates(c) && ev.map.id != 0 {
        note_writer(ev, pid, tid, ev.header.ts_ns, c);
    }
    if cmd::judged(c) {
        read_creds(task, &cfg.off, ev);
    }
    if (c == cmd::OBJ_PIN || c == cmd::OBJ_GET)
        && ev.attr_len != 0
        && unsafe { bpf_probe_read_user_str_bytes(attr_u64(&ev.attr) as *const u8, &mut ev.path) }
            .is_err()
    {
        ev.path[0] = 0;
    }
    if cmd::exit_work(c) {
        let p = PendingExit {
            cmd: c,
            map_id: ev.map.id,
            uattr,
        };
        if BPF_INFLIGHT.insert(&tid, &p, 0).is_err() {
            count(Counter::BpfInflightFull);
        }
    }
    entry.submit(wakeup_flag());
    Some(())
}

#[inline(always)]
fn attr_u64(attr: &[u8; ATTR_BYTES]) -> u64 {
    u64::from_ne_bytes([
        attr[0], attr[1], attr[2], attr[3], attr[4], attr[5], attr[6], attr[7],
    ])
}

/// A shared writable mmap of a map fd: the way to change a
/// `BPF_F_MMAPABLE` array without bpf(2). Read-only and private mappings
/// cannot write the map (the kernel refuses later write access), so they
/// are left out.
#[inline(always)]
fn enter_mmap(ctx: &TracePointContext, base: usize, flags: u32) -> Option<()> {
    let prot = arg(ctx, base, 2)?;
    let mflags = arg(ctx, base, 3)?;
    if prot & PROT_WRITE == 0 {
        return None;
    }
    let share = mflags & MAP_TYPE_MASK;
    if share != MAP_SHARED && share != MAP_SHARED_VALIDATE {
        return None;
    }
    let fd = arg(ctx, base, 4)? as i32;
    if fd < 0 {
        return None;
    }
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 || cfg.map_fops == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if pid == cfg.self_tgid && cfg.include_self == 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    let file = fd_to_file(task, fd as u32, &cfg.off)?;
    let fop: u64 = read_k(file + cfg.off.file_f_op as u64)?;
    if fop != cfg.map_fops {
        return None;
    }
    let map: u64 = read_k(file + cfg.off.file_private_data as u64)?;
    let mut id = MapIdentity::default();
    read_map(map, &cfg.off, &mut id);
    if id.map_flags & BPF_F_MMAPABLE == 0 {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<BpfSyscallEvent>(0) else {
        count(Counter::BpfSyscallDropped);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    begin(ev, cmd::MMAP, flags | resolved::ENTER_FD, pid, tid);
    ev.fd = fd;
    ev.map = id;
    ev.attr = [0; ATTR_BYTES];
    // len, prot and flags, as the "attr" of this pseudo-command.
    let len = arg(ctx, base, 1).unwrap_or(0).to_ne_bytes();
    ev.attr[0..8].copy_from_slice(&len);
    ev.attr[8..16].copy_from_slice(&prot.to_ne_bytes());
    ev.attr[16..24].copy_from_slice(&mflags.to_ne_bytes());
    ev.attr_len = 24;
    ev.attr_size = 24;
    read_creds(task, &cfg.off, ev);
    let p = PendingExit {
        cmd: cmd::MMAP,
        map_id: id.id,
        uattr: 0,
    };
    if BPF_INFLIGHT.insert(&tid, &p, 0).is_err() {
        count(Counter::BpfInflightFull);
    }
    entry.submit(wakeup_flag());
    Some(())
}

/// Record this thread as inside a mutating call on the map, and flag the
/// call if another thread already is.
#[inline(always)]
fn note_writer(ev: &mut BpfSyscallEvent, pid: u32, tid: u32, ts: u64, c: u32) {
    let me = WriterSlot {
        ts_ns: ts,
        pid,
        tid,
        cmd: c,
        _pad: 0,
    };
    let id = ev.map.id;
    // NOEXIST makes two simultaneous first writers race inside the kernel's
    // bucket lock: exactly one inserts, the other sees it below.
    if BPF_WRITERS.insert(&id, &me, BPF_NOEXIST).is_ok() {
        return;
    }
    match BPF_WRITERS.get_ptr_mut(&id) {
        Some(slot) => {
            let slot = unsafe { &mut *slot };
            if slot.tid != 0 && slot.tid != tid && ts.saturating_sub(slot.ts_ns) < WRITER_STALE_NS {
                ev.other = *slot;
                ev.resolved |= resolved::CONCURRENT_WRITER;
            }
            *slot = me;
        }
        None => {
            if BPF_WRITERS.insert(&id, &me, 0).is_err() {
                count(Counter::BpfWriterStateFull);
            }
        }
    }
}

#[inline(always)]
fn wakeup_flag() -> u64 {
    let Some(n) = BPF_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    // Per-CPU slot: no other writer while this program runs on this CPU.
    let n = unsafe { &mut *n };
    *n += 1;
    if *n >= WAKE_EVERY {
        *n = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn exit_bpf(ret: i64) -> Option<()> {
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if pid == cfg.self_tgid && cfg.include_self == 0 {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<BpfSyscallExit>(0) else {
        count(Counter::BpfSyscallDropped);
        // Still release the writer slot below through the pending entry.
        if let Some(p) = BPF_INFLIGHT.get_ptr(&tid) {
            release_writer(unsafe { &*p }, tid);
            let _ = BPF_INFLIGHT.remove(&tid);
        }
        return None;
    };
    let out = unsafe { &mut *entry.as_mut_ptr() };
    out.header = header(EventKind::BpfSyscallExit, pid, tid, now());
    out.ret = ret;
    out.resolved = 0;
    out.batch_count = 0;
    out.map = MapIdentity::default();
    out.prog = ProgMaps::default();
    if let Some(p) = BPF_INFLIGHT.get_ptr(&tid) {
        let p = unsafe { &*p };
        let c = p.cmd;
        release_writer(p, tid);
        if ret >= 0 && (cmd::returns_fd(c) || c == cmd::PROG_LOAD) {
            let task = unsafe { bpf_get_current_task() };
            let r = resolve_fd(task, ret as u32, cfg, &mut out.map, &mut out.prog);
            out.resolved = if r == 0 { resolved::EXIT_FD } else { r };
            if r & resolved::FAILED != 0 {
                count(Counter::BpfResolveFailed);
            }
        }
        if cmd::is_batch(c)
            && let Ok(n) = unsafe {
                bpf_probe_read_user((p.uattr + cmd::BATCH_COUNT_OFFSET as u64) as *const u32)
            }
        {
            // The kernel writes back how many elements it processed.
            out.batch_count = n;
        }
        let _ = BPF_INFLIGHT.remove(&tid);
    }
    entry.submit(wakeup_flag());
    Some(())
}

#[inline(always)]
fn release_writer(p: &PendingExit, tid: u32) {
    if cmd::mutates(p.cmd)
        && p.map_id != 0
        && let Some(slot) = BPF_WRITERS.get_ptr(&p.map_id)
        && unsafe { (*slot).tid } == tid
    {
        let _ = BPF_WRITERS.remove(&p.map_id);
    }
}

/// mmap exits fire for every mmap in the system: only those with a pending
/// map record go on.
#[inline(always)]
fn exit_mmap(ret: i64) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let p = BPF_INFLIGHT.get_ptr(&tid)?;
    if unsafe { (*p).cmd } != cmd::MMAP {
        return None;
    }
    let _ = BPF_INFLIGHT.remove(&tid);
    let Some(mut entry) = EVENTS.reserve::<BpfSyscallExit>(0) else {
        count(Counter::BpfSyscallDropped);
        return None;
    };
    let out = unsafe { &mut *entry.as_mut_ptr() };
    out.header = header(
        EventKind::BpfSyscallExit,
        (pid_tgid >> 32) as u32,
        tid,
        now(),
    );
    out.ret = ret;
    out.resolved = 0;
    out.batch_count = 0;
    out.map = MapIdentity::default();
    out.prog = ProgMaps::default();
    entry.submit(wakeup_flag());
    Some(())
}
