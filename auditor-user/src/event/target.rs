//! What happens to an audited process as a whole: what was attached to it,
//! what was lost, its end-of-session totals, and (daemon only) its life.

use auditor_common::go_map::MapOp;
use serde::{Deserialize, Serialize};

use crate::{goexe::ProbePlan, probe::go::GoAttachment, settings::DetectMode};

use super::{
    from_hex,
    go::{op_from_name, op_name},
    hex,
};

/// One probe site as attached (the attach report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedProbe {
    pub function: String,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    /// Offset of the probed instruction from the function's start.
    pub offset: u64,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub file_offset: u64,
    pub instruction: String,
    /// Whether the kernel emulates the instruction (cheap) or single-steps it.
    pub emulated: bool,
    /// A RET site (exit probe).
    pub exit: bool,
    /// `--scope`: the call instruction probed (`main.handler+0x4d`), in the
    /// program's own code, calling `function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_site: Option<String>,
    /// A probe on the runtime that is not a map access (its `op` means
    /// nothing): `fatal-error` (names the other side when the runtime
    /// dies of a concurrent map access) or `goroutine-change` (goroutine
    /// exit or stack copy: keeps the kernel's goroutine cache true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

/// What was attached to a target, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachReport {
    pub ts_ns: u64,
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub module: Option<String>,
    pub pie: bool,
    pub stripped: bool,
    pub swiss_maps: bool,
    /// `entry` or `interval`.
    pub detect: String,
    /// Whose map accesses are probed (`--scope`): `user`, `all`,
    /// `main-module` or the packages named.
    #[serde(default)]
    pub scope: String,
    pub offsets_from_dwarf: bool,
    pub probes: Vec<AttachedProbe>,
    /// Map functions of this Go version that the binary does not contain.
    pub missing: Vec<String>,
    /// Sites the kernel refused, with the reason.
    pub failed: Vec<String>,
    /// Package-level map variables the kernel reads at each finding.
    #[serde(default)]
    pub map_globals: WatchedMapGlobals,
}

/// The package-level variables the kernel reads when it reports a finding,
/// to name the map while the process still lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedMapGlobals {
    /// Their names, the main module's first.
    pub watched: Vec<String>,
    /// Candidates past the kernel's limit: their maps are named only while
    /// userspace can still read the process.
    pub not_watched: usize,
    /// Whether DWARF said these are maps (else: every pointer-sized
    /// variable of the symbol table).
    pub map_typed: bool,
}

impl AttachReport {
    /// The report of what was attached to process `pid` following `plan`.
    pub fn new(
        ts_ns: u64,
        pid: u32,
        plan: &ProbePlan,
        att: &GoAttachment,
        detect: DetectMode,
    ) -> Self {
        let v = plan.go_version;
        AttachReport {
            ts_ns,
            pid,
            exe: std::fs::read_link(&plan.exe)
                .unwrap_or_else(|_| plan.exe.clone())
                .display()
                .to_string(),
            go_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
            module: plan.module_path.clone(),
            pie: plan.pie,
            stripped: plan.stripped,
            swiss_maps: plan.swiss_maps,
            detect: detect.as_str().into(),
            scope: plan.scope.label(),
            offsets_from_dwarf: plan.offsets.from_dwarf,
            probes: att
                .attached
                .iter()
                .map(|a| AttachedProbe {
                    function: a.site.function.clone(),
                    op: a.site.op,
                    offset: a.site.addr - a.site.func_addr,
                    file_offset: a.site.file_offset,
                    instruction: a.site.instruction.clone(),
                    emulated: a.site.emulated,
                    exit: a.site.exit,
                    call_site: a.site.call_site.clone(),
                    hook: if a.site.fatal {
                        Some("fatal-error".into())
                    } else if a.site.g_change {
                        Some("goroutine-change".into())
                    } else {
                        None
                    },
                })
                .collect(),
            missing: plan.missing.clone(),
            failed: att
                .failed
                .iter()
                .map(|f| {
                    let s = &f.site;
                    format!(
                        "{}+{:#x}: {}",
                        s.function,
                        s.addr - s.func_addr,
                        crate::probe::error_chain(&f.error)
                    )
                })
                .collect(),
            map_globals: WatchedMapGlobals {
                watched: plan
                    .watched_globals
                    .vars
                    .iter()
                    .map(|(_, n)| n.clone())
                    .collect(),
                not_watched: plan.watched_globals.not_watched,
                map_typed: plan.watched_globals.map_typed,
            },
        }
    }
}

/// Events lost between the kernel and us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub ts_ns: u64,
    pub pid: u32,
    /// What was lost (`access`, `overlap`, `bpf_map`, `state`, ...).
    pub what: String,
    /// How many since the previous `lost` event of the same `what`.
    pub count: u64,
    /// Running total.
    pub total: u64,
}

/// The overhead budget (`--max-overhead`) changed how much of the time a
/// target is probed: probes are on for `window_on_ms` of every
/// `window_ms` (100% coverage: always on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub ts_ns: u64,
    pub pid: u32,
    /// Share of the time the probes are on, in percent.
    pub coverage_pct: f64,
    pub window_on_ms: u64,
    pub window_ms: u64,
    /// The estimate that decided: the auditor's cost in percent of the
    /// target's CPU time, with the probes on all the time.
    pub estimated_pct: f64,
    pub budget_pct: f64,
    /// Probe hits per second of wall time while the probes were on.
    pub hits_per_s: f64,
    /// Cost charged per hit (trap + BPF program), in nanoseconds.
    pub ns_per_hit: f64,
    /// Where the BPF program's share came from: `bpf_stats` (measured)
    /// or `calibrated` (a constant).
    pub cost_source: String,
    /// Why the coverage changed, in words.
    pub reason: String,
    /// Which step of the ladder changed: `scope` (call sites outside the
    /// main module detached or attached again) or `sampling` (the window).
    #[serde(default)]
    pub step: String,
    /// Call sites this change detached, and those it attached again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub narrowed: Vec<ScopeSite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widened: Vec<ScopeSite>,
    /// Call sites detached from now on, of the sites probed at attach.
    #[serde(default)]
    pub sites_narrowed: u64,
    #[serde(default)]
    pub sites: u64,
}

/// A call site the overhead budget detached or attached again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeSite {
    /// The calling function and offset of the probed `call`
    /// (`reflect.Value.MapIndex+0x8e`).
    pub call_site: String,
    /// The runtime map function it calls.
    pub runtime_fn: String,
    /// Its hits per second when it was measured (before it was detached).
    pub hits_per_s: f64,
}

/// A call site the overhead budget detached for part of a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NarrowedSiteCoverage {
    pub call_site: String,
    pub runtime_fn: String,
    /// How long it was detached in all, and that share of the session.
    pub narrowed_ms: u64,
    pub narrowed_pct: f64,
    /// Times it was detached.
    pub times: u32,
    /// Detached when the session ended.
    pub narrowed_at_end: bool,
}

/// End-of-session totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub ts_ns: u64,
    pub pid: u32,
    pub events: u64,
    pub accesses: u64,
    pub overlaps: u64,
    /// `access_counts` events delivered, and the accesses they stand for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub access_counts: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counted_accesses: u64,
    pub dropped: u64,
    pub probe_hits: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_fatal: Option<String>,
    /// bpf(2) audit: map commands whose fd named no map (bad or closed fd,
    /// a pipe, a program) or whose attr could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved_fds: Option<u64>,
    /// Events that reached the live log, when fewer than `events` did
    /// (filters, `--quiet`, repeated findings printed once, shed lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<u64>,
    /// Live lines (accesses) not shown because the output could not keep up.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shed: u64,
    /// `--max-overhead`: share of the session's time the probes were on,
    /// in percent, and what narrowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_reason: Option<String>,
    /// Every finding, once per map, pair of call sites and operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingGroup>,
    /// The runtime died of a concurrent map error that no probed access
    /// accounts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fatal_unattributed: Option<FatalUnattributed>,
    /// Escalated call sites and how much of the time their exit probe was
    /// attached (entry mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_sites: Vec<ExitSiteCoverage>,
    /// `--max-overhead`: call sites its scope step detached for part of
    /// the session (their accesses were not seen meanwhile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub narrowed_sites: Vec<NarrowedSiteCoverage>,
}

/// One escalated call site's exit probe over a session: whether the kernel
/// single-steps it, how it was held (`always`, `sampled`, `off`), its hits
/// (counted for single-stepped probes only) and the share of the time it
/// was attached. A read at a site whose probe was parked is decided only at
/// its entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitSiteCoverage {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// The call's return address.
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub pc: u64,
    pub instruction: String,
    pub stepped: bool,
    pub tracking: String,
    /// Hits of the probe (single-stepped probes; 0 for emulated ones).
    pub hits: u64,
    pub armed_pct: f64,
    /// What those hits cost, in percent of one CPU over the session (at
    /// ~13 µs a single-stepped hit).
    pub cost_pct: f64,
}

/// Concurrent-map fatal errors the kernel saw in calls no probe recorded,
/// and the scope that was probed (`--scope all` sees every call).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FatalUnattributed {
    pub count: u64,
    pub scope: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Overlaps on one map between the same two call sites doing the same two
/// operations, in either order: one race, however often it was caught.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingGroup {
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub map: u64,
    /// The variable holding the map, when known (e.g. `main.counts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_global: Option<String>,
    /// The two call sites (`function (file:line)`), in sorted order.
    pub sites: [String; 2],
    /// The operations of the two sites, in the same order.
    pub ops: [String; 2],
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

/// A target's life in the daemon: JSON `kind` is `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename = "target")]
pub struct TargetEvent {
    pub ts_ns: u64,
    pub pid: u32,
    /// `attaching`, `attach_failed`, `exited`, `exec`, `detached`,
    /// `watch_added`, `watch_removed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Why (for `attach_failed`) or who asked (for `detached`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
