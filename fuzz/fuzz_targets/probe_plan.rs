//! Whole-executable planning: the input is written to a file and planned
//! as `map-auditor run` would (ELF segments and sections, build info,
//! pclntab by section or by magic, instruction scan, RET sites, DWARF or
//! table offsets, module data for type names), then symbolized.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use map_auditor::goexe::{PlanOptions, ProbePlan, Scope, Symbolizer};

/// One file per fuzzing process, rewritten for each input (on tmpfs when
/// there is one, so this costs a memcpy, not a disk write).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("map-auditor-fuzz-{}.elf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write scratch executable");
    // Every kind of site: function entries with their RETs, and the call
    // sites a scoped plan finds by disassembling the program's functions.
    let everything = PlanOptions {
        scope: Scope::All,
        exit_sites: true,
        make_exits: true,
        iter_steps: true,
        function_start: false,
    };
    let user = PlanOptions {
        scope: Scope::User,
        make_exits: true,
        ..PlanOptions::default()
    };
    for opts in [everything, user] {
        if let Ok(plan) = ProbePlan::for_exe_with(path, opts) {
            for s in &plan.sites {
                let _ = plan.symbolizer.lookup(s.addr);
                let _ = plan.map_type_name(s.addr);
            }
        }
    }
    if let Ok(sym) = Symbolizer::from_exe(path) {
        let _ = sym.function_count();
    }
});
