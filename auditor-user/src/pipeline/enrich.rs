//! Raw Go records to [`AuditEvent`]s: return addresses to call sites, probe
//! ids to runtime function names, kernel time to wall-clock time, and map
//! addresses to map identities (address + generation).

use std::collections::HashMap;

use auditor_common::go_map::{GoMapAccess, GoMapOverlap, MapOp, Party, mode};

use super::clock::WallClock;
use crate::event::{Access, DetectionMode, Frame, Overlap, OverlapParty};

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
}

/// Most distinct PCs a session remembers the frame of; past this, frames
/// are resolved again each time (correct, just slower).
const FRAME_CACHE_CAP: usize = 1 << 16;

/// Turns one target's raw records into events.
pub struct GoEnricher<R> {
    resolver: R,
    /// Runtime function name per probe id.
    probe_names: Vec<String>,
    clock: WallClock,
    frames: HashMap<u64, Frame>,
    /// Return addresses inside inlined code, with all their frames.
    inlined: HashMap<u64, Vec<Frame>>,
    /// Current generation of each map address.
    generations: HashMap<u64, u32>,
    /// Most map addresses tracked for generations.
    max_maps: usize,
    /// Map addresses not tracked because `max_maps` was reached.
    pub untracked_maps: u64,
    /// Inner halves of nested runtime calls, not reported twice.
    pub nested_skipped: u64,
    /// Map identities whose type was already reported.
    typed: std::collections::HashSet<(u64, u32)>,
}

/// Functions of the Go runtime itself (including the Swiss-map package).
pub fn is_runtime_internal(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/runtime/")
}

impl<R: FrameResolver> GoEnricher<R> {
    pub fn new(resolver: R, probe_names: Vec<String>, clock: WallClock) -> Self {
        Self {
            resolver,
            probe_names,
            clock,
            frames: HashMap::new(),
            inlined: HashMap::new(),
            generations: HashMap::new(),
            max_maps: 1 << 20,
            untracked_maps: 0,
            nested_skipped: 0,
            typed: std::collections::HashSet::new(),
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

    fn generation(&mut self, map: u64, made: bool) -> u32 {
        match self.generations.get_mut(&map) {
            Some(g) => {
                if made {
                    *g += 1;
                }
                *g
            }
            None => {
                if self.generations.len() < self.max_maps {
                    self.generations.insert(map, 0);
                } else {
                    self.untracked_maps += 1;
                }
                0
            }
        }
    }

    /// Whether `function` is one of the probed runtime functions.
    fn is_probed(&self, function: &str) -> bool {
        self.probe_names.iter().any(|n| n == function)
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
        let map_gen = self.generation(a.map, made);
        // Names are looked up once per map (address + generation), on its
        // first access that carries a type descriptor.
        let (map_type, map_global) = if a.maptype != 0
            && self.typed.len() < self.max_maps
            && !self.typed.contains(&(a.map, map_gen))
        {
            let name = self.resolver.map_type_name(a.maptype);
            let global = if name.is_some() {
                self.typed.insert((a.map, map_gen));
                self.resolver.global_holding(a.map)
            } else {
                None
            };
            (name, global)
        } else {
            (None, None)
        };
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
        let map_gen = self.generation(o.map, false);
        Overlap {
            ts_ns: self.clock.to_unix_ns(o.header.ts_ns),
            pid: o.header.pid,
            map: o.map,
            map_gen,
            detection: match o.mode {
                mode::INTERVAL => DetectionMode::Interval,
                mode::RUNTIME_FATAL => DetectionMode::RuntimeFatal,
                _ => DetectionMode::WritingMarker,
            },
            first: self.party(&o.first),
            second: self.party(&o.second),
        }
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
}
