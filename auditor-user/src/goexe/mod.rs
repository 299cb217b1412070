//! From a PID or an executable to a [`ProbePlan`]: what Go is inside, where
//! each runtime map function starts, the cheapest instruction to probe in
//! it, its RET sites, the runtime struct offsets the kernel side needs, and
//! a [`Symbolizer`] for call sites (pclntab, so stripped binaries work).
//!
//! Entry points:
//! - [`ProbePlan::for_pid`] / [`ProbePlan::for_exe`] (entry probes only) and
//!   the `_with` forms taking [`PlanOptions`] (RET probes for interval mode).
//! - [`Symbolizer::lookup`] / [`Symbolizer::lookup_return_address`] take
//!   link-time addresses: for a PIE, subtract [`ProbePlan::load_bias`] from
//!   the runtime address first (non-PIE: the bias is 0).
//!
//! Modules: `buildinfo` (version, module), `pclntab` (Go's function table),
//! `elf` (segments, relocations, sections), `catalogue` (the map functions),
//! `disasm` (probe placement), `offsets` (runtime struct offsets),
//! `symbolize` (PC to frame), `plan` (putting it together).

mod buildinfo;
mod catalogue;
mod disasm;
mod elf;
mod globals;
pub(crate) mod offsets;
mod pclntab;
mod plan;
mod symbolize;
mod typename;

use std::path::PathBuf;

use auditor_common::go_map::{MapArg, MapOp};

pub use buildinfo::{BuildInfo, parse_go_version};
pub use catalogue::{Family, MAP_FUNCTIONS, MapFunction, by_name};
pub use disasm::kernel_emulates;
pub use globals::{GlobalIndex, WatchedGlobals};
pub use pclntab::{PcLnTab, PclnError, PclnVersion};
pub use plan::{CallSite, PlanOptions, Scope, in_main_module, load_bias, package_of};
pub use symbolize::Symbolizer;
pub use typename::TypeNamer;

pub(crate) use plan::read_image;

/// Parsers of untrusted bytes that are otherwise private to this module,
/// re-exported for the fuzz targets in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::buildinfo::{parse as parse_buildinfo, parse_modinfo};
    pub use super::typename::decode_name;
}

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
    /// True for the entry of the runtime's fatal-error function (see
    /// `auditor_common::go_map::cookie::FATAL`); `op` is then meaningless.
    pub fatal: bool,
    /// True for the entry of the runtime's goroutine exit (`goexit0`) or
    /// stack copy (`copystack`): the kernel drops what it cached of the
    /// goroutine's `g` (see `auditor_common::go_map::CurrentAccess::stack_lo`);
    /// `op` is then meaningless.
    pub g_change: bool,
    /// True when the site is the `jbe` of the stack-growth check: the
    /// kernel skips hits where the branch is about to be taken.
    pub stackcheck: bool,
    /// The probed instruction, disassembled (for the attach report).
    pub instruction: String,
    /// True when the kernel emulates the instruction (cheap), false when it
    /// must single-step it (expensive).
    pub emulated: bool,
    /// Other map functions call this one (see `ProbePlan::nested_rets`).
    pub nested_callee: bool,
    /// Scoped plans: the probe sits on the `call` to `function` in this
    /// function of the program (`main.handler+0x4d`), not on its entry.
    pub call_site: Option<String>,
}

/// Everything needed to probe one Go executable.
#[derive(Debug)]
pub struct ProbePlan {
    /// Path to attach uprobes to (`/proc/PID/exe` for a PID, so deleted or
    /// other-namespace executables work).
    pub exe: PathBuf,
    pub go_version: GoVersion,
    pub module_path: Option<String>,
    /// Whose map accesses the sites probe.
    pub scope: Scope,
    pub pie: bool,
    pub stripped: bool,
    pub swiss_maps: bool,
    pub offsets: RuntimeOffsets,
    pub sites: Vec<ProbeSite>,
    /// Map functions present in the binary.
    pub found: Vec<String>,
    /// Map functions of this Go version's family that the linker dropped.
    pub missing: Vec<String>,
    /// Raw toolchain string from the build info, e.g. `go1.24.0 X:...`.
    pub go_version_raw: String,
    /// Link-time address of the first loadable byte (file offset 0); the
    /// load bias of a running PIE is its mapped address minus this.
    pub link_base: u64,
    /// Things the user should know that did not stop planning (offsets taken
    /// from a table for a version newer than measured, DWARF disagreeing
    /// with the table, ...).
    pub warnings: Vec<String>,
    /// Call-site symbolizer for this executable.
    pub symbolizer: Symbolizer,
    /// Go type names from descriptors (see [`ProbePlan::map_type_name`]);
    /// `None` when the runtime's module data could not be found.
    pub type_names: Option<TypeNamer>,
    /// Package-level variables that may hold maps (needs the symbol table).
    pub globals: Option<GlobalIndex>,
    /// Package-level map variables the kernel reads at each finding.
    pub watched_globals: WatchedGlobals,
    /// `(caller, callee)` pairs of probed map functions where the caller
    /// calls the callee directly: one access then hits both probes (same
    /// goroutine, same map, callee inside caller).
    pub nested: Vec<(String, String)>,
    /// Link-time return addresses of those calls (where the callee's entry
    /// probe sees the caller's access again).
    pub nested_rets: Vec<u64>,
    /// Loadable segments (link-time address to file offset), for probes
    /// placed after planning (escalated call sites).
    pub segments: Vec<elf::Segment>,
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why an executable cannot be planned. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {0}: check the PID (e.g. with `ps`) and try again")]
    NoSuchProcess(u32),
    #[error(
        "process {0} exited (or is a zombie) before its executable could be read: start it again and re-run"
    )]
    ProcessExited(u32),
    #[error("permission denied reading {0}: run map-auditor as root")]
    PermissionDenied(String),
    #[error(
        "permission denied reading {0} although map-auditor runs as root: the process is out of its reach (another user namespace, or a ptrace restriction such as Yama or an LSM); run map-auditor where the process is visible"
    )]
    PermissionDeniedAsRoot(String),
    #[error("process {0} is a kernel thread: it runs no program, so there is nothing to audit")]
    KernelThread(u32),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not an ELF executable: point map-auditor at a Go program")]
    NotElf(String),
    #[error("{0} is not a 64-bit x86-64 executable: only x86-64 targets are supported")]
    NotX86_64(String),
    #[error(
        "{0} is not a Go program (no Go build info or function table): only Go programs can be audited"
    )]
    NotGo(String),
    #[error(
        "{what} was built with {version}: Go 1.17 or newer (register ABI) is required; rebuild it with a current Go"
    )]
    GoTooOld { what: String, version: String },
    #[error("{what}: Go function table unreadable ({source}): the binary may be damaged or packed")]
    BadPclntab {
        what: String,
        #[source]
        source: PclnError,
    },
}
