//! Raw Go records to [`AuditEvent`]s: return addresses to call sites, probe
//! ids to runtime function names, kernel time to wall-clock time, and map
//! addresses to map identities (address + generation). [`TargetResolver`]
//! answers those lookups for one target's executable; [`RecentOverlaps`]
//! remembers the last findings so the runtime's fatal error confirming one
//! is not reported twice.

use std::collections::HashMap;

use auditor_common::go_map::{
    AccessCount, AccessCountKey, GoMapAccess, GoMapOverlap, MapOp, NO_MAP_GLOBAL, Party, mode,
};

use super::clock::WallClock;
use crate::event::{Access, AccessCounts, DetectionMode, Frame, Overlap, OverlapParty};

/// Resolves a return address (a runtime virtual address in the target) to
/// the frame of the call that will return there.
pub trait FrameResolver {
    fn resolve_return(&self, pc: u64) -> Option<Frame>;

    /// Every frame at a return address, innermost first: code the compiler
    /// inlined shows its own function, then the function it was inlined
    /// into.
    fn resolve_return_frames(&self, pc: u64) -> Vec<Frame> {
        self.resolve_return(pc).into_iter().collect()
    }

    /// Go type name of a map type descriptor at runtime address `maptype`.
    fn map_type_name(&self, _maptype: u64) -> Option<String> {
        None
    }

    /// The package-level variable that holds the map at `map`, if any.
    fn global_holding(&self, _map: u64) -> Option<String> {
        None
    }

    /// The variable the kernel found holding a finding's map
    /// ([`GoMapOverlap::map_global`]: 1 + its index among the watched).
    fn watched_global(&self, _slot: u32) -> Option<String> {
        None
    }
}

/// First wait before looking again for the variable holding a map; it
/// doubles with each try.
const GLOBAL_RETRY_NS: u64 = 20_000_000;
/// Looks for a map's holding variable after the first.
const GLOBAL_RETRIES: u32 = 5;

/// Most distinct PCs a session remembers the frame of; past this, frames
/// are resolved again each time (correct, just slower).
const FRAME_CACHE_CAP: usize = 1 << 16;

/// Turns one target's raw records into events.
pub struct GoEnricher<R> {
    resolver: R,
    /// Runtime function name per probe id.
    probe_names: Vec<String>,
    /// The same names, for the per-event "is this a runtime map function"
    /// question (probe ids repeat names: entry and RET sites).
    probed: std::collections::HashSet<String>,
    clock: WallClock,
    frames: HashMap<u64, Frame>,
    /// Return addresses inside inlined code, with all their frames.
    inlined: HashMap<u64, Vec<Frame>>,
    /// Each map address: its current generation, whether that
    /// generation's `make` was seen, and its earliest event (kernel ns).
    generations: HashMap<u64, Generation>,
    /// Type and holding variable found for a map (address, generation),
    /// for the overlaps on it.
    names: HashMap<(u64, u32), (Option<String>, Option<String>)>,
    /// Most map addresses tracked for generations.
    max_maps: usize,
    /// Map addresses not tracked because `max_maps` was reached.
    pub untracked_maps: u64,
    /// Inner halves of nested runtime calls, not reported twice.
    pub nested_skipped: u64,
    /// Map identities whose type was already reported.
    typed: std::collections::HashSet<(u64, u32)>,
    /// Maps whose holding variable was not found yet: (tries, last try).
    global_retries: HashMap<(u64, u32), (u32, u64)>,
}

/// Functions of the Go runtime itself (including the Swiss-map package).
pub fn is_runtime_internal(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/runtime/")
}

impl<R: FrameResolver> GoEnricher<R> {
    pub fn new(resolver: R, probe_names: Vec<String>, clock: WallClock) -> Self {
        Self {
            resolver,
            probed: probe_names.iter().cloned().collect(),
            probe_names,
            clock,
            frames: HashMap::new(),
            inlined: HashMap::new(),
            generations: HashMap::new(),
            names: HashMap::new(),
            max_maps: 1 << 20,
            untracked_maps: 0,
            nested_skipped: 0,
            typed: std::collections::HashSet::new(),
            global_retries: HashMap::new(),
        }
    }

    fn frame(&mut self, pc: u64) -> Frame {
        if let Some(f) = self.frames.get(&pc) {
            return f.clone();
        }
        let f = self.resolver.resolve_return(pc).unwrap_or_else(|| Frame {
            pc,
            function: format!("?{pc:#x}"),
            file: String::new(),
            line: 0,
        });
        if self.frames.len() < FRAME_CACHE_CAP {
            self.frames.insert(pc, f.clone());
        }
        f
    }

    fn stack(&mut self, p: &Party) -> Vec<Frame> {
        let n = (p.stack_len as usize).min(p.stack.len());
        let mut out = Vec::with_capacity(n);
        for &pc in &p.stack[..n] {
            match self.inlined.get(&pc) {
                Some(frames) => out.extend(frames.iter().cloned()),
                // Known not to be inside inlined code: no second pclntab walk.
                None if self.frames.contains_key(&pc) => out.push(self.frame(pc)),
                None => {
                    let frames = self.resolver.resolve_return_frames(pc);
                    if frames.len() > 1 {
                        out.extend(frames.iter().cloned());
                        if self.inlined.len() < FRAME_CACHE_CAP {
                            self.inlined.insert(pc, frames);
                        }
                    } else {
                        out.push(self.frame(pc));
                    }
                }
            }
        }
        out
    }

    fn probe_name(&self, id: u16) -> String {
        self.probe_names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("probe#{id}"))
    }

    /// The generation an event at kernel time `ts` on `map` belongs to; a
    /// `make` starts a new one. Findings are read before accesses, so an
    /// overlap can arrive before the `make` of its map: a make earlier
    /// than every event of the current generation, when that generation
    /// has no make yet, is that generation's own make, not a new map.
    fn generation(&mut self, map: u64, made: bool, ts: u64) -> u32 {
        match self.generations.get_mut(&map) {
            Some(g) => {
                if made {
                    if g.made || ts > g.first_ts {
                        g.number += 1;
                        g.first_ts = ts;
                    }
                    g.made = true;
                }
                g.first_ts = g.first_ts.min(ts);
                g.number
            }
            None => {
                if self.generations.len() < self.max_maps {
                    self.generations.insert(
                        map,
                        Generation {
                            number: 0,
                            made,
                            first_ts: ts,
                        },
                    );
                } else {
                    self.untracked_maps += 1;
                }
                0
            }
        }
    }

    /// Whether `function` is one of the probed runtime functions.
    fn is_probed(&self, function: &str) -> bool {
        self.probed.contains(function)
    }

    /// One access record. `None` for records that only update state, and
    /// for the inner half of a nested pair (Go 1.27's `mapaccess1_*` calls
    /// `mapaccess2_*`; classic `mapiterinit` calls `mapiternext`): the outer
    /// call already reported the access, from the user's call site.
    pub fn access(&mut self, a: &GoMapAccess) -> Option<Access> {
        let op = MapOp::from_u8(a.party.op)?;
        let stack = self.stack(&a.party);
        let site = stack.first().cloned().unwrap_or_default();
        if self.is_probed(&site.function) {
            self.nested_skipped += 1;
            return None;
        }
        let made = op == MapOp::Make;
        let map_gen = self.generation(a.map, made, a.header.ts_ns);
        // Names are looked up once per map (address + generation), on its
        // first access that carries a type descriptor.
        let (map_type, mut map_global) = if a.maptype != 0
            && self.typed.len() < self.max_maps
            && !self.typed.contains(&(a.map, map_gen))
        {
            let name = self.resolver.map_type_name(a.maptype);
            let global = if name.is_some() {
                self.typed.insert((a.map, map_gen));
                let g = self.resolver.global_holding(a.map);
                if g.is_none() {
                    self.global_retries
                        .insert((a.map, map_gen), (0, a.header.ts_ns));
                }
                g
            } else {
                None
            };
            (name, global)
        } else {
            (None, None)
        };
        // A map literal is filled before its variable is assigned, so the
        // first look finds no holder: look again on later accesses, a few
        // times, further apart each time.
        if map_global.is_none()
            && let Some(&(tries, last)) = self.global_retries.get(&(a.map, map_gen))
            && a.header.ts_ns.saturating_sub(last) >= GLOBAL_RETRY_NS << tries
        {
            map_global = self.resolver.global_holding(a.map);
            if map_global.is_some() || tries + 1 >= GLOBAL_RETRIES {
                self.global_retries.remove(&(a.map, map_gen));
            } else {
                self.global_retries
                    .insert((a.map, map_gen), (tries + 1, a.header.ts_ns));
            }
        }
        if (map_type.is_some() || map_global.is_some()) && self.names.len() < self.max_maps {
            let e = self.names.entry((a.map, map_gen)).or_default();
            if e.0.is_none() {
                e.0.clone_from(&map_type);
            }
            if e.1.is_none() {
                e.1.clone_from(&map_global);
            }
        }
        Some(Access {
            ts_ns: self.clock.to_unix_ns(a.header.ts_ns),
            pid: a.header.pid,
            tid: a.header.tid,
            goid: a.party.goid,
            map: a.map,
            map_gen,
            op,
            map_type,
            map_global,
            runtime_fn: self.probe_name(a.party.probe_id),
            function: site.function,
            file: site.file,
            line: site.line,
            stack,
        })
    }

    /// One key of the kernel's access counts, just read. `None` for the
    /// inner half of a nested pair, as for records.
    pub fn counts(&mut self, k: &AccessCountKey, c: &AccessCount) -> Option<AccessCounts> {
        let op = MapOp::from_u8(k.op)?;
        // The call site as a one-frame stack: inlined code resolves (and
        // is cached) as it does for records.
        let mut one = Party::default();
        one.stack[0] = k.ret;
        one.stack_len = 1;
        let site = self.stack(&one).into_iter().next().unwrap_or_default();
        if self.is_probed(&site.function) {
            self.nested_skipped += c.count;
            return None;
        }
        let map_gen = self.generation(k.map, false, c.first_ns);
        let (map_type, map_global) = if c.maptype != 0
            && self.typed.len() < self.max_maps
            && !self.typed.contains(&(k.map, map_gen))
        {
            let name = self.resolver.map_type_name(c.maptype);
            let global = if name.is_some() {
                self.typed.insert((k.map, map_gen));
                self.resolver.global_holding(k.map)
            } else {
                None
            };
            (name, global)
        } else {
            (None, None)
        };
        Some(AccessCounts {
            ts_ns: self.clock.now_unix_ns(),
            pid: k.pid,
            tid: c.tid,
            goid: k.goid,
            map: k.map,
            map_gen,
            op,
            map_type,
            map_global,
            runtime_fn: self.probe_name(c.probe_id),
            function: site.function,
            file: site.file,
            line: site.line,
            count: c.count,
            first_ts_ns: self.clock.to_unix_ns(c.first_ns),
            last_ts_ns: self.clock.to_unix_ns(c.last_ns),
        })
    }

    fn party(&mut self, p: &Party) -> OverlapParty {
        let mut stack = self.stack(p);
        let mut runtime_fn = self.probe_name(p.probe_id);
        // A party reported from the fatal-error probe: the map function it
        // was in is the first probed frame on its stack.
        if let Some(f) = stack
            .iter()
            .find(|f| f.function != runtime_fn && self.is_probed(&f.function))
        {
            runtime_fn = f.function.clone();
        }
        // Seen from the runtime's fatal error (or a nested call), the first
        // frames are the runtime's own: the user's call site is the first
        // frame outside it.
        let user = stack
            .iter()
            .position(|f| !is_runtime_internal(&f.function))
            .unwrap_or(0);
        stack.drain(..user);
        let site = stack.first().cloned().unwrap_or_default();
        OverlapParty {
            ts_ns: self.clock.to_unix_ns(p.ts_ns),
            goid: p.goid,
            tid: p.tid,
            op: MapOp::from_u8(p.op).unwrap_or(MapOp::Read),
            runtime_fn,
            function: site.function,
            file: site.file,
            line: site.line,
            stack,
        }
    }

    /// One overlap record.
    pub fn overlap(&mut self, o: &GoMapOverlap) -> Overlap {
        let map_gen = self.generation(o.map, false, o.header.ts_ns);
        // A finding names its map by itself (no access may be streamed):
        // the variable the kernel saw holding it at the finding, else what
        // the accesses found, else a look for the holding variable now
        // (the process may be gone by then).
        let (map_type, mut map_global) = self
            .names
            .get(&(o.map, map_gen))
            .cloned()
            .unwrap_or_default();
        if o.map_global != NO_MAP_GLOBAL
            && let Some(g) = self.resolver.watched_global(o.map_global)
        {
            if self.names.len() < self.max_maps || self.names.contains_key(&(o.map, map_gen)) {
                self.names.entry((o.map, map_gen)).or_default().1 = Some(g.clone());
            }
            map_global = Some(g);
        } else if map_global.is_none() {
            map_global = self.resolver.global_holding(o.map);
            if map_global.is_some() && self.names.len() < self.max_maps {
                self.names.entry((o.map, map_gen)).or_default().1 = map_global.clone();
            }
        }
        Overlap {
            ts_ns: self.clock.to_unix_ns(o.header.ts_ns),
            pid: o.header.pid,
            map: o.map,
            map_gen,
            detection: match o.mode {
                mode::INTERVAL => DetectionMode::Interval,
                mode::RUNTIME_FATAL => DetectionMode::RuntimeFatal,
                mode::EXIT => DetectionMode::Exit,
                _ => DetectionMode::WritingMarker,
            },
            first: self.party(&o.first),
            second: self.party(&o.second),
            suppressed: u64::from(o.suppressed),
            map_type,
            map_global,
        }
    }
}

/// What [`GoEnricher`] knows of one map address.
#[derive(Clone, Copy, Debug)]
struct Generation {
    number: u32,
    made: bool,
    first_ts: u64,
}

/// Call sites and map types of one target: pclntab and type-descriptor
/// lookups at link-time addresses.
pub struct TargetResolver {
    pub symbols: crate::goexe::Symbolizer,
    pub types: Option<crate::goexe::TypeNamer>,
    pub globals: Option<crate::goexe::GlobalIndex>,
    /// The variables the kernel reads at a finding.
    pub watched: crate::goexe::WatchedGlobals,
    pub pid: u32,
    /// Runtime minus link-time address (non-zero for PIE).
    pub bias: u64,
}

impl FrameResolver for TargetResolver {
    fn resolve_return(&self, pc: u64) -> Option<crate::event::Frame> {
        let mut f = self
            .symbols
            .lookup_return_address(pc.wrapping_sub(self.bias))?;
        f.pc = pc;
        Some(f)
    }

    fn resolve_return_frames(&self, pc: u64) -> Vec<crate::event::Frame> {
        let mut frames = self.symbols.lookup_frames(pc.wrapping_sub(self.bias), true);
        for f in &mut frames {
            f.pc = pc;
        }
        frames
    }

    fn map_type_name(&self, maptype: u64) -> Option<String> {
        self.types
            .as_ref()?
            .type_name(maptype.wrapping_sub(self.bias))
    }

    fn global_holding(&self, map: u64) -> Option<String> {
        self.globals.as_ref()?.holder(self.pid, self.bias, map)
    }

    fn watched_global(&self, slot: u32) -> Option<String> {
        self.watched.name(slot).map(str::to_owned)
    }
}

/// The runtime's fatal error usually follows an overlap the entry probe
/// already reported (same map, same two goroutines, microseconds apart):
/// that confirmation is not a second finding.
#[derive(Default)]
pub struct RecentOverlaps {
    seen: std::collections::VecDeque<(u64, u64, u64, u64)>,
}

impl RecentOverlaps {
    const WINDOW_NS: u64 = 10_000_000;

    pub fn is_repeat(&mut self, o: &Overlap) -> bool {
        let pair = (
            o.first.goid.min(o.second.goid),
            o.first.goid.max(o.second.goid),
        );
        let repeat = o.detection == crate::event::DetectionMode::RuntimeFatal
            && self.seen.iter().any(|&(map, a, b, ts)| {
                map == o.map && (a, b) == pair && o.ts_ns.saturating_sub(ts) < Self::WINDOW_NS
            });
        self.seen.push_back((o.map, pair.0, pair.1, o.ts_ns));
        if self.seen.len() > 64 {
            self.seen.pop_front();
        }
        repeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::{EventHeader, EventKind};

    struct Table;
    impl FrameResolver for Table {
        fn resolve_return(&self, pc: u64) -> Option<Frame> {
            (pc == 0x1000).then(|| Frame {
                pc,
                function: "main.worker".into(),
                file: "main.go".into(),
                line: 12,
            })
        }
    }

    fn record(op: MapOp, map: u64, stack0: u64) -> GoMapAccess {
        let mut party = Party {
            goid: 5,
            op: op as u8,
            stack_len: 1,
            ..Party::default()
        };
        party.stack[0] = stack0;
        GoMapAccess {
            header: EventHeader {
                kind: EventKind::GoMapAccess as u32,
                ..Default::default()
            },
            map,
            maptype: 0,
            party,
            exit: 0,
            writing_seen: 0,
            _pad: [0; 6],
        }
    }

    #[test]
    fn call_site_comes_from_the_first_return_address() {
        let mut e = GoEnricher::new(Table, vec!["runtime.mapassign".into()], WallClock::new());
        let a = e.access(&record(MapOp::Write, 0xc0, 0x1000)).unwrap();
        assert_eq!((a.function.as_str(), a.line), ("main.worker", 12));
        assert_eq!(a.runtime_fn, "runtime.mapassign");
        let unknown = e.access(&record(MapOp::Write, 0xc0, 0x2000)).unwrap();
        assert_eq!(unknown.function, "?0x2000");
    }

    /// Names every map `map[int]int`; the variable holding it appears only
    /// from the third look on (a map literal is filled before it is stored).
    struct LateGlobal(std::cell::Cell<u32>);
    impl FrameResolver for LateGlobal {
        fn resolve_return(&self, _pc: u64) -> Option<Frame> {
            None
        }
        fn map_type_name(&self, _maptype: u64) -> Option<String> {
            Some("map[int]int".into())
        }
        fn global_holding(&self, _map: u64) -> Option<String> {
            self.0.set(self.0.get() + 1);
            (self.0.get() >= 3).then(|| "main.counts".into())
        }
    }

    #[test]
    fn holder_found_late_is_looked_for_again() {
        let mut e = GoEnricher::new(LateGlobal(Default::default()), vec![], WallClock::new());
        let mut at = |ts: u64| {
            let mut r = record(MapOp::Write, 0xc0, 0x1000);
            r.maptype = 0x4000;
            r.header.ts_ns = ts;
            e.access(&r).unwrap()
        };
        let first = at(0);
        assert_eq!(first.map_type.as_deref(), Some("map[int]int"));
        assert_eq!(first.map_global, None);
        // Too soon: not looked for again.
        assert_eq!(at(1_000).map_global, None);
        assert_eq!(at(GLOBAL_RETRY_NS).map_global, None);
        assert_eq!(
            at(GLOBAL_RETRY_NS * 4).map_global.as_deref(),
            Some("main.counts")
        );
        // Found: never looked for again.
        assert_eq!(at(GLOBAL_RETRY_NS * 100).map_global, None);
    }

    #[test]
    fn remade_address_gets_a_new_generation() {
        let mut e = GoEnricher::new(Table, vec![], WallClock::new());
        assert_eq!(
            e.access(&record(MapOp::Make, 0xc0, 0x1000))
                .unwrap()
                .map_gen,
            0
        );
        assert_eq!(
            e.access(&record(MapOp::Write, 0xc0, 0x1000))
                .unwrap()
                .map_gen,
            0
        );
        assert_eq!(
            e.access(&record(MapOp::Make, 0xc0, 0x1000))
                .unwrap()
                .map_gen,
            1
        );
        assert_eq!(
            e.access(&record(MapOp::Read, 0xc0, 0x1000))
                .unwrap()
                .map_gen,
            1
        );
    }

    fn overlap_record(map: u64, ts: u64) -> GoMapOverlap {
        let party = |op: MapOp| Party {
            goid: 5,
            op: op as u8,
            stack_len: 1,
            stack: {
                let mut st = [0; auditor_common::go_map::MAX_STACK];
                st[0] = 0x1000;
                st
            },
            ..Party::default()
        };
        GoMapOverlap {
            header: EventHeader {
                kind: EventKind::GoMapOverlap as u32,
                ts_ns: ts,
                ..Default::default()
            },
            map,
            first: party(MapOp::Write),
            second: party(MapOp::Write),
            mode: mode::ENTRY,
            writing_seen: 1,
            suppressed: 0,
            map_global: NO_MAP_GLOBAL,
        }
    }

    #[test]
    fn an_overlap_read_before_its_maps_make_is_on_the_same_map() {
        let mut e = GoEnricher::new(LateGlobal(Default::default()), vec![], WallClock::new());
        // Findings are read first: the overlap (t=200) before the make (t=100).
        let o = e.overlap(&overlap_record(0xc0, 200));
        let mut make = record(MapOp::Make, 0xc0, 0x1000);
        make.header.ts_ns = 100;
        make.maptype = 0x4000;
        let m = e.access(&make).unwrap();
        assert_eq!(o.map_gen, m.map_gen, "one map");
        // A make after the events seen is a new map at the same address.
        let mut again = make;
        again.header.ts_ns = 300;
        assert_eq!(e.access(&again).unwrap().map_gen, o.map_gen + 1);
    }

    #[test]
    fn an_overlap_names_its_map_by_the_variable_holding_it() {
        // The holder is found on the third look: two accesses miss it.
        let mut e = GoEnricher::new(LateGlobal(Default::default()), vec![], WallClock::new());
        let mut w = record(MapOp::Write, 0xc0, 0x1000);
        w.maptype = 0x4000;
        assert_eq!(e.access(&w).unwrap().map_global, None);
        assert_eq!(e.overlap(&overlap_record(0xc0, 10)).map_global, None);
        let o = e.overlap(&overlap_record(0xc0, 20));
        assert_eq!(o.map_global.as_deref(), Some("main.counts"));
        assert_eq!(
            o.map_type.as_deref(),
            Some("map[int]int"),
            "from the access"
        );
    }
}
