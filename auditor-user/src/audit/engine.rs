//! One loaded kernel object serving any number of Go targets.
//!
//! The kernel side keys everything by PID (`GO_TARGETS`, `GO_MAP_STATE`,
//! the uprobe scopes), so one ring buffer carries the records of every
//! target; the engine reads it once and hands each record to its target's
//! enricher (symbols and load bias differ per target). `attach`/`run` use it
//! with one target, the daemon with many.
//!
//! Planning a target (reading its ELF, disassembling) is slow and needs no
//! BPF, so it is split out ([`plan_target`]) and can run off the thread that
//! reads the ring; [`GoEngine::attach`] then only places the probes.

use std::{
    collections::HashMap,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use auditor_common::{
    Counter,
    go_map::{AccessCount, AccessCountKey, GoTargetConfig, MapOp, PID_LOSSES_MAP, PidLosses},
};
use bytes::Bytes;
use thiserror::Error;

use crate::{
    audit::{
        budget::{CostSample, Estimate, NarrowedSite, SamplingWindow, SiteHits},
        exits::{ExitAction, ExitSchedule, ExitTracking, STEPPED_EXIT_BUDGET_PCT},
    },
    event::{
        AttachReport, AuditEvent, Coverage, Escalation, ExitSiteCoverage, Lost,
        NarrowedSiteCoverage, ScopeSite,
    },
    goexe::{PlanOptions, ProbePlan, TargetError},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        enrich::{GoEnricher, RecentOverlaps, TargetResolver},
        loss::{GO_LOSSES, LossCounter},
        ring::{RingGauge, RingReader},
    },
    probe::{
        self, LoadOptions, ProbeError,
        counters::{CounterSnapshot, KernelCounters},
        counts::AccessCountTable,
        go::GoAttachment,
        multi::MultiProgram,
    },
    proc::ProcessIdentity,
    settings::{
        AccessStream, DetectMode, SettingsError, SteppedExits, check_max_overhead,
        validate_stack_depth,
    },
};

/// Errors of the multi-target engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Boxed: aya's errors are large and this type travels in every Result.
    #[error(transparent)]
    Probe(Box<ProbeError>),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "pid {pid} ({exe}) contains no Go map functions to probe; is it a Go program that uses maps?"
    )]
    NoMapFunctions { pid: u32, exe: String },
    #[error("pid {0} is already attached: detach it first")]
    AlreadyAttached(u32),
    #[error(
        "pid {0} exited or exec'd before its probes were placed: attach again if it still runs"
    )]
    Changed(u32),
}

impl From<ProbeError> for EngineError {
    fn from(e: ProbeError) -> Self {
        Self::Probe(Box::new(e))
    }
}

/// How one target is audited.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetOptions {
    pub detect: DetectMode,
    /// Whose map accesses are probed (`--scope`); `None`: the detection
    /// mode's default ([`crate::goexe::Scope::default_for`]).
    pub scope: Option<crate::goexe::Scope>,
    /// User stack frames recorded per access (0-16).
    pub stack_depth: u32,
    /// What the kernel sends per access besides findings.
    pub accesses: AccessStream,
    /// Probe the first instruction instead of the stack-check `jbe`
    /// (measuring placement only; see `--placement`).
    pub function_start: bool,
    /// Overhead budget in percent of the target's CPU time
    /// (`--max-overhead`).
    pub max_overhead: Option<f64>,
    /// What becomes of escalated exit probes the kernel single-steps
    /// (`--stepped-exits`).
    pub stepped_exits: SteppedExits,
}

impl TargetOptions {
    /// The scope probed: the one asked for, else the detection mode's.
    pub fn effective_scope(&self) -> crate::goexe::Scope {
        self.scope.clone().unwrap_or_else(|| {
            crate::goexe::Scope::default_for(self.detect == DetectMode::Interval)
        })
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(p) = self.max_overhead {
            check_max_overhead(p)?;
        }
        validate_stack_depth(self.stack_depth).map(drop)
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        Self {
            detect: DetectMode::Entry,
            scope: None,
            stack_depth: 8,
            accesses: AccessStream::Records,
            function_start: false,
            max_overhead: None,
            stepped_exits: SteppedExits::Sampled,
        }
    }
}

/// A target planned but not yet attached.
pub struct PlannedTarget {
    pub pid: u32,
    pub plan: ProbePlan,
    bias: u64,
    opts: TargetOptions,
    identity: ProcessIdentity,
}

/// Read the target's executable and decide where its probes go. Slow
/// (ELF, pclntab, disassembly) and free of BPF: run it off the ring reader.
pub fn plan_target(pid: u32, opts: &TargetOptions) -> Result<PlannedTarget, EngineError> {
    let identity = ProcessIdentity::of(pid);
    let plan = ProbePlan::for_pid_with(
        pid,
        PlanOptions {
            scope: opts.effective_scope(),
            exit_sites: opts.detect == DetectMode::Interval,
            function_start: opts.function_start,
            make_exits: opts.accesses == AccessStream::Records,
            iter_steps: false,
        },
    )?;
    if plan.sites.is_empty() {
        return Err(EngineError::NoMapFunctions {
            pid,
            exe: plan.exe.display().to_string(),
        });
    }
    let bias = plan.load_bias(pid)?;
    let identity = identity.ok_or(EngineError::Changed(pid))?;
    Ok(PlannedTarget {
        pid,
        plan,
        bias,
        opts: opts.clone(),
        identity,
    })
}

/// The message the Go runtime prints when the goroutine doing `op` finds
/// another goroutine writing the map (the same wording in every version,
/// classic and Swiss maps alike).
pub fn runtime_fatal_message(op: MapOp) -> &'static str {
    match op {
        MapOp::Read => "concurrent map read and map write",
        MapOp::Iterate => "concurrent map iteration and map write",
        _ => "concurrent map writes",
    }
}

/// Delivered counts of one target.
#[derive(Clone, Copy, Debug)]
pub struct TargetStats {
    /// Accesses and overlaps delivered.
    pub events: u64,
    pub accesses: u64,
    pub overlaps: u64,
    /// `access_counts` events delivered, and the accesses they stand for.
    pub access_counts: u64,
    pub counted_accesses: u64,
    /// Kernel drops attributed to this target (only possible while it was
    /// the only target: the kernel counters are global).
    pub dropped: u64,
    pub attached_at: Instant,
    pub attached_unix_ns: u64,
}

/// What happened to a target's process since it was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetChange {
    /// Gone, a zombie, or its PID now belongs to another process.
    Exited,
    /// Replaced its program (execve): the probes no longer apply.
    Exec,
}

struct TargetState {
    /// The plan, kept to place escalated call sites.
    plan: ProbePlan,
    bias: u64,
    exe: String,
    identity: ProcessIdentity,
    attachment: Option<GoAttachment>,
    enricher: GoEnricher<TargetResolver>,
    recent: RecentOverlaps,
    stats: TargetStats,
    runtime_fatal: Option<String>,
    /// What the kernel was told for this target (`GO_TARGETS[pid]`).
    config: GoTargetConfig,
    budget: Option<BudgetState>,
    stepped_exits: SteppedExits,
    /// Escalated call sites, in the order of the attachment's escalated
    /// exits.
    exits: Vec<ExitSite>,
    /// What the session streams (the kernel's `emit_access` outside a
    /// budget's measurement).
    accesses: AccessStream,
    /// Plan sites an overhead budget may detach: call sites in functions
    /// outside the main module (by site id).
    narrowable: Vec<u16>,
    /// Hits per plan site since the last budget check, from the kernel's
    /// access counts or records (by site id), and their sum.
    site_hits: HashMap<u16, u64>,
    tallied: u64,
}

impl TargetState {
    fn scope_site(&self, id: u16, hits_per_s: f64) -> ScopeSite {
        let site = self.plan.sites.get(usize::from(id));
        ScopeSite {
            call_site: site.and_then(|s| s.call_site.clone()).unwrap_or_default(),
            runtime_fn: site.map(|s| s.function.clone()).unwrap_or_default(),
            hits_per_s,
        }
    }

    /// Per-site hits tallied since the last check, when there are enough to
    /// take shares from; the tally starts again.
    fn take_site_hits(&mut self) -> Option<(HashMap<u16, u64>, u64)> {
        let tallied = std::mem::take(&mut self.tallied);
        let hits = std::mem::take(&mut self.site_hits);
        (tallied >= MIN_TALLIED_HITS).then_some((hits, tallied))
    }

    /// Count an access record for the budget's per-site shares, then
    /// enrich it.
    fn tally_record(
        &mut self,
        a: &auditor_common::go_map::GoMapAccess,
    ) -> Option<crate::event::Access> {
        if self.budget.is_some() {
            *self.site_hits.entry(a.party.probe_id).or_default() += 1;
            self.tallied += 1;
        }
        self.enricher.access(a)
    }

    /// The plan's access sites (no exits, no runtime hooks).
    fn entry_sites(&self) -> u64 {
        self.plan
            .sites
            .iter()
            .filter(|s| !s.exit && !s.fatal && !s.g_change)
            .count() as u64
    }

    fn narrowed_sites(&self, now: Instant) -> Vec<NarrowedSiteCoverage> {
        let Some(b) = &self.budget else {
            return Vec::new();
        };
        let wall = now.saturating_duration_since(b.attached).as_secs_f64();
        let mut out: Vec<_> = b
            .narrow_history
            .iter()
            .map(|(&id, h)| {
                let current = b.narrowed.iter().find(|n| n.site == id);
                let total = h.total + current.map_or(Duration::ZERO, |n| now - n.since);
                let s = self.scope_site(id, 0.0);
                NarrowedSiteCoverage {
                    call_site: s.call_site,
                    runtime_fn: s.runtime_fn,
                    narrowed_ms: total.as_millis() as u64,
                    narrowed_pct: if wall > 0.0 {
                        (100.0 * total.as_secs_f64() / wall).min(100.0)
                    } else {
                        0.0
                    },
                    times: h.times,
                    narrowed_at_end: current.is_some(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.narrowed_ms
                .cmp(&a.narrowed_ms)
                .then(a.call_site.cmp(&b.call_site))
        });
        out
    }
}

/// Where a coverage estimate's program time came from.
fn cost_source(e: &Estimate) -> String {
    if e.measured {
        "bpf_stats"
    } else {
        "calibrated"
    }
    .into()
}

/// Fewest tallied hits whose per-site shares a scope decision trusts.
const MIN_TALLIED_HITS: u64 = 100;
/// After a measurement of per-site hits found nothing worth detaching,
/// the kernel is not asked to count for a findings-only session again
/// for this long.
const PROFILE_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// One escalated call site's exit probe and its schedule.
struct ExitSite {
    /// The plan site whose call this exit closes (its probe id).
    site: u16,
    /// Index among the attachment's escalated exits (`None`: never placed,
    /// `--stepped-exits off`).
    index: Option<usize>,
    /// The call's return address as the process runs it (the kernel's key
    /// for the site's hit count).
    ret: u64,
    function: String,
    file: String,
    line: u32,
    instruction: String,
    stepped: bool,
    schedule: ExitSchedule,
}

impl ExitSite {
    fn coverage(&self, now: Instant) -> ExitSiteCoverage {
        ExitSiteCoverage {
            function: self.function.clone(),
            file: self.file.clone(),
            line: self.line,
            pc: self.ret,
            instruction: self.instruction.clone(),
            stepped: self.stepped,
            tracking: self.schedule.tracking.as_str().into(),
            hits: self.schedule.hits,
            armed_pct: self.schedule.armed_pct(now),
            cost_pct: self.schedule.cost_pct(now),
        }
    }
}

/// A parked exit probe whose removal finished: (pid, index among the
/// target's exit sites, when).
type ParkDone = (u32, usize, Instant);

/// A target under an overhead budget: its sampling window and what the
/// last estimate saw.
struct BudgetState {
    budget_pct: f64,
    window: SamplingWindow,
    /// Start of the window's schedule.
    schedule: Instant,
    /// Probes on now; since when.
    on_since: Option<Instant>,
    /// On time in the current measurement interval, and in the session.
    on_interval: Duration,
    on_total: Duration,
    attached: Instant,
    last_check: Instant,
    last_cpu_ns: Option<u64>,
    /// Why the coverage is what it is (the last change's reason).
    reason: Option<String>,
    /// Call sites detached by the scope step, and every site ever
    /// detached: (time detached before the current stretch, times).
    narrowed: Vec<NarrowState>,
    narrow_history: HashMap<u16, NarrowHistory>,
    /// The kernel counts a findings-only session's accesses (for per-site
    /// shares) until the next check.
    profiling: bool,
    /// No measurement before this (one found nothing worth detaching).
    next_profile: Instant,
}

/// One detached call site.
struct NarrowState {
    site: u16,
    since: Instant,
    hits_per_s: f64,
    rest_hits_per_s: f64,
    hold_ms: u64,
}

#[derive(Default)]
struct NarrowHistory {
    total: Duration,
    times: u32,
}

impl BudgetState {
    fn new(pid: u32, budget_pct: f64) -> Self {
        let now = Instant::now();
        Self {
            budget_pct,
            window: SamplingWindow::ALWAYS,
            schedule: now,
            on_since: Some(now),
            on_interval: Duration::ZERO,
            on_total: Duration::ZERO,
            attached: now,
            last_check: now,
            last_cpu_ns: super::budget::process_cpu_ns(pid),
            reason: None,
            narrowed: Vec::new(),
            narrow_history: HashMap::new(),
            profiling: false,
            next_profile: now,
        }
    }

    /// Close the on time counted so far (up to `now`).
    fn account(&mut self, now: Instant) {
        if let Some(since) = self.on_since {
            let d = now.saturating_duration_since(since);
            self.on_interval += d;
            self.on_total += d;
            self.on_since = Some(now);
        }
    }

    /// Share of the time since attach the probes were on, in percent.
    fn coverage_pct(&self, now: Instant) -> f64 {
        let mut on = self.on_total;
        if let Some(since) = self.on_since {
            on += now.saturating_duration_since(since);
        }
        let wall = now.saturating_duration_since(self.attached).as_secs_f64();
        if wall <= 0.0 {
            return 100.0;
        }
        (100.0 * on.as_secs_f64() / wall).min(100.0)
    }
}

/// A read-only view of the target list.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    pub pid: u32,
    pub exe: String,
    pub probes: usize,
    pub stats: TargetStats,
    /// The runtime's `fatal error:` message, when its fatal-error probe saw
    /// a concurrent map access kill the target.
    pub runtime_fatal: Option<String>,
    /// Under an overhead budget: share of the time the probes were on, in
    /// percent, and why.
    pub coverage: Option<(f64, Option<String>)>,
    /// Escalated call sites and the share of the time their exit probe
    /// was attached.
    pub exit_sites: Vec<ExitSiteCoverage>,
    /// Call sites the overhead budget detached for part of the time.
    pub narrowed_sites: Vec<NarrowedSiteCoverage>,
}

/// The loaded Go probes and every attached target.
pub struct GoEngine {
    ebpf: aya::Ebpf,
    ring: RingReader,
    counters: KernelCounters,
    /// The kernel's access counts (targets streaming counts).
    counts: AccessCountTable,
    clock: WallClock,
    targets: HashMap<u32, TargetState>,
    last_counters: CounterSnapshot,
    /// Per-process losses as of the last check.
    last_pid_losses: HashMap<u32, PidLosses>,
    /// Per-process totals of targets already detached (their kernel
    /// entries are removed, their losses stay in the global counters).
    forgotten_pid_losses: PidLosses,
    /// Global losses charged to no process, reported so far.
    remainder_reported: PidLosses,
    decode_errors: u64,
    /// Records of a PID no longer (or not yet) attached: late records of a
    /// detached target.
    unattributed: u64,
    /// Drops seen while several targets were attached (not attributable).
    unattributed_drops: u64,
    ring_bytes: u64,
    gauge: Option<RingGauge>,
    batch: Vec<Bytes>,
    records_read: u64,
    /// The program's `uprobe_multi` copy (one link per target, detached
    /// at once), or why targets get one perf link per site.
    multi: Result<MultiProgram, String>,
    /// BPF run-time statistics, on while a target has an overhead budget
    /// (or why they could not be turned on).
    program_stats: Option<Result<std::os::fd::OwnedFd, String>>,
    /// Counters and program runs as of the last budget check.
    budget_counters: CounterSnapshot,
    budget_runs: (u64, u64),
    /// Parked exit probes are removed on threads of their own (a removal
    /// waits for a grace period); they say here when it is done.
    parked_tx: std::sync::mpsc::Sender<ParkDone>,
    parked_rx: std::sync::mpsc::Receiver<ParkDone>,
}

impl GoEngine {
    /// Load the kernel object. Must run inside a tokio runtime.
    pub fn new(load: LoadOptions) -> Result<Self, EngineError> {
        let mut ebpf = probe::load(load)?;
        let ring = RingReader::take(&mut ebpf)?;
        let counters = KernelCounters::take(&mut ebpf)?;
        let counts = AccessCountTable::take(&mut ebpf)?;
        let gauge = RingGauge::map(ring.as_raw_fd());
        let last_counters = counters.read();
        let multi = probe::go::load_programs(&mut ebpf).unwrap_or_else(|e| Err(e.to_string()));
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        Ok(Self {
            parked_tx,
            parked_rx,
            multi,
            ebpf,
            ring,
            counters,
            counts,
            clock: WallClock::new(),
            targets: HashMap::new(),
            last_counters,
            decode_errors: 0,
            unattributed: 0,
            unattributed_drops: 0,
            last_pid_losses: HashMap::new(),
            forgotten_pid_losses: PidLosses::default(),
            remainder_reported: PidLosses::default(),
            ring_bytes: u64::from(load.ring_bytes.max(4096).next_power_of_two()),
            gauge,
            batch: Vec::with_capacity(1024),
            records_read: 0,
            program_stats: None,
            budget_counters: CounterSnapshot::default(),
            budget_runs: (0, 0),
        })
    }

    /// How probes are attached: `uprobe_multi`, or one perf link per site
    /// and why.
    pub fn link_kind(&self) -> String {
        match &self.multi {
            Ok(_) => "uprobe_multi".into(),
            Err(why) => format!("perf link per site ({why})"),
        }
    }

    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// Place the probes of a planned target.
    pub fn attach(&mut self, planned: PlannedTarget) -> Result<AttachReport, EngineError> {
        let PlannedTarget {
            pid,
            mut plan,
            bias,
            opts,
            identity,
        } = planned;
        if self.targets.contains_key(&pid) {
            return Err(EngineError::AlreadyAttached(pid));
        }
        // The plan was made from the process as it was; if it exec'd or
        // died since, its probes would land on the wrong program.
        if ProcessIdentity::of(pid) != Some(identity) {
            return Err(EngineError::Changed(pid));
        }
        let config =
            probe::go::target_config(&plan, opts.detect, opts.stack_depth, opts.accesses, bias);
        if opts.max_overhead.is_some() && self.program_stats.is_none() {
            // On while this descriptor lives; refused on kernels before
            // 5.8 or without CAP_SYS_ADMIN: the program time is then
            // charged at a calibrated constant.
            self.program_stats =
                Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string()));
            self.budget_counters = self.counters.read();
            self.budget_runs = super::budget::own_program_runs();
        }
        let att = probe::go::attach(&mut self.ebpf, pid, &plan, config, self.multi.as_ref().ok())?;
        let report = AttachReport::new(self.clock.now_unix_ns(), pid, &plan, &att, opts.detect);
        let names = plan.sites.iter().map(|s| s.function.clone()).collect();
        let narrowable = plan
            .sites
            .iter()
            .filter(|s| !s.exit && !s.fatal && !s.g_change)
            .filter(|s| {
                s.call_site
                    .as_deref()
                    .is_some_and(|c| !crate::goexe::in_main_module(c, plan.module_path.as_deref()))
            })
            .map(|s| s.id)
            .collect();
        let resolver = TargetResolver {
            symbols: plan.symbolizer.clone(),
            types: plan.type_names.take(),
            globals: plan.globals.take(),
            watched: plan.watched_globals.clone(),
            pid,
            bias,
        };
        self.targets.insert(
            pid,
            TargetState {
                plan,
                bias,
                exe: report.exe.clone(),
                identity,
                attachment: Some(att),
                enricher: GoEnricher::new(resolver, names, self.clock),
                recent: RecentOverlaps::default(),
                stats: TargetStats {
                    events: 0,
                    accesses: 0,
                    overlaps: 0,
                    access_counts: 0,
                    counted_accesses: 0,
                    dropped: 0,
                    attached_at: Instant::now(),
                    attached_unix_ns: report.ts_ns,
                },
                runtime_fatal: None,
                config,
                budget: opts.max_overhead.map(|pct| BudgetState::new(pid, pct)),
                stepped_exits: opts.stepped_exits,
                exits: Vec::new(),
                accesses: opts.accesses,
                narrowable,
                site_hits: HashMap::new(),
                tallied: 0,
            },
        );
        Ok(report)
    }

    /// Remove a target's probes. Records already in the ring are delivered
    /// to `out` first, so nothing the target did before is lost.
    pub fn detach(&mut self, pid: u32, out: &mut Vec<AuditEvent>) -> Option<TargetInfo> {
        self.drain(out);
        let mut state = self.targets.get_mut(&pid)?.attachment.take();
        let probes = state.as_ref().map_or(0, |a| a.attached.len());
        if let Some(att) = state.take() {
            let _ = att.detach(&mut self.ebpf);
        }
        // Records written between the drain and the detach, and what its
        // probes counted (nothing adds to its counts any more).
        self.drain(out);
        let counted = self.counts.drain_pid(pid);
        self.deliver_counts(counted, out);
        // Its last losses, while it is still a target to attribute them to.
        self.check_losses(out);
        probe::go::forget_losses(&mut self.ebpf, pid);
        if let Some(gone) = self.last_pid_losses.remove(&pid) {
            // Still part of the global totals the remainder is taken from.
            self.forgotten_pid_losses.access_dropped += gone.access_dropped;
            self.forgotten_pid_losses.overlap_dropped += gone.overlap_dropped;
        }
        let t = self.targets.remove(&pid)?;
        let now = Instant::now();
        let narrowed_sites = t.narrowed_sites(now);
        Some(TargetInfo {
            pid,
            exe: t.exe,
            probes,
            stats: t.stats,
            runtime_fatal: t.runtime_fatal,
            coverage: t
                .budget
                .as_ref()
                .map(|b| (b.coverage_pct(now), b.reason.clone())),
            exit_sites: t.exits.iter().map(|e| e.coverage(now)).collect(),
            narrowed_sites,
        })
    }

    /// Read the kernel's access counts (the epoch flips; counting goes on
    /// in the other one) and deliver one `access_counts` event per key.
    pub fn collect_counts(&mut self, out: &mut Vec<AuditEvent>) -> usize {
        let counted = self.counts.drain();
        self.deliver_counts(counted, out)
    }

    fn deliver_counts(
        &mut self,
        mut counted: Vec<(AccessCountKey, AccessCount)>,
        out: &mut Vec<AuditEvent>,
    ) -> usize {
        let before = out.len();
        // In the order the accesses began, per target.
        counted.sort_by_key(|(k, c)| (k.pid, c.first_ns, k.goid, k.ret));
        for (k, c) in counted {
            let Some(t) = self.targets.get_mut(&k.pid) else {
                self.unattributed += 1;
                continue;
            };
            if t.budget.is_some() {
                *t.site_hits.entry(c.probe_id).or_default() += c.count;
                t.tallied += c.count;
            }
            // Counted for a budget's measurement only: the session asked
            // for no access stream.
            if t.accesses != AccessStream::Counts {
                continue;
            }
            if let Some(ev) = t.enricher.counts(&k, &c) {
                t.stats.access_counts += 1;
                t.stats.counted_accesses += c.count;
                t.stats.events += 1;
                out.push(AuditEvent::AccessCounts(ev));
            }
        }
        out.len() - before
    }

    /// Open and close the sampling windows of targets under an overhead
    /// budget (call often: every ~100 ms).
    pub fn run_windows(&mut self) {
        let now = Instant::now();
        let multi = self.multi.as_ref().ok();
        for t in self.targets.values_mut() {
            let Some(b) = &mut t.budget else { continue };
            let elapsed = now.saturating_duration_since(b.schedule).as_millis() as u64;
            let on = b.window.is_on(elapsed);
            if on == b.on_since.is_some() {
                continue;
            }
            b.account(now);
            b.on_since = on.then_some(now);
            // The flag first (closing) or last (opening): a hit in between
            // never runs the full program in a closed window.
            if !on {
                t.config.paused = 1;
                if let Some(att) = t.attachment.as_ref() {
                    let _ = att.set_config(&mut self.ebpf, t.config);
                }
            }
            if let (Some(att), Some(multi)) = (t.attachment.as_mut(), multi) {
                if on {
                    if let Err(why) = att.resume(multi, &t.plan) {
                        b.reason = Some(why);
                    }
                } else {
                    att.suspend();
                }
            }
            if on {
                // Entries were not recorded while the window was closed: a
                // goroutine's record may be an older call at the same site,
                // which its exit must not close. A new salt makes every
                // record written before fail its check (an exit in flight
                // is then counted as a lost exit decision).
                t.config.salt = probe::go::fresh_salt();
                t.config.paused = 0;
                if let Some(att) = t.attachment.as_ref() {
                    let _ = att.set_config(&mut self.ebpf, t.config);
                }
            }
        }
        self.schedule_exits(now);
    }

    /// Arm and park the escalated exit probes of every target: sampled
    /// ones by their duty cycle, all of them while a `--max-overhead`
    /// window is closed.
    fn schedule_exits(&mut self, now: Instant) {
        while let Ok((pid, site, done)) = self.parked_rx.try_recv() {
            if let Some(e) = self
                .targets
                .get_mut(&pid)
                .and_then(|t| t.exits.get_mut(site))
            {
                e.schedule.parked(done);
            }
        }
        for (&pid, t) in &mut self.targets {
            let Some(att) = t.attachment.as_mut() else {
                continue;
            };
            let probes_on = t.budget.as_ref().is_none_or(|b| b.on_since.is_some());
            let sampled = t
                .exits
                .iter()
                .filter(|e| e.schedule.tracking == ExitTracking::Sampled)
                .count()
                .max(1);
            // The target's budget, shared by its sampled sites.
            let budget = STEPPED_EXIT_BUDGET_PCT / 100.0 / sampled as f64;
            for (i, e) in t.exits.iter_mut().enumerate() {
                let Some(index) = e.index else { continue };
                // The exit of a detached call site would meet no entry.
                let probes_on = probes_on && !att.is_narrowed(e.site);
                let hits = if e.stepped {
                    att.stepped_exit_hits(&mut self.ebpf, e.ret)
                        .unwrap_or(e.schedule.kernel_hits())
                } else {
                    0
                };
                match e.schedule.step(now, hits, probes_on, budget) {
                    ExitAction::Keep => {}
                    ExitAction::Arm => {
                        if att.arm_exit(&mut self.ebpf, &t.plan.exe, index).is_err() {
                            e.schedule.arm_failed(now);
                        }
                    }
                    ExitAction::Park => match att.park_exit(&mut self.ebpf, index) {
                        Some(link) => {
                            let tx = self.parked_tx.clone();
                            let spawned = std::thread::Builder::new()
                                .name("exit-park".into())
                                .spawn(move || {
                                    drop(link);
                                    let _ = tx.send((pid, i, Instant::now()));
                                });
                            if spawned.is_err() {
                                // The closure (and the link) was dropped
                                // here: removed on the event path rather
                                // than left on.
                                e.schedule.parked(Instant::now());
                            }
                        }
                        None => e.schedule.parked(now),
                    },
                }
            }
        }
    }

    /// Estimate what the probes cost each target under a budget and, when
    /// over it, narrow what is probed (call every second or so): first the
    /// scope (the hottest call sites outside the main module are detached),
    /// then the sampling window. Each change is delivered as a `coverage`
    /// event.
    ///
    /// The kernel's hit counters are global: with several targets, each
    /// one's estimate charges it every target's hits (an overestimate).
    pub fn check_budgets(&mut self, out: &mut Vec<AuditEvent>) {
        if !self.targets.values().any(|t| t.budget.is_some()) {
            return;
        }
        // Per-site hits of a measurement (and of sessions streaming
        // counts): delivered or tallied before the shares are read.
        if self
            .targets
            .values()
            .any(|t| t.budget.as_ref().is_some_and(|b| b.profiling))
        {
            let counted = self.counts.drain();
            self.deliver_counts(counted, out);
        }
        let now_counters = self.counters.read();
        let prev = self.budget_counters;
        let delta = |c: Counter| now_counters.get(c).saturating_sub(prev.get(c));
        let hits = delta(Counter::GoProbeHits);
        let paused = delta(Counter::GoProbesPaused);
        let exits = delta(Counter::GoExitHits);
        let skipped = delta(Counter::GoMorestackSkipped);
        self.budget_counters = now_counters;
        let measured = matches!(self.program_stats, Some(Ok(_)));
        let runs = super::budget::own_program_runs();
        let program_ns = measured.then(|| runs.0.saturating_sub(self.budget_runs.0));
        self.budget_runs = runs;
        let now = Instant::now();
        let multi = self.multi.as_ref().ok();
        for (&pid, t) in &mut self.targets {
            let Some(b) = &mut t.budget else { continue };
            b.account(now);
            let cpu = super::budget::process_cpu_ns(pid);
            let sample = CostSample {
                wall_ns: now.saturating_duration_since(b.last_check).as_nanos() as u64,
                on_ns: b.on_interval.as_nanos() as u64,
                active_hits: hits.saturating_sub(paused).saturating_sub(skipped),
                exit_hits: exits,
                paused_hits: paused,
                program_ns,
                target_cpu_ns: match (cpu, b.last_cpu_ns) {
                    (Some(c), Some(l)) => c.saturating_sub(l),
                    _ => 0,
                },
            };
            b.last_check = now;
            b.on_interval = Duration::ZERO;
            b.last_cpu_ns = cpu;
            let removes = t.attachment.as_ref().is_some_and(|a| a.is_multi());
            let paused_hit_ns = if removes {
                0.0
            } else {
                super::budget::PAUSED_HIT_NS
            };
            let e = super::budget::estimate(&sample, b.budget_pct, paused_hit_ns);
            let tally = t.take_site_hits();
            if let Some(ev) = Self::scope_step(
                &mut self.ebpf,
                multi,
                &self.clock,
                pid,
                t,
                e.as_ref(),
                tally,
                now,
            ) {
                out.push(AuditEvent::Coverage(ev));
                continue;
            }
            let Some(b) = &mut t.budget else { continue };
            if b.profiling {
                // Measuring per-site hits for the scope step: sampling
                // waits for its decision.
                continue;
            }
            let Some(e) = e else { continue };
            let (cur, new) = (b.window.share(), e.window.share());
            // Narrow at once; widen only by a clear step, so a noisy
            // estimate does not flap between neighbouring windows.
            if e.window == b.window || (new > cur && new < cur + 0.1 && new < 1.0) {
                continue;
            }
            let reason = if new >= 1.0 {
                format!(
                    "within budget: every probe on (estimated {:.1}% of the target's CPU)",
                    e.full_pct
                )
            } else {
                let mut r = format!(
                    "sampling: every probe on would cost an estimated {:.1}% of the target's CPU, over the {}% budget",
                    e.full_pct, b.budget_pct
                );
                if !b.narrowed.is_empty() {
                    r.push_str(&format!(
                        " with {} call sites outside the main module detached",
                        b.narrowed.len()
                    ));
                }
                if e.trap_over_budget {
                    r.push_str(&format!(
                        "; the trap of each hit in a closed window ({paused_hit_ns:.0} ns; the probes are one link per site here, so they stay in place) alone is over the budget: narrow what is probed with --scope"
                    ));
                }
                r
            };
            b.window = e.window;
            b.schedule = now;
            b.reason = Some(reason.clone());
            let narrowed = b.narrowed.len() as u64;
            out.push(AuditEvent::Coverage(Coverage {
                ts_ns: self.clock.now_unix_ns(),
                pid,
                coverage_pct: 100.0 * e.window.share(),
                window_on_ms: e.window.on_ms,
                window_ms: e.window.period_ms,
                estimated_pct: e.full_pct,
                budget_pct: b.budget_pct,
                hits_per_s: e.hits_per_s,
                ns_per_hit: e.ns_per_hit,
                cost_source: cost_source(&e),
                reason,
                step: "sampling".into(),
                narrowed: Vec::new(),
                widened: Vec::new(),
                sites_narrowed: narrowed,
                sites: t.entry_sites(),
            }));
        }
    }

    /// The scope step of one target's budget: detach the hottest call
    /// sites outside the main module when over budget (measuring per-site
    /// hits first when the session streams none), attach detached ones
    /// again when well under it. The change, if any, as a `coverage` event.
    #[allow(clippy::too_many_arguments)]
    fn scope_step(
        ebpf: &mut aya::Ebpf,
        multi: Option<&MultiProgram>,
        clock: &WallClock,
        pid: u32,
        t: &mut TargetState,
        e: Option<&Estimate>,
        tally: Option<(HashMap<u16, u64>, u64)>,
        now: Instant,
    ) -> Option<Coverage> {
        let b = t.budget.as_mut()?;
        let was_profiling = std::mem::take(&mut b.profiling);
        if was_profiling && t.accesses == AccessStream::None {
            t.config.emit_access = t.accesses.kernel_value();
            if let Some(att) = t.attachment.as_ref() {
                let _ = att.set_config(ebpf, t.config);
            }
        }
        let over = e.is_some_and(|e| e.full_cost_ns > e.allowed_ns);
        let candidates: Vec<u16> = t
            .narrowable
            .iter()
            .copied()
            .filter(|id| !b.narrowed.iter().any(|n| n.site == *id))
            .collect();
        let mut narrow = Vec::new();
        let mut widen = Vec::new();
        let mut kept = 1.0;
        if let Some(e) = e.filter(|_| over && !candidates.is_empty()) {
            match &tally {
                Some((hits, total)) => {
                    let c: Vec<SiteHits> = candidates
                        .iter()
                        .map(|&id| SiteHits {
                            site: usize::from(id),
                            hits: hits.get(&id).copied().unwrap_or(0),
                        })
                        .collect();
                    for site in super::budget::choose_narrowing(e, &c, *total) {
                        let id = site as u16;
                        let share = hits.get(&id).copied().unwrap_or(0) as f64 / *total as f64;
                        kept -= share;
                        narrow.push((id, share * e.hits_per_s));
                    }
                    if narrow.is_empty() {
                        b.next_profile = now + PROFILE_AGAIN_AFTER;
                    }
                }
                None if !was_profiling && now >= b.next_profile => {
                    // Shares are needed: the kernel counts per site until
                    // the next check (counts the session never sees).
                    b.profiling = true;
                    if t.accesses == AccessStream::None {
                        t.config.emit_access = AccessStream::Counts.kernel_value();
                        if let Some(att) = t.attachment.as_ref() {
                            let _ = att.set_config(ebpf, t.config);
                        }
                    }
                    return None;
                }
                None => {}
            }
        } else if !over && !b.narrowed.is_empty() {
            let list: Vec<NarrowedSite> = b
                .narrowed
                .iter()
                .map(|n| NarrowedSite {
                    site: usize::from(n.site),
                    hits_per_s: n.hits_per_s,
                    rest_hits_per_s: n.rest_hits_per_s,
                    narrowed_ms: now.saturating_duration_since(n.since).as_millis() as u64,
                    hold_ms: n.hold_ms,
                })
                .collect();
            widen = super::budget::choose_widening(e, &list);
        }
        if narrow.is_empty() && widen.is_empty() {
            return None;
        }
        // The new set of detached sites.
        let rest_hits_per_s = e.map_or(0.0, |e| e.hits_per_s * kept.max(0.0));
        let mut widened = Vec::new();
        b.narrowed.retain(|n| {
            if widen.contains(&usize::from(n.site)) {
                let h = b.narrow_history.entry(n.site).or_default();
                h.total += now.saturating_duration_since(n.since);
                widened.push((n.site, n.hits_per_s));
                false
            } else {
                true
            }
        });
        for &(id, hits_per_s) in &narrow {
            let h = b.narrow_history.entry(id).or_default();
            h.times += 1;
            b.narrowed.push(NarrowState {
                site: id,
                since: now,
                hits_per_s,
                rest_hits_per_s,
                hold_ms: super::budget::hold_ms(h.times),
            });
        }
        let set: std::collections::BTreeSet<u16> = b.narrowed.iter().map(|n| n.site).collect();
        let window_open = b.on_since.is_some();
        let mut error = None;
        if let Some(att) = t.attachment.as_mut() {
            // Paused while one link is replaced: no hit runs the full
            // program half-placed.
            if att.is_multi() && window_open {
                t.config.paused = 1;
                let _ = att.set_config(ebpf, t.config);
            }
            if let Err(why) = att.narrow(ebpf, multi, &t.plan, &set) {
                error = Some(why);
            }
            // Entries were missed while sites were off: records written
            // before must not be closed by a later exit (a new salt), and
            // the goroutine cache generation is the one just renewed.
            t.config.salt = probe::go::fresh_salt();
            t.config.paused = u32::from(!window_open);
            let _ = att.set_config(ebpf, t.config);
        }
        let e = e?;
        let (window, trap_over) = if narrow.is_empty() {
            (b.window, false)
        } else {
            e.window_keeping(kept.max(0.0))
        };
        let mut reason = if !narrow.is_empty() {
            let mut r = format!(
                "scope narrowed: every probe on would cost an estimated {:.1}% of the target's CPU, over the {}% budget; detached {} call site{} outside the main module ({:.0}% of the hits), {} detached in all",
                e.full_pct,
                b.budget_pct,
                narrow.len(),
                if narrow.len() == 1 { "" } else { "s" },
                100.0 * (1.0 - kept),
                b.narrowed.len()
            );
            if window.share() < 1.0 {
                r.push_str(&format!(
                    "; still over budget: sampling {:.0}% of the time",
                    100.0 * window.share()
                ));
                if trap_over {
                    r.push_str(" (the traps of closed windows alone are over the budget)");
                }
            } else {
                r.push_str(&format!(
                    "; estimated {:.1}% with every other probe on",
                    e.pct_keeping(kept.max(0.0))
                ));
            }
            r
        } else {
            format!(
                "scope widened: {} call site{} attached again after their hold (estimated {:.1}% of the target's CPU without them, under half the {}% budget), {} detached still",
                widened.len(),
                if widened.len() == 1 { "" } else { "s" },
                e.full_pct,
                b.budget_pct,
                b.narrowed.len()
            )
        };
        if let Some(why) = &error {
            reason.push_str(&format!("; {why}"));
        }
        if window != b.window {
            b.window = window;
            b.schedule = now;
        }
        b.reason = Some(reason.clone());
        let budget_pct = b.budget_pct;
        let sites_narrowed = b.narrowed.len() as u64;
        Some(Coverage {
            ts_ns: clock.now_unix_ns(),
            pid,
            coverage_pct: 100.0 * window.share(),
            window_on_ms: window.on_ms,
            window_ms: window.period_ms,
            estimated_pct: e.full_pct,
            budget_pct,
            hits_per_s: e.hits_per_s,
            ns_per_hit: e.ns_per_hit,
            cost_source: cost_source(e),
            reason,
            step: "scope".into(),
            narrowed: narrow.iter().map(|&(id, h)| t.scope_site(id, h)).collect(),
            widened: widened.iter().map(|&(id, h)| t.scope_site(id, h)).collect(),
            sites_narrowed,
            sites: t.entry_sites(),
        })
    }

    /// Wait up to `timeout` for records, then deliver every available one.
    pub async fn read(&mut self, out: &mut Vec<AuditEvent>, timeout: Duration) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        self.ring.read_batch(&mut batch, timeout).await;
        let n = self.dispatch(&mut batch, out);
        self.batch = batch;
        n
    }

    /// Wait until the ring buffer has records (or `timeout` passes), without
    /// reading them: lets a caller select between the ring and other work.
    pub async fn readable(&mut self, timeout: Duration) {
        self.ring.wait_readable(timeout).await;
    }

    /// Deliver every record available now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<AuditEvent>) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        self.ring.drain(&mut batch);
        let n = self.dispatch(&mut batch, out);
        self.batch = batch;
        n
    }

    fn dispatch(&mut self, batch: &mut Vec<Bytes>, out: &mut Vec<AuditEvent>) -> usize {
        let before = out.len();
        self.records_read += batch.len() as u64;
        let mut escalations = Vec::new();
        for bytes in batch.drain(..) {
            let rec = match decode(&bytes) {
                Ok(r) => r,
                Err(_) => {
                    self.decode_errors += 1;
                    continue;
                }
            };
            let pid = match &rec {
                RawRecord::GoAccess(a) => a.header.pid,
                RawRecord::GoOverlap(o) => o.header.pid,
                RawRecord::GoEscalate(e) => {
                    escalations.push(*e);
                    continue;
                }
                RawRecord::BpfSyscall(_) => continue,
            };
            let Some(t) = self.targets.get_mut(&pid) else {
                self.unattributed += 1;
                continue;
            };
            let ev = match rec {
                RawRecord::GoAccess(a) => match t.tally_record(&a) {
                    Some(a) => {
                        t.stats.accesses += 1;
                        AuditEvent::Access(a)
                    }
                    None => continue,
                },
                RawRecord::GoOverlap(o) => {
                    let o = t.enricher.overlap(&o);
                    if o.detection == crate::event::DetectionMode::RuntimeFatal
                        && t.runtime_fatal.is_none()
                    {
                        t.runtime_fatal = Some(runtime_fatal_message(o.second.op).to_string());
                    }
                    if t.recent.is_repeat(&o) {
                        continue;
                    }
                    t.stats.overlaps += 1;
                    AuditEvent::Overlap(o)
                }
                RawRecord::BpfSyscall(_) | RawRecord::GoEscalate(_) => continue,
            };
            t.stats.events += 1;
            out.push(ev);
        }
        for e in escalations {
            if let Some(ev) = self.escalate(&e) {
                out.push(AuditEvent::Escalation(ev));
            }
        }
        out.len() - before
    }

    /// The kernel saw a call site read a map another goroutine writes: probe
    /// the call's return address, so the read's exit can tell whether a
    /// writer entered meanwhile (`cookie::CALLSITE`).
    fn escalate(&mut self, e: &auditor_common::go_map::GoEscalate) -> Option<Escalation> {
        let t = self.targets.get_mut(&e.header.pid)?;
        if t.exits.iter().any(|x| x.ret == e.ret) {
            // Asked again after the kernel's table of escalated sites
            // evicted it: the probe is in place (or parked) already.
            return None;
        }
        let att = t.attachment.as_mut()?;
        let link_addr = e.ret.wrapping_sub(t.bias);
        let frame = t.plan.symbolizer.lookup_return_address(link_addr);
        let mut ev = Escalation {
            ts_ns: self.clock.to_unix_ns(e.header.ts_ns),
            pid: e.header.pid,
            map: e.map,
            op: auditor_common::go_map::MapOp::from_u8(e.op)
                .unwrap_or(auditor_common::go_map::MapOp::Read),
            runtime_fn: t
                .plan
                .sites
                .get(usize::from(e.probe_id))
                .map(|s| s.function.clone())
                .unwrap_or_default(),
            function: frame
                .as_ref()
                .map(|f| f.function.clone())
                .unwrap_or_default(),
            file: frame.as_ref().map(|f| f.file.clone()).unwrap_or_default(),
            line: frame.as_ref().map_or(0, |f| f.line),
            pc: e.ret,
            instruction: String::new(),
            emulated: false,
            tracking: String::new(),
            error: None,
        };
        match t.plan.call_site(link_addr, e.probe_id) {
            Some(cs) => {
                ev.instruction = cs.site.instruction.clone();
                ev.emulated = cs.site.emulated;
                let tracking = match (cs.site.emulated, t.stepped_exits) {
                    (true, _) | (false, SteppedExits::Always) => ExitTracking::Always,
                    (false, SteppedExits::Sampled) => ExitTracking::Sampled,
                    (false, SteppedExits::Off) => ExitTracking::Off,
                };
                ev.tracking = tracking.as_str().into();
                let armed = tracking != ExitTracking::Off;
                match att.attach_site(&mut self.ebpf, &t.plan.exe, &cs, armed) {
                    Ok(index) => t.exits.push(ExitSite {
                        site: e.probe_id,
                        index: armed.then_some(index),
                        ret: e.ret,
                        function: ev.function.clone(),
                        file: ev.file.clone(),
                        line: ev.line,
                        instruction: ev.instruction.clone(),
                        stepped: !cs.site.emulated,
                        schedule: ExitSchedule::new(tracking, Instant::now()),
                    }),
                    Err(why) => ev.error = Some(why),
                }
            }
            None => {
                ev.error = Some(format!(
                    "return address {:#x} is not in {}",
                    e.ret,
                    t.plan.exe.display()
                ));
            }
        }
        Some(ev)
    }

    /// Turn increases of the kernel's drop counters into `lost` events.
    ///
    /// The counters are global to the loaded object: a drop is attributed
    /// to a target only while it is the only one attached; otherwise the
    /// event carries pid 0 (not attributable).
    pub fn check_losses(&mut self, out: &mut Vec<AuditEvent>) {
        // Lost records are also counted per process in the kernel, so each
        // target is told what it lost; the global counters cover the rest.
        // The kernel bumps the global counter before the per-process one,
        // so the global totals are read first: what they hold beyond the
        // per-process totals read after them is never more than what no
        // process was charged with. The remainder is reported from
        // cumulative totals, so a loss counted globally in one check and
        // per process in the next is never said twice.
        let now = self.counters.read();
        let per_pid = self.read_pid_losses();
        let prev = self.last_counters;
        let sole = (self.targets.len() == 1)
            .then(|| self.targets.keys().next().copied())
            .flatten();
        if let Some(per_pid) = &per_pid {
            for (&pid, l) in per_pid {
                let before = self.last_pid_losses.get(&pid).copied().unwrap_or_default();
                for (what, delta, total) in [
                    (
                        "access",
                        l.access_dropped.saturating_sub(before.access_dropped),
                        l.access_dropped,
                    ),
                    (
                        "overlap",
                        l.overlap_dropped.saturating_sub(before.overlap_dropped),
                        l.overlap_dropped,
                    ),
                ] {
                    if delta == 0 {
                        continue;
                    }
                    match self.targets.get_mut(&pid) {
                        Some(t) => t.stats.dropped += delta,
                        None => self.unattributed_drops += delta,
                    }
                    out.push(AuditEvent::Lost(Lost {
                        ts_ns: self.clock.now_unix_ns(),
                        pid,
                        what: what.into(),
                        count: delta,
                        total,
                    }));
                }
            }
        }
        for LossCounter { counter: c, what } in GO_LOSSES {
            let charged = |l: &PidLosses| match c {
                Counter::GoAccessDropped => Some(l.access_dropped),
                Counter::GoOverlapDropped => Some(l.overlap_dropped),
                _ => None,
            };
            let delta = match (&per_pid, charged(&self.forgotten_pid_losses)) {
                (Some(per_pid), Some(forgotten)) => {
                    let per_process: u64 =
                        forgotten + per_pid.values().filter_map(charged).sum::<u64>();
                    let remainder = now.get(c).saturating_sub(per_process);
                    let slot = if c == Counter::GoAccessDropped {
                        &mut self.remainder_reported.access_dropped
                    } else {
                        &mut self.remainder_reported.overlap_dropped
                    };
                    let delta = remainder.saturating_sub(*slot);
                    *slot += delta;
                    delta
                }
                _ => now.get(c).saturating_sub(prev.get(c)),
            };
            if delta == 0 {
                continue;
            }
            let is_drop = matches!(
                c,
                Counter::GoAccessDropped | Counter::GoOverlapDropped | Counter::GoAccessCountsFull
            );
            match sole.and_then(|p| self.targets.get_mut(&p)) {
                Some(t) if is_drop => t.stats.dropped += delta,
                None if is_drop => self.unattributed_drops += delta,
                _ => {}
            }
            out.push(AuditEvent::Lost(Lost {
                ts_ns: self.clock.now_unix_ns(),
                pid: sole.unwrap_or(0),
                what: what.into(),
                count: delta,
                total: now.get(c),
            }));
        }
        self.last_counters = now;
        if let Some(per_pid) = per_pid {
            self.last_pid_losses = per_pid;
        }
    }

    /// The kernel's per-process loss table, or `None` if it cannot be read.
    fn read_pid_losses(&self) -> Option<HashMap<u32, PidLosses>> {
        let map = self.ebpf.map(PID_LOSSES_MAP)?;
        let table = aya::maps::HashMap::<_, u32, PidLosses>::try_from(map).ok()?;
        Some(table.iter().filter_map(Result::ok).collect())
    }

    /// Counters as of the last [`Self::check_losses`].
    pub fn counters(&self) -> &CounterSnapshot {
        &self.last_counters
    }

    /// Records dropped in the kernel or undecodable, over all targets.
    pub fn dropped(&self) -> u64 {
        let c = &self.last_counters;
        c.get(Counter::GoAccessDropped)
            + c.get(Counter::GoOverlapDropped)
            + c.get(Counter::GoAccessCountsFull)
            + self.decode_errors
    }

    /// Records read from the ring buffer since load.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// Records whose PID had no attached target (late records of a detached
    /// target).
    pub fn unattributed_records(&self) -> u64 {
        self.unattributed
    }

    /// Ring buffer bytes written and not yet read, and its size. `None`
    /// when the positions could not be mapped.
    pub fn ring_fill(&self) -> Option<(u64, u64)> {
        self.gauge.as_ref().map(|g| (g.used(), self.ring_bytes))
    }

    pub fn is_attached(&self, pid: u32) -> bool {
        self.targets.contains_key(&pid)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn target(&self, pid: u32) -> Option<TargetInfo> {
        self.targets.get(&pid).map(|t| TargetInfo {
            pid,
            exe: t.exe.clone(),
            probes: t.attachment.as_ref().map_or(0, |a| a.attached.len()),
            stats: t.stats,
            runtime_fatal: t.runtime_fatal.clone(),
            coverage: t
                .budget
                .as_ref()
                .map(|b| (b.coverage_pct(Instant::now()), b.reason.clone())),
            exit_sites: t.exits.iter().map(|e| e.coverage(Instant::now())).collect(),
            narrowed_sites: t.narrowed_sites(Instant::now()),
        })
    }

    pub fn targets(&self) -> Vec<TargetInfo> {
        let mut v: Vec<_> = self
            .targets
            .keys()
            .filter_map(|&p| self.target(p))
            .collect();
        v.sort_by_key(|t| t.pid);
        v
    }

    /// Targets whose process exited or exec'd since they were attached.
    pub fn changed_targets(&self) -> Vec<(u32, TargetChange)> {
        let mut out = Vec::new();
        for (&pid, t) in &self.targets {
            match ProcessIdentity::of(pid) {
                None => out.push((pid, TargetChange::Exited)),
                Some(id) if id.start_time != t.identity.start_time => {
                    out.push((pid, TargetChange::Exited))
                }
                Some(id) if id != t.identity => out.push((pid, TargetChange::Exec)),
                Some(_) => {}
            }
        }
        out.sort_by_key(|(p, _)| *p);
        out
    }
}
