//! The `map-auditor bpf` command: load, tail, filter, find, summarise.

use std::{
    fs::File,
    io::{BufWriter, Write},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use auditor_common::Counter;
use bytes::Bytes;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Alert, BpfMapEvent, BpfMapGraph,
    lifecycle::MapLifecycle,
    policy::GuardSpec,
    render,
    session::{BpfAuditSession, FopsSource},
    sys,
};
use crate::{
    cli::{BpfArgs, Format},
    event::{AuditEvent, Lost, Summary},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        ring::RingReader,
    },
    probe::counters::KernelCounters,
};

/// How often vanished map ids and kernel drop counters are checked.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Longest wait for records: the kernel wakes us only every 32 records per
/// CPU (see auditor-ebpf), so this bounds how late a lone record shows.
const READ_WAIT: Duration = Duration::from_millis(50);

/// Which events the user asked to see.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub map_id: Option<u32>,
    pub map_name: Option<String>,
}

impl EventFilter {
    pub fn from_args(a: &BpfArgs) -> Self {
        Self {
            pid: a.pid,
            comm: a.comm.clone(),
            map_id: a.map_id,
            map_name: a.map_name.clone(),
        }
    }

    fn check(&self, pid: u32, comm: &str, map_id: u32, map_name: &str) -> bool {
        self.pid.is_none_or(|p| p == pid)
            && self.comm.as_deref().is_none_or(|c| c == comm)
            && self.map_id.is_none_or(|m| m == map_id)
            && self.map_name.as_deref().is_none_or(|n| n == map_name)
    }

    /// `map_destroyed` has no process: only map filters apply.
    pub fn matches(&self, e: &BpfMapEvent) -> bool {
        if e.cmd == super::MAP_DESTROYED {
            return self.map_id.is_none_or(|m| m == e.map_id)
                && self.map_name.as_deref().is_none_or(|n| n == e.map_name);
        }
        self.check(e.pid, &e.comm, e.map_id, &e.map_name)
    }

    /// Guarded-map alerts are always shown: the user asked for them by name.
    pub fn matches_alert(&self, a: &Alert) -> bool {
        a.rule == super::AlertRule::GuardedMapWrite
            || self.check(a.pid, &a.comm, a.map_id, &a.map_name)
    }
}

#[derive(Default)]
struct Tally {
    events: u64,
    bad_records: u64,
}

struct Sink {
    format: Format,
    quiet: bool,
    out: BufWriter<std::io::Stdout>,
    record: Option<BufWriter<File>>,
}

impl Sink {
    fn emit(&mut self, ev: &AuditEvent) {
        if let Some(r) = &mut self.record
            && let Ok(line) = serde_json::to_string(ev)
        {
            let _ = writeln!(r, "{line}");
        }
        if self.quiet && matches!(ev, AuditEvent::BpfMap(_)) {
            return;
        }
        let line = match self.format {
            Format::Json => serde_json::to_string(ev).unwrap_or_default(),
            Format::Text => match ev {
                AuditEvent::BpfMap(e) => render::event_line(e),
                AuditEvent::Alert(a) => render::alert_line(a),
                AuditEvent::Lost(l) => render::lost_line(l),
                _ => return,
            },
        };
        let _ = writeln!(self.out, "{line}");
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
        if let Some(r) = &mut self.record {
            let _ = r.flush();
        }
    }
}

/// Kernel counters that mean lost events, by their `lost.what` name.
const LOSS_COUNTERS: [(Counter, &str); 3] = [
    (Counter::BpfSyscallDropped, "bpf_map"),
    (Counter::BpfInflightFull, "bpf_inflight"),
    (Counter::BpfWriterStateFull, "bpf_writer_state"),
];

/// Turns the bpf(2) loss counters into `lost` events, each loss once.
#[derive(Default)]
pub struct LossTracker {
    seen: [u64; LOSS_COUNTERS.len()],
}

impl LossTracker {
    /// Losses since the previous check.
    pub fn check(&mut self, counters: &KernelCounters, ts_ns: u64) -> Vec<Lost> {
        let snap = counters.read();
        let mut out = Vec::new();
        for (i, (c, what)) in LOSS_COUNTERS.iter().enumerate() {
            let total = snap.get(*c);
            if total > self.seen[i] {
                out.push(Lost {
                    ts_ns,
                    pid: 0,
                    what: (*what).into(),
                    count: total - self.seen[i],
                    total,
                });
                self.seen[i] = total;
            }
        }
        out
    }
}

/// Run `map-auditor bpf`. Builds its own tokio runtime (current thread);
/// returns the process exit code (0 after a clean end by Ctrl-C, SIGTERM or
/// `--duration`).
pub fn run(args: &BpfArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &BpfArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let clock = WallClock::new();
    let mut session = BpfAuditSession::start(args.include_self)?;
    let mut ring = RingReader::take(&mut session.ebpf)?;
    let counters = KernelCounters::take(&mut session.ebpf)?;
    let filter = EventFilter::from_args(args);

    let guards: Vec<GuardSpec> = args.guard.iter().map(|g| GuardSpec::parse(g)).collect();
    let mut graph = BpfMapGraph::new(guards.clone(), args.allow_exe.clone());
    for g in &guards {
        let existing = match g {
            GuardSpec::Pin(p) => match sys::map_info_by_pin(p) {
                Ok(info) => {
                    graph.guard_id(info.id);
                    Some(info.id)
                }
                Err(e) => {
                    eprintln!(
                        "note: guard {}: no map pinned there yet ({e}); guarding it once one is pinned",
                        p.display()
                    );
                    None
                }
            },
            GuardSpec::Id(id) => sys::map_info_by_id(*id).map(|i| i.id),
            GuardSpec::Name(_) => None,
        };
        if let Some(id) = existing {
            eprintln!(
                "note: guarded map {id} existed before the audit: its creator is unknown, so only --allow-exe executables may write it"
            );
        }
    }

    let mut sink = Sink {
        format: args.format,
        quiet: args.quiet,
        out: BufWriter::new(std::io::stdout()),
        record: match &args.record {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => None,
        },
    };
    eprintln!(
        "auditing bpf() calls on maps system-wide (bpf_map_fops {:#x} from {}); Ctrl-C to stop",
        session.map_fops,
        match session.fops_source {
            FopsSource::KallsymsAndCalibration => "kallsyms, confirmed by calibration",
            FopsSource::Calibration => "self-calibration",
        }
    );

    let mut lifecycle = MapLifecycle::default();
    if let Ok(ids) = sys::map_ids() {
        lifecycle.poll(&ids, 0, sys::map_info_by_id);
    }
    let mut losses = LossTracker {
        seen: [0; LOSS_COUNTERS.len()],
    };
    let mut tally = Tally::default();

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut next_poll = Instant::now() + POLL_EVERY;
    let mut buf: Vec<Bytes> = Vec::new();

    let handle = |buf: &mut Vec<Bytes>,
                  sink: &mut Sink,
                  graph: &mut BpfMapGraph,
                  lifecycle: &mut MapLifecycle,
                  tally: &mut Tally| {
        for rec in buf.drain(..) {
            let raw = match decode(&rec) {
                Ok(RawRecord::BpfSyscall(r)) => r,
                Ok(_) => continue,
                Err(_) => {
                    tally.bad_records += 1;
                    continue;
                }
            };
            let ev = super::from_raw(&raw, &clock);
            lifecycle.note(&ev);
            let alerts = graph.observe(&ev);
            if filter.matches(&ev) {
                tally.events += 1;
                sink.emit(&AuditEvent::BpfMap(ev));
            }
            for a in alerts {
                if filter.matches_alert(&a) {
                    sink.emit(&AuditEvent::Alert(a));
                }
            }
        }
    };

    loop {
        let stop = tokio::select! {
            _ = ring.read_batch(&mut buf, READ_WAIT) => false,
            _ = tokio::signal::ctrl_c() => true,
            _ = sigterm.recv() => true,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        handle(&mut buf, &mut sink, &mut graph, &mut lifecycle, &mut tally);
        if stop || Instant::now() >= next_poll {
            next_poll = Instant::now() + POLL_EVERY;
            // Events already in the ring come first, so a map created and
            // freed since the last poll is known before it is missed.
            ring.drain(&mut buf);
            handle(&mut buf, &mut sink, &mut graph, &mut lifecycle, &mut tally);
            let now = clock.now_unix_ns();
            if let Ok(ids) = sys::map_ids() {
                for ev in lifecycle.poll(&ids, now, sys::map_info_by_id) {
                    graph.observe(&ev);
                    if filter.matches(&ev) {
                        tally.events += 1;
                        sink.emit(&AuditEvent::BpfMap(ev));
                    }
                }
            }
            for l in losses.check(&counters, now) {
                sink.emit(&AuditEvent::Lost(l));
            }
            sink.flush();
        }
        if stop {
            break;
        }
    }

    session.disable();
    ring.drain(&mut buf);
    handle(&mut buf, &mut sink, &mut graph, &mut lifecycle, &mut tally);
    let now = clock.now_unix_ns();
    for l in losses.check(&counters, now) {
        sink.emit(&AuditEvent::Lost(l));
    }
    let snap = counters.read();
    let dropped: u64 =
        LOSS_COUNTERS.iter().map(|(c, _)| snap.get(*c)).sum::<u64>() + tally.bad_records;
    let summary = Summary {
        ts_ns: now,
        pid: std::process::id(),
        events: tally.events,
        accesses: 0,
        overlaps: graph.concurrent_calls,
        dropped,
        probe_hits: snap.get(Counter::BpfSyscallsSeen),
        duration_ms: started.elapsed().as_millis() as u64,
        target_exit_code: None,
        target_signal: None,
        target_fatal: None,
    };
    let text = render::summary_text(&summary, &graph, snap.get(Counter::BpfResolveFailed));
    match args.format {
        Format::Json => sink.emit(&AuditEvent::Summary(summary)),
        Format::Text => {
            let _ = write!(sink.out, "{text}");
            if let Some(r) = &mut sink.record
                && let Ok(line) = serde_json::to_string(&AuditEvent::Summary(summary))
            {
                let _ = writeln!(r, "{line}");
            }
        }
    }
    sink.flush();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_and_destroyed_maps_match_map_filters_only() {
        let f = EventFilter {
            comm: Some("bpftool".into()),
            map_id: Some(7),
            ..Default::default()
        };
        let mut e = BpfMapEvent {
            comm: "bpftool".into(),
            map_id: 7,
            ..Default::default()
        };
        assert!(f.matches(&e));
        e.comm = "other".into();
        assert!(!f.matches(&e));
        let d = BpfMapEvent {
            cmd: super::super::MAP_DESTROYED.into(),
            map_id: 7,
            ..Default::default()
        };
        assert!(f.matches(&d));
    }
}
