//! Program counters to `function file:line`, from the pclntab (so stripped
//! and PIE binaries work). Called for every event's stack, so results are
//! memoised per PC: a program's map call sites are few and hot.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use super::{TargetError, pclntab::PcLnTab};
use crate::event::Frame;

/// Memo entries kept before the cache is reset (bounds memory when a
/// program has very many distinct PCs).
const CACHE_LIMIT: usize = 1 << 16;

struct Inner {
    tab: PcLnTab,
    /// Bytes from the runtime's `gofunc` base to the end of its segment
    /// (inline trees live there); empty when unknown.
    gofunc: Vec<u8>,
    cache: Mutex<HashMap<(u64, bool), Option<Frame>>>,
}

/// Resolves link-time addresses of one Go executable. Cheap to clone.
///
/// ```no_run
/// # use map_auditor::goexe::Symbolizer;
/// let s = Symbolizer::from_exe("/proc/1234/exe".as_ref()).unwrap();
/// if let Some(f) = s.lookup_return_address(0x4a1234) {
///     println!("{} {}:{}", f.function, f.file, f.line);
/// }
/// ```
#[derive(Clone)]
pub struct Symbolizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("functions", &self.inner.tab.funcs().len())
            .finish()
    }
}

impl Symbolizer {
    /// Wrap a parsed pclntab.
    pub fn new(tab: PcLnTab) -> Self {
        Self::with_gofunc(tab, Vec::new())
    }

    /// Wrap a pclntab plus the `gofunc` area, so PCs inside inlined code
    /// are named after the inlined function (as Go's own
    /// `runtime.FuncForPC` does), not the function it was inlined into.
    pub fn with_gofunc(tab: PcLnTab, gofunc: Vec<u8>) -> Self {
        Self {
            inner: Arc::new(Inner {
                tab,
                gofunc,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Read the pclntab of an executable (or `/proc/PID/exe`).
    pub fn from_exe(path: &Path) -> Result<Self, TargetError> {
        let img = super::read_image(path)?;
        super::plan::symbolizer_for(&img, &path.display().to_string())
    }

    /// Number of functions in the table.
    pub fn function_count(&self) -> usize {
        self.inner.tab.funcs().len()
    }

    /// Frame for an exact instruction address (as linked).
    pub fn lookup(&self, pc: u64) -> Option<Frame> {
        self.cached(pc, false)
    }

    /// Frame for a return address: the call instruction is the byte before
    /// it, so file, line and function are those of `pc - 1` (a call at the
    /// very end of a function would otherwise resolve to the next one).
    /// The frame keeps `pc` as given.
    pub fn lookup_return_address(&self, pc: u64) -> Option<Frame> {
        self.cached(pc, true)
    }

    /// Entry address and name of the function containing `pc`.
    pub fn function_at(&self, pc: u64) -> Option<(u64, &str)> {
        let tab = &self.inner.tab;
        let f = tab.funcs()[tab.find(pc)?];
        Some((f.entry, tab.name(&f)?))
    }

    /// Entry address of a function by its full name (linear scan; for tests
    /// and reports, not the hot path).
    pub fn function_address(&self, name: &str) -> Option<u64> {
        let tab = &self.inner.tab;
        tab.funcs()
            .iter()
            .find(|f| tab.name(f) == Some(name))
            .map(|f| f.entry)
    }

    fn cached(&self, pc: u64, ret: bool) -> Option<Frame> {
        if let Some(hit) = self.inner.cache.lock().ok()?.get(&(pc, ret)) {
            return hit.clone();
        }
        let frame = self.resolve(pc, ret);
        if let Ok(mut c) = self.inner.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert((pc, ret), frame.clone());
        }
        frame
    }

    fn resolve(&self, pc: u64, ret: bool) -> Option<Frame> {
        self.frames(pc, ret).into_iter().next()
    }

    /// All frames at a PC, innermost first: the functions inlined there,
    /// then the physical function. Each frame keeps `pc` as given.
    ///
    /// Go inlines small functions; a map access in an inlined helper has
    /// the helper's file:line, and its caller's line is recorded at the
    /// inlined call site (`parentPc`).
    pub fn lookup_frames(&self, pc: u64, return_address: bool) -> Vec<Frame> {
        self.frames(pc, return_address)
    }

    fn frames(&self, pc: u64, ret: bool) -> Vec<Frame> {
        let tab = &self.inner.tab;
        let mut out = Vec::new();
        let Some(mut at) = (if ret { pc.checked_sub(1) } else { Some(pc) }) else {
            return out;
        };
        let Some(i) = tab.find(at) else { return out };
        let f = tab.funcs()[i];
        let gofunc = |off: u64, len: usize| {
            let start = usize::try_from(off).ok()?;
            let end = start.checked_add(len)?;
            self.inner.gofunc.get(start..end).map(<[u8]>::to_vec)
        };
        let frame = |name: &str, at: u64| {
            let (file, line) = tab
                .file_line(&f, at)
                .map(|(f, l)| (f.to_owned(), l))
                .unwrap_or_default();
            Frame {
                pc,
                function: name.to_owned(),
                file,
                line,
            }
        };
        // Bounded: inline depth is small, and a corrupt tree must not loop.
        for _ in 0..MAX_INLINE_DEPTH {
            let Some((name, parent_pc)) = tab.inlined_call(&f, at, &gofunc) else {
                break;
            };
            out.push(frame(name, at));
            at = parent_pc;
        }
        if let Some(name) = tab.name(&f) {
            out.push(frame(name, at));
        }
        out
    }
}

/// Deepest inline nesting followed at one PC.
const MAX_INLINE_DEPTH: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goexe::pclntab::tests::synthetic_go120;

    #[test]
    fn return_address_resolves_to_the_calling_line() {
        let s = Symbolizer::new(PcLnTab::parse(synthetic_go120(0x401000), 0).unwrap());
        // 0x401040 is the first byte of main.second: as a return address it
        // belongs to the call at the end of main.first.
        let f = s.lookup_return_address(0x401040).unwrap();
        assert_eq!(
            (f.function.as_str(), f.file.as_str(), f.line, f.pc),
            ("main.first", "/a.go", 11, 0x401040)
        );
        let f = s.lookup(0x401040).unwrap();
        assert_eq!((f.function.as_str(), f.line), ("main.second", 20));
        // Cached answers are the same.
        assert_eq!(s.lookup(0x401040).unwrap().function, "main.second");
        assert!(s.lookup(0x500000).is_none());
        assert_eq!(s.function_address("main.second"), Some(0x401040));
        assert_eq!(s.function_at(0x401041), Some((0x401040, "main.second")));
    }
}
