//! Which package-level variable holds a map: `var sessions = map[...]...`
//! stores the map's header pointer in an 8-byte global, so reading the
//! target's globals and looking for the map's address names the map the
//! way its developer does (`main.sessions`).
//!
//! Needs the ELF symbol table (absent in `-ldflags=-s` builds: the index
//! is then simply not built). Reading `/proc/PID/mem` is rate-limited, so
//! a program that makes maps by the thousand costs at most a few scans a
//! second.

use std::{
    os::unix::fs::FileExt,
    sync::Mutex,
    time::{Duration, Instant},
};

use object::{Object, ObjectSymbol, SymbolKind};

use super::elf::ExeImage;

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
    ];
    !name.is_empty() && !SKIP.iter().any(|p| name.starts_with(p)) && name.contains('.')
}

impl GlobalIndex {
    /// Index the data symbols of `img`; `None` when it has none.
    pub(crate) fn from_image(img: &ExeImage) -> Option<Self> {
        if img.stripped {
            return None;
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
        if vars.is_empty() {
            return None;
        }
        vars.sort();
        vars.dedup_by_key(|v| v.0);
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
    fn scans_are_rate_limited() {
        let idx = index(&[(0x1000, "main.a")]);
        let allowed = (0..100).filter(|_| idx.take_budget()).count();
        assert_eq!(allowed, SCANS_PER_SECOND as usize);
    }
}
