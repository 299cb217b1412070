//! Which package-level variable holds a map: `var sessions = map[...]...`
//! stores the map's header pointer in an 8-byte global, so reading the
//! target's globals and looking for the map's address names the map the
//! way its developer does (`main.sessions`).
//!
//! Two ways, because the process may be gone before userspace looks:
//! - [`WatchedGlobals`]: the addresses of up to [`MAP_GLOBALS`] map
//!   variables go into the kernel's per-target configuration, and the
//!   kernel reads them when it reports a finding, while the process lives
//!   (the runtime's "concurrent map writes" ends it microseconds later).
//!   DWARF says which variables are maps; without it (`-ldflags=-w`),
//!   every pointer-sized variable is a candidate.
//! - [`GlobalIndex`]: every pointer-sized variable, read from
//!   `/proc/PID/mem` when userspace enriches an event (maps found through
//!   accesses, variables beyond the kernel's limit).
//!
//! Both need the ELF symbol table or DWARF (absent in `-ldflags=-s -w`
//! builds: nothing is then named). Reading `/proc/PID/mem` is
//! rate-limited, so a program that makes maps by the thousand costs at
//! most a few scans a second.

use std::{
    os::unix::fs::FileExt,
    sync::Mutex,
    time::{Duration, Instant},
};

use auditor_common::go_map::MAP_GLOBALS;
use gimli::AttributeValue;
use object::{Object, ObjectSymbol, SymbolKind};

use super::{elf::ExeImage, offsets::Dwarf};

/// Longest stretch of globals read in one go.
const MAX_RANGE: u64 = 1 << 20;
/// Two globals closer than this are read together.
const MAX_GAP: u64 = 4096;
/// Most scans per second.
const SCANS_PER_SECOND: u32 = 50;

/// A stretch of globals read at once: [lo, hi) and the variables in it.
type Range<'a> = (u64, u64, &'a [(u64, String)]);

/// Pointer-sized package-level variables of the program's own packages.
#[derive(Debug)]
pub struct GlobalIndex {
    /// (link-time address, name), sorted by address.
    vars: Vec<(u64, String)>,
    budget: Mutex<(Instant, u32)>,
}

/// Variables of the runtime and the standard library's internals are not
/// what a developer means by "the map in my code".
fn is_candidate(name: &str) -> bool {
    const SKIP: &[&str] = &[
        "runtime.",
        "internal/",
        "type:",
        "go:",
        "go.",
        "sync.",
        "reflect.",
        // Floating-point constants (`$f64.3ff0000000000000`).
        "$",
    ];
    !name.is_empty() && !SKIP.iter().any(|p| name.starts_with(p)) && name.contains('.')
}

/// Pointer-sized data symbols of the program's own packages, sorted by
/// address: (link-time address, name).
fn pointer_sized_symbols(img: &ExeImage) -> Vec<(u64, String)> {
    if img.stripped {
        return Vec::new();
    }
    let mut vars: Vec<(u64, String)> = img
        .object()
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Data && s.size() == 8)
        .filter_map(|s| {
            let name = s.name().ok()?;
            is_candidate(name).then(|| (s.address(), name.to_owned()))
        })
        .collect();
    vars.sort();
    vars.dedup_by_key(|v| v.0);
    vars
}

/// `DW_AT_go_kind`: Go's own DWARF attribute holding a type's
/// `reflect.Kind`, on every type the linker emits (named types too).
const DW_AT_GO_KIND: gimli::DwAt = gimli::DwAt(0x2900);
/// `reflect.Map`.
const GO_KIND_MAP: u64 = 21;

/// Package-level variables whose type is a map (named map types
/// included), from DWARF: (link-time address, name), sorted by address.
/// Go's linker puts each variable and each type at the top level of a
/// unit; a variable refers to its type across units, so types are
/// matched by their offset in `.debug_info` once every unit is read.
fn dwarf_map_variables(dwarf: &Dwarf<'_>) -> Vec<(u64, String)> {
    let mut map_types = std::collections::HashSet::new();
    let mut vars: Vec<(u64, String, gimli::DebugInfoOffset)> = Vec::new();
    super::offsets::for_each_top_level_entry(dwarf, |unit, node| {
        let e = node.entry();
        if e.tag() == gimli::DW_TAG_variable {
            if let Some(v) = map_variable_candidate(dwarf, unit, e) {
                vars.push(v);
            }
        } else if let Ok(Some(kind)) = e.attr_value(DW_AT_GO_KIND)
            && kind.udata_value() == Some(GO_KIND_MAP)
            && let Some(off) = e.offset().to_debug_info_offset(&unit.header)
        {
            map_types.insert(off);
        }
    });
    let mut out: Vec<(u64, String)> = vars
        .into_iter()
        .filter(|(_, _, ty)| map_types.contains(ty))
        .map(|(addr, name, _)| (addr, name))
        .collect();
    out.sort();
    out.dedup_by_key(|v| v.0);
    out
}

/// A top-level variable of the program's own packages at a fixed address:
/// (address, name, offset of its type).
fn map_variable_candidate(
    dwarf: &Dwarf<'_>,
    unit: &gimli::Unit<gimli::EndianSlice<'_, gimli::LittleEndian>>,
    e: &gimli::DebuggingInformationEntry<'_, '_, gimli::EndianSlice<'_, gimli::LittleEndian>>,
) -> Option<(u64, String, gimli::DebugInfoOffset)> {
    let name = dwarf
        .attr_string(unit, e.attr_value(gimli::DW_AT_name).ok()??)
        .ok()?;
    let name = std::str::from_utf8(&name).ok()?;
    if !is_candidate(name) {
        return None;
    }
    let ty = match e.attr_value(gimli::DW_AT_type).ok()?? {
        AttributeValue::DebugInfoRef(o) => o,
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header)?,
        _ => return None,
    };
    let AttributeValue::Exprloc(expr) = e.attr_value(gimli::DW_AT_location).ok()?? else {
        return None;
    };
    // Exactly `DW_OP_addr A`: a variable at a fixed address.
    let mut ops = expr.operations(unit.encoding());
    let Ok(Some(gimli::Operation::Address { address })) = ops.next() else {
        return None;
    };
    if !matches!(ops.next(), Ok(None)) {
        return None;
    }
    Some((address, name.to_owned(), ty))
}

/// The package-level variables whose addresses the kernel reads at a
/// finding (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchedGlobals {
    /// (link-time address, name): the main module's variables first, then
    /// its dependencies', each by address; at most [`MAP_GLOBALS`].
    pub vars: Vec<(u64, String)>,
    /// Candidates left out past [`MAP_GLOBALS`]: their maps are named only
    /// by userspace's look at a living process.
    pub not_watched: usize,
    /// Whether DWARF said these are maps (else: every pointer-sized
    /// variable of the symbol table, maps or not).
    pub map_typed: bool,
}

impl WatchedGlobals {
    /// The variables of `img` to watch: map-typed ones from `dwarf` when
    /// the binary has it, else pointer-sized symbols. `module` (the main
    /// module's path) decides which come first.
    pub(crate) fn choose(dwarf: Option<&Dwarf<'_>>, img: &ExeImage, module: Option<&str>) -> Self {
        match dwarf.map(dwarf_map_variables) {
            // A binary with DWARF but no variables in it (another linker):
            // the symbol table is still worth a look.
            Some(vars) if !vars.is_empty() => Self::pick(vars, module, true),
            _ => Self::pick(pointer_sized_symbols(img), module, false),
        }
    }

    /// Up to [`MAP_GLOBALS`] of `vars` (sorted by address): the main
    /// module's (the `main` package, or packages under `module`) first,
    /// then other modules' (a first path element with a dot), then the
    /// standard library's.
    fn pick(vars: Vec<(u64, String)>, module: Option<&str>, map_typed: bool) -> Self {
        let tier = |name: &str| {
            let pkg = super::package_of(name);
            let own = pkg == "main"
                || module.is_some_and(|m| {
                    pkg == m || pkg.strip_prefix(m).is_some_and(|r| r.starts_with('/'))
                });
            if own {
                0
            } else if pkg.split('/').next().is_some_and(|p| p.contains('.')) {
                1
            } else {
                2
            }
        };
        let mut vars = vars;
        // Stable: by address within a tier.
        vars.sort_by_key(|(_, n)| tier(n));
        let not_watched = vars.len().saturating_sub(MAP_GLOBALS);
        vars.truncate(MAP_GLOBALS);
        Self {
            vars,
            not_watched,
            map_typed,
        }
    }

    /// The name of the variable the kernel reported as `slot` (1 + its
    /// index; 0 is none).
    pub fn name(&self, slot: u32) -> Option<&str> {
        let i = usize::try_from(slot).ok()?.checked_sub(1)?;
        self.vars.get(i).map(|(_, n)| n.as_str())
    }
}

impl GlobalIndex {
    /// Index the data symbols of `img`; `None` when it has none.
    pub(crate) fn from_image(img: &ExeImage) -> Option<Self> {
        let vars = pointer_sized_symbols(img);
        if vars.is_empty() {
            return None;
        }
        Some(Self {
            vars,
            budget: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Number of candidate variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    fn take_budget(&self) -> bool {
        let Ok(mut b) = self.budget.lock() else {
            return false;
        };
        if b.0.elapsed() >= Duration::from_secs(1) {
            *b = (Instant::now(), 0);
        }
        if b.1 >= SCANS_PER_SECOND {
            return false;
        }
        b.1 += 1;
        true
    }

    /// Contiguous address ranges covering the variables.
    fn ranges(&self) -> Vec<Range<'_>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=self.vars.len() {
            let split = i == self.vars.len()
                || self.vars[i].0 - self.vars[i - 1].0 > MAX_GAP
                || self.vars[i].0 + 8 - self.vars[start].0 > MAX_RANGE;
            if split {
                let lo = self.vars[start].0;
                let hi = self.vars[i - 1].0 + 8;
                out.push((lo, hi, &self.vars[start..i]));
                start = i;
            }
        }
        out
    }

    /// The variable of process `pid` (load bias `bias`) that holds `map`,
    /// if any — or `None` also when the scan budget is spent.
    pub fn holder(&self, pid: u32, bias: u64, map: u64) -> Option<String> {
        if map == 0 || !self.take_budget() {
            return None;
        }
        let mem = crate::proc::open_mem(pid).ok()?;
        self.find_in(
            |addr, buf| mem.read_exact_at(buf, addr.wrapping_add(bias)).is_ok(),
            map,
        )
    }

    /// Scan with a memory reader (`read(link_addr, buf) -> ok`).
    fn find_in(&self, read: impl Fn(u64, &mut [u8]) -> bool, map: u64) -> Option<String> {
        for (lo, hi, vars) in self.ranges() {
            let mut buf = vec![0u8; (hi - lo) as usize];
            if !read(lo, &mut buf) {
                continue;
            }
            for (addr, name) in vars {
                let off = (addr - lo) as usize;
                let v = u64::from_le_bytes(buf[off..off + 8].try_into().ok()?);
                if v == map {
                    return Some(name.clone());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(vars: &[(u64, &str)]) -> GlobalIndex {
        GlobalIndex {
            vars: vars.iter().map(|(a, n)| (*a, n.to_string())).collect(),
            budget: Mutex::new((Instant::now(), 0)),
        }
    }

    #[test]
    fn runtime_and_internal_globals_are_not_candidates() {
        assert!(is_candidate("main.sessions"));
        assert!(is_candidate("example.com/app/cache.entries"));
        assert!(!is_candidate("runtime.allm"));
        assert!(!is_candidate("internal/godebug.stderr"));
        assert!(!is_candidate("type:*main.T"));
        assert!(!is_candidate("$f64.3ff0000000000000"));
    }

    #[test]
    fn far_apart_globals_are_read_as_separate_ranges() {
        let idx = index(&[(0x1000, "a.x"), (0x1008, "a.y"), (0x9000, "a.z")]);
        let r = idx.ranges();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[0].1, r[0].2.len()), (0x1000, 0x1010, 2));
        assert_eq!((r[1].0, r[1].1), (0x9000, 0x9008));
    }

    #[test]
    fn the_global_holding_the_address_is_named() {
        let idx = index(&[
            (0x1000, "main.a"),
            (0x1008, "main.sessions"),
            (0x9000, "main.z"),
        ]);
        let memory = |addr: u64, buf: &mut [u8]| {
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                let a = addr + 8 * i as u64;
                let v: u64 = if a == 0x1008 { 0xc000123000 } else { 7 };
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            true
        };
        assert_eq!(
            idx.find_in(memory, 0xc000123000).as_deref(),
            Some("main.sessions")
        );
        assert_eq!(idx.find_in(memory, 0xc000999000), None);
    }

    #[test]
    fn the_main_modules_variables_are_watched_first_and_the_rest_counted() {
        let mut vars = vec![
            (0x100, "unicode.Categories".to_owned()),
            (0x108, "github.com/lib/pq.cache".to_owned()),
            (0x110, "example.com/app/store.items".to_owned()),
            (0x118, "example.com/application.other".to_owned()),
        ];
        for i in 0..MAP_GLOBALS as u64 {
            vars.push((0x1000 + 8 * i, format!("main.m{i}")));
        }
        let w = WatchedGlobals::pick(vars, Some("example.com/app"), true);
        assert_eq!(w.vars.len(), MAP_GLOBALS);
        assert_eq!(w.vars[0].1, "example.com/app/store.items");
        assert_eq!(w.vars[1].1, "main.m0");
        assert_eq!(
            w.vars[MAP_GLOBALS - 1].1,
            format!("main.m{}", MAP_GLOBALS - 2)
        );
        // Left out: one of main's, another module's two (a path that only
        // starts like the main module's is another module) and the
        // standard library's one.
        assert_eq!(w.not_watched, 4);
        assert!(w.map_typed);

        let few = WatchedGlobals::pick(
            vec![
                (0x100, "unicode.Categories".to_owned()),
                (0x108, "github.com/lib/pq.cache".to_owned()),
                (0x110, "main.sessions".to_owned()),
            ],
            None,
            false,
        );
        let names: Vec<&str> = few.vars.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "main.sessions",
                "github.com/lib/pq.cache",
                "unicode.Categories"
            ]
        );
        assert_eq!(few.not_watched, 0);
        // The kernel's slot is 1 + the index; 0 is none.
        assert_eq!(few.name(1), Some("main.sessions"));
        assert_eq!(few.name(3), Some("unicode.Categories"));
        assert_eq!(few.name(0), None);
        assert_eq!(few.name(4), None);
    }

    #[test]
    fn scans_are_rate_limited() {
        let idx = index(&[(0x1000, "main.a")]);
        let allowed = (0..100).filter(|_| idx.take_budget()).count();
        assert_eq!(allowed, SCANS_PER_SECOND as usize);
    }
}
