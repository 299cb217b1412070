//! From a PID or an executable to a [`ProbePlan`]: what Go is inside, where
//! each runtime map function starts, the cheapest instruction to probe in
//! it, its RET sites, the runtime struct offsets the kernel side needs, and
//! a [`Symbolizer`] for call sites (pclntab, so stripped binaries work).
//!
//! CONTRACT (implemented by the target-analysis work):
//! - `ProbePlan::for_pid(pid)` / `ProbePlan::for_exe(path)`
//! - `Symbolizer::lookup(pc)` where `pc` is a runtime virtual address
//!   (userspace subtracts the load bias for PIE before calling, see
//!   `ProbePlan::load_bias`).

use std::path::PathBuf;

use auditor_common::go_map::{MapArg, MapOp};

/// A Go toolchain version, e.g. 1.24.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Offsets into runtime structures for this binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeOffsets {
    /// `runtime.g.goid`.
    pub goid: u32,
    /// Byte holding the writing marker in the map header
    /// (classic `hmap.flags`; Swiss `maps.Map.writing`).
    pub writing: u32,
    /// Mask for that byte (classic `hashWriting` = 4; Swiss 0xff).
    pub writing_mask: u8,
    /// Map pointer inside the iterator (`hiter.h` / `maps.Iter.m`).
    pub iter_map: u32,
    /// True when the offsets came from DWARF, false from a version table.
    pub from_dwarf: bool,
}

/// Where one probe goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// Index in `ProbePlan::sites`; travels in the attach cookie.
    pub id: u16,
    /// Runtime function symbol, e.g. `runtime.mapassign_fast64`.
    pub function: String,
    pub op: MapOp,
    /// Where the map pointer is at this site.
    pub map_arg: MapArg,
    /// Virtual address of the function's first instruction (as linked).
    pub func_addr: u64,
    /// Virtual address of the probed instruction (as linked).
    pub addr: u64,
    /// File offset of the probed instruction (what the uprobe attaches to).
    pub file_offset: u64,
    /// True for a RET site (exit probe).
    pub exit: bool,
    /// True when the site is the `jbe` of the stack-growth check: the
    /// kernel skips hits where the branch is about to be taken.
    pub stackcheck: bool,
    /// The probed instruction, disassembled (for the attach report).
    pub instruction: String,
    /// True when the kernel emulates the instruction (cheap), false when it
    /// must single-step it (expensive).
    pub emulated: bool,
}

/// Everything needed to probe one Go executable.
#[derive(Debug)]
pub struct ProbePlan {
    /// Path to attach uprobes to (`/proc/PID/exe` for a PID, so deleted or
    /// other-namespace executables work).
    pub exe: PathBuf,
    pub go_version: GoVersion,
    pub module_path: Option<String>,
    pub pie: bool,
    pub stripped: bool,
    pub swiss_maps: bool,
    pub offsets: RuntimeOffsets,
    pub sites: Vec<ProbeSite>,
    /// Map functions present in the binary.
    pub found: Vec<String>,
    /// Map functions of this Go version's family that the linker dropped.
    pub missing: Vec<String>,
}
