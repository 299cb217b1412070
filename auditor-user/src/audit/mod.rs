//! Go audit sessions: `attach --pid` and `run -- PROGRAM`.
//!
//! Both end the same way: on Ctrl-C, SIGTERM, `--duration` or the target's
//! exit the ring buffer is drained one last time (so an overlap recorded a
//! microsecond before the runtime's fatal error still reaches the log), the
//! probes are detached and a summary is written.
//!
//! - [`engine`]: the loaded probes serving any number of targets; these
//!   sessions use it with one, the daemon with many.

pub mod budget;
pub mod engine;
pub mod exits;
pub mod signals;

use std::{
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use auditor_common::Counter;

use crate::{
    event::{AuditEvent, Summary, target::FatalUnattributed},
    output::{
        live::{self, LiveLog},
        pipe::StdoutClosed,
        sink::{Recording, Sink},
        stream::LiveStream,
        tally::FindingTally,
    },
    pipeline::filter::AccessFilter,
    settings::{AccessStream, Format, GoAuditSettings},
};
use engine::{GoEngine, TargetOptions};
use signals::SignalWatch;

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

/// How the target ended, when it did.
#[derive(Clone, Debug, Default)]
struct TargetEnd {
    exit_code: Option<i32>,
    signal: Option<i32>,
    fatal: Option<String>,
}

/// How long the end of a session waits for a slow reader: first for
/// queued access lines, then for the findings and summary.
const END_GRACE: Duration = Duration::from_millis(300);
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Queued live-log bytes a slow reader may be behind before access lines
/// are shed.
const LIVE_BUDGET: usize = 4 << 20;

/// Where the events go: the live log (through its writer thread), the
/// recording, and stderr for findings and the banner.
struct Sinks {
    render: LiveLog<Vec<u8>>,
    stream: LiveStream,
    record: Option<Recording<BufWriter<File>>>,
    filter: AccessFilter,
    format: Format,
    /// Findings also go to stderr when the live log is not on a terminal.
    stderr_findings: Option<LiveLog<Vec<u8>>>,
    /// Attach lines on stdout too (a terminal gets the banner on stderr).
    attach_on_stdout: bool,
    tally: FindingTally,
    /// Overlaps that reached the live log.
    overlaps_shown: u64,
}

impl Sinks {
    fn new(settings: &GoAuditSettings) -> Result<Self> {
        let opts = &settings.output;
        let (out, on_terminal): (File, bool) = match &opts.file {
            Some(p) => (
                File::create(p)
                    .with_context(|| format!("cannot create the output file {}", p.display()))?,
                false,
            ),
            None => (
                LiveStream::stdout_file().context("cannot use standard output")?,
                std::io::stdout().is_terminal(),
            ),
        };
        let colors = opts.color;
        let colour = opts.format == Format::Text && colors.enabled(on_terminal);
        let mut render = LiveLog::new(Vec::new(), opts.format, colour);
        render.show_plan = opts.show_plan;
        let record = match &opts.record {
            Some(p) => Some(
                Recording::create(p)
                    .with_context(|| format!("cannot create recording {}", p.display()))?,
            ),
            None => None,
        };
        let stderr_findings = (!on_terminal).then(|| {
            LiveLog::new(
                Vec::new(),
                Format::Text,
                colors.enabled(std::io::stderr().is_terminal()),
            )
        });
        Ok(Self {
            render,
            stream: LiveStream::new(Box::new(out), LIVE_BUDGET),
            record,
            filter: settings.filter.clone(),
            format: opts.format,
            stderr_findings,
            attach_on_stdout: !on_terminal || opts.show_plan || opts.format == Format::Json,
            tally: FindingTally::default(),
            overlaps_shown: 0,
        })
    }

    fn emit(&mut self, ev: &AuditEvent) -> Result<()> {
        if let Some(r) = &mut self.record {
            r.emit(ev)?;
        }
        match ev {
            AuditEvent::Attach(report) => {
                eprintln!("{}", live::banner(report));
                if !self.attach_on_stdout || !self.filter.passes(ev) {
                    return Ok(());
                }
            }
            AuditEvent::Overlap(o) => {
                let new = self.tally.note(o);
                if !self.filter.passes(ev) {
                    return Ok(());
                }
                if new && let Some(err) = &mut self.stderr_findings {
                    let _ = err.write(ev);
                    let _ = std::io::stderr().write_all(&err.take());
                }
                // The text log prints a race once; the summary counts it.
                if !new && self.format == Format::Text {
                    return Ok(());
                }
                self.overlaps_shown += 1;
            }
            _ if !self.filter.passes(ev) => return Ok(()),
            _ => {}
        }
        let stream_line = matches!(ev, AuditEvent::Access(_) | AuditEvent::AccessCounts(_));
        if stream_line && self.stream.is_behind() {
            self.stream.shed();
            return Ok(());
        }
        // Rendering into memory cannot fail.
        let _ = self.render.write(ev);
        let bytes = self.render.take();
        if stream_line {
            self.stream.live(&bytes);
        } else {
            self.stream.keep(&bytes);
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.stream.flush();
        if let Some(r) = &mut self.record {
            let _ = r.flush();
        }
    }

    /// The summary goes to the live log, and to stderr when the live log
    /// is gone or could not take it in time. A closed stdout then ends the
    /// command as for SIGPIPE.
    fn finish(mut self, mut summary: Summary) -> Result<()> {
        let tally = self.stream.end_live(END_GRACE);
        summary.shed = tally.shed;
        let shown = tally.shown + self.overlaps_shown;
        summary.shown = (shown < summary.events).then_some(shown);
        summary.findings = self.tally.groups();
        let ev = AuditEvent::Summary(summary);
        if let Some(r) = &mut self.record {
            r.emit(&ev)?;
            r.flush()?;
        }
        let _ = self.render.write(&ev);
        let bytes = self.render.take();
        self.stream.keep(&bytes);
        let closed = self.stream.is_closed();
        let error = self.stream.take_error();
        let delivered = self.stream.close(CLOSE_WAIT);
        if !delivered {
            let AuditEvent::Summary(s) = &ev else {
                unreachable!()
            };
            let text = LiveLog::new(Vec::new(), Format::Text, false).summary_text(s);
            if !closed && error.is_none() {
                eprintln!(
                    "map-auditor: the output did not take the summary within {}s; here it is:",
                    CLOSE_WAIT.as_secs()
                );
            }
            eprint!("{text}");
        }
        if let Some(e) = error {
            return Err(anyhow::Error::new(e).context("cannot write the live log"));
        }
        if closed {
            return Err(StdoutClosed.into());
        }
        Ok(())
    }
}

/// Why a session's pump stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Deadline, target gone, or a signal (attach).
    Done,
    /// The live log's reader went away.
    OutputClosed,
    /// SIGINT or SIGTERM: `attach` stops, `run` passes it on to its target.
    Signal(signals::Received),
}

/// Everything one Go audit session holds: the engine with one target.
struct GoSession {
    pid: u32,
    engine: GoEngine,
    sinks: Sinks,
    started: Instant,
    events: Vec<AuditEvent>,
    /// `--scope` as probed (for the summary's advice).
    scope: crate::goexe::Scope,
    /// How often the kernel's access counts are read (when it counts).
    count_every: Option<Duration>,
}

impl GoSession {
    fn start(pid: u32, settings: &GoAuditSettings) -> Result<Self> {
        settings.validate()?;
        // With --quiet and no recording nobody reads accesses: the kernel
        // then only reports findings, which keeps the ring buffer quiet.
        // Otherwise it counts accesses unless every one was asked for.
        let target = TargetOptions {
            accesses: settings.access_stream(),
            ..settings.target.clone()
        };
        let planned = engine::plan_target(pid, &target)?;
        let mut engine = GoEngine::new(settings.load.load_options())?;
        let sinks = Sinks::new(settings)?;
        let report = engine.attach(planned)?;
        let mut session = Self {
            pid,
            engine,
            sinks,
            started: Instant::now(),
            events: Vec::with_capacity(1024),
            scope: target.effective_scope(),
            count_every: (target.accesses == AccessStream::Counts)
                .then_some(settings.aggregate_interval),
        };
        session.sinks.emit(&AuditEvent::Attach(report))?;
        session.sinks.flush();
        Ok(session)
    }

    fn emit_pending(&mut self) -> Result<()> {
        for ev in self.events.drain(..) {
            self.sinks.emit(&ev)?;
        }
        Ok(())
    }

    /// Read and emit until the deadline, the target's end, a signal or a
    /// closed output.
    async fn pump(
        &mut self,
        signals: &mut SignalWatch,
        deadline: Option<Instant>,
        target_gone: &dyn Fn() -> bool,
    ) -> Result<Stop> {
        let mut last_check = Instant::now();
        let mut last_counts = Instant::now();
        let stop = loop {
            let wait = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100))
            });
            self.engine.read(&mut self.events, wait).await;
            self.engine.run_windows();
            self.emit_pending()?;
            self.sinks.flush();
            if self
                .count_every
                .is_some_and(|every| last_counts.elapsed() >= every)
            {
                self.engine.collect_counts(&mut self.events);
                self.emit_pending()?;
                self.sinks.flush();
                last_counts = Instant::now();
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                self.engine.check_losses(&mut self.events);
                self.engine.check_budgets(&mut self.events);
                self.emit_pending()?;
                self.sinks.flush();
                last_check = Instant::now();
            }
            if let Some(r) = signals.next_received() {
                break Stop::Signal(r);
            }
            if self.sinks.stream.is_closed() {
                break Stop::OutputClosed;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || target_gone() {
                break Stop::Done;
            }
        };
        // Last records written before the target died or we were told to stop.
        self.engine.drain(&mut self.events);
        self.emit_pending()?;
        Ok(stop)
    }

    /// Detach, write the summary; the number of overlaps found.
    fn finish(mut self, end: TargetEnd) -> Result<u64> {
        // Detaching delivers what is still in the ring, then the target's
        // last losses.
        let info = self.engine.detach(self.pid, &mut self.events);
        self.emit_pending()?;
        let fatal = end
            .fatal
            .or_else(|| info.as_ref().and_then(|i| i.runtime_fatal.clone()));
        let coverage = info.as_ref().and_then(|i| i.coverage.clone());
        let exit_sites = info
            .as_ref()
            .map(|i| i.exit_sites.clone())
            .unwrap_or_default();
        let narrowed_sites = info
            .as_ref()
            .map(|i| i.narrowed_sites.clone())
            .unwrap_or_default();
        let stats = info.map(|i| i.stats);
        let unattributed = self.engine.counters().get(Counter::GoFatalUnattributed);
        let summary = Summary {
            ts_ns: self.engine.clock().now_unix_ns(),
            pid: self.pid,
            events: stats.map_or(0, |s| s.events),
            accesses: stats.map_or(0, |s| s.accesses),
            overlaps: stats.map_or(0, |s| s.overlaps),
            access_counts: stats.map_or(0, |s| s.access_counts),
            counted_accesses: stats.map_or(0, |s| s.counted_accesses),
            dropped: self.engine.dropped(),
            probe_hits: self.engine.counters().get(Counter::GoProbeHits),
            duration_ms: self.started.elapsed().as_millis() as u64,
            target_exit_code: end.exit_code,
            target_signal: end.signal,
            target_fatal: fatal,
            fatal_unattributed: (unattributed > 0).then(|| FatalUnattributed {
                count: unattributed,
                scope: self.scope.label(),
            }),
            coverage_pct: coverage.as_ref().map(|c| c.0),
            coverage_reason: coverage.and_then(|c| c.1),
            exit_sites,
            narrowed_sites,
            ..Summary::default()
        };
        let overlaps = summary.overlaps;
        self.sinks.finish(summary)?;
        Ok(overlaps)
    }
}

/// `map-auditor attach --pid PID`.
pub async fn attach(pid: u32, settings: &GoAuditSettings) -> Result<i32> {
    require_privileges()?;
    let mut signals = SignalWatch::install().context("cannot handle SIGINT and SIGTERM")?;
    let mut session = GoSession::start(pid, settings)?;
    let deadline = settings.duration.map(|d| Instant::now() + d);
    session
        .pump(&mut signals, deadline, &|| {
            crate::proc::ProcessIdentity::of(pid).is_none()
        })
        .await?;
    let overlaps = session.finish(TargetEnd::default())?;
    Ok(findings_status(settings, overlaps, 0))
}

/// `--fail-on-overlap`'s exit status when an overlap was found (the one
/// `go test -race` uses for a detected race).
pub const FOUND_OVERLAP_STATUS: i32 = 66;

/// The exit status when `--fail-on-overlap` asked to gate on findings.
fn findings_status(settings: &GoAuditSettings, overlaps: u64, otherwise: i32) -> i32 {
    if settings.fail_on_overlap && overlaps > 0 {
        FOUND_OVERLAP_STATUS
    } else {
        otherwise
    }
}

/// `map-auditor run -- PROGRAM ARGS`: the program is stopped at its first
/// instruction (ptrace stop after exec), probed, then released.
///
/// The target shares the auditor's standard input, output and error: the
/// auditor never sits between the target and its output, so its bytes
/// arrive unchanged and the target is not hurt when the auditor ends
/// first. The runtime's fatal error is read by the probe on the runtime's
/// fatal-error function instead.
pub async fn run(command: &[String], settings: &GoAuditSettings) -> Result<i32> {
    require_privileges()?;
    let (prog, rest) = command.split_first().context("no program given")?;
    let mut signals = SignalWatch::install().context("cannot handle SIGINT and SIGTERM")?;
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Rust ignores SIGPIPE; an ignored signal survives exec, and the
            // target must get the default it would have had without us.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
    let session = GoSession::start(pid, settings);
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

    let exited = Arc::new(std::sync::Mutex::new(None::<std::process::ExitStatus>));
    let exited_w = exited.clone();
    let waiter = std::thread::spawn(move || {
        if let Ok(st) = child.wait() {
            *exited_w.lock().unwrap() = Some(st);
        }
    });

    let deadline = settings.duration.map(|d| Instant::now() + d);
    let gone = || exited.lock().unwrap().is_some();
    // A signal for the auditor is meant for the program it runs: pass it
    // on and keep auditing until the target ends. A second one means
    // "stop now": detach and leave the target running.
    let mut interrupted = None;
    loop {
        match session.pump(&mut signals, deadline, &gone).await? {
            Stop::Signal(r) if r.nth == 1 && !gone() => {
                // A terminal's Ctrl-C reached the target already.
                if !r.from_terminal {
                    // SAFETY: signalling our own child, not yet reaped.
                    unsafe { libc::kill(pid as i32, r.signal) };
                }
            }
            Stop::Signal(r) => {
                interrupted = Some(r.signal);
                break;
            }
            Stop::Done | Stop::OutputClosed => break,
        }
    }
    let status = *exited.lock().unwrap();
    if status.is_some() {
        let _ = waiter.join();
    }
    let end = TargetEnd {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        fatal: None,
    };
    let overlaps = session.finish(end.clone())?;
    let code = match (end.exit_code, end.signal, interrupted) {
        (Some(c), _, _) => c,
        (None, Some(s), _) | (None, None, Some(s)) => 128 + s,
        _ => 0,
    };
    Ok(findings_status(settings, overlaps, code))
}
