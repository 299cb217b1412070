//! The kernel program's logic, tested without a Go toolchain: `go_map_probe`
//! is attached to functions of this test binary whose registers and memory
//! imitate the Go runtime's map calls (R14 = `g`, RAX = map type, RBX =
//! map), the way aya's own integration tests attach uprobes to functions of
//! the test binary. Each step calls the fake functions and checks what the
//! kernel recorded: counters, per-map state, and the records in FINDINGS.

mod common;

use std::{arch::asm, num::NonZeroU32};

use auditor_common::{
    COUNTERS_MAP, Counter, EventHeader, EventKind, FINDINGS_MAP,
    go_map::{
        GoEscalate, GoMapOverlap, GoTargetConfig, MAP_GLOBALS, MAP_STATE_MAP, MapArg, MapKey,
        MapOp, MapState, NESTED_RETS, NO_MAP_GLOBAL, TARGETS_MAP, cookie, current_slot, emit, mode,
        owner_slot,
    },
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use common::bpf_available;
use map_auditor::probe::{self, LoadOptions};
use object::{Object, ObjectSegment, ObjectSymbol};

/// `g.goid` offset used by the fake goroutines (Go 1.19-1.22's layout).
const GOID_OFF: u32 = 152;
/// Classic map header: `flags` at 8 (writing bit 4), `hash0` at 12.
const WRITING_OFF: usize = 8;
const WRITING_BIT: u8 = 4;
const SEED_OFF: usize = 12;
/// The test process's slot in `GO_TARGETS` (not 0, so a cookie without
/// its slot finds no configuration).
const TARGET_SLOT: u32 = 3;

// Fake runtime map functions. The probe sits on the first instruction (a
// `nop`, which the kernel emulates); the cookie says which operation the
// function is.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_fake_read() {
    core::arch::naked_asm!("nop", "ret")
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_fake_write() {
    core::arch::naked_asm!("nop", "ret")
}

// The naming test's own fake functions.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_named_read() {
    core::arch::naked_asm!("nop", "ret")
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_named_write() {
    core::arch::naked_asm!("nop", "ret")
}

// The counting test's own fake functions: probes of one test never fire
// for another test's calls (both run in this process, in parallel).
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_count_read() {
    core::arch::naked_asm!("nop", "ret")
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_count_write() {
    core::arch::naked_asm!("nop", "ret")
}

/// A read during which another goroutine (its `g` in R12) enters a write of
/// the same map: the reader is inside from its entry until it returns.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_fake_read_during_write() {
    core::arch::naked_asm!(
        "nop",
        "push r14",
        "mov r14, r12",
        "call {w}",
        "pop r14",
        "ret",
        w = sym kp_fake_write,
    )
}

/// A call site in "user code": the exit probe sits on the return address
/// (offset 5, after the 5-byte `call`).
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_call_site() {
    core::arch::naked_asm!("call {r}", "nop", "ret", r = sym kp_fake_read)
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_call_site_during_write() {
    core::arch::naked_asm!("call {r}", "nop", "ret", r = sym kp_fake_read_during_write)
}

/// A read (by R14's goroutine, of RBX's map) during which a second
/// goroutine (R12) reads another map (R13) and a third (R15) then writes
/// that other map.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_fake_read_then_others() {
    core::arch::naked_asm!(
        "nop",
        "push r14",
        "push rbx",
        "mov r14, r12",
        "mov rbx, r13",
        "call {r}",
        "mov r14, r15",
        "call {w}",
        "pop rbx",
        "pop r14",
        "ret",
        r = sym kp_fake_read,
        w = sym kp_fake_write,
    )
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_call_site_then_others() {
    core::arch::naked_asm!("call {r}", "nop", "ret", r = sym kp_fake_read_then_others)
}

// The goroutine cache test's own fake functions: a map write, and the
// runtime's goroutine exit / stack copy (the `g` concerned in RAX).
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_cache_write() {
    core::arch::naked_asm!("nop", "ret")
}

#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn kp_g_change() {
    core::arch::naked_asm!("nop", "ret")
}

/// Call the fake goroutine-change function for `gp`, as `mcall(goexit0)`
/// or `copystack(gp, n)` would: `gp` in RAX.
fn call_g_change(gp: &FakeG) {
    // SAFETY: the fake function only returns.
    unsafe {
        asm!(
            "call {f}",
            f = in(reg) kp_g_change as *const () as usize,
            in("rax") gp as *const FakeG as u64,
            clobber_abi("C"),
        );
    }
}

/// A fake `runtime.g`: stack bounds first, `goid` at [`GOID_OFF`].
#[repr(C, align(16))]
struct FakeG([u64; 40]);

impl FakeG {
    fn new(goid: u64, stack: &[u8]) -> Box<Self> {
        let mut g = Box::new(Self([0; 40]));
        g.0[0] = stack.as_ptr() as u64;
        g.0[1] = stack.as_ptr() as u64 + stack.len() as u64;
        g.0[GOID_OFF as usize / 8] = goid;
        g
    }
}

/// A fake classic map header.
#[repr(C, align(16))]
struct FakeMap([u8; 64]);

impl FakeMap {
    fn new(seed: u32) -> Box<Self> {
        let mut m = Box::new(Self([0; 64]));
        m.0[SEED_OFF..SEED_OFF + 4].copy_from_slice(&seed.to_le_bytes());
        m
    }
    fn set_writing(&mut self, on: bool) {
        if on {
            self.0[WRITING_OFF] |= WRITING_BIT;
        } else {
            self.0[WRITING_OFF] &= !WRITING_BIT;
        }
    }
}

/// Call `f` as the Go register ABI would call a map function: `g` in R14,
/// the map in RBX, a type in RAX, another goroutine's `g` in R12. `carry`
/// sets CF at the probe (a stack check whose branch is taken).
fn call(f: extern "C" fn(), g: &FakeG, map: *const FakeMap, other: *const FakeG, carry: bool) {
    let g = g as *const FakeG as u64;
    // SAFETY: the fake functions only push, pop, call each other and
    // return; every register they touch is declared here.
    unsafe {
        if carry {
            asm!(
                // RBX is reserved by LLVM: saved and set by hand.
                "push rbx",
                "push r14",
                "mov rbx, {m}",
                "mov r14, {g}",
                // CF set, ZF clear: the branch of a stack check is taken.
                "test rsp, rsp",
                "stc",
                "call {f}",
                "pop r14",
                "pop rbx",
                g = in(reg) g,
                m = in(reg) map as u64,
                f = in(reg) f as *const () as usize,
                in("rax") 0x5eed_u64,
                in("r12") other as u64,
                clobber_abi("C"),
            );
        } else {
            asm!(
                // RBX is reserved by LLVM: saved and set by hand.
                "push rbx",
                "push r14",
                "mov rbx, {m}",
                "mov r14, {g}",
                // CF and ZF clear: the branch of a stack check is not taken.
                "test rsp, rsp",
                "call {f}",
                "pop r14",
                "pop rbx",
                g = in(reg) g,
                m = in(reg) map as u64,
                f = in(reg) f as *const () as usize,
                in("rax") 0x5eed_u64,
                in("r12") other as u64,
                clobber_abi("C"),
            );
        }
    }
}

/// Call `f` with `g` reading `map` while `g2` reads `map2` and `g3` writes
/// it (see [`kp_fake_read_then_others`]); goroutines given by address.
fn call_with_others(f: extern "C" fn(), g: u64, map: u64, g2: u64, map2: u64, g3: u64) {
    // SAFETY: as in `call`; R13 and R15 are declared inputs the fake
    // functions only read.
    unsafe {
        asm!(
            "push rbx",
            "push r14",
            "mov rbx, {m}",
            "mov r14, {g}",
            "test rsp, rsp",
            "call {f}",
            "pop r14",
            "pop rbx",
            g = in(reg) g,
            m = in(reg) map,
            f = in(reg) f as *const () as usize,
            in("rax") 0x5eed_u64,
            in("r12") g2,
            in("r13") map2,
            in("r15") g3,
            clobber_abi("C"),
        );
    }
}

/// File offset of a function of this test binary.
fn file_offset(name: &str) -> u64 {
    let data = std::fs::read("/proc/self/exe").unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("symbol {name} not in the test binary"));
    let addr = sym.address();
    file.segments()
        .find_map(|seg| {
            let (off, size) = seg.file_range();
            (addr >= seg.address() && addr < seg.address() + size)
                .then(|| off + (addr - seg.address()))
        })
        .unwrap()
}

/// Every test attaches to the same fake functions: a program of one test
/// would see the other's calls, so they take turns.
static ONE_KERNEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Kernel {
    ebpf: Ebpf,
    findings: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pid: NonZeroU32,
    /// Last: released after the programs are gone.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Kernel {
    fn load() -> Self {
        Self::load_with(|_| {})
    }

    fn load_with(configure: impl FnOnce(&mut GoTargetConfig)) -> Self {
        let turn = ONE_KERNEL.lock().unwrap_or_else(|e| e.into_inner());
        let mut ebpf = probe::load(LoadOptions::default()).expect("load the kernel object");
        let pid = std::process::id();
        let mut nested_rets = [0u64; NESTED_RETS];
        nested_rets[0] = 1;
        nested_rets[1] = 2;
        let cfg = GoTargetConfig {
            goid_off: GOID_OFF,
            writing_off: WRITING_OFF as u32,
            writing_mask: u32::from(WRITING_BIT),
            iter_map_off: 24,
            mode: mode::ENTRY,
            stack_depth: 4,
            emit_access: 0,
            seed_off: SEED_OFF as u32,
            escalate: 1,
            paused: 0,
            nested_rets,
            pid,
            nested_len: 2,
            salt: 0x5a17,
            gcache: 0,
            map_globals: [0; MAP_GLOBALS],
            map_globals_len: 0,
            _pad_globals: 0,
        };
        let mut cfg = cfg;
        configure(&mut cfg);
        let mut targets: Array<_, GoTargetConfig> =
            Array::try_from(ebpf.map_mut(TARGETS_MAP).unwrap()).unwrap();
        targets.set(TARGET_SLOT, cfg, 0).unwrap();
        let findings = RingBuf::try_from(ebpf.take_map(FINDINGS_MAP).unwrap()).unwrap();
        let counters = PerCpuArray::try_from(ebpf.take_map(COUNTERS_MAP).unwrap()).unwrap();
        let prog: &mut UProbe = ebpf
            .program_mut("go_map_probe")
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().unwrap();
        Self {
            ebpf,
            findings,
            counters,
            pid: NonZeroU32::new(pid).unwrap(),
            _turn: turn,
        }
    }

    fn attach(&mut self, function: &str, at: u64, op: MapOp, flags: u64) {
        let prog: &mut UProbe = self
            .ebpf
            .program_mut("go_map_probe")
            .unwrap()
            .try_into()
            .unwrap();
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(file_offset(function) + at),
            cookie: Some(cookie::with_target_slot(
                cookie::encode(op as u8, 7, flags, MapArg::Rbx as u8),
                TARGET_SLOT,
            )),
        };
        prog.attach(point, "/proc/self/exe", UProbeScope::OneProcess(self.pid))
            .unwrap_or_else(|e| panic!("attach {function}+{at}: {e}"));
    }

    fn counter(&self, c: Counter) -> u64 {
        self.counters
            .get(&(c as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    fn state(&self, map: *const FakeMap) -> Option<MapState> {
        let table: HashMap<_, MapKey, MapState> =
            HashMap::try_from(self.ebpf.map(MAP_STATE_MAP).unwrap()).unwrap();
        table
            .get(
                &MapKey {
                    pid: self.pid.get(),
                    _pad: 0,
                    map: map as u64,
                },
                0,
            )
            .ok()
    }

    /// Every record in FINDINGS now, as (kind, bytes).
    fn findings(&mut self) -> Vec<(EventKind, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(item) = self.findings.next() {
            let header: EventHeader = read(&item);
            out.push((EventKind::from_u32(header.kind).unwrap(), item.to_vec()));
        }
        out
    }
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; the records are plain data.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn overlaps(records: &[(EventKind, Vec<u8>)]) -> Vec<GoMapOverlap> {
    records
        .iter()
        .filter(|(k, _)| *k == EventKind::GoMapOverlap)
        .map(|(_, b)| read(b))
        .collect()
}

#[test]
fn go_map_probe_logic_on_fake_map_calls() {
    if !bpf_available("go_map_probe_logic_on_fake_map_calls") {
        return;
    }
    let mut k = Kernel::load();
    k.attach("kp_fake_read", 0, MapOp::Read, cookie::STACKCHECK);
    k.attach("kp_fake_write", 0, MapOp::Write, cookie::STACKCHECK);
    k.attach("kp_fake_read_during_write", 0, MapOp::Read, 0);
    let (stack1, stack2) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (g1, g2) = (FakeG::new(101, &stack1), FakeG::new(202, &stack2));
    let none = std::ptr::null::<FakeG>();
    let mut shared = FakeMap::new(0xabcd);
    let a = &*shared as *const FakeMap;

    // A map one goroutine keeps to itself gets no per-map state.
    for _ in 0..3 {
        call(kp_fake_write, &g1, a, none, false);
    }
    assert_eq!(k.counter(Counter::GoProbeHits), 3);
    assert_eq!(k.counter(Counter::GoSharedMaps), 0);
    assert!(k.state(a).is_none());

    // A stack check about to grow the stack: the hit is skipped.
    call(kp_fake_write, &g2, a, none, true);
    assert_eq!(k.counter(Counter::GoMorestackSkipped), 1);
    assert!(k.state(a).is_none());

    // A map on the goroutine's own stack is never tracked.
    let local = stack1.as_ptr().wrapping_add(512) as *const FakeMap;
    call(kp_fake_write, &g1, local, none, false);
    call(kp_fake_read, &g2, local, none, false);
    assert_eq!(k.counter(Counter::GoStackLocal), 1);

    // A second goroutine makes the map shared: its state names the owner's
    // last write; the read site is escalated once, with its return address.
    call(kp_call_site, &g2, a, none, false);
    assert_eq!(k.counter(Counter::GoSharedMaps), 1);
    let st = k.state(a).expect("shared map has state");
    assert_eq!(st.last_writer.goid, 101);
    assert_eq!(st.last_writer.op, MapOp::Write as u8);
    let recs = k.findings();
    let esc: Vec<GoEscalate> = recs
        .iter()
        .filter(|(k, _)| *k == EventKind::GoEscalate)
        .map(|(_, b)| read(b))
        .collect();
    assert_eq!(esc.len(), 1, "{recs:?}");
    assert_eq!(esc[0].map, a as u64);
    let site_ret = kp_call_site as *const () as u64 + 5;
    assert_eq!(esc[0].ret, site_ret);
    assert!(overlaps(&recs).is_empty());
    call(kp_call_site, &g2, a, none, false);
    assert!(k.findings().is_empty(), "escalated twice");

    // Entry mode: the writing marker is set and the last writer is another
    // goroutine: an overlap, the writer first.
    shared.set_writing(true);
    call(kp_fake_read, &g2, a, none, false);
    let o = overlaps(&k.findings());
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].mode, mode::ENTRY);
    assert_eq!((o[0].first.goid, o[0].second.goid), (101, 202));
    assert!(o[0].first.ts_ns <= o[0].second.ts_ns);
    // The same pair again at once is counted, not reported.
    call(kp_fake_read, &g2, a, none, false);
    assert!(overlaps(&k.findings()).is_empty());
    assert_eq!(k.counter(Counter::GoOverlapsSuppressed), 1);
    // Once the goroutine itself is the last writer, the marker is its own.
    call(kp_fake_write, &g2, a, none, false);
    k.findings();
    call(kp_fake_read, &g2, a, none, false);
    assert!(overlaps(&k.findings()).is_empty());
    shared.set_writing(false);

    // Exit-decided: with the call site's return address probed, a writer
    // that entered before the read is no overlap...
    let mut b_map = FakeMap::new(0x1234);
    let b = &*b_map as *const FakeMap;
    k.attach(
        "kp_call_site",
        5,
        MapOp::Read,
        cookie::EXIT | cookie::CALLSITE,
    );
    k.attach(
        "kp_call_site_during_write",
        5,
        MapOp::Read,
        cookie::EXIT | cookie::CALLSITE,
    );
    call(kp_fake_write, &g1, b, none, false);
    call(kp_call_site, &g2, b, none, false);
    call(kp_fake_write, &g1, b, none, false);
    call(kp_call_site, &g2, b, none, false);
    assert!(overlaps(&k.findings()).is_empty());
    // ...one that enters while the read is inside is, reader first.
    call(kp_call_site_during_write, &g2, b, &*g1, false);
    let o = overlaps(&k.findings());
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].mode, mode::EXIT);
    assert_eq!((o[0].first.goid, o[0].first.op), (202, MapOp::Read as u8));
    assert_eq!(
        (o[0].second.goid, o[0].second.op),
        (101, MapOp::Write as u8)
    );
    assert!(o[0].first.ts_ns < o[0].second.ts_ns);
    assert_eq!(
        o[0].first.stack[0],
        kp_call_site_during_write as *const () as u64 + 5
    );

    // A new map made at a freed map's address (another seed) does not
    // inherit the old map's writers.
    assert_eq!(k.state(b).unwrap().last_writer.goid, 101);
    b_map.0[SEED_OFF..SEED_OFF + 4].copy_from_slice(&0x9999u32.to_le_bytes());
    call(kp_fake_write, &g2, b, none, false);
    let st = k.state(b).unwrap();
    assert_eq!(st.last_writer.goid, 202);
    assert_eq!(st.prev_writer.goid, 0, "old map's writer kept");
}

#[test]
fn counts_mode_counts_each_access_once_per_goroutine_map_site_and_op() {
    if !bpf_available("counts_mode_counts_each_access_once_per_goroutine_map_site_and_op") {
        return;
    }
    let mut k = Kernel::load_with(|c| c.emit_access = emit::COUNTS);
    k.attach("kp_count_read", 0, MapOp::Read, cookie::STACKCHECK);
    k.attach("kp_count_write", 0, MapOp::Write, cookie::STACKCHECK);
    let mut table = map_auditor::probe::counts::AccessCountTable::take(&mut k.ebpf).unwrap();
    let (stack1, stack2) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (g1, g2) = (FakeG::new(101, &stack1), FakeG::new(202, &stack2));
    let none = std::ptr::null::<FakeG>();
    let m = FakeMap::new(0xabcd);
    let a = &*m as *const FakeMap;
    for _ in 0..5 {
        call(kp_count_write, &g1, a, none, false);
    }
    for _ in 0..3 {
        call(kp_count_read, &g2, a, none, false);
    }
    // A hit about to grow the stack is no access.
    call(kp_count_write, &g1, a, none, true);
    let mut got: Vec<(u64, u8, u64)> = table
        .drain()
        .iter()
        .map(|(key, c)| {
            assert_eq!(key.map, a as u64);
            assert_eq!(key.pid, k.pid.get());
            assert!(c.first_ns <= c.last_ns && c.first_ns > 0, "{c:?}");
            assert_eq!(c.probe_id, 7);
            (key.goid, key.op, c.count)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [(101, MapOp::Write as u8, 5), (202, MapOp::Read as u8, 3)]
    );
    // Drained means deleted; what comes next goes to the other epoch and
    // is read by the next drain.
    assert!(table.drain().is_empty());
    call(kp_count_write, &g2, a, none, false);
    let next = table.drain();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!((next[0].0.goid, next[0].1.count), (202, 1));
    assert_eq!(k.counter(Counter::GoAccessCountsFull), 0);
    // Nothing was sent per access: the access ring is empty.
    let mut events = RingBuf::try_from(k.ebpf.take_map(auditor_common::RING_MAP).unwrap()).unwrap();
    assert!(events.next().is_none(), "an access record in counts mode");

    // A closed sampling window: hits are counted as paused, nothing else.
    let mut targets: Array<_, GoTargetConfig> =
        Array::try_from(k.ebpf.map_mut(TARGETS_MAP).unwrap()).unwrap();
    let mut cfg = targets.get(&TARGET_SLOT, 0).unwrap();
    cfg.paused = 1;
    targets.set(TARGET_SLOT, cfg, 0).unwrap();
    call(kp_count_write, &g1, a, none, false);
    assert_eq!(k.counter(Counter::GoProbesPaused), 1);
    assert!(table.drain().is_empty());
}

/// Two goroutines whose `g` addresses hash to the same slot of the
/// current-access table, laid out in `arena`: (g1, g2) addresses.
fn colliding_gs(arena: &mut [u64], pid: u32, stack: &[u8], goids: (u64, u64)) -> (u64, u64) {
    let words = 64; // 512 bytes apart at least: a fake g is 320 bytes
    let mut seen = std::collections::HashMap::new();
    for i in 0..arena.len() / words {
        let addr = arena[i * words..].as_ptr() as u64;
        if let Some(&j) = seen.get(&current_slot(pid, addr)) {
            for (k, goid) in [(j, goids.0), (i, goids.1)] {
                let g = &mut arena[k * words..k * words + 40];
                g[0] = stack.as_ptr() as u64;
                g[1] = stack.as_ptr() as u64 + stack.len() as u64;
                g[GOID_OFF as usize / 8] = goid;
            }
            return (
                arena[j * words..].as_ptr() as u64,
                arena[i * words..].as_ptr() as u64,
            );
        }
        seen.insert(current_slot(pid, addr), i);
    }
    panic!("no two of {} addresses share a slot", arena.len() / words);
}

#[test]
fn current_slot_collision_loses_the_exit_decision_and_reports_nothing() {
    if !bpf_available("current_slot_collision_loses_the_exit_decision_and_reports_nothing") {
        return;
    }
    let mut k = Kernel::load();
    k.attach("kp_fake_read", 0, MapOp::Read, cookie::STACKCHECK);
    k.attach("kp_fake_write", 0, MapOp::Write, cookie::STACKCHECK);
    k.attach("kp_fake_read_then_others", 0, MapOp::Read, 0);
    k.attach(
        "kp_call_site_then_others",
        5,
        MapOp::Read,
        cookie::EXIT | cookie::CALLSITE,
    );
    let stack = vec![0u8; 4096];
    let mut arena = vec![0u64; 1 << 20];
    let (g1, g2) = colliding_gs(&mut arena, k.pid.get(), &stack, (11, 22));
    let g3 = FakeG::new(33, &stack);
    let g3 = &*g3 as *const FakeG as u64;
    let (b, c) = (FakeMap::new(0xb0b), FakeMap::new(0xc0c));
    let (b, c) = (&*b as *const FakeMap as u64, &*c as *const FakeMap as u64);

    // Map c is shared and written by g3.
    call_with_others(kp_fake_write, g2, c, 0, 0, 0);
    call_with_others(kp_fake_write, g3, c, 0, 0, 0);
    assert!(k.state(c as *const FakeMap).is_some());
    k.findings();

    // g1 reads b at the call site; while it is inside, g2 (same slot)
    // reads c and g3 writes c. At g1's exit the slot holds g2's record,
    // whose map (c) has a writer that entered after g2's entry. The tag
    // says the record is not g1's: no decision, counted.
    let lost = k.counter(Counter::GoCurrentLost);
    call_with_others(kp_call_site_then_others, g1, b, g2, c, g3);
    let recs = k.findings();
    assert!(overlaps(&recs).is_empty(), "{:?}", overlaps(&recs));
    assert_eq!(k.counter(Counter::GoCurrentLost), lost + 1);

    // Without a collision the same exit decides normally (g1's record is
    // there; b has no writer inside the read, so nothing to report).
    let g4 = FakeG::new(44, &stack);
    let g4 = &*g4 as *const FakeG as u64;
    assert_ne!(current_slot(k.pid.get(), g1), current_slot(k.pid.get(), g4));
    call_with_others(kp_call_site_then_others, g1, b, g4, c, g3);
    assert!(overlaps(&k.findings()).is_empty());
    assert_eq!(k.counter(Counter::GoCurrentLost), lost + 1);
}

/// With the goroutine-change probes placed (`gcache` set), a hit takes the
/// goroutine's id and stack bounds from its cache entry, not from `g`;
/// the probe on the runtime's goroutine exit or stack copy drops the entry,
/// and so does a new cache generation. Without `gcache`, `g` is read at
/// every hit.
#[test]
fn goroutine_cache_follows_goexit_copystack_and_generation() {
    if !bpf_available("goroutine_cache_follows_goexit_copystack_and_generation") {
        return;
    }
    let mut k = Kernel::load_with(|c| c.gcache = 0x6ca7);
    k.attach("kp_cache_write", 0, MapOp::Write, 0);
    k.attach("kp_g_change", 0, MapOp::Write, cookie::G_CHANGE);
    let (stack1, stack2) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (mut g1, g2) = (FakeG::new(101, &stack1), FakeG::new(202, &stack2));
    let none = std::ptr::null::<FakeG>();
    let shared = FakeMap::new(0xcafe);
    let m = &*shared as *const FakeMap;
    // Shared, so its state names the last writer's goroutine id.
    call(kp_cache_write, &g1, m, none, false);
    call(kp_cache_write, &g2, m, none, false);
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(k.state(m).expect("shared").last_writer.goid, 101);

    // The goroutine ends and its `g` is recycled for goroutine 303: until
    // the exit is seen, the cached id stands (nothing read from `g`).
    g1.0[GOID_OFF as usize / 8] = 303;
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(
        k.state(m).unwrap().last_writer.goid,
        101,
        "the hit read g instead of its cache entry"
    );
    call_g_change(&g1);
    assert_eq!(k.counter(Counter::GoGoroutineChanges), 1);
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(k.state(m).unwrap().last_writer.goid, 303);

    // A stack copy moves the bounds: a map on the new stack is the
    // goroutine's own once the copy is seen.
    let moved = vec![0u8; 4096];
    g1.0[0] = moved.as_ptr() as u64;
    g1.0[1] = moved.as_ptr() as u64 + moved.len() as u64;
    let local = moved.as_ptr().wrapping_add(256) as *const FakeMap;
    call(kp_cache_write, &g1, local, none, false);
    assert_eq!(k.counter(Counter::GoStackLocal), 0, "stale bounds expected");
    call_g_change(&g1);
    call(kp_cache_write, &g1, local, none, false);
    assert_eq!(k.counter(Counter::GoStackLocal), 1);

    // Another goroutine's entry is left alone by a change of this one.
    g1.0[GOID_OFF as usize / 8] = 404;
    call_g_change(&g2);
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(k.state(m).unwrap().last_writer.goid, 303);

    // A new generation (the probes were placed again): no entry from
    // before is trusted.
    let set_gcache = |k: &mut Kernel, generation: u64| {
        let mut targets: Array<_, GoTargetConfig> =
            Array::try_from(k.ebpf.map_mut(TARGETS_MAP).unwrap()).unwrap();
        let mut cfg = targets.get(&TARGET_SLOT, 0).unwrap();
        cfg.gcache = generation;
        targets.set(TARGET_SLOT, cfg, 0).unwrap();
    };
    set_gcache(&mut k, 0x6ca9);
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(k.state(m).unwrap().last_writer.goid, 404);

    // No cache: every hit reads `g`.
    set_gcache(&mut k, 0);
    g1.0[GOID_OFF as usize / 8] = 505;
    call(kp_cache_write, &g1, m, none, false);
    assert_eq!(k.state(m).unwrap().last_writer.goid, 505);
    drop(moved);
}

/// Escalation records in FINDINGS now.
fn escalations(k: &mut Kernel) -> Vec<GoEscalate> {
    k.findings()
        .iter()
        .filter(|(kind, _)| *kind == EventKind::GoEscalate)
        .map(|(_, b)| read(b))
        .collect()
}

#[test]
fn owned_writes_keep_their_seed_and_old_writers_go_quiet_for_readers() {
    if !bpf_available("owned_writes_keep_their_seed_and_old_writers_go_quiet_for_readers") {
        return;
    }
    let mut k = Kernel::load();
    k.attach("kp_fake_read", 0, MapOp::Read, cookie::STACKCHECK);
    k.attach("kp_fake_write", 0, MapOp::Write, cookie::STACKCHECK);
    let (stack1, stack2) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (g1, g2) = (FakeG::new(101, &stack1), FakeG::new(202, &stack2));
    let none = std::ptr::null::<FakeG>();

    // A goroutine writing its own map again does not read the map header:
    // the seed it holds stands. So when the header's seed changes under it
    // (a new map made at a freed one's address), the next goroutine takes
    // the map over as new rather than sharing it...
    let mut own = FakeMap::new(0x1111);
    let m = &*own as *const FakeMap;
    call(kp_fake_write, &g1, m, none, false);
    own.0[SEED_OFF..SEED_OFF + 4].copy_from_slice(&0x2222u32.to_le_bytes());
    call(kp_fake_write, &g1, m, none, false);
    call(kp_fake_read, &g2, m, none, false);
    assert_eq!(
        k.counter(Counter::GoSharedMaps),
        0,
        "the owner's second write read the header"
    );
    // ...and the first of them to come back shares it.
    call(kp_fake_write, &g1, m, none, false);
    assert_eq!(k.counter(Counter::GoSharedMaps), 1);
    assert_eq!(k.state(m).expect("shared").last_writer.goid, 101);
    k.findings();

    // A map written once and read ever after: reads long after its last
    // probed write escalate nothing; a new write makes the writer recent
    // again and the next read's site is escalated.
    let table = FakeMap::new(0x3333);
    let t = &*table as *const FakeMap;
    call(kp_fake_write, &g1, t, none, false);
    call(kp_fake_read, &g2, t, none, false);
    assert_eq!(k.counter(Counter::GoSharedMaps), 2);
    escalations(&mut k);
    std::thread::sleep(std::time::Duration::from_millis(150));
    call(kp_call_site, &g2, t, none, false);
    assert!(
        escalations(&mut k).is_empty(),
        "a read 150 ms after the last write was escalated"
    );
    call(kp_fake_write, &g1, t, none, false);
    call(kp_call_site, &g2, t, none, false);
    let esc = escalations(&mut k);
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].ret, kp_call_site as *const () as u64 + 5);
    assert_eq!(esc[0].map, t as u64);

    // Another map takes the shared map's owner slot; the shared map, back
    // in its slot, is still shared (its state is looked up because a
    // shared map held the slot): a reader meeting the marker of its
    // writer is an overlap.
    let pid = k.pid.get();
    let mut arena = vec![0u64; 1 << 21];
    let other = arena
        .chunks_exact_mut(8)
        .find(|c| {
            let a = c.as_ptr() as u64;
            a != t as u64 && owner_slot(pid, a) == owner_slot(pid, t as u64)
        })
        .expect("an address in the shared map's owner slot");
    other[1] = 0x4444 << 32; // the seed, at byte 12
    let n = other.as_ptr() as *const FakeMap;
    call(kp_fake_write, &g2, n, none, false);
    call(kp_fake_write, &g1, t, none, false);
    let mut table = table;
    table.set_writing(true);
    call(kp_fake_read, &g2, t, none, false);
    let o = overlaps(&k.findings());
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!((o[0].first.goid, o[0].second.goid), (101, 202));
}

#[test]
fn overlap_names_the_watched_variable_holding_its_map() {
    if !bpf_available("overlap_names_the_watched_variable_holding_its_map") {
        return;
    }
    // Fake package-level variables: an unreadable address first (a read
    // that fails is skipped), then one holding another map, one nil, and
    // the one holding the raced map.
    let mut raced = FakeMap::new(0x7001);
    let other = FakeMap::new(0x7002);
    let mut lone = FakeMap::new(0x7003);
    let vars: Box<[u64; 3]> = Box::new([
        &*other as *const FakeMap as u64,
        0,
        &*raced as *const FakeMap as u64,
    ]);
    let addrs = [
        8,
        &vars[0] as *const u64 as u64,
        &vars[1] as *const u64 as u64,
        &vars[2] as *const u64 as u64,
    ];
    let mut k = Kernel::load_with(|c| {
        c.map_globals[..addrs.len()].copy_from_slice(&addrs);
        c.map_globals_len = addrs.len() as u32;
    });
    k.attach("kp_named_read", 0, MapOp::Read, cookie::STACKCHECK);
    k.attach("kp_named_write", 0, MapOp::Write, cookie::STACKCHECK);
    let (stack1, stack2) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (g1, g2) = (FakeG::new(101, &stack1), FakeG::new(202, &stack2));
    let none = std::ptr::null::<FakeG>();

    // Two writers make the map shared; a read enters while the marker is
    // set: the overlap names the fourth watched variable.
    let a = &*raced as *const FakeMap;
    call(kp_named_write, &g1, a, none, false);
    call(kp_named_write, &g2, a, none, false);
    call(kp_named_write, &g1, a, none, false);
    raced.set_writing(true);
    call(kp_named_read, &g2, a, none, false);
    let o = overlaps(&k.findings());
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].map, a as u64);
    assert_eq!(o[0].map_global, 4, "1 + index of the variable holding it");

    // A map no watched variable holds: the overlap says none.
    let b = &*lone as *const FakeMap;
    call(kp_named_write, &g1, b, none, false);
    call(kp_named_read, &g2, b, none, false);
    call(kp_named_write, &g1, b, none, false);
    lone.set_writing(true);
    call(kp_named_write, &g2, b, none, false);
    let o = overlaps(&k.findings());
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!((o[0].map, o[0].map_global), (b as u64, NO_MAP_GLOBAL));
}
