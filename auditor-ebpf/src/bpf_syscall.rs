//! Tracepoints on bpf(2): who touched which BPF map, with the map resolved
//! inside the kernel at syscall time.
//!
//! Why here and not in userspace: a one-shot process (`bpftool map update`)
//! closes its fd and exits long before userspace could look at
//! `/proc/PID/fd`. So at `sys_enter_bpf` the fd in the attr is walked
//! `current->files->fdt->fd[fd]` → `struct file` → `private_data` (the
//! `struct bpf_map`), and at `sys_exit_bpf` the same is done for commands
//! that return a new map fd. Struct offsets come from the running kernel's
//! BTF (userspace writes them into `BPF_CONFIG`); nothing is hard-coded.
//!
//! A file is a map only when its `f_op` is the kernel's `bpf_map_fops`.
//! That symbol is data, absent from /proc/kallsyms without
//! CONFIG_KALLSYMS_ALL, so userspace calibrates it: it makes one lookup on
//! its own config map fd and this program records the `f_op` it finds there
//! (see `calibrate`). Every map fd in the kernel shares that table, ring
//! buffers and pinned maps included.
//!
//! Enter state waits per thread in `BPF_INFLIGHT`; concurrent writers are
//! decided at enter against `BPF_WRITERS`, the mutating call currently
//! inside each map.

use auditor_common::{
    Counter, EventKind,
    bpf_syscall::{
        ATTR_BYTES, BpfAuditConfig, BpfSyscallEvent, EXE_PARTS, KernelOffsets, MapIdentity,
        WriterSlot, cmd, resolved,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::shared::{EVENTS, count, header, now};

#[map(name = "BPF_CONFIG")]
static BPF_CONFIG: Array<BpfAuditConfig> = Array::with_max_entries(1, 0);

/// Index 0: `f_op` of the calibration fd; 1: the map id read through it.
#[map(name = "BPF_CALIB")]
static BPF_CALIB: Array<u64> = Array::with_max_entries(2, 0);

/// Calls between enter and exit, by thread id.
#[map(name = "BPF_INFLIGHT")]
static BPF_INFLIGHT: HashMap<u32, BpfSyscallEvent> = HashMap::with_max_entries(16384, 0);

/// The mutating call currently inside each map, by map id.
#[map(name = "BPF_WRITERS")]
static BPF_WRITERS: HashMap<u32, WriterSlot> = HashMap::with_max_entries(16384, 0);

/// The record under construction (600 bytes: over the 512-byte stack).
#[map(name = "BPF_SCRATCH")]
static BPF_SCRATCH: PerCpuArray<BpfSyscallEvent> = PerCpuArray::with_max_entries(1, 0);

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

// Field offsets in the syscall tracepoints' records
// (/sys/kernel/tracing/events/syscalls/sys_{enter,exit}_bpf/format).
const TP_ENTER_CMD: usize = 16;
const TP_ENTER_UATTR: usize = 24;
const TP_ENTER_SIZE: usize = 32;
const TP_EXIT_RET: usize = 16;

#[tracepoint]
pub fn bpf_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

#[tracepoint]
pub fn bpf_sys_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[inline(always)]
fn read_k<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
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
        Some(8) => Some(attr_u32(attr, 8)),
        Some(36) => Some(attr_u32(attr, 36)),
        _ => None,
    }
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
    let max_fds: u32 = read_k(fdt + off.fdt_max_fds as u64)?;
    if fd >= max_fds {
        return None;
    }
    let fds: u64 = read_k(fdt + off.fdt_fd as u64)?;
    let file: u64 = read_k(fds + fd as u64 * 8)?;
    (file != 0).then_some(file)
}

/// Fill `out` from the map behind `fd`; returns a [`resolved`] bit.
#[inline(always)]
fn resolve_fd(task: u64, fd: u32, cfg: &BpfAuditConfig, out: &mut MapIdentity) -> u32 {
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
    if fop != cfg.map_fops {
        return resolved::NOT_A_MAP;
    }
    let Some(map) = read_k::<u64>(file + off.file_private_data as u64) else {
        return resolved::FAILED;
    };
    if map == 0 {
        return resolved::FAILED;
    }
    out.id = read_k(map + off.map_id as u64).unwrap_or(0);
    out.map_type = read_k(map + off.map_type as u64).unwrap_or(0);
    out.key_size = read_k(map + off.map_key_size as u64).unwrap_or(0);
    out.value_size = read_k(map + off.map_value_size as u64).unwrap_or(0);
    out.max_entries = read_k(map + off.map_max_entries as u64).unwrap_or(0);
    out.map_flags = read_k(map + off.map_flags as u64).unwrap_or(0);
    out.name = read_k(map + off.map_name as u64).unwrap_or([0; 16]);
    if out.id == 0 { resolved::FAILED } else { 0 }
}

/// The auditor's own lookup on its config map fd tells which `f_op` marks a
/// map file, and proves the offsets by reading back the map id.
#[inline(always)]
fn calibrate(task: u64, fd: u32, off: &KernelOffsets) -> Option<()> {
    let file = fd_to_file(task, fd, off)?;
    let fop: u64 = read_k(file + off.file_f_op as u64)?;
    let map: u64 = read_k(file + off.file_private_data as u64)?;
    let id: u32 = read_k(map + off.map_id as u64)?;
    BPF_CALIB.set(0, fop, 0).ok()?;
    BPF_CALIB.set(1, id as u64, 0).ok()?;
    Some(())
}

/// `current->mm->exe_file` path, leaf first, up to [`EXE_PARTS`] components.
/// Only dentry names are walked (no mount crossing): userspace knows when a
/// path is cut.
#[inline(always)]
fn read_exe(task: u64, off: &KernelOffsets, ev: &mut BpfSyscallEvent) {
    for part in ev.exe.iter_mut() {
        part[0] = 0;
    }
    let Some(mm) = read_k::<u64>(task + off.task_mm as u64) else {
        return;
    };
    if mm == 0 {
        return;
    }
    let Some(exe) = read_k::<u64>(mm + off.mm_exe_file as u64) else {
        return;
    };
    if exe == 0 {
        return;
    }
    let Some(mut dentry) = read_k::<u64>(exe + (off.file_f_path + off.path_dentry) as u64) else {
        return;
    };
    for i in 0..EXE_PARTS {
        if dentry == 0 {
            break;
        }
        let Some(name) = read_k::<u64>(dentry + (off.dentry_d_name + off.qstr_name) as u64) else {
            break;
        };
        if unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.exe[i]) }.is_err() {
            break;
        }
        let Some(parent) = read_k::<u64>(dentry + off.dentry_d_parent as u64) else {
            break;
        };
        if parent == dentry {
            break;
        }
        dentry = parent;
    }
}

#[inline(always)]
fn try_enter(ctx: &TracePointContext) -> Option<()> {
    count(Counter::BpfSyscallsSeen);
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let c = unsafe { ctx.read_at::<u64>(TP_ENTER_CMD) }.ok()? as u32;
    if !cmd::audited(c) {
        return None;
    }
    let uattr = unsafe { ctx.read_at::<u64>(TP_ENTER_UATTR) }.ok()?;
    let size = unsafe { ctx.read_at::<u64>(TP_ENTER_SIZE) }.ok()?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let task = unsafe { bpf_get_current_task() };

    let ev = unsafe { &mut *BPF_SCRATCH.get_ptr_mut(0)? };
    // The attr may end near the end of a mapped page: fall back to the
    // 32-byte prefix every element command fits in.
    ev.attr_len = if unsafe { bpf_probe_read_user_buf(uattr as *const u8, &mut ev.attr) }.is_ok() {
        ATTR_BYTES as u32
    } else {
        let mut short = [0u8; 32];
        if unsafe { bpf_probe_read_user_buf(uattr as *const u8, &mut short) }.is_err() {
            return None;
        }
        ev.attr = [0; ATTR_BYTES];
        ev.attr[..32].copy_from_slice(&short);
        32
    };

    if pid == cfg.self_tgid {
        if cfg.map_fops == 0 && c == cmd::MAP_LOOKUP_ELEM {
            let fd = attr_u32(&ev.attr, 0);
            if fd == cfg.calib_fd {
                calibrate(task, fd, &cfg.off);
                return None;
            }
        }
        if cfg.include_self == 0 {
            return None;
        }
    }

    let ts = now();
    ev.header = header(EventKind::BpfSyscall, pid, tid, ts);
    ev.cmd = c;
    ev.map_id = 0;
    ev.ret = 0;
    ev.latency_ns = 0;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.resolved = 0;
    ev.map = MapIdentity::default();
    ev.other = WriterSlot::default();
    ev.attr_size = size as u32;
    ev.uattr = uattr;

    if let Some(fd) = fd_at(c, &ev.attr) {
        let r = resolve_fd(task, fd, cfg, &mut ev.map);
        ev.resolved |= if r == 0 { resolved::ENTER_FD } else { r };
        if r == resolved::FAILED {
            count(Counter::BpfResolveFailed);
        }
    }
    ev.map_id = ev.map.id;
    // Claim the map before the slower reads below, so the window in which
    // this call counts as "inside" starts as close to the enter as it can.
    if cmd::mutates(c) && ev.map.id != 0 {
        note_writer(ev, pid, tid, ts, c);
    }

    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.path[0] = 0;
    read_exe(task, &cfg.off, ev);
    if c == cmd::OBJ_PIN || c == cmd::OBJ_GET {
        let p: u64 = u64::from_ne_bytes([
            ev.attr[0], ev.attr[1], ev.attr[2], ev.attr[3], ev.attr[4], ev.attr[5], ev.attr[6],
            ev.attr[7],
        ]);
        if unsafe { bpf_probe_read_user_str_bytes(p as *const u8, &mut ev.path) }.is_err() {
            ev.path[0] = 0;
        }
    }

    if BPF_INFLIGHT.insert(&tid, &*ev, 0).is_err() {
        count(Counter::BpfInflightFull);
    }
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
fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ev = unsafe { &mut *BPF_INFLIGHT.get_ptr_mut(&tid)? };
    let ret = unsafe { ctx.read_at::<i64>(TP_EXIT_RET) }.unwrap_or(0);
    ev.ret = ret;
    ev.latency_ns = now().saturating_sub(ev.header.ts_ns);
    let c = ev.cmd;

    if cmd::mutates(c) && ev.map.id != 0 {
        if let Some(slot) = BPF_WRITERS.get_ptr(&ev.map.id) {
            if unsafe { (*slot).tid } == tid {
                let _ = BPF_WRITERS.remove(&ev.map.id);
            }
        }
    }

    let mut keep = true;
    if cmd::returns_fd(c) && ret >= 0 {
        if let Some(cfg) = BPF_CONFIG.get(0) {
            let task = unsafe { bpf_get_current_task() };
            let r = resolve_fd(task, ret as u32, cfg, &mut ev.map);
            ev.resolved |= if r == 0 { resolved::EXIT_FD } else { r };
            if r == resolved::FAILED {
                count(Counter::BpfResolveFailed);
            }
            ev.map_id = ev.map.id;
        }
    }
    // OBJ_PIN, OBJ_GET and OBJ_GET_INFO_BY_FD also work on programs, links
    // and BTF objects: only maps are audited.
    if ev.resolved & resolved::NOT_A_MAP != 0 {
        keep = false;
    }
    if keep
        && matches!(
            c,
            cmd::MAP_LOOKUP_BATCH
                | cmd::MAP_LOOKUP_AND_DELETE_BATCH
                | cmd::MAP_UPDATE_BATCH
                | cmd::MAP_DELETE_BATCH
        )
    {
        // The kernel writes back how many elements it processed.
        if let Ok(n) = unsafe {
            bpf_probe_read_user((ev.uattr + cmd::BATCH_COUNT_OFFSET as u64) as *const u32)
        } {
            let b = n.to_ne_bytes();
            ev.attr[cmd::BATCH_COUNT_OFFSET] = b[0];
            ev.attr[cmd::BATCH_COUNT_OFFSET + 1] = b[1];
            ev.attr[cmd::BATCH_COUNT_OFFSET + 2] = b[2];
            ev.attr[cmd::BATCH_COUNT_OFFSET + 3] = b[3];
        }
    }
    if keep
        && EVENTS
            .output::<BpfSyscallEvent>(&*ev, wakeup_flag())
            .is_err()
    {
        count(Counter::BpfSyscallDropped);
    }
    let _ = BPF_INFLIGHT.remove(&tid);
    Some(())
}
