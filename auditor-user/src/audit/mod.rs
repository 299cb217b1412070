//! Go audit sessions: `attach --pid` and `run -- PROGRAM`.
//!
//! Both end the same way: on Ctrl-C, SIGTERM, `--duration` or the target's
//! exit the ring buffer is drained one last time (so an overlap recorded a
//! microsecond before the runtime's fatal error still reaches the log), the
//! probes are detached and a summary is written.
//!
//! - [`engine`]: the loaded probes serving any number of targets; these
//!   sessions use it with one, the daemon with many.

pub mod engine;

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
use auditor_common::Counter;

use crate::{
    event::{AuditEvent, Summary},
    output::{
        live::LiveLog,
        sink::{Filtered, Recording, Sink},
    },
    settings::{Format, GoAuditSettings},
};
use engine::{GoEngine, TargetOptions};

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

/// Where the events go: the recording gets every event, the live log what
/// the filter lets through.
struct Sinks {
    live: Filtered<LiveLog<Box<dyn Write>>>,
    record: Option<Recording<BufWriter<File>>>,
}

impl Sinks {
    fn new(settings: &GoAuditSettings) -> Result<Self> {
        let opts = &settings.output;
        let stdout = std::io::stdout();
        let colour = opts.format == Format::Text && stdout.is_terminal();
        let mut live = LiveLog::new(
            Box::new(BufWriter::new(stdout)) as Box<dyn Write>,
            opts.format,
            colour,
        );
        live.show_plan = opts.show_plan;
        let record = match &opts.record {
            Some(p) => Some(
                Recording::create(p)
                    .with_context(|| format!("cannot create recording {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            live: Filtered {
                filter: settings.filter.clone(),
                inner: live,
            },
            record,
        })
    }

    fn emit(&mut self, ev: &AuditEvent) -> Result<()> {
        if let Some(r) = &mut self.record {
            r.emit(ev)?;
        }
        // A closed stdout (e.g. `| head`) must not stop the audit.
        let _ = self.live.emit(ev);
        Ok(())
    }

    fn flush(&mut self) {
        let _ = self.live.flush();
        if let Some(r) = &mut self.record {
            let _ = r.flush();
        }
    }
}

/// Everything one Go audit session holds: the engine with one target.
struct GoSession {
    pid: u32,
    engine: GoEngine,
    sinks: Sinks,
    started: Instant,
    events: Vec<AuditEvent>,
}

impl GoSession {
    fn start(pid: u32, settings: &GoAuditSettings) -> Result<Self> {
        settings.validate()?;
        // With --quiet and no recording nobody reads accesses: the kernel
        // then only reports findings, which keeps the ring buffer quiet.
        let target = TargetOptions {
            emit_access: !settings.filter.quiet || settings.output.record.is_some(),
            ..settings.target
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

    async fn pump(
        &mut self,
        stop: &AtomicBool,
        deadline: Option<Instant>,
        target_gone: &dyn Fn() -> bool,
    ) -> Result<()> {
        let mut last_check = Instant::now();
        loop {
            self.engine
                .read(&mut self.events, Duration::from_millis(100))
                .await;
            self.emit_pending()?;
            if last_check.elapsed() >= Duration::from_secs(1) {
                self.engine.check_losses(&mut self.events);
                self.emit_pending()?;
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
        self.engine.drain(&mut self.events);
        self.emit_pending()
    }

    fn finish(mut self, end: TargetEnd) -> Result<()> {
        // Detaching delivers what is still in the ring, then the target's
        // last losses.
        let info = self.engine.detach(self.pid, &mut self.events);
        self.emit_pending()?;
        let stats = info.map(|i| i.stats);
        let summary = Summary {
            ts_ns: self.engine.clock().now_unix_ns(),
            pid: self.pid,
            events: stats.map_or(0, |s| s.events),
            accesses: stats.map_or(0, |s| s.accesses),
            overlaps: stats.map_or(0, |s| s.overlaps),
            dropped: self.engine.dropped(),
            probe_hits: self.engine.counters().get(Counter::GoProbeHits),
            duration_ms: self.started.elapsed().as_millis() as u64,
            target_exit_code: end.exit_code,
            target_signal: end.signal,
            target_fatal: end.fatal,
            unresolved_fds: None,
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

/// `map-auditor attach --pid PID`.
pub async fn attach(pid: u32, settings: &GoAuditSettings) -> Result<i32> {
    require_privileges()?;
    let stop = stop_flag();
    let mut session = GoSession::start(pid, settings)?;
    let deadline = settings.duration.map(|d| Instant::now() + d);
    session
        .pump(&stop, deadline, &|| {
            crate::proc::ProcessIdentity::of(pid).is_none()
        })
        .await?;
    session.finish(TargetEnd::default())?;
    Ok(0)
}

/// `map-auditor run -- PROGRAM ARGS`: the program is stopped at its first
/// instruction (ptrace stop after exec), probed, then released.
pub async fn run(command: &[String], settings: &GoAuditSettings) -> Result<i32> {
    require_privileges()?;
    let (prog, rest) = command.split_first().context("no program given")?;
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
    let deadline = settings.duration.map(|d| Instant::now() + d);
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
