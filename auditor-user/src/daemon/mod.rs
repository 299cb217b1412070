//! The privileged daemon: many Go targets on one loaded kernel object,
//! optional bpf(2) auditing, a durable audit log, a control socket, and an
//! opt-in metrics endpoint.
//!
//! - [`config`]: the TOML file and its validation.
//! - [`protocol`]: the versioned JSON-lines request protocol (pure).
//! - [`control`]: the socket (peer credentials, limits, connections).
//! - [`log`]: the rotated JSON-lines audit log and its followers.
//! - [`watch`]: executables watched for new processes.
//! - [`trust`]: directories and configuration only root may change.
//! - [`metrics`]: the Prometheus text endpoint.
//! - [`bpf_audit`]: bpf(2) auditing and guarded maps inside the daemon.
//! - [`client`]: `ctl`, `tail` and `report` against a daemon.
//! - [`say`]: the daemon's own messages on stderr, one line each, leveled.
//!
//! One task (the main loop here) owns the engine, the log and the target
//! table; connections talk to it through a channel, so no state is shared
//! behind locks and every event is logged, then announced, in one order.

pub mod bpf_audit;
pub mod client;
pub mod config;
pub mod control;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod repeats;
pub mod say;
pub mod trust;
pub mod watch;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufWriter, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use auditor_common::Counter;
use serde_json::json;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc, oneshot},
};

use crate::{
    audit::{
        engine::{self, EngineError, GoEngine, PlannedTarget, TargetChange, TargetOptions},
        require_privileges,
    },
    event::{AuditEvent, Lost, Summary},
    proc::ProcessIdentity,
    settings::LoadSettings,
};
use config::DaemonConfig;
use control::{AccessPolicy, ControlMsg, Published, Reply};
use log::{AuditLog, LogEvent, TargetEvent};
use metrics::{MetricsSnapshot, TargetMetrics};
use protocol::{ErrorCode, ProtocolError, Request, Response, TargetSpec};
use repeats::RepeatedOverlaps;
use say::say;
use watch::Watch;

/// Live events buffered per subscriber before it is told it lagged.
const SUBSCRIBER_BUFFER: usize = 8192;

/// Why a target was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    /// A client request (uid recorded for the audit trail).
    Request { uid: u32 },
    /// The configuration file.
    Config,
    /// A process of a watched executable.
    Watch(PathBuf),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Self::Request { uid } => format!("request by uid {uid}"),
            Self::Config => "configuration".into(),
            Self::Watch(p) => format!("watch {}", p.display()),
        }
    }
}

/// The control socket and the task accepting on it; put back when its
/// file is removed or replaced.
struct SocketKeeper {
    id: Option<(u64, u64)>,
    group: Option<u32>,
    server: tokio::task::JoinHandle<()>,
    tx: mpsc::Sender<ControlMsg>,
    /// The last failure to put it back, said once.
    failed: Option<String>,
    recreated: u64,
}

/// A plan made off the main loop, coming back to it.
struct PlanDone {
    pid: u32,
    origin: Origin,
    result: Result<PlannedTarget, EngineError>,
    reply: Option<(Option<u64>, oneshot::Sender<Reply>)>,
}

struct Daemon {
    cfg: DaemonConfig,
    engine: GoEngine,
    log: AuditLog,
    stdout: Option<BufWriter<std::io::Stdout>>,
    feed: broadcast::Sender<Arc<Published>>,
    watches: Vec<Watch>,
    origins: HashMap<u32, Origin>,
    planning: HashMap<u32, Origin>,
    /// (pid, start time) a watch must not attach again: failed, or
    /// detached by request.
    skip: HashSet<(u32, u64)>,
    plan_tx: mpsc::Sender<PlanDone>,
    target_opts: TargetOptions,
    pending: Vec<AuditEvent>,
    repeats: RepeatedOverlaps,
    events_by_kind: BTreeMap<&'static str, u64>,
    /// When the kernel's access counts were last read.
    last_counts: Instant,
    lost_by_what: BTreeMap<String, u64>,
    alerts_by_rule: BTreeMap<String, u64>,
    log_errors: u64,
    /// Backlog drops already logged as `lost`.
    log_dropped_reported: u64,
    metrics: Arc<Mutex<MetricsSnapshot>>,
    socket: SocketKeeper,
    started: Instant,
    self_pid: u32,
    bpf_status: String,
}

impl Daemon {
    fn now(&self) -> u64 {
        self.engine.clock().now_unix_ns()
    }

    /// Log, copy to stdout, count, then announce one event. Findings are on
    /// the disk before subscribers see them.
    fn record(&mut self, ev: LogEvent) {
        let line = match serde_json::to_string(&ev) {
            Ok(l) => l,
            Err(_) => return,
        };
        let durable = ev.is_durable();
        match self.log.write_line(&line, durable) {
            log::Written::Written | log::Written::Held(None) => {}
            log::Written::Held(Some(why)) => {
                self.log_errors += 1;
                say!(
                    Error,
                    "cannot write the audit log in {} ({why}): holding events in memory (up to {} MiB) and retrying every scan_interval; free space or restore the directory",
                    self.cfg.log_dir.display(),
                    log::BACKLOG_BYTES >> 20
                );
            }
            log::Written::Dropped => {
                if self.log.dropped().is_power_of_two() {
                    say!(
                        Error,
                        "audit log still not writable and {} MiB of events held in memory: {} event(s) lost so far",
                        log::BACKLOG_BYTES >> 20,
                        self.log.dropped()
                    );
                }
            }
        }
        if let Some(out) = &mut self.stdout {
            let _ = writeln!(out, "{line}");
            if durable {
                let _ = out.flush();
            }
        }
        let kind = ev.kind().as_str();
        *self.events_by_kind.entry(kind).or_default() += 1;
        match &ev {
            LogEvent::Audit(AuditEvent::Lost(l)) => {
                *self.lost_by_what.entry(l.what.clone()).or_default() += l.count
            }
            LogEvent::Audit(AuditEvent::Alert(a)) => {
                let rule = serde_json::to_value(a.rule)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| "alert".into());
                *self.alerts_by_rule.entry(rule).or_default() += 1
            }
            _ => {}
        }
        let _ = self.feed.send(Arc::new(Published {
            kind,
            pid: ev.pid(),
            ts_ns: ev.ts_ns(),
            line,
        }));
    }

    /// Log what the engine produced; a repeated race is held and counted
    /// (see [`repeats`]).
    fn record_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let now = Instant::now();
        for ev in pending {
            let ev = match ev {
                AuditEvent::Overlap(o) => match self.repeats.note(o, now) {
                    Some(o) => AuditEvent::Overlap(o),
                    None => continue,
                },
                other => other,
            };
            self.record(LogEvent::Audit(ev));
        }
    }

    /// The counted repeats of races that waited their interval.
    fn record_repeats(&mut self) {
        for o in self.repeats.due(Instant::now()) {
            self.record(LogEvent::Audit(AuditEvent::Overlap(o)));
        }
    }

    fn target_event(&mut self, pid: u32, state: &str, exe: Option<String>, reason: Option<String>) {
        let ev = TargetEvent {
            ts_ns: self.now(),
            pid,
            state: state.into(),
            exe,
            reason,
        };
        self.record(LogEvent::Target(ev));
    }

    /// Start planning `pid` off the main loop; the answer comes back as a
    /// [`PlanDone`].
    fn start_attach(
        &mut self,
        pid: u32,
        origin: Origin,
        reply: Option<(Option<u64>, oneshot::Sender<Reply>)>,
    ) {
        let refuse = |d: &mut Self,
                      reply: Option<(Option<u64>, oneshot::Sender<Reply>)>,
                      e: ProtocolError| {
            match reply {
                Some((id, tx)) => {
                    let _ = tx.send(Reply::Done(Response::err(id, e)));
                }
                // The configuration asked: nobody waits for an answer, so
                // say it on stderr and in the log.
                None => {
                    say!(
                        Warn,
                        "cannot attach pid {pid} ({}): {}",
                        origin.describe(),
                        e.message
                    );
                    d.target_event(pid, "attach_failed", None, Some(e.message));
                }
            }
        };
        if pid == self.self_pid {
            return refuse(
                self,
                reply,
                ProtocolError::new(ErrorCode::BadRequest, "the daemon does not audit itself"),
            );
        }
        if self.engine.is_attached(pid) || self.planning.contains_key(&pid) {
            return refuse(
                self,
                reply,
                ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("pid {pid} is already attached (or being attached): detach it first"),
                ),
            );
        }
        if self.engine.len() + self.planning.len() >= self.cfg.max_targets {
            return refuse(
                self,
                reply,
                ProtocolError::new(
                    ErrorCode::LimitReached,
                    format!(
                        "{} targets attached, the configured max_targets: detach one or raise it",
                        self.cfg.max_targets
                    ),
                ),
            );
        }
        if ProcessIdentity::of(pid).is_none() {
            return refuse(
                self,
                reply,
                ProtocolError::new(
                    ErrorCode::NotFound,
                    format!("no running process with pid {pid}: check it with `ps`"),
                ),
            );
        }
        self.planning.insert(pid, origin.clone());
        let opts = self.target_opts.clone();
        let tx = self.plan_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = engine::plan_target(pid, &opts);
            let _ = tx.blocking_send(PlanDone {
                pid,
                origin,
                result,
                reply,
            });
        });
    }

    fn finish_attach(&mut self, done: PlanDone) {
        self.planning.remove(&done.pid);
        let result = done.result.and_then(|p| self.engine.attach(p));
        match result {
            Ok(report) => {
                let answer = json!({
                    "pid": report.pid,
                    "exe": report.exe,
                    "go_version": report.go_version,
                    "probes": report.probes.len(),
                    "failed": report.failed.len(),
                });
                say!(
                    Info,
                    "attached pid {} ({}, go{}, {} probes) by {}",
                    report.pid,
                    report.exe,
                    report.go_version,
                    report.probes.len(),
                    done.origin.describe()
                );
                self.origins.insert(done.pid, done.origin);
                self.record(LogEvent::Audit(AuditEvent::Attach(report)));
                if let Some((id, tx)) = done.reply {
                    let _ = tx.send(Reply::Done(Response::ok(id, answer)));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                say!(Warn, "cannot attach pid {}: {msg}", done.pid);
                if let Some(id) = ProcessIdentity::of(done.pid) {
                    self.skip.insert((done.pid, id.start_time));
                }
                let exe = crate::proc::exe_path(done.pid).map(|p| p.display().to_string());
                self.target_event(done.pid, "attach_failed", exe, Some(msg.clone()));
                if let Some((id, tx)) = done.reply {
                    let _ = tx.send(Reply::Done(Response::err(
                        id,
                        ProtocolError::new(ErrorCode::AttachFailed, msg),
                    )));
                }
            }
        }
    }

    /// Detach a target: its last records, a summary, then a `target` event.
    fn release(
        &mut self,
        pid: u32,
        state: &str,
        reason: Option<String>,
    ) -> Option<serde_json::Value> {
        let info = self.engine.detach(pid, &mut self.pending);
        self.record_pending();
        for o in self.repeats.flush_pid(pid) {
            self.record(LogEvent::Audit(AuditEvent::Overlap(o)));
        }
        let info = info?;
        self.origins.remove(&pid);
        let s = info.stats;
        let summary = Summary {
            ts_ns: self.now(),
            pid,
            events: s.events,
            accesses: s.accesses,
            overlaps: s.overlaps,
            access_counts: s.access_counts,
            counted_accesses: s.counted_accesses,
            dropped: s.dropped,
            probe_hits: 0,
            duration_ms: s.attached_at.elapsed().as_millis() as u64,
            target_exit_code: None,
            target_signal: None,
            target_fatal: info.runtime_fatal.clone(),
            coverage_pct: info.coverage.as_ref().map(|c| c.0),
            coverage_reason: info.coverage.as_ref().and_then(|c| c.1.clone()),
            exit_sites: info.exit_sites.clone(),
            narrowed_sites: info.narrowed_sites.clone(),
            ..Summary::default()
        };
        self.record(LogEvent::Audit(AuditEvent::Summary(summary)));
        self.target_event(pid, state, Some(info.exe.clone()), reason);
        say!(Info, "released pid {pid} ({}): {state}", info.exe);
        Some(json!({"pid": pid, "exe": info.exe, "events": s.events, "overlaps": s.overlaps}))
    }

    fn add_watch(
        &mut self,
        path: &std::path::Path,
        origin: Origin,
    ) -> Result<serde_json::Value, ProtocolError> {
        let w = Watch::new(path).map_err(|m| ProtocolError::new(ErrorCode::NotFound, m))?;
        if self
            .watches
            .iter()
            .any(|x| x.dev == w.dev && x.ino == w.ino)
        {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                format!("{} is already watched", path.display()),
            ));
        }
        if self.watches.len() >= self.cfg.max_watches {
            return Err(ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "{} executables watched, the configured max_watches: unwatch one or raise it",
                    self.cfg.max_watches
                ),
            ));
        }
        say!(Info, "watching {} ({})", path.display(), origin.describe());
        self.watches.push(w);
        self.target_event(
            0,
            "watch_added",
            Some(path.display().to_string()),
            Some(origin.describe()),
        );
        let started = self.scan_watches();
        Ok(json!({"exe": path, "watching": true, "attaching": started}))
    }

    fn remove_watch(&mut self, path: &std::path::Path) -> Result<serde_json::Value, ProtocolError> {
        let id = Watch::new(path).ok();
        let before = self.watches.len();
        self.watches.retain(|w| {
            w.path != path && id.as_ref().is_none_or(|i| (i.dev, i.ino) != (w.dev, w.ino))
        });
        if self.watches.len() == before {
            return Err(ProtocolError::new(
                ErrorCode::NotFound,
                format!(
                    "{} is not watched: `ctl list` shows the watches",
                    path.display()
                ),
            ));
        }
        // Its processes are detached too: the watch is what brought them.
        let pids: Vec<u32> = self
            .origins
            .iter()
            .filter(|(_, o)| matches!(o, Origin::Watch(p) if p == path))
            .map(|(&p, _)| p)
            .collect();
        for &pid in &pids {
            self.release(pid, "detached", Some("watch removed".into()));
        }
        self.target_event(0, "watch_removed", Some(path.display().to_string()), None);
        Ok(json!({"exe": path, "watching": false, "detached": pids}))
    }

    /// Attach every process of a watched executable not yet attached.
    fn scan_watches(&mut self) -> Vec<u32> {
        if self.watches.is_empty() {
            return Vec::new();
        }
        let mut skip: HashSet<u32> = self.planning.keys().copied().collect();
        skip.insert(self.self_pid);
        let mut started = Vec::new();
        for pid in crate::proc::all_pids(&skip) {
            if self.engine.is_attached(pid) {
                continue;
            }
            let Some((dev, ino)) = crate::proc::exe_identity(pid) else {
                continue;
            };
            let Some(w) = self.watches.iter().find(|w| w.matches(dev, ino)) else {
                continue;
            };
            let Some(id) = ProcessIdentity::of(pid) else {
                continue;
            };
            if self.skip.contains(&(pid, id.start_time)) {
                continue;
            }
            let origin = Origin::Watch(w.path.clone());
            self.start_attach(pid, origin, None);
            started.push(pid);
        }
        started
    }

    /// Release targets that exited or exec'd.
    fn check_targets(&mut self) {
        for (pid, change) in self.engine.changed_targets() {
            match change {
                TargetChange::Exited => {
                    self.release(pid, "exited", None);
                }
                TargetChange::Exec => {
                    let exe =
                        crate::proc::exe_path(pid).map(|p| format!("now runs {}", p.display()));
                    self.release(pid, "exec", exe);
                }
            }
        }
        // Forget skip entries of processes that are gone.
        self.skip.retain(|&(pid, start)| {
            ProcessIdentity::of(pid).is_some_and(|i| i.start_time == start)
        });
    }

    fn publish_metrics(&mut self) {
        let c = *self.engine.counters();
        let snap = MetricsSnapshot {
            targets: self
                .engine
                .targets()
                .into_iter()
                .map(|t| TargetMetrics {
                    pid: t.pid,
                    exe: t.exe,
                    events: t.stats.events,
                    accesses: t.stats.accesses,
                    overlaps: t.stats.overlaps,
                    drops: t.stats.dropped,
                })
                .collect(),
            watches: self.watches.len(),
            events_by_kind: self.events_by_kind.clone(),
            lost_by_what: self.lost_by_what.clone(),
            alerts_by_rule: self.alerts_by_rule.clone(),
            probe_hits: c.get(Counter::GoProbeHits),
            ring_used_bytes: self.engine.ring_fill().map(|f| f.0),
            ring_size_bytes: self.engine.ring_fill().map_or(0, |f| f.1),
            ring_records: self.engine.records_read(),
            rss_bytes: metrics::rss_bytes(),
            log_bytes: self.log.bytes,
            log_rotations: self.log.rotations,
            log_write_errors: self.log_errors,
            subscribers: self.feed.receiver_count(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        };
        if let Ok(mut m) = self.metrics.lock() {
            *m = snap;
        }
    }

    fn list(&self) -> serde_json::Value {
        let mut targets: Vec<serde_json::Value> = self
            .engine
            .targets()
            .into_iter()
            .map(|t| {
                json!({
                    "pid": t.pid,
                    "exe": t.exe,
                    "state": "attached",
                    "origin": self.origins.get(&t.pid).map(Origin::describe),
                    "probes": t.probes,
                    "events": t.stats.events,
                    "accesses": t.stats.accesses,
                    "overlaps": t.stats.overlaps,
                    "dropped": t.stats.dropped,
                    "attached_ts_ns": t.stats.attached_unix_ns,
                })
            })
            .collect();
        for (pid, o) in &self.planning {
            targets.push(json!({"pid": pid, "state": "attaching", "origin": o.describe()}));
        }
        let watches: Vec<_> = self
            .watches
            .iter()
            .map(|w| {
                let pids: Vec<u32> = self
                    .origins
                    .iter()
                    .filter(|(_, o)| matches!(o, Origin::Watch(p) if *p == w.path))
                    .map(|(&p, _)| p)
                    .collect();
                json!({"exe": w.path, "pids": pids})
            })
            .collect();
        json!({"targets": targets, "watches": watches})
    }

    fn status(&self) -> serde_json::Value {
        let c = self.engine.counters();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": protocol::PROTOCOL_VERSION,
            "pid": self.self_pid,
            "uptime_s": self.started.elapsed().as_secs(),
            "targets": self.engine.len(),
            "attaching": self.planning.len(),
            "watches": self.watches.len(),
            "max_targets": self.cfg.max_targets,
            "log_dir": self.cfg.log_dir,
            "log_bytes": self.log.bytes,
            "log_rotations": self.log.rotations,
            "log_write_errors": self.log_errors,
            "log_failing": self.log.failing(),
            "log_held": self.log.held(),
            "log_dropped": self.log.dropped(),
            "log_recreated": self.log.recreations,
            "probe_links": self.engine.link_kind(),
            "socket_recreated": self.socket.recreated,
            "events_by_kind": self.events_by_kind,
            "lost_by_what": self.lost_by_what,
            "dropped": self.engine.dropped(),
            "probe_hits": c.get(Counter::GoProbeHits),
            "ring_used_bytes": self.engine.ring_fill().map(|f| f.0),
            "ring_size_bytes": self.engine.ring_fill().map(|f| f.1),
            "rss_bytes": metrics::rss_bytes(),
            "subscribers": self.feed.receiver_count(),
            "bpf": self.bpf_status,
        })
    }

    fn handle(&mut self, msg: ControlMsg) {
        let ControlMsg {
            id,
            request,
            peer,
            reply,
        } = msg;
        let done = |r: Result<serde_json::Value, ProtocolError>| {
            Reply::Done(match r {
                Ok(v) => Response::ok(id, v),
                Err(e) => Response::err(id, e),
            })
        };
        let origin = Origin::Request { uid: peer.uid };
        match request {
            Request::Attach(TargetSpec::Pid(pid)) => {
                self.start_attach(pid, origin, Some((id, reply)));
            }
            Request::Attach(TargetSpec::Exe(path)) => {
                let _ = reply.send(done(self.add_watch(&path, origin)));
            }
            Request::Detach(TargetSpec::Pid(pid)) => {
                let start = ProcessIdentity::of(pid).map(|i| i.start_time);
                let r = self
                    .release(pid, "detached", Some(origin.describe()))
                    .ok_or_else(|| {
                        ProtocolError::new(
                            ErrorCode::NotFound,
                            format!("pid {pid} is not attached: `ctl list` shows the targets"),
                        )
                    });
                // A watch would otherwise attach it again at the next scan.
                if r.is_ok()
                    && let Some(s) = start
                {
                    self.skip.insert((pid, s));
                }
                let _ = reply.send(done(r));
            }
            Request::Detach(TargetSpec::Exe(path)) => {
                let _ = reply.send(done(self.remove_watch(&path)));
            }
            Request::List => {
                let _ = reply.send(done(Ok(self.list())));
            }
            Request::Status => {
                let _ = reply.send(done(Ok(self.status())));
            }
            Request::Subscribe(_) => {
                // Everything logged so far is in these files up to these
                // lengths; everything after comes through the receiver.
                // While the log cannot be read (or written), what can be
                // is replayed, then the held lines, then the live feed.
                let live = self.feed.subscribe();
                let (replay, held) = self.log.snapshot();
                let _ = reply.send(Reply::Subscribed { replay, held, live });
            }
        }
    }

    /// Bind the socket again when its file was removed or replaced (a
    /// client would otherwise not reach the daemon, or reach an impostor).
    fn keep_socket(&mut self) {
        let now = control::socket_id(&self.cfg.socket);
        if now.is_some() && now == self.socket.id {
            return;
        }
        let what = if now.is_none() { "removed" } else { "replaced" };
        match control::rebind(&self.cfg.socket, self.socket.group) {
            Ok(listener) => {
                self.socket.server.abort();
                self.socket.server = tokio::spawn(control::serve(
                    listener,
                    AccessPolicy {
                        group: self.socket.group,
                    },
                    self.socket.tx.clone(),
                ));
                self.socket.id = control::socket_id(&self.cfg.socket);
                self.socket.failed = None;
                self.socket.recreated += 1;
                say!(
                    Warn,
                    "control socket {} was {what}: listening on a new one",
                    self.cfg.socket.display()
                );
            }
            Err(e) => {
                let msg = e.to_string();
                if self.socket.failed.as_ref() != Some(&msg) {
                    say!(
                        Error,
                        "control socket {} was {what} and cannot be created again: {msg}",
                        self.cfg.socket.display()
                    );
                    self.socket.failed = Some(msg);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.keep_socket();
        self.engine.drain(&mut self.pending);
        self.record_pending();
        if !self.cfg.all_accesses && self.last_counts.elapsed() >= self.cfg.aggregate_interval {
            self.engine.collect_counts(&mut self.pending);
            self.record_pending();
            self.last_counts = Instant::now();
        }
        self.check_targets();
        self.scan_watches();
        self.engine.check_losses(&mut self.pending);
        self.engine.run_windows();
        self.engine.check_budgets(&mut self.pending);
        self.record_pending();
        self.record_repeats();
        self.recover_log();
        if let Err(e) = self.log.rotate_if_old() {
            self.log_errors += 1;
            say!(Error, "cannot rotate the audit log: {e}");
        }
        let _ = self.log.flush();
        if let Some(out) = &mut self.stdout {
            let _ = out.flush();
        }
        self.publish_metrics();
    }

    /// Put the audit log back (directory or file removed, disk full) and
    /// write what was held; say so, and log what could not be kept.
    fn recover_log(&mut self) {
        let Ok(Some(r)) = self.log.recover() else {
            return;
        };
        say!(
            Info,
            "audit log in {} {}: {} held event(s) written{}{}",
            self.cfg.log_dir.display(),
            if r.recreated {
                "was removed or replaced: created it again"
            } else {
                "is writable again"
            },
            r.written,
            if r.rescued > 0 {
                format!(", {} line(s) copied from the removed file", r.rescued)
            } else {
                String::new()
            },
            if r.dropped > self.log_dropped_reported {
                format!(
                    ", {} event(s) lost while memory was full",
                    r.dropped - self.log_dropped_reported
                )
            } else {
                String::new()
            }
        );
        if r.dropped > self.log_dropped_reported {
            let count = r.dropped - self.log_dropped_reported;
            self.log_dropped_reported = r.dropped;
            let lost = Lost {
                ts_ns: self.now(),
                pid: 0,
                what: "audit_log".into(),
                count,
                total: r.dropped,
            };
            self.record(LogEvent::Audit(AuditEvent::Lost(lost)));
        }
    }

    fn shutdown(&mut self) {
        let pids: Vec<u32> = self.engine.targets().iter().map(|t| t.pid).collect();
        for pid in pids {
            self.release(pid, "detached", Some("daemon shutdown".into()));
        }
        self.engine.check_losses(&mut self.pending);
        self.record_pending();
        self.recover_log();
        if self.log.held() > 0 {
            say!(
                Error,
                "{} event(s) held in memory could not be written to the audit log ({}): lost at exit (subscribers and stdout had them)",
                self.log.held(),
                self.log.failing().unwrap_or("not writable")
            );
        }
        if let Err(e) = self.log.sync() {
            say!(Error, "cannot flush the audit log: {e}");
        }
        if let Some(out) = &mut self.stdout {
            let _ = out.flush();
        }
    }
}

/// `map-auditor daemon`: run in the foreground until SIGTERM or SIGINT.
pub async fn run(cfg: DaemonConfig) -> Result<i32> {
    require_privileges()?;
    cfg.validate()?;
    // Everything the daemon creates (socket, logs) is private by default.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    let group = match &cfg.socket_group {
        Some(g) => Some(config::resolve_group(g).with_context(|| {
            format!("socket_group {g:?} is neither a group in /etc/group nor a number: create it or fix the config")
        })?),
        None => None,
    };
    let log = AuditLog::open(&cfg.log_dir, cfg.rotation).with_context(|| {
        format!(
            "cannot open the audit log in {}: check the directory (or pass --log-dir)",
            cfg.log_dir.display()
        )
    })?;
    let engine = GoEngine::new(
        LoadSettings {
            ring_mib: cfg.ring_mib,
        }
        .load_options(),
    )?;
    let listener = control::bind(&cfg.socket, group)
        .with_context(|| format!("cannot listen on {}", cfg.socket.display()))?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(256);
    let socket = SocketKeeper {
        id: control::socket_id(&cfg.socket),
        group,
        server: tokio::spawn(control::serve(
            listener,
            AccessPolicy { group },
            ctl_tx.clone(),
        )),
        tx: ctl_tx,
        failed: None,
        recreated: 0,
    };

    let metrics = Arc::new(Mutex::new(MetricsSnapshot::default()));
    let metrics_task = match cfg.metrics_listen {
        Some(addr) => {
            let l = metrics::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            Some(tokio::spawn(metrics::serve(l, metrics.clone())))
        }
        None => None,
    };

    let (bpf_tx, mut bpf_rx) = mpsc::channel::<AuditEvent>(8192);
    let (bpf_stop_tx, bpf_stop_rx) = tokio::sync::watch::channel(false);
    let (bpf_task, bpf_status) = if cfg.bpf.enabled {
        match bpf_audit::start(&cfg.bpf, bpf_tx.clone(), bpf_stop_rx) {
            Ok(task) => (Some(task), "enabled".to_string()),
            Err(e) => {
                say!(Error, "bpf(2) auditing not started: {e}");
                (None, format!("failed: {e}"))
            }
        }
    } else {
        (None, "disabled".to_string())
    };
    drop(bpf_tx);

    let (plan_tx, mut plan_rx) = mpsc::channel::<PlanDone>(64);
    let (feed, _) = broadcast::channel(SUBSCRIBER_BUFFER);
    let mut d = Daemon {
        target_opts: TargetOptions {
            detect: cfg.detect,
            scope: cfg.scope.clone(),
            stack_depth: cfg.stack_depth,
            accesses: if cfg.all_accesses {
                crate::settings::AccessStream::Records
            } else {
                crate::settings::AccessStream::Counts
            },
            function_start: false,
            max_overhead: cfg.max_overhead,
            stepped_exits: cfg.stepped_exits,
        },
        stdout: cfg.stdout_json.then(|| BufWriter::new(std::io::stdout())),
        cfg: cfg.clone(),
        engine,
        log,
        feed,
        watches: Vec::new(),
        origins: HashMap::new(),
        planning: HashMap::new(),
        skip: HashSet::new(),
        plan_tx,
        pending: Vec::with_capacity(4096),
        repeats: RepeatedOverlaps::default(),
        events_by_kind: BTreeMap::new(),
        last_counts: Instant::now(),
        lost_by_what: BTreeMap::new(),
        alerts_by_rule: BTreeMap::new(),
        log_errors: 0,
        log_dropped_reported: 0,
        metrics,
        socket,
        started: Instant::now(),
        self_pid: std::process::id(),
        bpf_status,
    };
    say!(
        Info,
        "pid {}, control socket {}, audit log {}{}",
        d.self_pid,
        cfg.socket.display(),
        cfg.log_dir.display(),
        cfg.metrics_listen
            .map(|a| format!(", metrics http://{a}/metrics"))
            .unwrap_or_default()
    );
    // Restart: what the configuration names is attached again.
    for &pid in &cfg.pids {
        d.start_attach(pid, Origin::Config, None);
    }
    for exe in &cfg.exes {
        if let Err(e) = d.add_watch(exe, Origin::Config) {
            say!(Warn, "configured watch {}: {}", exe.display(), e.message);
        }
    }
    d.publish_metrics();

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(cfg.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    enum Wake {
        Stop,
        Ring,
        Tick,
        Control(ControlMsg),
        Planned(Box<PlanDone>),
        Bpf(Box<AuditEvent>),
    }
    loop {
        let wake = tokio::select! {
            _ = sigterm.recv() => Wake::Stop,
            _ = sigint.recv() => Wake::Stop,
            _ = tick.tick() => Wake::Tick,
            Some(m) = ctl_rx.recv() => Wake::Control(m),
            Some(p) = plan_rx.recv() => Wake::Planned(Box::new(p)),
            Some(e) = bpf_rx.recv() => Wake::Bpf(Box::new(e)),
            _ = d.engine.readable(Duration::from_millis(500)) => Wake::Ring,
        };
        match wake {
            Wake::Stop => break,
            Wake::Ring => {}
            Wake::Tick => d.tick(),
            Wake::Control(m) => d.handle(m),
            Wake::Planned(p) => d.finish_attach(*p),
            Wake::Bpf(e) => d.record(LogEvent::Audit(*e)),
        }
        d.engine.drain(&mut d.pending);
        d.record_pending();
    }
    say!(
        Info,
        "stopping: detaching every target and flushing the log"
    );
    d.socket.server.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = bpf_stop_tx.send(true);
    if let Some(t) = bpf_task {
        // Its last events (the ring drained after it stops) come through
        // the channel until it closes.
        let collect = async {
            while let Some(e) = bpf_rx.recv().await {
                d.record(LogEvent::Audit(e));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
        let _ = t.await;
    }
    d.shutdown();
    let _ = std::fs::remove_file(&cfg.socket);
    say!(Info, "stopped");
    Ok(0)
}
