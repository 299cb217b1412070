//! Raw tracepoints on system call entry and exit: who touched which BPF
//! map through bpf(2) (or a writable mmap of a map fd), with the map
//! resolved inside the kernel at syscall time.
//!
//! Why here and not in userspace: a one-shot process (`bpftool map update`)
//! closes its fd and exits long before userspace could look at
//! `/proc/PID/fd`. So the fd in the attr is walked
//! `current->files->fdt->fd[fd]` → `struct file` → `private_data` (the
//! `struct bpf_map` or `struct bpf_prog`) while the call is made, and at
//! exit the same is done for commands that return a new fd. Struct offsets
//! come from the running kernel's BTF: the loader writes them into the
//! read-only `BPF_OFFSETS` before verification, so loads through the
//! task's BTF pointer are verifier-checked plain loads (see `kload`).
//!
//! Plain reads (`cmd::recorded_at_exit`) are recorded by the exit program:
//! the enter program only notes the call in the thread's slot (command,
//! attr pointer, size), and the exit reads the attr, resolves the fd and
//! writes the record with one clock read. Writes and the other judged
//! calls are resolved at enter (before a racing thread could change their
//! attr or fd) and finished at exit.
//!
//! A file is a map when its `f_op` is the kernel's `bpf_map_fops`, a
//! program when it is `bpf_prog_fops`. Both are data symbols, absent from
//! /proc/kallsyms without CONFIG_KALLSYMS_ALL, so userspace calibrates them:
//! it makes one call on its own config map fd and one on its own program fd
//! and this program records the `f_op` it finds there (see `calibrate`).
//!
//! Why raw `sys_enter`/`sys_exit` and not `syscalls:sys_enter_bpf`: 32-bit
//! calls (`int $0x80`) fire no `syscalls:*` tracepoint, so the raw pair
//! has to run on every system call anyway; letting it handle the 64-bit
//! calls too means one program run at enter and one at exit per bpf()
//! call, not four. A raw tracepoint also skips the perf-trace record the
//! classic ones fill before the program runs. Every other system call
//! returns after comparing its number (enter) or reading the count of
//! calls in flight (exit). (Reading the number from the saved registers
//! at exit instead, with no enter-side note, cost every other system
//! call's exit ~60 ns more: two helper calls.)
//!
//! Cost: a plain read's work is all in the exit program (attr copy, three
//! kernel reads for `fd[n]` → file → map, one clock read, the ring write);
//! the enter program reads the command and notes the call. A call
//! resolved at enter keeps what it found in the thread's slot of an array
//! (no hash update) and the exit writes its one record: with the caller's
//! identity only for the calls a guard judges and the path only for pins
//! and gets.

use auditor_common::{
    Counter, EventKind,
    bpf_syscall::{
        ATTR_BYTES, BPF_F_MMAPABLE, BpfAuditConfig, BpfCall, BpfCallDetail, BpfCallJudged,
        BpfCallPath, COMPAT_NR_BPF, COMPAT_NR_MMAP2, CallSlot, KernelOffsets, MapIdentity, NR_BPF,
        NR_MMAP, PATH_BYTES, PROG_MAPS, ProgMaps, SLOT_MASK, SLOTS, TS_COMPAT, WriterSlot, cmd,
        resolved,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::RawTracePointContext,
};

use crate::shared::{EVENTS, count, header, now};

/// The running kernel's struct offsets, written by the loader into the
/// object's read-only data before the programs are verified: the verifier
/// then knows each offset as a constant, checks every load through the
/// task's BTF pointer against the kernel's own types, and the JIT emits
/// those loads as plain memory reads (fault-safe) instead of
/// `bpf_probe_read_kernel` calls.
#[unsafe(no_mangle)]
static BPF_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// An offset from [`BPF_OFFSETS`]; volatile so the compiler does not fold
/// the placeholder zero into the code.
macro_rules! off {
    ($f:ident) => {
        unsafe { core::ptr::read_volatile(&raw const BPF_OFFSETS.$f) } as u64
    };
}

/// Calls between enter and exit right now (all threads). The exit program
/// runs on every system call of the machine; while this is zero it returns
/// without a helper call or a look at the (large, mostly cold) slot array.
#[map(name = "BPF_INFLIGHT")]
static BPF_INFLIGHT: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "BPF_CONFIG")]
static BPF_CONFIG: Array<BpfAuditConfig> = Array::with_max_entries(1, 0);

/// 0: `f_op` of the map calibration fd; 1: the map id read through it;
/// 2: `f_op` of the program calibration fd; 3: the program id read.
#[map(name = "BPF_CALIB")]
static BPF_CALIB: Array<u64> = Array::with_max_entries(4, 0);

/// A thread's call between enter and exit, at `tid & SLOT_MASK`.
#[map(name = "BPF_SLOTS")]
static BPF_SLOTS: Array<CallSlot> = Array::with_max_entries(SLOTS, 0);

/// The mutating call currently inside each map, by map id.
#[map(name = "BPF_WRITERS")]
static BPF_WRITERS: HashMap<u32, WriterSlot> = HashMap::with_max_entries(16384, 0);

/// Records written on this CPU since the last forced wakeup.
#[map(name = "BPF_WAKE")]
static BPF_WAKE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Wake the reader once per this many records per CPU. A forced wakeup is
/// an irq_work self-interrupt, ~5 us on these virtual machines: once per
/// 32 records it was still ~150 ns of every record (measured with program
/// stats), once per 1024 it is ~5 ns. Userspace also reads every 50 ms
/// (`READ_WAIT`), which bounds how long a lone record waits; 1024 records
/// per CPU (at most ~300 KiB) are a small part of the ring.
const WAKE_EVERY: u32 = 1024;
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

/// `struct pt_regs` (x86-64) from `bp` (offset 32) to `di` (offset 120):
/// every register either system call ABI passes arguments in, read in one
/// go.
#[repr(C)]
struct Regs {
    bp: u64,
    bx: u64,
    _r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    _ax: u64,
    cx: u64,
    dx: u64,
    si: u64,
    di: u64,
}
const REGS_BP: u64 = 32;

impl Regs {
    /// Argument `i` of the call: the 64-bit ABI (di, si, dx, r10, r8, r9)
    /// or the i386 one (bx, cx, dx, si, di, bp), whose arguments are the
    /// low 32 bits of each register whatever the upper half holds.
    #[inline(always)]
    fn args(&self, compat: bool) -> [u64; 6] {
        if compat {
            let m = |v: u64| v & 0xffff_ffff;
            [
                m(self.bx),
                m(self.cx),
                m(self.dx),
                m(self.si),
                m(self.di),
                m(self.bp),
            ]
        } else {
            [self.di, self.si, self.dx, self.r10, self.r8, self.r9]
        }
    }
}

/// `raw_syscalls:sys_enter` (`regs`, `id`): every system call of the
/// machine; only bpf and mmap (64- and 32-bit) go past the number check.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bpf_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if id == NR_BPF || id == COMPAT_NR_BPF || id == NR_MMAP || id == COMPAT_NR_MMAP2 {
        let _ = enter(id);
    }
    0
}

/// `raw_syscalls:sys_exit` (`regs`, `ret`): only a thread whose slot holds
/// a call of its own goes past the slot check. A plain read
/// ([`cmd::recorded_at_exit`]) is recorded here whole; the other calls
/// finish what the enter program resolved.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bpf_sys_exit(ctx: RawTracePointContext) -> i32 {
    let Some(inflight) = BPF_INFLIGHT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: array value.
    if unsafe { core::ptr::read_volatile(inflight) } == 0 {
        return 0;
    }
    let task = current_task();
    let tid: u32 = kload(task + off!(task_pid));
    let Some(slot) = BPF_SLOTS.get_ptr_mut(tid & SLOT_MASK) else {
        return 0;
    };
    // SAFETY: array value; the slot of this thread's tid.
    if unsafe { (*slot).tid } != tid || tid == 0 {
        return 0;
    }
    unsafe { add_atomic(inflight, u64::MAX) };
    let ret: i64 = ctx.arg(1);
    let slot = unsafe { &mut *slot };
    if slot.nr & NOTED_ONLY != 0 {
        let _ = exit_plain(task, slot, ret);
    } else {
        let _ = exit(task, slot, ret);
    }
    0
}

/// `CallSlot::nr` bit: the enter program only noted the call (a plain
/// read); the exit program does all of its work.
const NOTED_ONLY: u32 = 1 << 31;

/// A plain read noted at enter: command, attr pointer and size come from
/// the slot, everything else is read now.
#[inline(always)]
fn exit_plain(task: u64, slot: &mut CallSlot, ret: i64) -> Option<()> {
    let c = slot.rec.call.cmd;
    let uattr = slot.uattr;
    let size = slot.rec.call.attr_size;
    let compat = slot.nr & !NOTED_ONLY == COMPAT_NR_BPF as u32;
    slot.tid = 0;
    let cfg = BPF_CONFIG.get(0)?;
    record_at_exit(cfg, task, c, uattr, size, compat, ret)
}

#[inline(always)]
unsafe fn add_atomic(p: *mut u64, n: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

/// `current` as a BTF pointer: loads at [`BPF_OFFSETS`] from it and from
/// the struct pointers read through it are plain, verifier-checked loads.
#[inline(always)]
fn current_task() -> u64 {
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// A load through a BTF pointer (the task or a struct pointer read from
/// it). The verifier checks the constant offset against the kernel type;
/// a fault (a NULL pointer on the way) reads zero.
#[inline(always)]
fn kload<T>(addr: u64) -> T {
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

#[inline(always)]
fn enter(id: u64) -> Option<()> {
    // The task's saved user registers as a BTF pointer (`bpf_task_pt_regs`
    // of `current`, the same `pt_regs` the tracepoint passes): the
    // arguments are then plain loads, not a `bpf_probe_read_kernel`.
    let task = current_task();
    let regs_ptr = unsafe { bpf_task_pt_regs(task as *mut _) } as u64;
    if regs_ptr == 0 {
        return None;
    }
    let regs: Regs = kload(regs_ptr + REGS_BP);
    let compat = id == COMPAT_NR_BPF || id == COMPAT_NR_MMAP2;
    let a = regs.args(compat);
    if id == NR_BPF || id == COMPAT_NR_BPF {
        if is_compat(task) != compat {
            // The number is another call's in the other ABI (i386 321 is
            // signalfd; x86-64 357 does not exist).
            return None;
        }
        count(Counter::BpfSyscallsSeen);
        let c = a[0] as u32;
        if !cmd::audited(c) {
            return None;
        }
        let cfg = BPF_CONFIG.get(0)?;
        if cfg.enabled == 0 {
            return None;
        }
        if cmd::recorded_at_exit(c) {
            return note_call(task, id, c, a[1], a[2] as u32);
        }
        enter_bpf(cfg, task, id, c, a[1], a[2] as u32, compat)
    } else {
        enter_mmap(task, id, &a, compat)
    }
}

/// Whether the current call came through the 32-bit entry.
#[inline(always)]
fn is_compat(task: u64) -> bool {
    kload::<u32>(task + off!(task_ti_status)) & TS_COMPAT != 0
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
        Some(4) => Some(attr_u32(attr, 4)),
        Some(8) => Some(attr_u32(attr, 8)),
        Some(36) => Some(attr_u32(attr, 36)),
        _ => None,
    }
}

/// `current->files->fdt->fd[fd]`, or None when the fd is out of range or
/// empty. `files`, `fdt`, `max_fds` and the `fd` array are loads through
/// BTF pointers; the array slot (a pointer to a pointer, untyped to the
/// verifier) is one `bpf_probe_read_kernel`.
#[inline(always)]
fn fd_to_file(task: u64, fd: u32) -> Option<u64> {
    let files: u64 = kload(task + off!(task_files));
    if files == 0 {
        return None;
    }
    let fdt: u64 = kload(files + off!(files_fdt));
    if fdt == 0 {
        return None;
    }
    let max_fds: u32 = kload(fdt + off!(fdt_max_fds));
    if fd >= max_fds {
        return None;
    }
    let arr: u64 = kload(fdt + off!(fdt_fd));
    let file: u64 = read_k(arr + fd as u64 * 8)?;
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

/// `map_type` .. `name` in one read where `name` sits 72 bytes after
/// `map_type` (Linux 6.x); other layouts take two reads.
#[repr(C)]
struct MapSpan {
    head: MapHead,
    _between: [u8; MAP_NAME_AFTER_TYPE - 32],
    name: [u8; 16],
}
const MAP_NAME_AFTER_TYPE: usize = 72;

#[inline(always)]
fn read_map(map: u64, out: &mut MapIdentity) -> u32 {
    let h = if off!(map_name) == off!(map_type) + MAP_NAME_AFTER_TYPE as u64 {
        let Some(sp) = read_k::<MapSpan>(map + off!(map_type)) else {
            return resolved::FAILED;
        };
        out.name = sp.name;
        sp.head
    } else {
        let Some(h) = read_k::<MapHead>(map + off!(map_type)) else {
            return resolved::FAILED;
        };
        out.name = read_k(map + off!(map_name)).unwrap_or([0; 16]);
        h
    };
    out.id = h.id;
    out.map_type = h.map_type;
    out.key_size = h.key_size;
    out.value_size = h.value_size;
    out.max_entries = h.max_entries;
    out.map_flags = h.map_flags;
    if out.id == 0 { resolved::FAILED } else { 0 }
}

/// `file->f_op` and `file->private_data`: one read where they are 16 bytes
/// apart (Linux 6.x: `f_op`, `f_mapping`, `private_data`), two otherwise.
#[inline(always)]
fn file_ops_and_object(file: u64) -> Option<(u64, u64)> {
    if off!(file_private_data) == off!(file_f_op) + 16 {
        let w: [u64; 3] = read_k(file + off!(file_f_op))?;
        Some((w[0], w[2]))
    } else {
        Some((
            read_k(file + off!(file_f_op))?,
            read_k(file + off!(file_private_data))?,
        ))
    }
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
    want_prog: bool,
) -> u32 {
    if cfg.map_fops == 0 {
        return resolved::UNCALIBRATED;
    }
    let Some(file) = fd_to_file(task, fd) else {
        return resolved::FAILED;
    };
    let Some((fop, obj)) = file_ops_and_object(file) else {
        return resolved::FAILED;
    };
    if obj == 0 {
        return resolved::FAILED;
    }
    if fop == cfg.map_fops {
        return read_map(obj, map);
    }
    if want_prog && fop == cfg.prog_fops && cfg.prog_fops != 0 {
        return read_prog(obj, prog) | resolved::NOT_A_MAP;
    }
    resolved::NOT_A_MAP
}

/// Program id and `aux->used_maps` ids: every map the verifier bound to the
/// program, whether named in its instructions or in `fd_array`.
#[inline(always)]
fn read_prog(prog: u64, out: &mut ProgMaps) -> u32 {
    let Some(aux) = read_k::<u64>(prog + off!(prog_aux)) else {
        return 0;
    };
    out.prog_id = read_k(aux + off!(aux_id)).unwrap_or(0);
    out.map_cnt = read_k(aux + off!(aux_used_map_cnt)).unwrap_or(0);
    let used: u64 = read_k(aux + off!(aux_used_maps)).unwrap_or(0);
    if used != 0 {
        for i in 0..PROG_MAPS {
            if i as u32 >= out.map_cnt {
                break;
            }
            let Some(m) = read_k::<u64>(used + i as u64 * 8) else {
                break;
            };
            out.map_ids[i] = read_k(m + off!(map_id)).unwrap_or(0);
        }
    }
    resolved::PROG
}

/// The auditor's own calls on its config map fd and on one of its program
/// fds tell which `f_op` marks a map or a program file, and prove the
/// offsets by reading back the ids.
#[inline(always)]
fn calibrate(task: u64, fd: u32, cfg: &BpfAuditConfig) -> Option<()> {
    let file = fd_to_file(task, fd)?;
    let fop: u64 = read_k(file + off!(file_f_op))?;
    let obj: u64 = read_k(file + off!(file_private_data))?;
    if fd == cfg.calib_fd {
        let id: u32 = read_k(obj + off!(map_id))?;
        BPF_CALIB.set(0, fop, 0).ok()?;
        BPF_CALIB.set(1, id as u64, 0).ok()?;
    } else {
        let aux: u64 = read_k(obj + off!(prog_aux))?;
        let id: u32 = read_k(aux + off!(aux_id))?;
        BPF_CALIB.set(2, fop, 0).ok()?;
        BPF_CALIB.set(3, id as u64, 0).ok()?;
    }
    Some(())
}

/// Effective uid, effective capabilities and the executable's device and
/// inode (as `stat` on its path reports them: through `f_path`'s dentry).
/// Every step is a load through a BTF pointer, read fresh on each judged
/// call: nothing is cached, so nothing can be stale.
#[inline(always)]
fn read_creds(task: u64, flags: &mut u32, d: &mut BpfCallDetail) {
    let cred: u64 = kload(task + off!(task_cred));
    if cred != 0 {
        d.euid = kload(cred + off!(cred_euid));
        d.cap_effective = kload(cred + off!(cred_cap_effective));
    }
    *flags |= resolved::CREDS;
    if read_exe_id(task, d).is_none() {
        *flags |= resolved::NO_EXE;
    }
}

#[inline(always)]
fn read_exe_id(task: u64, ev: &mut BpfCallDetail) -> Option<()> {
    let mm: u64 = kload(task + off!(task_mm));
    if mm == 0 {
        return None;
    }
    let exe: u64 = kload(mm + off!(mm_exe_file));
    if exe == 0 {
        return None;
    }
    let dentry: u64 = kload(exe + off!(file_f_path) + off!(path_dentry));
    if dentry == 0 {
        return None;
    }
    let inode: u64 = kload(dentry + off!(dentry_d_inode));
    if inode == 0 {
        return None;
    }
    ev.exe_ino = kload(inode + off!(inode_i_ino));
    let sb: u64 = kload(inode + off!(inode_i_sb));
    if sb == 0 {
        return None;
    }
    ev.exe_dev = kload(sb + off!(sb_s_dev));
    Some(())
}

/// Take this thread's slot for a new call. A slot still held by another
/// thread (tids equal modulo `SLOTS`, both inside a call) loses that call.
#[inline(always)]
fn take_slot(tid: u32, nr: u64, uattr: u64) -> Option<&'static mut CallSlot> {
    let slot = BPF_SLOTS.get_ptr_mut(tid & SLOT_MASK)?;
    // SAFETY: array value, valid for the map's lifetime.
    let slot = unsafe { &mut *slot };
    if slot.tid == 0 {
        if let Some(n) = BPF_INFLIGHT.get_ptr_mut(0) {
            unsafe { add_atomic(n, 1) };
        }
    } else if slot.tid != tid {
        // The other call's exit will not find its slot: it stays counted
        // in flight through this one, whose exit releases it.
        count(Counter::BpfSlotShared);
    }
    slot.tid = tid;
    slot.nr = nr as u32;
    slot.uattr = uattr;
    Some(slot)
}

#[inline(always)]
fn clear_call(c: &mut BpfCall, cmd: u32, flags: u32, pid: u32, tid: u32) {
    c.header = header(EventKind::BpfSyscall, pid, tid, now());
    c.cmd = cmd;
    c.resolved = flags;
    c.uid = 0;
    c.fd = -1;
    c.ret = 0;
    c.latency_ns = 0;
    clear_map(&mut c.map);
    c.attr_size = 0;
    c.attr_len = 0;
}

/// Field by field: a whole-struct `= Default::default()` compiles to a call
/// of the byte-at-a-time `memset` the BPF target links in.
#[inline(always)]
fn clear_map(m: &mut MapIdentity) {
    m.id = 0;
    m.map_type = 0;
    m.key_size = 0;
    m.value_size = 0;
    m.max_entries = 0;
    m.map_flags = 0;
    let name = m.name.as_mut_ptr() as *mut [u32; 4];
    unsafe { name.write_unaligned([0; 4]) };
}

#[inline(always)]
fn clear_detail(d: &mut BpfCallDetail) {
    d.euid = u32::MAX;
    d.exe_dev = 0;
    d.cap_effective = 0;
    d.exe_ino = 0;
    d.other.ts_ns = 0;
    d.other.pid = 0;
    d.other.tid = 0;
    d.other.cmd = 0;
    d.other._pad = 0;
    d.prog.prog_id = 0;
    d.prog.map_cnt = 0;
    for i in 0..PROG_MAPS {
        d.prog.map_ids[i] = 0;
    }
}

/// The attr prefix into the record. It may end near the end of a mapped
/// page: fall back to the 32-byte prefix every element command fits in.
/// Unreadable (NULL or unmapped): the call fails with EFAULT and is
/// reported as such.
#[inline(always)]
fn read_attr(ev: &mut BpfCall, uattr: u64) {
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
}

/// The auditor's own calls are left out, except the calibration calls
/// (one on its config map fd, one on its program fd), which teach the
/// programs the `f_op` of maps and programs. Returns whether to go on.
#[inline(always)]
fn caller_audited(task: u64, cfg: &BpfAuditConfig, pid: u32, c: u32, uattr: u64) -> bool {
    if pid != cfg.self_tgid {
        return true;
    }
    if (cfg.map_fops == 0 || cfg.prog_fops == 0)
        && (c == cmd::MAP_LOOKUP_ELEM || c == cmd::OBJ_GET_INFO_BY_FD)
        && let Ok(fd) = unsafe { bpf_probe_read_user(uattr as *const u32) }
        && (fd == cfg.calib_fd || fd == cfg.calib_prog_fd)
    {
        calibrate(task, fd, cfg);
        return false;
    }
    cfg.include_self != 0
}

/// A plain read ([`cmd::recorded_at_exit`]), recorded in one program run
/// at its exit: one clock read, no slot, written straight into the ring.
#[inline(always)]
fn record_at_exit(
    cfg: &BpfAuditConfig,
    task: u64,
    c: u32,
    uattr: u64,
    size: u32,
    compat: bool,
    ret: i64,
) -> Option<()> {
    let pid: u32 = kload(task + off!(task_tgid));
    if !caller_audited(task, cfg, pid, c, uattr) {
        return None;
    }
    let tid: u32 = kload(task + off!(task_pid));
    if c == cmd::OBJ_GET {
        let Some(mut entry) = EVENTS.reserve::<BpfCallPath>(0) else {
            count(Counter::BpfSyscallDropped);
            return None;
        };
        let out = unsafe { &mut *entry.as_mut_ptr() };
        fill_at_exit(
            cfg,
            task,
            &mut out.call,
            c,
            uattr,
            size,
            compat,
            ret,
            pid,
            tid,
        );
        finish_call(task, &mut out.call, EventKind::BpfSyscallPath);
        read_path(&out.call, &mut out.path);
        entry.submit(wakeup_flag());
    } else {
        let Some(mut entry) = EVENTS.reserve::<BpfCall>(0) else {
            count(Counter::BpfSyscallDropped);
            return None;
        };
        let out = unsafe { &mut *entry.as_mut_ptr() };
        fill_at_exit(cfg, task, out, c, uattr, size, compat, ret, pid, tid);
        finish_call(task, out, EventKind::BpfSyscall);
        entry.submit(wakeup_flag());
    }
    Some(())
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_at_exit(
    cfg: &BpfAuditConfig,
    task: u64,
    ev: &mut BpfCall,
    c: u32,
    uattr: u64,
    size: u32,
    compat: bool,
    ret: i64,
    pid: u32,
    tid: u32,
) {
    let flags = resolved::AT_EXIT | if compat { resolved::COMPAT } else { 0 };
    clear_call(ev, c, flags, pid, tid);
    ev.ret = ret;
    ev.attr_size = size;
    read_attr(ev, uattr);
    let mut prog = ProgMaps::default();
    if ev.attr_len != 0
        && let Some(fd) = fd_at(c, &ev.attr)
    {
        ev.fd = fd as i32;
        // Program fds are not audited by these commands (no prog read).
        let r = resolve_fd(task, fd, cfg, &mut ev.map, &mut prog, false);
        ev.resolved |= if r == 0 { resolved::ENTER_FD } else { r };
        if r & resolved::FAILED != 0 {
            count(Counter::BpfResolveFailed);
        }
    }
    if ret >= 0 && cmd::returns_fd(c) {
        let r = resolve_fd(task, ret as u32, cfg, &mut ev.map, &mut prog, false);
        ev.resolved |= if r == 0 { resolved::EXIT_FD } else { r };
        if r & resolved::FAILED != 0 {
            count(Counter::BpfResolveFailed);
        }
    }
}

/// The pin path of OBJ_PIN / OBJ_GET (`attr.pathname`), NUL-terminated.
#[inline(always)]
fn read_path(call: &BpfCall, path: &mut [u8; PATH_BYTES]) {
    path[0] = 0;
    if call.attr_len != 0
        && unsafe { bpf_probe_read_user_str_bytes(attr_u64(&call.attr) as *const u8, path) }
            .is_err()
    {
        path[0] = 0;
    }
}

/// A plain read: only note it in the thread's slot (command, attr pointer,
/// size), so the exit program knows the call is one of its own without
/// reading the registers on every system call's exit.
#[inline(always)]
fn note_call(task: u64, nr: u64, c: u32, uattr: u64, size: u32) -> Option<()> {
    let tid: u32 = kload(task + off!(task_pid));
    let slot = take_slot(tid, nr | NOTED_ONLY as u64, uattr)?;
    slot.rec.call.cmd = c;
    slot.rec.call.attr_size = size;
    Some(())
}

#[inline(always)]
fn enter_bpf(
    cfg: &BpfAuditConfig,
    task: u64,
    nr: u64,
    c: u32,
    uattr: u64,
    size: u32,
    compat: bool,
) -> Option<()> {
    let pid: u32 = kload(task + off!(task_tgid));
    let tid: u32 = kload(task + off!(task_pid));
    if !caller_audited(task, cfg, pid, c, uattr) {
        return None;
    }

    let slot = take_slot(tid, nr, uattr)?;
    let flags = if compat { resolved::COMPAT } else { 0 };
    let ev = &mut slot.rec.call;
    clear_call(ev, c, flags, pid, tid);
    ev.attr_size = size;
    read_attr(ev, uattr);
    let judged = cmd::judged(c);
    let d = &mut slot.rec.detail;
    if judged {
        clear_detail(d);
    }
    let ev = &mut slot.rec.call;
    if ev.attr_len != 0
        && let Some(fd) = fd_at(c, &ev.attr)
    {
        ev.fd = fd as i32;
        let mut prog = ProgMaps::default();
        let r = resolve_fd(task, fd, cfg, &mut ev.map, &mut prog, true);
        ev.resolved |= if r == 0 { resolved::ENTER_FD } else { r };
        if r & resolved::FAILED != 0 {
            count(Counter::BpfResolveFailed);
        }
        if r & resolved::PROG != 0 {
            if !judged {
                clear_detail(d);
            }
            d.prog = prog;
        }
    }
    // Claim the map before the slower reads below, so the window in which
    // this call counts as "inside" starts as close to the enter as it can.
    if cmd::mutates(c) && ev.map.id != 0 {
        note_writer(ev, d, pid, tid, c);
    }
    if judged {
        read_creds(task, &mut ev.resolved, d);
    }
    Some(())
}

/// A shared writable mmap of a map fd: the way to change a
/// `BPF_F_MMAPABLE` array without bpf(2). Read-only and private mappings
/// cannot write the map (the kernel refuses later write access), so they
/// are left out.
#[inline(always)]
fn enter_mmap(task: u64, nr: u64, a: &[u64; 6], compat: bool) -> Option<()> {
    let prot = a[2];
    let mflags = a[3];
    if prot & PROT_WRITE == 0 {
        return None;
    }
    let share = mflags & MAP_TYPE_MASK;
    if share != MAP_SHARED && share != MAP_SHARED_VALIDATE {
        return None;
    }
    let fd = a[4] as i32;
    if fd < 0 {
        return None;
    }
    let cfg = BPF_CONFIG.get(0)?;
    if cfg.enabled == 0 || cfg.map_fops == 0 {
        return None;
    }
    let pid: u32 = kload(task + off!(task_tgid));
    let tid: u32 = kload(task + off!(task_pid));
    if pid == cfg.self_tgid && cfg.include_self == 0 {
        return None;
    }
    if is_compat(task) != compat {
        return None;
    }
    let file = fd_to_file(task, fd as u32)?;
    let (fop, map) = file_ops_and_object(file)?;
    if fop != cfg.map_fops {
        return None;
    }
    let mut id = MapIdentity::default();
    read_map(map, &mut id);
    if id.map_flags & BPF_F_MMAPABLE == 0 {
        return None;
    }
    let slot = take_slot(tid, nr, 0)?;
    let flags = resolved::ENTER_FD | if compat { resolved::COMPAT } else { 0 };
    let ev = &mut slot.rec.call;
    clear_call(ev, cmd::MMAP, flags, pid, tid);
    ev.fd = fd;
    ev.map = id;
    ev.attr = [0; ATTR_BYTES];
    // len, prot and flags, as the "attr" of this pseudo-command.
    ev.attr[0..8].copy_from_slice(&a[1].to_ne_bytes());
    ev.attr[8..16].copy_from_slice(&prot.to_ne_bytes());
    ev.attr[16..24].copy_from_slice(&mflags.to_ne_bytes());
    ev.attr_len = 24;
    ev.attr_size = 24;
    let d = &mut slot.rec.detail;
    clear_detail(d);
    read_creds(task, &mut ev.resolved, d);
    Some(())
}

/// Record this thread as inside a mutating call on the map, and flag the
/// call if another thread already is.
#[inline(always)]
fn note_writer(ev: &mut BpfCall, d: &mut BpfCallDetail, pid: u32, tid: u32, c: u32) {
    let ts = ev.header.ts_ns;
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
                d.other = *slot;
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

/// The call in `slot` is done: finish it and write its one record.
#[inline(always)]
fn exit(task: u64, slot: &mut CallSlot, ret: i64) -> Option<()> {
    slot.tid = 0;
    let c = slot.rec.call.cmd;
    let t = now();
    {
        let ev = &mut slot.rec.call;
        ev.ret = ret;
        ev.latency_ns = t.saturating_sub(ev.header.ts_ns);
    }
    if cmd::mutates(c) {
        release_writer(slot.rec.call.map.id, c, slot.rec.call.header.tid);
    }
    if ret >= 0 && (cmd::returns_fd(c) || c == cmd::PROG_LOAD) {
        let cfg = BPF_CONFIG.get(0)?;
        let mut prog = ProgMaps::default();
        let ev = &mut slot.rec.call;
        let r = resolve_fd(task, ret as u32, cfg, &mut ev.map, &mut prog, true);
        ev.resolved |= if r == 0 { resolved::EXIT_FD } else { r };
        if r & resolved::FAILED != 0 {
            count(Counter::BpfResolveFailed);
        }
        if r & resolved::PROG != 0 {
            slot.rec.detail.prog = prog;
        }
    }
    if cmd::is_batch(c)
        && slot.rec.call.attr_len as usize >= cmd::BATCH_COUNT_OFFSET + 4
        && let Ok(n) = unsafe {
            bpf_probe_read_user((slot.uattr + cmd::BATCH_COUNT_OFFSET as u64) as *const u32)
        }
    {
        // The kernel writes back how many elements it processed.
        let at = cmd::BATCH_COUNT_OFFSET;
        slot.rec.call.attr[at..at + 4].copy_from_slice(&n.to_ne_bytes());
    }
    if c == cmd::OBJ_PIN || c == cmd::OBJ_GET {
        let Some(mut entry) = EVENTS.reserve::<BpfCallPath>(0) else {
            count(Counter::BpfSyscallDropped);
            return None;
        };
        let out = unsafe { &mut *entry.as_mut_ptr() };
        out.call = slot.rec.call;
        finish_call(task, &mut out.call, EventKind::BpfSyscallPath);
        read_path(&out.call, &mut out.path);
        entry.submit(wakeup_flag());
    } else if slot.rec.call.resolved
        & (resolved::CREDS | resolved::PROG | resolved::CONCURRENT_WRITER)
        != 0
    {
        // Finished in the slot and copied by one helper call
        // (`bpf_ringbuf_output`), not reserve + copy + submit.
        finish_call(task, &mut slot.rec.call, EventKind::BpfSyscallJudged);
        if EVENTS
            .output::<BpfCallJudged>(&slot.rec, wakeup_flag())
            .is_err()
        {
            count(Counter::BpfSyscallDropped);
        }
    } else {
        finish_call(task, &mut slot.rec.call, EventKind::BpfSyscall);
        if EVENTS
            .output::<BpfCall>(&slot.rec.call, wakeup_flag())
            .is_err()
        {
            count(Counter::BpfSyscallDropped);
        }
    }
    Some(())
}

/// What is read straight into the record: the kind, the real uid and the
/// command name (loads through the task's BTF pointer).
#[inline(always)]
fn finish_call(task: u64, c: &mut BpfCall, kind: EventKind) {
    c.header.kind = kind as u32;
    let cred: u64 = kload(task + off!(task_cred));
    c.uid = if cred == 0 {
        u32::MAX
    } else {
        kload(cred + off!(cred_uid))
    };
    c.comm = kload(task + off!(task_comm));
}

#[inline(always)]
fn attr_u64(attr: &[u8; ATTR_BYTES]) -> u64 {
    u64::from_ne_bytes([
        attr[0], attr[1], attr[2], attr[3], attr[4], attr[5], attr[6], attr[7],
    ])
}

#[inline(always)]
fn release_writer(map_id: u32, c: u32, tid: u32) {
    if cmd::mutates(c)
        && map_id != 0
        && let Some(slot) = BPF_WRITERS.get_ptr(&map_id)
        && unsafe { (*slot).tid } == tid
    {
        let _ = BPF_WRITERS.remove(&map_id);
    }
}
