//! Uprobes on the Go runtime's map functions.
//!
//! One program, attached once per probe site; the attach cookie says which
//! operation the site is, which register holds the map, and whether the
//! site is an entry (usually the `jbe` of the stack check, which the kernel
//! emulates cheaply), a RET instruction, or the return address of a call
//! site in the program's own code. No uretprobes: Go moves stacks and walks
//! return addresses, and a hijacked return address kills it.
//!
//! The hot path is built for services that make and drop maps all the time:
//! a map touched by one goroutine only costs an owner slot in an array
//! ([`GO_OWNERS`]); per-map state ([`GO_MAP_STATE`]) and stack walks exist
//! only for maps a second goroutine touched, and only parties that can be
//! reported have their stack walked.
//!
//! Overlaps are decided here, because only here is the interleaving seen,
//! and every one is a proof that two goroutines were inside one map at once:
//! - at an entry: the runtime's own writing marker is set, and the last
//!   goroutine that entered a mutation of this map is another one;
//! - at an exit (a RET in interval mode, an escalated call site's return
//!   address in the default mode): a goroutine on another goroutine entered
//!   a mutation (or, for an exiting writer in interval mode, any access)
//!   after this access entered and before it returned.

use auditor_common::{
    Counter, EventKind,
    go_map::{
        CURRENT_SLOTS, CurrentAccess, GoEscalate, GoMapAccess, GoMapOverlap, GoTargetConfig,
        MAP_GLOBALS, MAX_STACK, MapArg, MapKey, MapOp, MapOwner, MapState, NESTED_RETS,
        NO_MAP_GLOBAL, OWNER_SLOTS, PAIR_REPORT_INTERVAL_NS, PairKey, PairSeen, Party, PidLosses,
        SiteKey, TARGET_SLOTS, cookie, current_slot, emit, mode, owner_slot, sharing,
    },
};
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::ProbeContext,
};

use crate::shared::{EVENTS, FINDINGS, count, header, now};

/// `BPF_NOEXIST`: insert only if absent.
const BPF_NOEXIST: u64 = 1;

/// Per-target configuration, indexed by the slot in each probe's cookie.
#[map(name = "GO_TARGETS")]
static GO_TARGETS: Array<GoTargetConfig> = Array::with_max_entries(TARGET_SLOTS, 0);

/// Per-map state of shared maps. Userspace sizes this at load time
/// (`--max-maps`).
#[map(name = "GO_MAP_STATE")]
static GO_MAP_STATE: LruHashMap<MapKey, MapState> = LruHashMap::with_max_entries(65536, 0);

/// Which goroutine has had each map to itself so far (see [`MapOwner`]).
#[map(name = "GO_OWNERS")]
static GO_OWNERS: Array<MapOwner> = Array::with_max_entries(OWNER_SLOTS, 0);

/// The access each goroutine entered last, in the slot its (pid, `g`
/// address) hashes to (see [`CurrentAccess`] for why a collision cannot
/// create a finding). Exits find the access they close here; the
/// fatal-error probe finds the map the runtime is complaining about here.
#[map(name = "GO_CURRENT")]
static GO_CURRENT: Array<CurrentAccess> = Array::with_max_entries(CURRENT_SLOTS, 0);

/// Call sites already handed to userspace for an exit probe.
#[map(name = "GO_ESCALATED")]
static GO_ESCALATED: LruHashMap<SiteKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// Rate limit of identical overlaps.
#[map(name = "GO_PAIRS")]
static GO_PAIRS: LruHashMap<PairKey, PairSeen> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space: a zeroed `MapState` to insert, and the parties being
/// built or copied (too large for the 512-byte BPF stack).
#[map(name = "GO_SCRATCH_STATE")]
static SCRATCH_STATE: PerCpuArray<MapState> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GO_SCRATCH_PARTY")]
static SCRATCH_PARTY: PerCpuArray<Party> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GO_SCRATCH_FIRST")]
static SCRATCH_FIRST: PerCpuArray<Party> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GO_SCRATCH_G")]
static SCRATCH_G: PerCpuArray<[u64; G_WORDS]> = PerCpuArray::with_max_entries(1, 0);

const EFLAGS_CF: u64 = 1 << 0;
const EFLAGS_ZF: u64 = 1 << 6;

/// Words of `runtime.g` read in one go: the stack bounds (offset 0) and
/// `goid` (152 or 160, see the offset table). A power of two, so an index
/// masked with `G_WORDS - 1` is in bounds for the verifier.
const G_WORDS: usize = 32;
/// Bytes of the map header read in one go: the writing marker (classic
/// `flags` at 8, Swiss `writing` at 34) and the seed (classic `hash0` at
/// 12, Swiss `seed` at 8). A power of two, for the same reason.
const HEADER_BYTES: usize = 64;

#[uprobe]
pub fn go_map_probe(ctx: ProbeContext) -> u32 {
    let _ = try_go_map_probe(&ctx);
    0
}

/// Who is hitting the probe, and where.
struct Hit<'a> {
    regs: &'a pt_regs,
    cfg: &'a GoTargetConfig,
    cookie: u64,
    pid: u32,
    tid: u32,
}

/// What the running goroutine's `g` says.
struct Goroutine {
    /// Address of `g` (stable while the goroutine lives; recycled after).
    g: u64,
    goid: u64,
    stack_lo: u64,
    stack_hi: u64,
}

#[inline(always)]
fn try_go_map_probe(ctx: &ProbeContext) -> Option<()> {
    count(Counter::GoProbeHits);
    let c = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let cfg = GO_TARGETS.get(cookie::target_slot(c))?;
    // A slot freed and reused while a detached link still fires.
    if cfg.pid != pid {
        return None;
    }
    let hit = Hit {
        regs: unsafe { &*(ctx.regs as *const pt_regs) },
        cfg,
        cookie: c,
        pid,
        tid: pid_tgid as u32,
    };
    if try_morestack_skip(&hit) {
        return None;
    }
    if c & cookie::G_CHANGE != 0 {
        // Before the sampling check: a closed window must not leave a
        // recycled `g` or a moved stack cached.
        forget_goroutine(&hit);
        return None;
    }
    if c & cookie::FATAL != 0 {
        return try_fatal(&hit);
    }
    if cfg.paused != 0 {
        // A closed sampling window (`--max-overhead`).
        count(Counter::GoProbesPaused);
        return None;
    }
    if c & cookie::EXIT != 0 {
        count(Counter::GoExitHits);
        if MapOp::from_u8(cookie::op(c)) == Some(MapOp::Make) {
            return try_make_exit(&hit);
        }
        return try_exit(&hit);
    }
    try_entry(&hit)
}

/// A hit on a stack-check `jbe` whose branch will be taken (CF|ZF): the
/// function is about to grow its stack and will run again from the top.
#[inline(always)]
fn try_morestack_skip(hit: &Hit) -> bool {
    if hit.cookie & cookie::STACKCHECK != 0 && hit.regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0 {
        count(Counter::GoMorestackSkipped);
        return true;
    }
    false
}

/// This hit's stack: the return address, then the frame-pointer chain.
#[inline(always)]
fn fill_stack_at(party: &mut Party, hit: &Hit) {
    if hit.cookie & cookie::CALL_INSN != 0 {
        fill_stack_from(party, hit.regs.rip + 5, hit.regs.rbp, hit.cfg.stack_depth);
    } else {
        fill_stack(party, hit.regs, hit.cfg.stack_depth);
    }
}

/// The goroutine `g` (RAX at `goexit0`/`copystack`) exits or moves its
/// stack: its cached fields are stale from now on.
#[inline(always)]
fn forget_goroutine(hit: &Hit) {
    let g = hit.regs.rax;
    count(Counter::GoGoroutineChanges);
    if let Some(e) = GO_CURRENT.get_ptr_mut(current_slot(hit.pid, g)) {
        let e = unsafe { &mut *e };
        if e.g == g && e.pid == hit.pid {
            e.g_check = 0;
        }
    }
}

/// Stack bounds and goroutine id of the running goroutine (`g` in R14):
/// cached in its slot of [`GO_CURRENT`] when the goroutine-change probes
/// keep that true (see [`CurrentAccess::stack_lo`]), else
/// from one read of 256 bytes of `g`, not two small ones: a user read
/// costs ~150 ns here whatever its size (8 to 160 bytes measured alike),
/// so reads are counted, not bytes.
#[inline(always)]
fn try_goroutine(hit: &Hit) -> Option<Goroutine> {
    let g = hit.regs.r14;
    let generation = hit.cfg.gcache;
    if generation != 0
        && let Some(e) = GO_CURRENT.get(current_slot(hit.pid, g))
    {
        let e = *e;
        if e.caches(hit.pid, g, generation) {
            return Some(Goroutine {
                g,
                goid: e.goid,
                stack_lo: e.stack_lo,
                stack_hi: e.stack_hi,
            });
        }
    }
    let words = unsafe { &mut *SCRATCH_G.get_ptr_mut(0)? };
    let read = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            words.as_mut_ptr().cast(),
            (G_WORDS * 8) as u32,
            g as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        count(Counter::GoReadFailed);
        return None;
    }
    let i = (hit.cfg.goid_off / 8) as usize & (G_WORDS - 1);
    let gr = Goroutine {
        g,
        goid: words[i],
        // `g.stack` (lo, hi) is the first field of `runtime.g` in every
        // version.
        stack_lo: words[0],
        stack_hi: words[1],
    };
    if generation != 0 {
        remember_goroutine(hit.pid, &gr, generation);
    }
    Some(gr)
}

/// Cache what `g` said in the goroutine's slot. The slot's access record
/// is another goroutine's, or stale, once its `g`, `goid` or `pid` change:
/// its own check fails then.
#[inline(always)]
fn remember_goroutine(pid: u32, gr: &Goroutine, generation: u64) {
    let Some(e) = GO_CURRENT.get_ptr_mut(current_slot(pid, gr.g)) else {
        return;
    };
    let e = unsafe { &mut *e };
    e.g = gr.g;
    e.goid = gr.goid;
    e.stack_lo = gr.stack_lo;
    e.stack_hi = gr.stack_hi;
    e.pid = pid;
    e.g_check = e.g_checksum() ^ generation;
}

/// The map pointer of an entry site (0: a nil map).
#[inline(always)]
fn try_map_arg(hit: &Hit) -> Option<u64> {
    let regs = hit.regs;
    Some(match cookie::map_arg(hit.cookie) {
        x if x == MapArg::Rbx as u8 => regs.rbx,
        x if x == MapArg::Rax as u8 => regs.rax,
        x if x == MapArg::Rcx as u8 => regs.rcx,
        x if x == MapArg::IterInRax as u8 => {
            let it = regs.rax;
            if it == 0 {
                return Some(0);
            }
            match unsafe { bpf_probe_read_user((it + hit.cfg.iter_map_off as u64) as *const u64) } {
                Ok(m) => m,
                Err(_) => {
                    count(Counter::GoReadFailed);
                    return None;
                }
            }
        }
        _ => 0,
    })
}

/// The runtime's writing marker and the hash seed, from one read of the
/// map header.
#[inline(always)]
fn try_map_header(hit: &Hit, map: u64) -> (u8, u32) {
    let Ok(h) = (unsafe { bpf_probe_read_user(map as *const [u8; HEADER_BYTES]) }) else {
        return (0, 0);
    };
    // Userspace checks both offsets fit; the masks are for the verifier.
    let writing =
        h[hit.cfg.writing_off as usize & (HEADER_BYTES - 1)] & (hit.cfg.writing_mask as u8);
    let s = hit.cfg.seed_off as usize & (HEADER_BYTES / 2 - 1);
    let seed = u32::from_le_bytes([h[s], h[s + 1], h[s + 2], h[s + 3]]);
    (writing, seed)
}

#[inline(always)]
fn try_entry(hit: &Hit) -> Option<()> {
    let op_raw = cookie::op(hit.cookie);
    let op = MapOp::from_u8(op_raw)?;
    let Some(map) = try_map_arg(hit) else {
        forget_current(hit);
        return None;
    };
    let Some(gr) = try_goroutine(hit) else {
        forget_current(hit);
        return None;
    };
    let ts = now();
    let emit = hit.cfg.emit_access == emit::RECORDS;
    let maptype = if cookie::map_arg(hit.cookie) == MapArg::Rbx as u8 {
        hit.regs.rax
    } else {
        0
    };
    // The return address into the caller (the call site) costs a user
    // read: it is taken only where it is used.
    let mut ret = CallerReturn::new(hit);
    if hit.cookie & cookie::NESTED != 0 && is_nested_call(hit.cfg, ret.get(hit)) {
        // The calling map function's entry already stands for this access.
        return None;
    }
    // Recorded for every access, even of a nil or stack-local map: an
    // escalated exit at this call site must never close an older access.
    if op.mutates() {
        // Named as the map's writer if another goroutine shows up.
        ret.get(hit);
    }
    try_record_current(hit, &gr, map, ts, ret.known(), op);
    if map == 0 {
        // A nil map (reads of nil maps are legal).
        return None;
    }
    if hit.cfg.emit_access == emit::COUNTS {
        let id = cookie::probe_id(hit.cookie);
        let site = ret.get(hit);
        crate::go_agg::count_access(
            hit.pid, hit.tid, gr.goid, map, site, op_raw, id, maptype, ts,
        );
    }

    // A map on the goroutine's own stack did not escape: the compiler
    // proved no other goroutine can reach it, so it cannot race. Such maps
    // also move when the stack grows or shrinks (even while a map function
    // is parked in a GC assist), and their old addresses are reused by
    // other goroutines: tracking them would only produce false overlaps.
    if map >= gr.stack_lo && map < gr.stack_hi {
        count(Counter::GoStackLocal);
        if emit {
            let party = try_party(hit, &gr, ts, op_raw)?;
            fill_stack_with(party, hit, ret.get(hit));
            emit_access(hit.pid, hit.tid, ts, map, maptype, party, false, 0);
        }
        return Some(());
    }

    if !emit && !op.mutates() && try_quiet_read(hit, &gr, map, ts, op) {
        // A read of a map only this goroutine has touched, or of a shared
        // map no other goroutine has written since: the map header
        // (writing marker, seed) is not even read.
        return Some(());
    }

    if !emit && op == MapOp::Write && try_owned_write(hit, &gr, map, ts, ret.known()) {
        return Some(());
    }

    let (writing, seed) = try_map_header(hit, map);

    let (state, owner) = match try_shared_state(hit, &gr, map, seed, writing, ts, ret.known(), op) {
        Sharing::Shared { state, owner } => (state, owner),
        // Only this goroutine has touched the map, or a read of a shared
        // map nobody else writes: nothing can race, nothing to escalate.
        Sharing::Owned | Sharing::QuietRead => {
            if emit {
                let party = try_party(hit, &gr, ts, op_raw)?;
                fill_stack_with(party, hit, ret.get(hit));
                emit_access(hit.pid, hit.tid, ts, map, maptype, party, false, writing);
            }
            return Some(());
        }
    };
    let state = unsafe { &mut *state };
    let interval = hit.cfg.mode == mode::INTERVAL;

    let party = try_party(hit, &gr, ts, op_raw)?;
    // Stacks cost a dozen user reads: take one only when this party can be
    // reported (an access record, the map's last writer or, in interval
    // mode, last reader, or an overlap found right now).
    let mut stack_taken = false;
    if emit || op.mutates() || interval {
        fill_stack_with(party, hit, ret.get(hit));
        stack_taken = true;
    }

    if writing != 0 {
        if !stack_taken {
            fill_stack_with(party, hit, ret.get(hit));
        }
        try_marker_overlap(hit, state, party, map, ts);
    }

    if op.mutates() {
        if state.last_writer.goid != gr.goid {
            state.prev_writer = state.last_writer;
        }
        state.last_writer = *party;
        unsafe {
            (*owner).writer_goid = gr.goid;
            (*owner).ts_ns = ts;
        }
        if op == MapOp::Clear {
            // A clear draws a new seed: the state stays with the map.
            state.seed = 0;
        }
    } else {
        if interval {
            state.last_reader = *party;
        }
        if hit.cfg.escalate != 0 {
            try_escalate(
                hit,
                state,
                unsafe { &mut *owner },
                &gr,
                map,
                &mut ret,
                op_raw,
            );
        }
    }
    if emit {
        emit_access(hit.pid, hit.tid, ts, map, maptype, party, false, writing);
    }
    Some(())
}

/// The party being built for this hit, in per-CPU scratch space.
#[inline(always)]
fn try_party(hit: &Hit, gr: &Goroutine, ts: u64, op: u8) -> Option<&'static mut Party> {
    let party = unsafe { &mut *SCRATCH_PARTY.get_ptr_mut(0)? };
    party.ts_ns = ts;
    party.goid = gr.goid;
    party.tid = hit.tid;
    party.probe_id = cookie::probe_id(hit.cookie);
    party.op = op;
    party.stack_len = 0;
    Some(party)
}

/// Where this goroutine is now: its slot of [`GO_CURRENT`], overwritten
/// in place. Per goroutine, not per CPU: the thread can be preempted and
/// moved between our probe and the runtime's check.
#[inline(always)]
fn try_record_current(hit: &Hit, gr: &Goroutine, map: u64, ts: u64, ret: u64, op: MapOp) {
    let Some(cur) = GO_CURRENT.get_ptr_mut(current_slot(hit.pid, gr.g)) else {
        return;
    };
    let cur = unsafe { &mut *cur };
    // The last iteration this goroutine started, if the slot is still its
    // own (a colliding goroutine took it meanwhile: the name is lost).
    let iter_map = if op == MapOp::Iterate {
        map
    } else if cur.is_of(hit.pid, gr.g, gr.goid, hit.cfg.salt) {
        cur.iter_map
    } else {
        0
    };
    cur.goid = gr.goid;
    cur.g = gr.g;
    cur.map = map;
    cur.ts_ns = ts;
    cur.ret_slot = ret_slot(hit);
    cur.ret = ret;
    cur.iter_map = iter_map;
    cur.pid = hit.pid;
    cur.probe_id = cookie::probe_id(hit.cookie);
    cur.op = op as u8;
    cur._pad = 0;
    cur.check = cur.checksum() ^ hit.cfg.salt;
}

/// An entry that could not be recorded (its goroutine or map unreadable):
/// the goroutine's slot is invalidated, so no exit closes an older access
/// in its place.
#[inline(always)]
fn forget_current(hit: &Hit) {
    if let Some(cur) = GO_CURRENT.get_ptr_mut(current_slot(hit.pid, hit.regs.r14)) {
        unsafe { (*cur).check = 0 };
    }
}

/// Where the map function's return address is (or, at a probed `call`
/// instruction, is about to be) on the stack.
#[inline(always)]
fn ret_slot(hit: &Hit) -> u64 {
    if hit.cookie & cookie::CALL_INSN != 0 {
        hit.regs.rsp.wrapping_sub(8)
    } else {
        hit.regs.rsp
    }
}

/// The return address into the caller, read from the stack at most once
/// and only when something needs it (at a probed `call` it is free).
struct CallerReturn(Option<u64>);

impl CallerReturn {
    #[inline(always)]
    fn new(hit: &Hit) -> Self {
        if hit.cookie & cookie::CALL_INSN != 0 {
            Self(Some(hit.regs.rip + 5))
        } else {
            Self(None)
        }
    }

    #[inline(always)]
    fn get(&mut self, hit: &Hit) -> u64 {
        match self.0 {
            Some(r) => r,
            None => {
                let r = unsafe { bpf_probe_read_user(hit.regs.rsp as *const u64) }.unwrap_or(0);
                self.0 = Some(r);
                r
            }
        }
    }

    /// The address if it was read already, else 0.
    #[inline(always)]
    fn known(&self) -> u64 {
        self.0.unwrap_or(0)
    }
}

/// A read that needs nothing but its owner slot:
/// - of a map only this goroutine has touched: the slot is brought up to
///   date;
/// - in entry mode, of a shared map whose last writer since it became
///   shared is nobody or this goroutine. Its writing marker is not read:
///   set, it would be an unprobed writer's (a probed one makes itself the
///   last writer before it sets the marker), which no report could name;
///   the runtime's own check and the fatal-error probe see that case.
#[inline(always)]
fn try_quiet_read(hit: &Hit, gr: &Goroutine, map: u64, ts: u64, op: MapOp) -> bool {
    let Some(o) = GO_OWNERS.get_ptr_mut(owner_slot(hit.pid, map)) else {
        return false;
    };
    let o = unsafe { &mut *o };
    if o.map != map || o.pid != hit.pid {
        return false;
    }
    if o.shared == sharing::SHARED {
        return hit.cfg.mode != mode::INTERVAL && writer_is_quiet(o, gr.goid, ts);
    }
    if o.goid != gr.goid {
        return false;
    }
    o.ts_ns = ts;
    o.ret = 0;
    o.ret2 = 0;
    o.tid = hit.tid;
    o.probe_id = cookie::probe_id(hit.cookie);
    o.op = op as u8;
    true
}

/// A write (not a delete or clear, which may draw a new seed) to a map only
/// this goroutine has touched: the owner slot is brought up to date with
/// the seed it holds, and the map header is not read. A new map the same
/// goroutine made at a freed one's address keeps the old seed here; the
/// next goroutine to touch it reads the real one and takes the map over
/// as new, and the first of them to come back shares it.
#[inline(always)]
fn try_owned_write(hit: &Hit, gr: &Goroutine, map: u64, ts: u64, ret: u64) -> bool {
    let Some(o) = GO_OWNERS.get_ptr_mut(owner_slot(hit.pid, map)) else {
        return false;
    };
    let o = unsafe { &mut *o };
    if o.map != map || o.pid != hit.pid || o.shared == sharing::SHARED || o.goid != gr.goid {
        return false;
    }
    let seed = o.seed;
    set_owner(o, hit, gr, map, seed, ts, ret, MapOp::Write);
    true
}

/// This hit's stack, given its return address into the caller.
#[inline(always)]
fn fill_stack_with(party: &mut Party, hit: &Hit, ret: u64) {
    fill_stack_from(party, ret, hit.regs.rbp, hit.cfg.stack_depth);
}

/// This goroutine's current-access record, copied out of its slot: `None`
/// when the slot holds another goroutine's record or a torn one.
#[inline(always)]
fn current_of(hit: &Hit, gr: &Goroutine) -> Option<(*mut CurrentAccess, CurrentAccess)> {
    let (pid, salt) = (hit.pid, hit.cfg.salt);
    let slot = GO_CURRENT.get_ptr_mut(current_slot(pid, gr.g))?;
    let rec = unsafe { *slot };
    if !rec.is_of(pid, gr.g, gr.goid, salt) {
        return None;
    }
    Some((slot, rec))
}

/// Whether `ret` is one of the sorted `nested_rets` (a bounded binary
/// search: 2^6 > [`NESTED_RETS`]).
#[inline(always)]
fn is_nested_call(cfg: &GoTargetConfig, ret: u64) -> bool {
    let mut lo = 0usize;
    let mut hi = cfg.nested_len as usize;
    if hi > NESTED_RETS {
        hi = NESTED_RETS;
    }
    for _ in 0..6 {
        if lo >= hi {
            return false;
        }
        let mid = (lo + hi) / 2;
        if mid >= NESTED_RETS {
            return false;
        }
        let r = cfg.nested_rets[mid];
        if r == ret {
            return true;
        }
        if r < ret {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    false
}

/// How long after a probed writer entered a shared map its write is taken
/// to be over for readers (see [`writer_is_quiet`]).
const QUIET_WRITER_NS: u64 = 100_000_000;

/// Whether a read of a shared map can skip its writing marker and per-map
/// state: since the map became shared nobody else entered a mutation, or
/// the last one who did entered it more than [`QUIET_WRITER_NS`] ago (a
/// map written at start-up and read ever after). A write still inside
/// after that long sets a marker only the runtime's own check and the
/// fatal-error probe see; every write makes its writer recent again, so a
/// site reading a map that is still written is escalated as before.
#[inline(always)]
fn writer_is_quiet(o: &MapOwner, goid: u64, ts: u64) -> bool {
    o.writer_goid == 0 || o.writer_goid == goid || ts.saturating_sub(o.ts_ns) > QUIET_WRITER_NS
}

/// What an access needs of a map's sharing.
enum Sharing {
    /// Only this goroutine has touched the map.
    Owned,
    /// A read (entry mode, marker clear) of a shared map whose last writer
    /// is nobody or this goroutine, or from a call site already escalated
    /// for this map: nothing to decide, nothing to escalate, so the per-map
    /// state is not even looked up.
    QuietRead,
    /// A shared map: its state, and its owner slot (held by this map).
    Shared {
        state: *mut MapState,
        owner: *mut MapOwner,
    },
}

/// How shared a map is, creating its per-map state when this is the second
/// goroutine to touch it. The second goroutine hands the state the owner's
/// last access, so a writer that entered before the map became shared can
/// still be named (by its call site).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn try_shared_state(
    hit: &Hit,
    gr: &Goroutine,
    map: u64,
    seed: u32,
    writing: u8,
    ts: u64,
    ret: u64,
    op: MapOp,
) -> Sharing {
    let key = MapKey {
        pid: hit.pid,
        _pad: 0,
        map,
    };
    let Some(o) = GO_OWNERS.get_ptr_mut(owner_slot(hit.pid, map)) else {
        return Sharing::Owned;
    };
    let o = unsafe { &mut *o };
    let same_map = o.map == map && o.pid == hit.pid && (o.seed == seed || o.seed == 0);
    if same_map && o.shared == sharing::SHARED {
        o.seed = seed;
        if !op.mutates()
            && writing == 0
            && hit.cfg.mode != mode::INTERVAL
            && (writer_is_quiet(o, gr.goid, ts) || (ret != 0 && o.escalated_ret == ret))
        {
            return Sharing::QuietRead;
        }
        return shared(try_state(&key, seed), o);
    }
    if same_map && o.goid == gr.goid {
        set_owner(o, hit, gr, map, seed, ts, ret, op);
        return Sharing::Owned;
    }
    if !same_map {
        // A new map at this address, or another map's slot. Only if a
        // shared map held the slot before can this map be one whose slot
        // was taken meanwhile: shared state kept for this address means
        // the map is shared. Other slots skip the lookup.
        if o.shared != sharing::NEVER && GO_MAP_STATE.get_ptr(&key).is_some() {
            o.map = map;
            o.pid = hit.pid;
            o.seed = seed;
            o.shared = sharing::SHARED;
            o.escalated_ret = 0;
            let state = try_state(&key, seed);
            (o.writer_goid, o.ts_ns) = match state {
                Some(st) => unsafe { ((*st).last_writer.goid, (*st).last_writer.ts_ns) },
                None => (0, 0),
            };
            return shared(state, o);
        }
        set_owner(o, hit, gr, map, seed, ts, ret, op);
        if o.shared != sharing::NEVER {
            o.shared = sharing::HELD_SHARED;
        }
        return Sharing::Owned;
    }
    // A second goroutine: the map is shared from now on.
    let owner = *o;
    o.shared = sharing::SHARED;
    o.seed = seed;
    o.escalated_ret = 0;
    o.writer_goid = if is_mutating(owner.op) { owner.goid } else { 0 };
    count(Counter::GoSharedMaps);
    let Some(zero) = SCRATCH_STATE.get_ptr(0) else {
        return Sharing::Owned;
    };
    if GO_MAP_STATE.insert(&key, unsafe { &*zero }, 0).is_err() {
        count(Counter::GoStateFull);
    }
    let Some(state) = GO_MAP_STATE.get_ptr_mut(&key) else {
        return Sharing::Owned;
    };
    let st = unsafe { &mut *state };
    st.seed = seed;
    if is_mutating(owner.op) {
        let w = &mut st.last_writer;
        w.ts_ns = owner.ts_ns;
        w.goid = owner.goid;
        w.tid = owner.tid;
        w.probe_id = owner.probe_id;
        w.op = owner.op;
        w.stack[0] = owner.ret;
        w.stack[1] = owner.ret2;
        w.stack_len = if owner.ret == 0 {
            0
        } else if owner.ret2 == 0 {
            1
        } else {
            2
        };
    }
    Sharing::Shared { state, owner: o }
}

#[inline(always)]
fn shared(state: Option<*mut MapState>, owner: &mut MapOwner) -> Sharing {
    match state {
        Some(state) => Sharing::Shared { state, owner },
        None => Sharing::Owned,
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn set_owner(
    o: &mut MapOwner,
    hit: &Hit,
    gr: &Goroutine,
    map: u64,
    seed: u32,
    ts: u64,
    ret: u64,
    op: MapOp,
) {
    // The same goroutine writing again from the same call site: the
    // site's caller read at its last write stands (one user read fewer on
    // the most common write, a goroutine filling its own map).
    let keep_ret2 = op.mutates()
        && ret != 0
        && o.ret == ret
        && o.ret2 != 0
        && o.goid == gr.goid
        && o.map == map
        && o.pid == hit.pid;
    o.map = map;
    o.pid = hit.pid;
    o.seed = seed;
    o.goid = gr.goid;
    o.ts_ns = ts;
    o.ret = ret;
    o.tid = hit.tid;
    o.probe_id = cookie::probe_id(hit.cookie);
    o.op = op as u8;
    o.writer_goid = 0;
    o.escalated_ret = 0;
    // A writer may be handed over as the map's last writer when a second
    // goroutine shows up: one more read names its caller too.
    if keep_ret2 {
        return;
    }
    o.ret2 = 0;
    if op.mutates()
        && let Ok([_, ret2]) = unsafe { bpf_probe_read_user(hit.regs.rbp as *const [u64; 2]) }
    {
        o.ret2 = ret2;
    }
}

/// The state of a map known to be shared (created again when the LRU
/// evicted it); a state left by a freed map at the same address is reset.
#[inline(always)]
fn try_state(key: &MapKey, seed: u32) -> Option<*mut MapState> {
    let state = match GO_MAP_STATE.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            let zero = SCRATCH_STATE.get_ptr(0)?;
            if GO_MAP_STATE.insert(key, unsafe { &*zero }, 0).is_err() {
                count(Counter::GoStateFull);
            }
            GO_MAP_STATE.get_ptr_mut(key)?
        }
    };
    let s = unsafe { &mut *state };
    if s.seed != seed && s.seed != 0 {
        // Records are only trusted with a goroutine id.
        s.last_writer.goid = 0;
        s.prev_writer.goid = 0;
        s.last_reader.goid = 0;
    }
    s.seed = seed;
    Some(state)
}

/// The writing marker is set at this entry: the map's last writer, if it
/// is another goroutine, is inside the map right now with us.
#[inline(always)]
fn try_marker_overlap(
    hit: &Hit,
    state: &MapState,
    party: &mut Party,
    map: u64,
    ts: u64,
) -> Option<()> {
    // The writer may be updating its record on another CPU right now: copy
    // it out, then check the copy.
    let first = unsafe { &mut *SCRATCH_FIRST.get_ptr_mut(0)? };
    *first = state.last_writer;
    if first.goid == 0 || first.goid == party.goid {
        return None;
    }
    if first.ts_ns <= ts {
        report_pair(hit, ts, map, first, party, mode::ENTRY, 1);
    } else {
        // The writer entered after our probe took its time: we were first.
        report_pair(hit, ts, map, party, first, mode::ENTRY, 1);
    }
    Some(())
}

/// A read of a map another goroutine writes: ask userspace, once per call
/// site, to probe the site's return address, so the read's exit can tell
/// whether a writer entered meanwhile.
#[inline(always)]
fn try_escalate(
    hit: &Hit,
    state: &MapState,
    owner: &mut MapOwner,
    gr: &Goroutine,
    map: u64,
    ret: &mut CallerReturn,
    op: u8,
) -> Option<()> {
    let w = state.last_writer.goid;
    if w == 0 || w == gr.goid {
        return None;
    }
    let ret = ret.get(hit);
    if ret == 0 {
        return None;
    }
    let key = SiteKey {
        pid: hit.pid,
        _pad: 0,
        ret,
    };
    if unsafe { GO_ESCALATED.get(&key) }.is_some() {
        // This site's next reads of this map skip the state and this
        // lookup (see `MapOwner::escalated_ret`).
        owner.escalated_ret = ret;
        return None;
    }
    GO_ESCALATED.insert(&key, &0, BPF_NOEXIST).ok()?;
    owner.escalated_ret = ret;
    count(Counter::GoEscalations);
    let mut entry = FINDINGS.reserve::<GoEscalate>(0)?;
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(EventKind::GoEscalate, hit.pid, hit.tid, now());
    ev.map = map;
    ev.ret = ret;
    ev.probe_id = cookie::probe_id(hit.cookie);
    ev.op = op;
    ev._pad = [0; 5];
    entry.submit(0);
    Some(())
}

/// A `makemap*` RET, or the return address of a scoped plan's call to it
/// (planned only when accesses are streamed): the new map is in RAX.
#[inline(always)]
fn try_make_exit(hit: &Hit) -> Option<()> {
    if hit.cfg.emit_access != emit::RECORDS {
        return None;
    }
    let map = hit.regs.rax;
    if map == 0 {
        return None;
    }
    let gr = try_goroutine(hit)?;
    let ts = now();
    let party = try_party(hit, &gr, ts, MapOp::Make as u8)?;
    if hit.cookie & cookie::CALLSITE != 0 {
        // At a scoped plan's call site: already back in the caller.
        fill_stack_from(party, hit.regs.rip, hit.regs.rbp, hit.cfg.stack_depth);
    } else {
        fill_stack_at(party, hit);
    }
    emit_access(hit.pid, hit.tid, ts, map, 0, party, true, 0);
    Some(())
}

/// An access leaves its map: at a RET of the map function (interval mode)
/// or at its call site's return address (escalated). If a writer on
/// another goroutine entered the map after this access entered — or, when
/// this access is a writer in interval mode, any access — both were inside
/// at once.
#[inline(always)]
fn try_exit(hit: &Hit) -> Option<()> {
    let callsite = hit.cookie & cookie::CALLSITE != 0;
    // The call's return address: the probe may sit a few instructions past
    // it (see below), the cookie says how far.
    let ret = hit.regs.rip.wrapping_sub(cookie::exit_delta(hit.cookie));
    if hit.cookie & cookie::STEPPED != 0 {
        count_stepped_exit(hit.pid, ret);
    }
    let gr = try_goroutine(hit)?;
    let Some((slot, cur)) = current_of(hit, &gr) else {
        count(Counter::GoCurrentLost);
        return None;
    };
    if cur.ts_ns == 0 {
        return None;
    }
    // An escalated site closes only the call it belongs to. Its probe may
    // sit a few instructions past the return address (on the first one the
    // kernel emulates, with nothing in between that could synchronise or
    // move the stack pointer), so the call's return address is the probe's
    // address less the cookie's delta.
    if callsite && !is_call_returned(hit, &cur, ret) {
        return None;
    }
    let entered = cur.ts_ns;
    let map = cur.map;
    let op = cur.op;
    let probe_id = cur.probe_id;
    // Closed: the record is rewritten whole, so a torn close fails the
    // check like a torn entry.
    {
        let s = unsafe { &mut *slot };
        let mut closed = cur;
        closed.ts_ns = 0;
        closed.check = closed.checksum() ^ hit.cfg.salt;
        s.ts_ns = 0;
        s.check = closed.check;
    }

    let state = unsafe {
        &*GO_MAP_STATE.get_ptr(&MapKey {
            pid: hit.pid,
            _pad: 0,
            map,
        })?
    };
    let second = unsafe { &mut *SCRATCH_FIRST.get_ptr_mut(0)? };
    *second = state.last_writer;
    let mut found = is_inside_after(second, gr.goid, entered);
    if !found && hit.cfg.mode == mode::INTERVAL && is_mutating(op) {
        *second = state.last_reader;
        found = is_inside_after(second, gr.goid, entered);
    }
    if !found {
        return Some(());
    }
    let ts = now();
    let me = unsafe { &mut *SCRATCH_PARTY.get_ptr_mut(0)? };
    me.ts_ns = entered;
    me.goid = gr.goid;
    me.tid = hit.tid;
    me.probe_id = probe_id;
    me.op = op;
    if callsite {
        // In the caller already: the call's return address, then the
        // caller's frames.
        fill_stack_from(me, ret, hit.regs.rbp, hit.cfg.stack_depth);
    } else {
        fill_stack_at(me, hit);
    }
    let m = if callsite { mode::EXIT } else { mode::INTERVAL };
    report_pair(hit, ts, map, me, second, m, 0);
    Some(())
}

/// One more hit of a single-stepped escalated exit probe, counted in its
/// site's entry: userspace reads the rate to choose how long the probe
/// stays attached. Not a per-CPU value: two CPUs hitting one site at once
/// add atomically.
#[inline(always)]
fn count_stepped_exit(pid: u32, ret: u64) {
    let key = SiteKey { pid, _pad: 0, ret };
    if let Some(n) = GO_ESCALATED.get_ptr_mut(&key) {
        unsafe { crate::go_agg::add_atomic(n, 1) };
    }
}

/// At an escalated call site: the access `cur` records is the call that
/// just returned to `ret`. Its entry saw the return address's stack slot
/// where this frame's calls push theirs (`rsp - 8` here), it entered the
/// map function called at this site, and that slot still holds `ret`: so
/// the most recent call made from this frame is this site's, and no later
/// map call of this goroutine was recorded. A frame reached without that
/// call returning (a jump to the return address), a stack moved meanwhile,
/// or an entry that was not recorded all fail one of these.
#[inline(always)]
fn is_call_returned(hit: &Hit, cur: &CurrentAccess, ret: u64) -> bool {
    let slot = hit.regs.rsp.wrapping_sub(8);
    if cur.ret_slot != slot || cur.probe_id != cookie::probe_id(hit.cookie) {
        return false;
    }
    matches!(unsafe { bpf_probe_read_user(slot as *const u64) }, Ok(r) if r == ret)
}

/// `other` (a copy) entered after `entered` on another goroutine.
#[inline(always)]
fn is_inside_after(other: &Party, goid: u64, entered: u64) -> bool {
    other.goid != 0 && other.goid != goid && other.ts_ns > entered
}

/// Frames looked at to find the recorded call at a fatal error: the fatal
/// function is called by the map function (Swiss maps: through a wrapper,
/// and `mapaccess1_*` through `mapaccess2_*`), so the recorded return
/// address is among the first few.
const FATAL_STACK_CHECK: usize = 6;

/// At an iteration's fatal error with the map's writing marker already
/// cleared: how recently a writer must have entered the last iterated map
/// for it to be the map the runtime saw written (the runtime calls its
/// fatal-error function right after the check; 10 ms covers a thread
/// preempted in between on a loaded machine).
const FATAL_WRITER_RECENT_NS: u64 = 10_000_000;

/// Whether `ret` is one of the party's return addresses.
#[inline(always)]
fn stack_holds(party: &Party, ret: u64) -> bool {
    let n = party.stack_len as usize;
    for i in 0..FATAL_STACK_CHECK {
        if i >= n {
            return false;
        }
        if party.stack[i] == ret {
            return true;
        }
    }
    false
}

/// Prefix of the runtime's concurrent-map fatal errors ("concurrent map
/// writes", "concurrent map read and map write", "concurrent map iteration
/// and map write").
const CONCURRENT_MAP: &[u8; 15] = b"concurrent map ";
const ITERATION: &[u8; 9] = b"iteration";

/// The runtime is about to die of a concurrent map access it saw itself
/// (after our entry probe had run, so the entry may not have reported it).
/// Name the other side from the per-map state while the process exists.
#[inline(always)]
fn try_fatal(hit: &Hit) -> Option<()> {
    let regs = hit.regs;
    // fatal(s string): RAX = data, RBX = length.
    if regs.rbx < CONCURRENT_MAP.len() as u64 {
        return None;
    }
    let msg: [u8; 24] = unsafe { bpf_probe_read_user(regs.rax as *const [u8; 24]) }.ok()?;
    let mut i = 0;
    while i < CONCURRENT_MAP.len() {
        if msg[i] != CONCURRENT_MAP[i] {
            return None;
        }
        i += 1;
    }
    let mut iteration = regs.rbx >= 24;
    let mut j = 0;
    while j < ITERATION.len() {
        if msg[15 + j] != ITERATION[j] {
            iteration = false;
        }
        j += 1;
    }
    let gr = try_goroutine(hit)?;
    let Some((_, rec)) = current_of(hit, &gr) else {
        // This goroutine made no probed map call yet.
        count(Counter::GoFatalUnattributed);
        return None;
    };
    // The record must be the access the runtime is dying in, not an older
    // one of this goroutine (its next map call may be one no probe sees:
    // outside `--scope`, or an iteration step).
    let party = try_party(hit, &gr, now(), rec.op)?;
    fill_stack(party, regs, FATAL_STACK_CHECK as u32);
    // Iteration is probed once per loop (at its start): the step that
    // found the writer runs unprobed, so the map is the last iterated one,
    // and it is the one only if a writer is inside it right now (the
    // runtime saw its marker an instant ago) or entered it a moment ago
    // (the marker is cleared by the time this probe runs); checked below.
    let mut writer_needed_since = 0;
    let (map, op) = if iteration && rec.iter_map != 0 {
        let (writing, _) = try_map_header(hit, rec.iter_map);
        if writing == 0 {
            writer_needed_since = now().saturating_sub(FATAL_WRITER_RECENT_NS);
        }
        (rec.iter_map, MapOp::Iterate as u8)
    } else {
        // The runtime dies inside the very call recorded: that call's
        // return address is still on the stack.
        // An entry probed on the function itself may not have read it:
        // then it is in the slot the entry saw, if that call is still on
        // the stack (every map call is probed there, so no later one from
        // that frame went unrecorded).
        let ret = if rec.ret != 0 {
            rec.ret
        } else {
            unsafe { bpf_probe_read_user(rec.ret_slot as *const u64) }.unwrap_or(0)
        };
        if ret == 0 || !stack_holds(party, ret) {
            count(Counter::GoFatalUnattributed);
            return None;
        }
        (rec.map, rec.op)
    };
    let state = unsafe {
        &*GO_MAP_STATE.get_ptr(&MapKey {
            pid: hit.pid,
            _pad: 0,
            map,
        })?
    };
    let first = unsafe { &mut *SCRATCH_FIRST.get_ptr_mut(0)? };
    *first = state.last_writer;
    if first.goid == 0 || first.goid == gr.goid {
        *first = state.prev_writer;
        if first.goid == 0 || first.goid == gr.goid {
            return None;
        }
    }
    if first.ts_ns < writer_needed_since {
        // No writer was inside this map a moment ago: the loop the runtime
        // dies in is another one (an enclosing loop, or one not probed).
        count(Counter::GoFatalUnattributed);
        return None;
    }
    let ts = now();
    let party = try_party(hit, &gr, ts, op)?;
    fill_stack(party, regs, hit.cfg.stack_depth);
    // Not rate-limited: the process is about to exit.
    emit_overlap(hit, ts, map, first, party, mode::RUNTIME_FATAL, 1, 0);
    Some(())
}

/// Report an overlap unless the same pair of call sites and operations was
/// reported less than [`PAIR_REPORT_INTERVAL_NS`] ago; held-back ones are
/// counted and the next report of the pair carries their number.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn report_pair(hit: &Hit, ts: u64, map: u64, first: &Party, second: &Party, m: u32, writing: u8) {
    let key = PairKey {
        pid: hit.pid,
        ops: (first.op as u32) | ((second.op as u32) << 8),
        first_ret: first.stack[0],
        second_ret: second.stack[0],
    };
    let mut suppressed = 0u64;
    match GO_PAIRS.get_ptr_mut(&key) {
        Some(seen) => {
            let seen = unsafe { &mut *seen };
            if ts.saturating_sub(seen.reported_ns) < PAIR_REPORT_INTERVAL_NS {
                seen.suppressed += 1;
                count(Counter::GoOverlapsSuppressed);
                return;
            }
            suppressed = seen.suppressed;
            seen.suppressed = 0;
            seen.reported_ns = ts;
        }
        None => {
            let seen = PairSeen {
                reported_ns: ts,
                suppressed: 0,
            };
            let _ = GO_PAIRS.insert(&key, &seen, 0);
        }
    }
    let suppressed = if suppressed > u32::MAX as u64 {
        u32::MAX
    } else {
        suppressed as u32
    };
    emit_overlap(hit, ts, map, first, second, m, writing, suppressed);
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
    fill_stack_from(party, ret, regs.rbp, depth);
}

/// The stack whose innermost return address is `ret`, continued from the
/// frame `fp`.
#[inline(always)]
fn fill_stack_from(party: &mut Party, ret: u64, fp: u64, depth: u32) {
    party.stack_len = 0;
    if depth == 0 {
        return;
    }
    party.stack[0] = ret;
    let mut n: usize = 1;
    let mut fp = fp;
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

/// Which of the target's package-level map variables holds `map` now:
/// 1 + its index in [`GoTargetConfig::map_globals`], or [`NO_MAP_GLOBAL`].
/// Read at the finding, while the process lives (after the runtime's fatal
/// error it is gone before userspace could read it); one user read per
/// variable, on findings only, which are rate-limited.
#[inline(always)]
fn map_global_of(cfg: &GoTargetConfig, map: u64) -> u32 {
    let n = cfg.map_globals_len as usize;
    for i in 0..MAP_GLOBALS {
        if i >= n {
            break;
        }
        let addr = cfg.map_globals[i];
        if let Ok(held) = unsafe { bpf_probe_read_user(addr as *const u64) }
            && held == map
        {
            return i as u32 + 1;
        }
    }
    NO_MAP_GLOBAL
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
    hit: &Hit,
    ts: u64,
    map: u64,
    first: &Party,
    second: &Party,
    m: u32,
    writing: u8,
    suppressed: u32,
) {
    count(Counter::GoOverlaps);
    let (pid, tid) = (hit.pid, hit.tid);
    // Before the record is reserved: the reads are the slow part.
    let map_global = map_global_of(hit.cfg, map);
    match FINDINGS.reserve::<GoMapOverlap>(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            ev.header = header(EventKind::GoMapOverlap, pid, tid, ts);
            ev.map = map;
            ev.first = *first;
            ev.second = *second;
            ev.mode = m;
            ev.writing_seen = writing as u32;
            ev.suppressed = suppressed;
            ev.map_global = map_global;
            entry.submit(0);
        }
        None => {
            count(Counter::GoOverlapDropped);
            count_pid_loss(pid, true);
        }
    }
}
