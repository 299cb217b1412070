//! bpf(2) auditing and guarded maps inside the daemon: the same kernel
//! programs, decoding and policy as `map-auditor bpf`, on their own loaded
//! object and ring buffer, feeding the daemon's log through a channel.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::config::BpfSection;
use crate::{
    bpf::{
        BpfMapGraph, LossTracker, POLL_EVERY, from_raw,
        lifecycle::MapLifecycle,
        policy::GuardSpec,
        session::{BpfAuditSession, SessionError},
        sys,
    },
    event::{AuditEvent, Lost},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        ring::RingReader,
    },
    probe::counters::KernelCounters,
};

/// Why bpf(2) auditing could not start.
#[derive(Debug, thiserror::Error)]
pub enum BpfAuditError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Probe(#[from] Box<crate::probe::ProbeError>),
}

/// Load and attach the tracepoints, then audit until `stop` turns true.
/// Events go to `out`; when it is full they are counted and reported as a
/// `lost` event (`what` = `daemon_queue`) instead of blocking the reader.
pub fn start(
    cfg: &BpfSection,
    out: mpsc::Sender<AuditEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, BpfAuditError> {
    let mut session = BpfAuditSession::start(false)?;
    let mut ring = RingReader::take(&mut session.ebpf).map_err(Box::new)?;
    let counters = KernelCounters::take(&mut session.ebpf).map_err(Box::new)?;
    let guards: Vec<GuardSpec> = cfg.guard.iter().map(|g| GuardSpec::parse(g)).collect();
    let mut graph = BpfMapGraph::new(guards.clone(), cfg.allow_exe.clone());
    for g in &guards {
        match g {
            GuardSpec::Pin(p) => {
                if let Ok(info) = sys::map_info_by_pin(p) {
                    graph.guard_id(info.id);
                }
            }
            GuardSpec::Id(id) => graph.guard_id(*id),
            GuardSpec::Name(_) => {}
        }
    }
    let alerts_only = cfg.alerts_only;
    Ok(tokio::spawn(async move {
        let clock = WallClock::new();
        let mut lifecycle = MapLifecycle::default();
        if let Ok(ids) = sys::map_ids() {
            lifecycle.poll(&ids, 0, sys::map_info_by_id);
        }
        let mut losses_seen = LossTracker::default();
        let mut queue_lost = 0u64;
        let mut queue_lost_reported = 0u64;
        let mut buf = Vec::new();
        let mut next_poll = Instant::now() + POLL_EVERY;
        let send = |ev: AuditEvent, lost: &mut u64| {
            if out.try_send(ev).is_err() {
                *lost += 1;
            }
        };
        loop {
            let stopping = tokio::select! {
                _ = ring.read_batch(&mut buf, Duration::from_millis(50)) => false,
                _ = stop.changed() => true,
            };
            if stopping {
                session.disable();
                ring.drain(&mut buf);
            }
            for rec in buf.drain(..) {
                let Ok(RawRecord::BpfSyscall(raw)) = decode(&rec) else {
                    continue;
                };
                let ev = from_raw(&raw, &clock);
                lifecycle.note(&ev);
                let alerts = graph.observe(&ev);
                if !alerts_only {
                    send(AuditEvent::BpfMap(ev), &mut queue_lost);
                }
                for a in alerts {
                    send(AuditEvent::Alert(a), &mut queue_lost);
                }
            }
            if stopping || Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL_EVERY;
                let now = clock.now_unix_ns();
                if let Ok(ids) = sys::map_ids() {
                    for ev in lifecycle.poll(&ids, now, sys::map_info_by_id) {
                        graph.observe(&ev);
                        if !alerts_only {
                            send(AuditEvent::BpfMap(ev), &mut queue_lost);
                        }
                    }
                }
                let mut losses = losses_seen.check(&counters, now);
                if queue_lost > queue_lost_reported {
                    losses.push(Lost {
                        ts_ns: now,
                        pid: 0,
                        what: "daemon_queue".into(),
                        count: queue_lost - queue_lost_reported,
                        total: queue_lost,
                    });
                    queue_lost_reported = queue_lost;
                }
                // Losses are few and must arrive: wait for room.
                for l in losses {
                    let _ = out.send(AuditEvent::Lost(l)).await;
                }
            }
            if stopping {
                return;
            }
        }
    }))
}
