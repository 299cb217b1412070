//! Go audit sessions: `attach --pid` and `run -- PROGRAM`.
//!
//! Both end the same way: on Ctrl-C, SIGTERM, `--duration` or the target's
//! exit the ring buffer is drained one last time (so an overlap recorded a
//! microsecond before the runtime's fatal error still reaches the log), the
//! probes are detached and a summary is written.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, IsTerminal, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use auditor_common::{
    Counter,
    go_map::{GoTargetConfig, mode},
};
use bytes::Bytes;

use crate::{
    cli::{AttachArgs, DetectMode, Format, GoAuditOptions, RunArgs},
    event::{AttachReport, AttachedProbe, AuditEvent, Lost, Summary},
    output::live::LiveLog,
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        enrich::{FrameResolver, GoEnricher},
        filter::{AccessFilter, parse_addr, parse_op},
        ring::RingReader,
    },
    probe::{self, LoadOptions, counters::KernelCounters},
    target::{PlanOptions, ProbePlan},
};

/// Fail early, in one line, when we cannot possibly load BPF.
pub fn require_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "map-auditor needs root to load BPF programs and attach uprobes: run it with sudo \
             (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE); `map-auditor doctor` checks this machine"
        );
    }
    Ok(())
}

fn filter_from(opts: &GoAuditOptions) -> Result<AccessFilter> {
    let ops = if opts.ops.is_empty() {
        None
    } else {
        Some(
            opts.ops
                .iter()
                .map(|s| parse_op(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?,
        )
    };
    let map = opts
        .map
        .as_deref()
        .map(parse_addr)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    Ok(AccessFilter {
        ops,
        map,
        function: opts.function.clone(),
        package: opts.package.clone(),
        quiet: opts.quiet,
    })
}

/// How the target ended, when it did.
#[derive(Clone, Debug, Default)]
struct TargetEnd {
    exit_code: Option<i32>,
    signal: Option<i32>,
    fatal: Option<String>,
}

/// Where the events go.
struct Sinks {
    live: LiveLog<Box<dyn Write>>,
    record: Option<BufWriter<File>>,
    filter: AccessFilter,
}

impl Sinks {
    fn new(opts: &GoAuditOptions) -> Result<Self> {
        let stdout = std::io::stdout();
        let colour = opts.format == Format::Text && stdout.is_terminal();
        let mut live = LiveLog::new(
            Box::new(BufWriter::new(stdout)) as Box<dyn Write>,
            opts.format,
            colour,
        );
        live.show_plan = opts.show_plan;
        let record = match &opts.record {
            Some(p) => {
                Some(BufWriter::new(File::create(p).with_context(|| {
                    format!("cannot create recording {}", p.display())
                })?))
            }
            None => None,
        };
        Ok(Self {
            live,
            record,
            filter: filter_from(opts)?,
        })
    }

    fn emit(&mut self, ev: &AuditEvent) -> Result<()> {
        if let Some(r) = &mut self.record {
            serde_json::to_writer(&mut *r, ev)?;
            r.write_all(b"\n")?;
            if matches!(
                ev,
                AuditEvent::Overlap(_) | AuditEvent::Summary(_) | AuditEvent::Lost(_)
            ) {
                r.flush()?;
            }
        }
        if self.filter.passes(ev) {
            // A closed stdout (e.g. `| head`) must not stop the audit.
            let _ = self.live.write(ev);
        }
        Ok(())
    }

    fn flush(&mut self) {
        let _ = self.live.flush();
        if let Some(r) = &mut self.record {
            let _ = r.flush();
        }
    }
}

fn config_for(plan: &ProbePlan, opts: &GoAuditOptions, emit_access: bool) -> GoTargetConfig {
    GoTargetConfig {
        goid_off: plan.offsets.goid,
        writing_off: plan.offsets.writing,
        writing_mask: plan.offsets.writing_mask as u32,
        iter_map_off: plan.offsets.iter_map,
        mode: match opts.detect {
            DetectMode::Entry => mode::ENTRY,
            DetectMode::Interval => mode::INTERVAL,
        },
        stack_depth: opts.stack_depth,
        emit_access: emit_access as u32,
        _pad: 0,
    }
}

fn attach_report(
    pid: u32,
    plan: &ProbePlan,
    att: &probe::go::GoAttachment,
    opts: &GoAuditOptions,
    clock: &WallClock,
) -> AttachReport {
    let v = plan.go_version;
    AttachReport {
        ts_ns: clock.now_unix_ns(),
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
        detect: match opts.detect {
            DetectMode::Entry => "entry",
            DetectMode::Interval => "interval",
        }
        .into(),
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
            })
            .collect(),
        missing: plan.missing.clone(),
        failed: att
            .failed
            .iter()
            .map(|(s, why)| format!("{}+{:#x}: {why}", s.function, s.addr - s.func_addr))
            .collect(),
    }
}

/// Call sites of one target: pclntab lookups at link-time addresses.
pub struct TargetResolver {
    symbols: crate::target::Symbolizer,
    types: Option<crate::target::TypeNamer>,
    /// Runtime minus link-time address (non-zero for PIE).
    bias: u64,
}

impl FrameResolver for TargetResolver {
    fn resolve_return(&self, pc: u64) -> Option<crate::event::Frame> {
        let mut f = self
            .symbols
            .lookup_return_address(pc.wrapping_sub(self.bias))?;
        f.pc = pc;
        Some(f)
    }

    fn map_type_name(&self, maptype: u64) -> Option<String> {
        self.types
            .as_ref()?
            .type_name(maptype.wrapping_sub(self.bias))
    }
}

/// Running totals of a session.
#[derive(Default)]
struct Totals {
    events: u64,
    accesses: u64,
    overlaps: u64,
    decode_errors: u64,
    last_counters: probe::counters::CounterSnapshot,
}

/// Everything one Go audit session holds.
struct GoSession {
    pid: u32,
    ebpf: aya::Ebpf,
    ring: RingReader,
    counters: KernelCounters,
    attachment: Option<probe::go::GoAttachment>,
    enricher: GoEnricher<TargetResolver>,
    sinks: Sinks,
    clock: WallClock,
    totals: Totals,
    started: Instant,
    recent: RecentOverlaps,
}

/// The runtime's fatal error usually follows an overlap the entry probe
/// already reported (same map, same two goroutines, microseconds apart):
/// that confirmation is not a second finding.
#[derive(Default)]
struct RecentOverlaps {
    seen: std::collections::VecDeque<(u64, u64, u64, u64)>,
}

impl RecentOverlaps {
    const WINDOW_NS: u64 = 10_000_000;

    fn is_repeat(&mut self, o: &crate::event::Overlap) -> bool {
        let pair = (
            o.first.goid.min(o.second.goid),
            o.first.goid.max(o.second.goid),
        );
        let repeat = o.detection == crate::event::DetectionMode::RuntimeFatal
            && self.seen.iter().any(|&(map, a, b, ts)| {
                map == o.map && (a, b) == pair && o.ts_ns.saturating_sub(ts) < Self::WINDOW_NS
            });
        self.seen.push_back((o.map, pair.0, pair.1, o.ts_ns));
        if self.seen.len() > 64 {
            self.seen.pop_front();
        }
        repeat
    }
}

impl GoSession {
    fn start(pid: u32, opts: &GoAuditOptions) -> Result<Self> {
        let mut plan = ProbePlan::for_pid_with(
            pid,
            PlanOptions {
                exit_sites: opts.detect == DetectMode::Interval,
                function_start: opts.placement == crate::cli::Placement::FunctionStart,
            },
        )?;
        if plan.sites.is_empty() {
            bail!(
                "pid {pid} ({}) contains no Go map functions to probe; is it a Go program that uses maps?",
                plan.exe.display()
            );
        }
        let mut ebpf = probe::load(LoadOptions {
            ring_bytes: opts.ring_mib.saturating_mul(1 << 20),
            ..LoadOptions::default()
        })?;
        let ring = RingReader::take(&mut ebpf)?;
        let counters = KernelCounters::take(&mut ebpf)?;
        let clock = WallClock::new();
        let sinks = Sinks::new(opts)?;
        // With --quiet and no recording nobody reads accesses: the kernel
        // then only reports findings, which keeps the ring buffer quiet.
        let emit_access = !opts.quiet || opts.record.is_some();
        let att = probe::go::attach(&mut ebpf, pid, &plan, config_for(&plan, opts, emit_access))?;
        let report = attach_report(pid, &plan, &att, opts, &clock);
        let names = plan.sites.iter().map(|s| s.function.clone()).collect();
        let resolver = TargetResolver {
            symbols: plan.symbolizer.clone(),
            types: plan.type_names.take(),
            bias: plan.load_bias(pid)?,
        };
        let mut session = Self {
            pid,
            ebpf,
            ring,
            counters,
            attachment: Some(att),
            enricher: GoEnricher::new(resolver, names, clock),
            sinks,
            clock,
            totals: Totals::default(),
            started: Instant::now(),
            recent: RecentOverlaps::default(),
        };
        session.sinks.emit(&AuditEvent::Attach(report))?;
        session.sinks.flush();
        Ok(session)
    }

    fn handle(&mut self, batch: &mut Vec<Bytes>) -> Result<()> {
        for bytes in batch.drain(..) {
            let ev = match decode(&bytes) {
                Ok(RawRecord::GoAccess(a)) => match self.enricher.access(&a) {
                    Some(a) => {
                        self.totals.accesses += 1;
                        AuditEvent::Access(a)
                    }
                    None => continue,
                },
                Ok(RawRecord::GoOverlap(o)) => {
                    let o = self.enricher.overlap(&o);
                    if self.recent.is_repeat(&o) {
                        continue;
                    }
                    self.totals.overlaps += 1;
                    AuditEvent::Overlap(o)
                }
                Ok(RawRecord::BpfSyscall(_)) => continue,
                Err(_) => {
                    self.totals.decode_errors += 1;
                    continue;
                }
            };
            self.totals.events += 1;
            self.sinks.emit(&ev)?;
        }
        Ok(())
    }

    /// Turn kernel drop counters into `lost` events.
    fn check_losses(&mut self) -> Result<()> {
        let now = self.counters.read();
        let prev = self.totals.last_counters;
        for (what, c) in [
            ("access", Counter::GoAccessDropped),
            ("overlap", Counter::GoOverlapDropped),
            ("map_state", Counter::GoStateFull),
            ("interval_slot", Counter::GoSlotsFull),
            ("unreadable", Counter::GoReadFailed),
        ] {
            let delta = now.get(c).saturating_sub(prev.get(c));
            if delta > 0 {
                let ev = AuditEvent::Lost(Lost {
                    ts_ns: self.clock.now_unix_ns(),
                    pid: self.pid,
                    what: what.into(),
                    count: delta,
                    total: now.get(c),
                });
                self.sinks.emit(&ev)?;
            }
        }
        self.totals.last_counters = now;
        Ok(())
    }

    fn dropped(&self) -> u64 {
        let c = &self.totals.last_counters;
        c.get(Counter::GoAccessDropped)
            + c.get(Counter::GoOverlapDropped)
            + self.totals.decode_errors
    }

    async fn pump(
        &mut self,
        stop: &AtomicBool,
        deadline: Option<Instant>,
        target_gone: &dyn Fn() -> bool,
    ) -> Result<()> {
        let mut batch = Vec::with_capacity(1024);
        let mut last_check = Instant::now();
        loop {
            self.ring
                .read_batch(&mut batch, Duration::from_millis(100))
                .await;
            self.handle(&mut batch)?;
            if last_check.elapsed() >= Duration::from_secs(1) {
                self.check_losses()?;
                self.sinks.flush();
                last_check = Instant::now();
            }
            if stop.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
                || target_gone()
            {
                break;
            }
        }
        // Last records written before the target died or we were told to stop.
        self.ring.drain(&mut batch);
        self.handle(&mut batch)?;
        Ok(())
    }

    fn finish(mut self, end: TargetEnd) -> Result<()> {
        if let Some(att) = self.attachment.take() {
            let _ = att.detach(&mut self.ebpf);
        }
        let mut batch = Vec::new();
        self.ring.drain(&mut batch);
        self.handle(&mut batch)?;
        self.check_losses()?;
        let summary = Summary {
            ts_ns: self.clock.now_unix_ns(),
            pid: self.pid,
            events: self.totals.events,
            accesses: self.totals.accesses,
            overlaps: self.totals.overlaps,
            dropped: self.dropped(),
            probe_hits: self.totals.last_counters.get(Counter::GoProbeHits),
            duration_ms: self.started.elapsed().as_millis() as u64,
            target_exit_code: end.exit_code,
            target_signal: end.signal,
            target_fatal: end.fatal,
        };
        self.sinks.emit(&AuditEvent::Summary(summary))?;
        self.sinks.flush();
        Ok(())
    }
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ] {
        let stop = stop.clone();
        if let Ok(mut sig) = tokio::signal::unix::signal(kind) {
            tokio::spawn(async move {
                sig.recv().await;
                stop.store(true, Ordering::Relaxed);
            });
        }
    }
    stop
}

fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID but no longer runs code.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// `map-auditor attach --pid PID`.
pub async fn attach(args: &AttachArgs) -> Result<i32> {
    require_privileges()?;
    let pid = args.pid;
    let stop = stop_flag();
    let mut session = GoSession::start(pid, &args.opts)?;
    let deadline = args.opts.duration.map(|d| Instant::now() + d);
    session
        .pump(&stop, deadline, &|| !process_alive(pid))
        .await?;
    session.finish(TargetEnd::default())?;
    Ok(0)
}

/// `map-auditor run -- PROGRAM ARGS`: the program is stopped at its first
/// instruction (ptrace stop after exec), probed, then released.
pub async fn run(args: &RunArgs) -> Result<i32> {
    require_privileges()?;
    let (prog, rest) = args.command.split_first().context("no program given")?;
    let mut cmd = Command::new(prog);
    cmd.args(rest).stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot start {prog}: check the path and that it is executable")
    })?;
    let pid = child.id();
    // The child stops with SIGTRAP right after exec, before its first instruction.
    let mut status = 0;
    // SAFETY: waiting on our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    if r != pid as i32 || !libc::WIFSTOPPED(status) {
        bail!("{prog} did not start (it exited before it could be probed)");
    }
    let session = GoSession::start(pid, &args.opts);
    // Release the target whether or not probing worked.
    // SAFETY: detaching our own traced child.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as i32, 0, 0) };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };

    // Pass the target's stderr through, remembering the runtime's fatal error.
    let fatal = Arc::new(std::sync::Mutex::new(None::<String>));
    let stderr = child.stderr.take();
    let fatal_w = fatal.clone();
    let pump_stderr = std::thread::spawn(move || {
        let Some(stderr) = stderr else { return };
        let mut out = std::io::stderr();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(msg) = line.strip_prefix("fatal error: ") {
                let mut f = fatal_w.lock().unwrap();
                if f.is_none() {
                    *f = Some(msg.to_string());
                }
            }
            let _ = writeln!(out, "{line}");
        }
    });
    let exited = Arc::new(std::sync::Mutex::new(None::<std::process::ExitStatus>));
    let exited_w = exited.clone();
    let waiter = std::thread::spawn(move || {
        if let Ok(st) = child.wait() {
            *exited_w.lock().unwrap() = Some(st);
        }
    });

    let stop = stop_flag();
    let deadline = args.opts.duration.map(|d| Instant::now() + d);
    let gone = || exited.lock().unwrap().is_some();
    session.pump(&stop, deadline, &gone).await?;
    let status = *exited.lock().unwrap();
    if status.is_some() {
        let _ = waiter.join();
        let _ = pump_stderr.join();
    }
    let end = TargetEnd {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        fatal: fatal.lock().unwrap().clone(),
    };
    session.finish(end.clone())?;
    Ok(match (end.exit_code, end.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 0,
    })
}
