//! bpf(2) auditing and guarded maps inside the daemon: the shared
//! [`BpfEngine`] on its own loaded object and ring buffer, feeding the
//! daemon's log through a channel.

use tokio::sync::{mpsc, watch};

use super::config::BpfSection;
use crate::{
    bpf::{
        BpfEngine, BpfSettings,
        engine::{BpfAuditError, POLL_EVERY},
    },
    event::{AuditEvent, Lost},
};

/// Load and attach the tracepoints, then audit until `stop` turns true.
/// Events go to `out`; when it is full they are counted and reported as a
/// `lost` event (`what` = `daemon_queue`) instead of blocking the reader.
/// Start-up and guard notes go to stderr (the daemon's diagnostics).
pub fn start(
    cfg: &BpfSection,
    out: mpsc::Sender<AuditEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, BpfAuditError> {
    // The config was validated at load: the guards parse.
    let mut settings =
        BpfSettings::new(&cfg.guard, &cfg.allow_exe, false).map_err(BpfAuditError::Settings)?;
    settings.verify_hash = cfg.verify_hash;
    let mut engine = BpfEngine::start(&settings)?;
    let alerts_only = cfg.alerts_only;
    Ok(tokio::spawn(async move {
        let mut queue_lost = 0u64;
        let mut queue_lost_reported = 0u64;
        let mut events = Vec::new();
        let mut next_queue_check = std::time::Instant::now() + POLL_EVERY;
        loop {
            for n in engine.take_notes() {
                eprintln!("map-auditor daemon: bpf: {n}");
            }
            let stopping = tokio::select! {
                _ = engine.wait() => false,
                _ = stop.changed() => true,
            };
            if stopping {
                engine.finish(&mut events);
            } else {
                engine.process(&mut events);
                if engine.poll_due() {
                    engine.poll(&mut events);
                }
            }
            let mut losses = Vec::new();
            for ev in events.drain(..) {
                match ev {
                    AuditEvent::BpfMap(_) if alerts_only => {}
                    // Losses are few and must arrive: sent below, waiting
                    // for room.
                    AuditEvent::Lost(l) => losses.push(l),
                    ev => {
                        if out.try_send(ev).is_err() {
                            queue_lost += 1;
                        }
                    }
                }
            }
            if (stopping || std::time::Instant::now() >= next_queue_check)
                && queue_lost > queue_lost_reported
            {
                next_queue_check = std::time::Instant::now() + POLL_EVERY;
                losses.push(Lost {
                    ts_ns: crate::pipeline::clock::WallClock::new().now_unix_ns(),
                    pid: 0,
                    what: "daemon_queue".into(),
                    count: queue_lost - queue_lost_reported,
                    total: queue_lost,
                });
                queue_lost_reported = queue_lost;
            }
            for l in losses {
                let _ = out.send(AuditEvent::Lost(l)).await;
            }
            if stopping {
                return;
            }
        }
    }))
}
