//! One engine for every bpf(2) audit: `map-auditor bpf` and the daemon both
//! run it. It owns the loaded session, the ring buffer and the counters,
//! and does guard set-up, decode → join → event → lifecycle → graph, the
//! polls (vanished maps, re-pinned guards, re-created allowed executables,
//! losses) and the end of an audit. Callers decide what to show.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use auditor_common::{
    Counter,
    bpf_syscall::{BpfSyscallEvent, resolved},
};
use bytes::Bytes;

use super::{
    Alert, AlertRule, BpfMapEvent, BpfMapGraph, MAP_DESTROYED,
    exe::{AllowList, ExeCache, ExeId},
    from_raw, is_audited_record,
    lifecycle::MapLifecycle,
    policy::GuardSpec,
    session::{BpfAuditSession, FopsSource, SessionError},
    sys,
};
use crate::{
    event::{AuditEvent, Summary},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        loss::{BPF_LOSSES, LossTracker},
        ring::RingReader,
    },
    probe::counters::{CounterSnapshot, KernelCounters},
};

/// How often vanished map ids, guarded pins, allowed executables and kernel
/// drop counters are checked.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Longest wait for records: the kernel wakes us only every 1024 records
/// per CPU (see auditor-ebpf), so this bounds how late a lone record shows.
pub const READ_WAIT: Duration = Duration::from_millis(50);

/// What a bpf(2) audit guards and how (validated settings; the CLI and the
/// daemon's config both build it).
#[derive(Clone, Debug, Default)]
pub struct BpfSettings {
    pub guards: Vec<GuardSpec>,
    pub allow_exe: Vec<PathBuf>,
    /// The content of an allowed caller must match its SHA-256 at start.
    pub verify_hash: bool,
    pub include_self: bool,
}

impl BpfSettings {
    /// Parse `--guard` values; a bad one is a one-line error.
    pub fn new(
        guard: &[String],
        allow_exe: &[PathBuf],
        include_self: bool,
    ) -> Result<Self, String> {
        Ok(Self {
            guards: guard
                .iter()
                .map(|g| GuardSpec::parse(g))
                .collect::<Result<_, _>>()?,
            allow_exe: allow_exe.to_vec(),
            verify_hash: false,
            include_self,
        })
    }
}

/// Why bpf(2) auditing could not start.
#[derive(Debug, thiserror::Error)]
pub enum BpfAuditError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Probe(#[from] Box<crate::probe::ProbeError>),
    #[error("{0}")]
    Settings(String),
    #[error(
        "cannot guard maps: 32-bit (int $0x80) bpf() calls cannot be watched on this machine ({0}), so a guarded map could be written unseen"
    )]
    NoCompat(String),
}

/// Counts kept in userspace.
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfStats {
    /// Records that did not decode.
    pub bad_records: u64,
    /// Map commands whose fd named no map (see [`BpfMapEvent::unresolved_fd`]).
    pub unresolved_fds: u64,
}

/// A guarded pin path and the last map seen pinned there.
struct PinGuard {
    path: PathBuf,
    last: Option<u32>,
}

/// A running bpf(2) audit.
pub struct BpfEngine {
    session: BpfAuditSession,
    ring: RingReader,
    counters: KernelCounters,
    clock: WallClock,
    pub graph: BpfMapGraph,
    lifecycle: MapLifecycle,
    losses: LossTracker,
    exes: ExeCache,
    pins: Vec<PinGuard>,
    buf: Vec<Bytes>,
    next_poll: Instant,
    notes: Vec<String>,
    pub stats: BpfStats,
    started: Instant,
}

impl BpfEngine {
    /// Load, attach and calibrate; resolve guards and allowed executables.
    /// With guards, refuses to start when 32-bit calls cannot be seen.
    pub fn start(settings: &BpfSettings) -> Result<Self, BpfAuditError> {
        let mut session = BpfAuditSession::start(settings.include_self)?;
        if !settings.guards.is_empty()
            && let Err(e) = &session.compat
        {
            return Err(BpfAuditError::NoCompat(e.clone()));
        }
        let ring = RingReader::take(&mut session.ebpf).map_err(Box::new)?;
        let counters = KernelCounters::take(&mut session.ebpf).map_err(Box::new)?;
        let allow = AllowList::resolve(&settings.allow_exe, settings.verify_hash);
        let mut exes = ExeCache::default();
        for a in &allow.exes {
            if let Some(id) = a.id {
                exes.learn(id, &a.path);
            }
        }
        let mut engine = Self {
            session,
            ring,
            counters,
            clock: WallClock::new(),
            graph: BpfMapGraph::new(settings.guards.clone(), allow),
            lifecycle: MapLifecycle::default(),
            losses: LossTracker::new(&BPF_LOSSES),
            exes,
            pins: Vec::new(),
            buf: Vec::new(),
            next_poll: Instant::now() + POLL_EVERY,
            notes: Vec::new(),
            stats: BpfStats::default(),
            started: Instant::now(),
        };
        engine.poll_lifecycle(0, &mut Vec::new());
        engine.set_up_guards(settings);
        Ok(engine)
    }

    /// Resolve every guard against the maps alive now and say what each
    /// one matches (into the notes).
    fn set_up_guards(&mut self, settings: &BpfSettings) {
        let mut notes = Vec::new();
        let live = format!(
            "auditing bpf() calls on maps system-wide (bpf_map_fops {:#x} from {}); 32-bit calls: {}",
            self.session.map_fops,
            match self.session.fops_source {
                FopsSource::KallsymsAndCalibration => "kallsyms, confirmed by calibration",
                FopsSource::Calibration => "self-calibration",
            },
            match &self.session.compat {
                Ok(()) => "seen (raw_syscalls)".to_string(),
                Err(e) => format!("NOT seen ({e})"),
            }
        );
        for g in &settings.guards {
            let ids: Vec<(u32, String)> = match g {
                GuardSpec::Pin(p) => {
                    let id = sys::map_info_by_pin(p).ok().map(|i| (i.id, i.name));
                    self.pins.push(PinGuard {
                        path: p.clone(),
                        last: id.as_ref().map(|(id, _)| *id),
                    });
                    if let Some((id, _)) = &id {
                        self.graph.guard_id(*id);
                    }
                    id.into_iter().collect()
                }
                GuardSpec::Id(id) => {
                    self.graph.guard_id(*id);
                    sys::map_info_by_id(*id)
                        .map(|i| (i.id, i.name))
                        .into_iter()
                        .collect()
                }
                GuardSpec::Name(_) => {
                    let mut v: Vec<(u32, String)> = self
                        .lifecycle
                        .maps()
                        .filter(|(id, name)| g.names(*id, name))
                        .map(|(id, name)| (id, name.to_string()))
                        .collect();
                    v.sort();
                    v
                }
            };
            let list = if ids.is_empty() {
                match g {
                    GuardSpec::Pin(_) => {
                        "no map pinned there now; guarded once one is pinned".to_string()
                    }
                    _ => "no map now; guarded once one appears".to_string(),
                }
            } else {
                let maps: Vec<String> = ids.iter().map(|(id, n)| format!("{id} ({n})")).collect();
                format!(
                    "matches map {}; existed before the audit, so its creator is unknown and only --allow-exe executables may write it",
                    maps.join(", ")
                )
            };
            notes.push(format!("guard {g}: {list}"));
        }
        for a in &self.graph.allow.exes {
            notes.push(match a.id {
                Some(id) if self.graph.allow.verify_hash => format!(
                    "--allow-exe {}: {id}, sha256 {}",
                    a.path.display(),
                    a.sha256
                        .map_or_else(|| "unreadable (allows nothing)".to_string(), |h| h.hex())
                ),
                Some(id) => format!("--allow-exe {}: {id}", a.path.display()),
                None => format!(
                    "--allow-exe {}: no such file now; it allows nothing until it exists",
                    a.path.display()
                ),
            });
        }
        // The "auditing" line comes last: it tells a reader the audit is live.
        notes.push(live);
        self.notes.extend(notes);
    }

    /// Lines for the user (start-up, guard changes); taken once.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Wait for records (up to [`READ_WAIT`]); cancel-safe.
    pub async fn wait(&mut self) {
        self.ring.read_batch(&mut self.buf, READ_WAIT).await;
    }

    /// Turn the records read so far into events and alerts.
    pub fn process(&mut self, out: &mut Vec<AuditEvent>) {
        let records = std::mem::take(&mut self.buf);
        for rec in &records {
            match decode(rec) {
                Ok(RawRecord::BpfSyscall(r)) => self.emit(&r, out),
                Ok(_) => {}
                Err(_) => self.stats.bad_records += 1,
            }
        }
        self.buf = records;
        self.buf.clear();
    }

    fn emit(&mut self, raw: &BpfSyscallEvent, out: &mut Vec<AuditEvent>) {
        if !is_audited_record(raw) {
            return;
        }
        let mut ev = from_raw(raw, &self.clock);
        let id = (raw.resolved & resolved::CREDS != 0 && raw.resolved & resolved::NO_EXE == 0)
            .then(|| ExeId::from_kernel(raw.exe_dev, raw.exe_ino));
        (ev.exe, ev.exe_unread) = self.exes.path(ev.pid, id);
        // Hashing is for callers that claim an allowed identity only.
        let allow = &self.graph.allow;
        if allow.verify_hash
            && let Some(id) = id
            && allow.has_identity(id)
        {
            ev.exe_sha256 = Some(
                self.exes
                    .hash(ev.pid, id, allow.path_of(id))
                    .map_or_else(|| "unreadable".to_string(), |h| h.hex()),
            );
        }
        for m in &mut ev.prog_maps {
            m.name = match self.lifecycle.name(m.id) {
                Some(n) => n.to_string(),
                None => sys::map_info_by_id(m.id)
                    .map(|i| i.name)
                    .unwrap_or_default(),
            };
        }
        if ev.unresolved_fd() {
            self.stats.unresolved_fds += 1;
        }
        self.lifecycle.note(&ev);
        let alerts = self.graph.observe(&ev);
        out.push(AuditEvent::BpfMap(ev));
        out.extend(alerts.into_iter().map(AuditEvent::Alert));
    }

    /// Whether [`Self::poll`] is due.
    pub fn poll_due(&self) -> bool {
        Instant::now() >= self.next_poll
    }

    /// Records still in the ring, vanished maps, guarded pins, allowed
    /// executables, losses.
    pub fn poll(&mut self, out: &mut Vec<AuditEvent>) {
        self.next_poll = Instant::now() + POLL_EVERY;
        // Events already in the ring come first, so a map created and
        // freed since the last poll is known before it is missed.
        self.ring.drain(&mut self.buf);
        self.process(out);
        let now = self.clock.now_unix_ns();
        self.poll_lifecycle(now, out);
        self.poll_pins(now, out);
        for change in self.graph.allow.refresh(|p| ExeId::of_path(p).ok()) {
            self.notes.push(change);
        }
        for a in &self.graph.allow.exes {
            if let Some(id) = a.id {
                self.exes.learn(id, &a.path);
            }
        }
        let snap = self.counters.read();
        out.extend(
            self.losses
                .lost_events(&snap, 0, now)
                .into_iter()
                .map(AuditEvent::Lost),
        );
    }

    fn poll_lifecycle(&mut self, now: u64, out: &mut Vec<AuditEvent>) {
        let Ok(ids) = sys::map_ids() else {
            return;
        };
        let mut names = Vec::new();
        let gone = self.lifecycle.poll(&ids, now, |id| {
            let i = sys::map_info_by_id(id);
            if let Some(i) = &i {
                names.push((id, i.name.clone()));
            }
            i
        });
        for (id, name) in names {
            self.graph.note_name(id, &name);
        }
        if now == 0 {
            return;
        }
        for ev in gone {
            self.graph.observe(&ev);
            out.push(AuditEvent::BpfMap(ev));
        }
    }

    fn poll_pins(&mut self, now: u64, out: &mut Vec<AuditEvent>) {
        for i in 0..self.pins.len() {
            let Ok(info) = sys::map_info_by_pin(&self.pins[i].path) else {
                continue;
            };
            let last = self.pins[i].last;
            if last == Some(info.id) {
                continue;
            }
            self.graph.note_name(info.id, &info.name);
            let path = self.pins[i].path.display().to_string();
            self.pins[i].last = Some(info.id);
            if last.is_some() {
                out.push(AuditEvent::Alert(
                    self.graph.pin_changed(now, &path, last, info.id),
                ));
            } else {
                self.graph.guard_id(info.id);
                self.notes.push(format!(
                    "guard pin {path}: now map {} ({})",
                    info.id, info.name
                ));
            }
        }
    }

    /// Stop the kernel programs, take what is left, and report losses.
    pub fn finish(&mut self, out: &mut Vec<AuditEvent>) {
        self.session.disable();
        self.poll(out);
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.counters.read()
    }

    /// The summary of the audit; `events` is what the caller showed.
    pub fn summary(&self, events: u64) -> Summary {
        let snap = self.counters.read();
        Summary {
            ts_ns: self.clock.now_unix_ns(),
            pid: std::process::id(),
            events,
            accesses: 0,
            overlaps: self.graph.concurrent_calls,
            dropped: self.losses.total(&snap) + self.stats.bad_records,
            probe_hits: snap.get(Counter::BpfSyscallsSeen),
            duration_ms: self.started.elapsed().as_millis() as u64,
            target_exit_code: None,
            target_signal: None,
            target_fatal: None,
            unresolved_fds: Some(self.stats.unresolved_fds),
            ..Summary::default()
        }
    }
}

/// Which events the user asked to see. `--pid`/`--comm` also decide which
/// `map_destroyed` events show (maps a matching process touched) and which
/// rows the summary lists.
#[derive(Clone, Debug, Default)]
pub struct BpfFilter {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub map_id: Option<u32>,
    pub map_name: Option<String>,
    /// Maps touched by matching processes.
    touched: std::collections::HashSet<u32>,
}

impl BpfFilter {
    pub fn new(
        pid: Option<u32>,
        comm: Option<String>,
        map_id: Option<u32>,
        map_name: Option<String>,
    ) -> Self {
        Self {
            pid,
            comm,
            map_id,
            map_name,
            touched: Default::default(),
        }
    }

    fn by_process(&self) -> bool {
        self.pid.is_some() || self.comm.is_some()
    }

    pub fn process_matches(&self, pid: u32, comm: &str) -> bool {
        self.pid.is_none_or(|p| p == pid) && self.comm.as_deref().is_none_or(|c| c == comm)
    }

    fn map_matches(&self, map_id: u32, map_name: &str) -> bool {
        self.map_id.is_none_or(|m| m == map_id)
            && self.map_name.as_deref().is_none_or(|n| n == map_name)
    }

    /// `map_destroyed` has no process: it shows when a matching process
    /// touched the map (or no process filter is set).
    pub fn matches(&mut self, e: &BpfMapEvent) -> bool {
        if e.cmd == MAP_DESTROYED {
            return self.map_matches(e.map_id, &e.map_name)
                && (!self.by_process() || self.touched.remove(&e.map_id));
        }
        let m = self.process_matches(e.pid, &e.comm) && self.map_matches(e.map_id, &e.map_name);
        if m && e.map_id != 0 && self.by_process() {
            self.touched.insert(e.map_id);
        }
        m
    }

    /// Guard alerts are always shown: the user asked for them by name.
    pub fn matches_alert(&self, a: &Alert) -> bool {
        matches!(
            a.rule,
            AlertRule::GuardedMapWrite
                | AlertRule::GuardedMapProgram
                | AlertRule::GuardedPinChanged
        ) || (self.process_matches(a.pid, &a.comm) && self.map_matches(a.map_id, &a.map_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_and_destroyed_maps_follow_the_process_filter() {
        let mut f = BpfFilter::new(None, Some("bpftool".into()), None, None);
        let mut e = BpfMapEvent {
            comm: "bpftool".into(),
            map_id: 7,
            cmd: "map_lookup_elem".into(),
            ..Default::default()
        };
        assert!(f.matches(&e));
        e.comm = "other".into();
        e.map_id = 8;
        assert!(!f.matches(&e));
        let destroyed = |id| BpfMapEvent {
            cmd: MAP_DESTROYED.into(),
            map_id: id,
            ..Default::default()
        };
        assert!(f.matches(&destroyed(7)), "bpftool touched map 7");
        assert!(!f.matches(&destroyed(8)), "only `other` touched map 8");
        let mut all = BpfFilter::new(None, None, Some(8), None);
        assert!(all.matches(&destroyed(8)));
        assert!(!all.matches(&destroyed(7)));
    }

    #[test]
    fn settings_refuse_a_guard_name_the_kernel_cannot_hold() {
        assert!(BpfSettings::new(&["0123456789abcdefg".into()], &[], false).is_err());
        assert_eq!(
            BpfSettings::new(&["flows".into(), "3".into()], &[], false)
                .unwrap()
                .guards,
            vec![GuardSpec::Name("flows".into()), GuardSpec::Id(3)]
        );
    }
}
