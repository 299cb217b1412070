//! The Go function table: `PcLnTab::parse` on arbitrary bytes, then every
//! look-up the symbolizer and the planner make, at PCs around each
//! function. The input doubles as the `gofunc` area, so funcdata offsets
//! the fuzzer writes reach the inline-tree walk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::goexe::{PcLnTab, Symbolizer};

/// Where `.text` starts when the header says 0 (Go 1.22+ PIE).
const TEXT_FALLBACK: u64 = 0x40_1000;
/// Functions looked at per input: enough to cover the seeds, bounded so a
/// table claiming millions of functions stays fast.
const MAX_FUNCS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(tab) = PcLnTab::parse(data.to_vec(), TEXT_FALLBACK) else {
        return;
    };
    let _ = (tab.version(), tab.text_start(), tab.functab_offset());
    let mut pcs = Vec::new();
    let mut names = Vec::new();
    for f in tab.funcs().iter().take(MAX_FUNCS) {
        let name = tab.name(f).map(str::to_owned);
        for pc in [
            f.entry,
            f.entry.wrapping_add(1),
            f.end.wrapping_sub(1),
            f.end,
        ] {
            pcs.push(pc);
            if let Some(i) = tab.find(pc) {
                let g = tab.funcs()[i];
                let _ = tab.file_line(&g, pc);
            }
        }
        names.extend(name);
    }
    let _ = tab.name_index();
    let sym = Symbolizer::with_gofunc(tab, data.to_vec());
    let _ = sym.function_count();
    for &pc in &pcs {
        let _ = sym.lookup(pc);
        let _ = sym.lookup_return_address(pc);
        let _ = sym.lookup_frames(pc, false);
        let _ = sym.function_at(pc);
    }
    if let Some(n) = names.first() {
        let _ = sym.function_address(n);
    }
});
