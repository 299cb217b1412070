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
        GoEscalate, GoMapOverlap, GoTargetConfig, MAP_STATE_MAP, MapArg, MapKey, MapOp, MapState,
        NESTED_RETS, TARGETS_MAP, cookie, emit, mode,
    },
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
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

struct Kernel {
    ebpf: Ebpf,
    findings: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pid: NonZeroU32,
}

impl Kernel {
    fn load() -> Self {
        Self::load_with(|_| {})
    }

    fn load_with(configure: impl FnOnce(&mut GoTargetConfig)) -> Self {
        let mut ebpf = probe::load(LoadOptions::default()).expect("load the kernel object");
        let pid = std::process::id();
        let mut nested_rets = [0u64; NESTED_RETS];
        nested_rets[0] = 1;
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
        };
        let mut cfg = cfg;
        configure(&mut cfg);
        let mut targets: HashMap<_, u32, GoTargetConfig> =
            HashMap::try_from(ebpf.map_mut(TARGETS_MAP).unwrap()).unwrap();
        targets.insert(pid, cfg, 0).unwrap();
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
            cookie: Some(cookie::encode(op as u8, 7, flags, MapArg::Rbx as u8)),
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
    let mut targets: HashMap<_, u32, GoTargetConfig> =
        HashMap::try_from(k.ebpf.map_mut(TARGETS_MAP).unwrap()).unwrap();
    let mut cfg = targets.get(&k.pid.get(), 0).unwrap();
    cfg.paused = 1;
    targets.insert(k.pid.get(), cfg, 0).unwrap();
    call(kp_count_write, &g1, a, none, false);
    assert_eq!(k.counter(Counter::GoProbesPaused), 1);
    assert!(table.drain().is_empty());
}
