//! Uprobes on the Go runtime's map functions.
//!
//! One program, attached once per probe site; the attach cookie says which
//! operation the site is, which register holds the map, and whether the
//! site is an entry (usually the `jbe` of the stack check, which the kernel
//! emulates cheaply) or a RET instruction. No uretprobes: Go moves stacks
//! and walks return addresses, and a hijacked return address kills it.
//!
//! Overlaps are decided here, because only here is the interleaving seen:
//! - entry mode: an access that enters while the runtime's own writing
//!   marker is set, with the last goroutine that entered a mutation on record
//!   for this map being another goroutine, is an overlap with that writer;
//! - interval mode: RET probes close each access, so every goroutine inside
//!   a map function is known; any two of them, one mutating, overlap.

use auditor_common::{
    Counter, EventKind,
    go_map::{
        ACTIVE_SLOTS, CurrentAccess, GoMapAccess, GoMapOverlap, GoTargetConfig, MAX_STACK, MapArg,
        MapKey, MapOp, MapState, Party, PidLosses, cookie, mode,
    },
};
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::ProbeContext,
};

use crate::shared::{EVENTS, FINDINGS, count, header, now};

/// `BPF_NOEXIST`: insert only if absent.
const BPF_NOEXIST: u64 = 1;

#[map(name = "GO_TARGETS")]
static GO_TARGETS: HashMap<u32, GoTargetConfig> = HashMap::with_max_entries(1024, 0);

/// Userspace sizes this at load time (`--max-maps`).
#[map(name = "GO_MAP_STATE")]
static GO_MAP_STATE: LruHashMap<MapKey, MapState> = LruHashMap::with_max_entries(65536, 0);

/// The map (and operation) each goroutine last entered, keyed by
/// (pid, goid). RET sites no longer have the map in a register, so interval
/// mode's exits find it here; the fatal-error probe finds the map the
/// runtime is complaining about here.
#[map(name = "GO_CURRENT")]
static GO_CURRENT: LruHashMap<MapKey, CurrentAccess> = LruHashMap::with_max_entries(65536, 0);

/// Scratch space: a zeroed `MapState` to insert, and the party being built
/// (both too large for the 512-byte BPF stack).
#[map(name = "GO_SCRATCH_STATE")]
static SCRATCH_STATE: PerCpuArray<MapState> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GO_SCRATCH_PARTY")]
static SCRATCH_PARTY: PerCpuArray<Party> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GO_SCRATCH_FIRST")]
static SCRATCH_FIRST: PerCpuArray<Party> = PerCpuArray::with_max_entries(1, 0);

const EFLAGS_CF: u64 = 1 << 0;
const EFLAGS_ZF: u64 = 1 << 6;
/// An accessor slot older than this is stale (its RET was never reached,
/// e.g. the map function panicked) and no longer counts as inside.
const SLOT_STALE_NS: u64 = 50_000_000;

#[uprobe]
pub fn go_map_probe(ctx: ProbeContext) -> u32 {
    let _ = try_go_map_probe(&ctx);
    0
}

#[inline(always)]
fn try_go_map_probe(ctx: &ProbeContext) -> Option<()> {
    count(Counter::GoProbeHits);
    let c = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let cfg = unsafe { GO_TARGETS.get(&pid) }?;
    let regs = unsafe { &*(ctx.regs as *const pt_regs) };

    if c & cookie::STACKCHECK != 0 && regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0 {
        count(Counter::GoMorestackSkipped);
        return None;
    }
    if c & cookie::FATAL != 0 {
        return on_fatal(ctx, regs, cfg, pid, tid, c);
    }
    let exit = c & cookie::EXIT != 0;
    let op_raw = cookie::op(c);
    let op = MapOp::from_u8(op_raw)?;

    let map = match cookie::map_arg(c) {
        x if x == MapArg::Rbx as u8 => regs.rbx,
        x if x == MapArg::Rax as u8 => regs.rax,
        x if x == MapArg::Rcx as u8 => regs.rcx,
        x if x == MapArg::IterInRax as u8 => {
            let it = regs.rax;
            if it == 0 {
                0
            } else {
                match unsafe { bpf_probe_read_user((it + cfg.iter_map_off as u64) as *const u64) } {
                    Ok(m) => m,
                    Err(_) => {
                        count(Counter::GoReadFailed);
                        return None;
                    }
                }
            }
        }
        _ => 0,
    };
    let goid = match unsafe { bpf_probe_read_user((regs.r14 + cfg.goid_off as u64) as *const u64) }
    {
        Ok(g) => g,
        Err(_) => {
            count(Counter::GoReadFailed);
            return None;
        }
    };
    let inside_key = MapKey {
        pid,
        _pad: 0,
        map: goid,
    };
    if exit && op != MapOp::Make {
        // Interval mode: the goroutine leaves the map it entered.
        let map = unsafe { GO_CURRENT.get(&inside_key) }?.map;
        let _ = GO_CURRENT.remove(&inside_key);
        if let Some(state) = GO_MAP_STATE.get_ptr_mut(&MapKey { pid, _pad: 0, map }) {
            let state = unsafe { &mut *state };
            for i in 0..ACTIVE_SLOTS {
                if state.active[i].goid == goid {
                    state.active[i].goid = 0;
                }
            }
        }
        return Some(());
    }
    if map == 0 {
        // A nil map (reads of nil maps are legal) or no map known yet.
        return None;
    }
    let ts = now();
    let maptype = if cookie::map_arg(c) == MapArg::Rbx as u8 {
        regs.rax
    } else {
        0
    };

    let party = unsafe { &mut *SCRATCH_PARTY.get_ptr_mut(0)? };
    party.ts_ns = ts;
    party.goid = goid;
    party.tid = tid;
    party.probe_id = cookie::probe_id(c);
    party.op = op_raw;
    party.stack_len = 0;
    let emit = cfg.emit_access != 0;
    let interval = cfg.mode == mode::INTERVAL;

    let key = MapKey { pid, _pad: 0, map };

    if exit {
        // Only creation has RET sites left here: a new map lives at this
        // address now, so the old one's state is forgotten.
        let _ = GO_MAP_STATE.remove(&key);
        fill_stack(party, regs, cfg.stack_depth);
        emit_access(pid, tid, ts, map, 0, party, true, 0);
        return Some(());
    }

    // A map on the goroutine's own stack did not escape: the compiler
    // proved no other goroutine can reach it, so it cannot race. Such maps
    // also move when the stack grows or shrinks (even while a map function
    // is parked in a GC assist), and their old addresses are reused by
    // other goroutines: tracking them would only produce false overlaps.
    // `g.stack` (lo, hi) is the first field of `runtime.g` in every version.
    if let Ok(stack) = unsafe { bpf_probe_read_user(regs.r14 as *const [u64; 2]) }
        && map >= stack[0]
        && map < stack[1]
    {
        count(Counter::GoStackLocal);
        if emit {
            fill_stack(party, regs, cfg.stack_depth);
            emit_access(pid, tid, ts, map, maptype, party, false, 0);
        }
        return Some(());
    }

    // Where this goroutine is now: the fatal-error probe looks here for the
    // map the runtime is complaining about, and interval mode's RET probes
    // for the access to close. Per goroutine, not per CPU: the thread can be
    // preempted and moved between our probe and the runtime's own check.
    let cur = CurrentAccess {
        map,
        ts_ns: ts,
        op: op_raw as u32,
        _pad: 0,
    };
    if GO_CURRENT.insert(&inside_key, &cur, 0).is_err() {
        count(Counter::GoStateFull);
    }

    let writing = match unsafe { bpf_probe_read_user((map + cfg.writing_off as u64) as *const u8) }
    {
        Ok(b) => b & (cfg.writing_mask as u8),
        Err(_) => 0,
    };

    // Only writers (and, in interval mode, every accessor) create state: a
    // map nobody writes cannot race, and a read entering while a write is in
    // progress finds the writer's state.
    let state = match GO_MAP_STATE.get_ptr_mut(&key) {
        Some(s) => Some(s),
        None if op.mutates() || interval => {
            let zero = SCRATCH_STATE.get_ptr(0)?;
            if GO_MAP_STATE.insert(&key, unsafe { &*zero }, 0).is_err() {
                count(Counter::GoStateFull);
            }
            GO_MAP_STATE.get_ptr_mut(&key)
        }
        None => None,
    };
    let Some(state) = state else {
        if emit {
            fill_stack(party, regs, cfg.stack_depth);
            emit_access(pid, tid, ts, map, maptype, party, false, writing);
        }
        return Some(());
    };
    let state = unsafe { &mut *state };

    // Stacks cost a dozen user reads: take one only when this party can be
    // reported (an access record, a writer record, an interval slot, or an
    // overlap found right now).
    let mut stack_taken = false;
    if emit || op.mutates() || interval {
        fill_stack(party, regs, cfg.stack_depth);
        stack_taken = true;
    }

    let mut reported = false;
    if interval {
        for i in 0..ACTIVE_SLOTS {
            let other = &state.active[i];
            if other.goid != 0
                && other.goid != goid
                && ts.saturating_sub(other.ts_ns) < SLOT_STALE_NS
                && (op.mutates() || is_mutating(other.op))
                && !reported
                && still_inside(pid, other.goid, map, other.ts_ns)
            {
                emit_overlap(pid, tid, ts, map, other, party, mode::INTERVAL, writing);
                reported = true;
            }
        }
    }
    if !reported && writing != 0 && state.last_writer.goid != 0 && state.last_writer.goid != goid {
        if !stack_taken {
            fill_stack(party, regs, cfg.stack_depth);
        }
        emit_overlap(
            pid,
            tid,
            ts,
            map,
            &state.last_writer,
            party,
            mode::ENTRY,
            writing,
        );
    }

    if op.mutates() {
        if state.last_writer.goid != goid {
            state.prev_writer = state.last_writer;
        }
        state.last_writer = *party;
    }
    if interval {
        let mut placed = false;
        for i in 0..ACTIVE_SLOTS {
            let slot = &mut state.active[i];
            if !placed
                && (slot.goid == 0
                    || slot.goid == goid
                    || ts.saturating_sub(slot.ts_ns) >= SLOT_STALE_NS)
            {
                *slot = *party;
                placed = true;
            }
        }
        if !placed {
            count(Counter::GoSlotsFull);
        }
    }
    if emit {
        emit_access(pid, tid, ts, map, maptype, party, false, writing);
    }
    Some(())
}

/// Prefix of the runtime's concurrent-map fatal errors ("concurrent map
/// writes", "concurrent map read and map write", "concurrent map iteration
/// and map write").
const CONCURRENT_MAP: &[u8; 14] = b"concurrent map";

/// The runtime is about to die of a concurrent map access it saw itself
/// (after our entry probe had run, so entry mode may not have reported it).
/// Name the other side from the per-map state while the process still
/// exists.
#[inline(always)]
fn on_fatal(
    _ctx: &ProbeContext,
    regs: &pt_regs,
    cfg: &GoTargetConfig,
    pid: u32,
    tid: u32,
    c: u64,
) -> Option<()> {
    // fatal(s string): RAX = data, RBX = length.
    if regs.rbx < CONCURRENT_MAP.len() as u64 {
        return None;
    }
    let msg: [u8; 14] = unsafe { bpf_probe_read_user(regs.rax as *const [u8; 14]) }.ok()?;
    let mut i = 0;
    while i < 14 {
        if msg[i] != CONCURRENT_MAP[i] {
            return None;
        }
        i += 1;
    }
    let goid =
        unsafe { bpf_probe_read_user((regs.r14 + cfg.goid_off as u64) as *const u64) }.ok()?;
    let rec = unsafe {
        GO_CURRENT.get(&MapKey {
            pid,
            _pad: 0,
            map: goid,
        })
    }
    .copied()?;
    let (map, op) = (rec.map, rec.op);
    let state = unsafe { &*GO_MAP_STATE.get_ptr(&MapKey { pid, _pad: 0, map })? };
    // The other goroutine may be updating these records right now: copy
    // one out, then check the copy.
    let first = unsafe { &mut *SCRATCH_FIRST.get_ptr_mut(0)? };
    *first = state.last_writer;
    if first.goid == 0 || first.goid == goid {
        *first = state.prev_writer;
        if first.goid == 0 || first.goid == goid {
            return None;
        }
    }
    let ts = now();
    let party = unsafe { &mut *SCRATCH_PARTY.get_ptr_mut(0)? };
    party.ts_ns = ts;
    party.goid = goid;
    party.tid = tid;
    party.probe_id = cookie::probe_id(c);
    party.op = op as u8;
    fill_stack(party, regs, cfg.stack_depth);
    emit_overlap(pid, tid, ts, map, first, party, mode::RUNTIME_FATAL, 1);
    Some(())
}

/// A slot is only trusted while its goroutine's current-access record is
/// still the very entry that filled the slot (same map, same entry time):
/// the goroutine may have left through a path without a probed RET, or
/// entered another map since, or the map may have moved (maps on a
/// goroutine stack move when the stack grows, and the old address is
/// reused).
#[inline(always)]
fn still_inside(pid: u32, goid: u64, map: u64, entered: u64) -> bool {
    match unsafe {
        GO_CURRENT.get(&MapKey {
            pid,
            _pad: 0,
            map: goid,
        })
    } {
        Some(v) => v.map == map && v.ts_ns == entered,
        None => false,
    }
}

/// Per-process loss counters: only touched when a record is lost, so the
/// hot path pays nothing for them.
#[map(name = "GO_PID_LOSSES")]
static GO_PID_LOSSES: LruHashMap<u32, PidLosses> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn count_pid_loss(pid: u32, overlap: bool) {
    if GO_PID_LOSSES.get_ptr_mut(&pid).is_none() {
        let _ = GO_PID_LOSSES.insert(&pid, &PidLosses::default(), BPF_NOEXIST);
    }
    if let Some(p) = GO_PID_LOSSES.get_ptr_mut(&pid) {
        let field = if overlap {
            unsafe { &raw mut (*p).overlap_dropped }
        } else {
            unsafe { &raw mut (*p).access_dropped }
        };
        // Not atomic (the BPF target's core has no 64-bit fetch-add): two
        // CPUs losing records of one process in the same instant can
        // undercount here; the global per-CPU counters stay exact.
        unsafe { *field += 1 };
    }
}

#[inline(always)]
fn is_mutating(op: u8) -> bool {
    MapOp::from_u8(op).is_some_and(MapOp::mutates)
}

/// Walk Go's frame-pointer chain. At an entry site the function has not
/// pushed its frame yet, so `[rsp]` is the return address into the caller
/// and `rbp` is the caller's frame; at a RET site the same holds.
#[inline(always)]
fn fill_stack(party: &mut Party, regs: &pt_regs, depth: u32) {
    party.stack_len = 0;
    if depth == 0 {
        return;
    }
    let Ok(ret) = (unsafe { bpf_probe_read_user(regs.rsp as *const u64) }) else {
        return;
    };
    party.stack[0] = ret;
    let mut n: usize = 1;
    let mut fp = regs.rbp;
    for _ in 1..MAX_STACK {
        if n >= depth as usize || n >= MAX_STACK || fp == 0 {
            break;
        }
        // One read per frame: the saved frame pointer and the return
        // address sit next to each other.
        let Ok([next, ret]) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            break;
        };
        if ret == 0 {
            break;
        }
        party.stack[n] = ret;
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    if n >= depth as usize && fp != 0 {
        count(Counter::StackTruncated);
    }
    party.stack_len = n as u8;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_access(
    pid: u32,
    tid: u32,
    ts: u64,
    map: u64,
    maptype: u64,
    party: &Party,
    exit: bool,
    writing: u8,
) {
    match EVENTS.reserve::<GoMapAccess>(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            ev.header = header(EventKind::GoMapAccess, pid, tid, ts);
            ev.map = map;
            ev.maptype = maptype;
            ev.party = *party;
            ev.exit = exit as u8;
            ev.writing_seen = writing;
            ev._pad = [0; 6];
            entry.submit(0);
        }
        None => {
            count(Counter::GoAccessDropped);
            count_pid_loss(pid, false);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_overlap(
    pid: u32,
    tid: u32,
    ts: u64,
    map: u64,
    first: &Party,
    second: &Party,
    m: u32,
    writing: u8,
) {
    count(Counter::GoOverlaps);
    match FINDINGS.reserve::<GoMapOverlap>(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            ev.header = header(EventKind::GoMapOverlap, pid, tid, ts);
            ev.map = map;
            ev.first = *first;
            ev.second = *second;
            ev.mode = m;
            ev.writing_seen = writing as u32;
            entry.submit(0);
        }
        None => {
            count(Counter::GoOverlapDropped);
            count_pid_loss(pid, true);
        }
    }
}
