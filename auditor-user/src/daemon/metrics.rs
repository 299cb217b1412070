//! The opt-in Prometheus endpoint: `GET /metrics` in the text exposition
//! format, served by a minimal HTTP/1.0 responder (one request per
//! connection, bounded, nothing else). The main loop refreshes a
//! [`MetricsSnapshot`] every tick; scrapes only read it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::say::say;

/// Per-target series.
#[derive(Clone, Debug, Default)]
pub struct TargetMetrics {
    pub pid: u32,
    pub exe: String,
    pub events: u64,
    pub accesses: u64,
    pub overlaps: u64,
    pub drops: u64,
}

/// Everything a scrape reports.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    pub targets: Vec<TargetMetrics>,
    pub watches: usize,
    /// Events logged, by kind.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Kernel and pipeline losses, by `lost.what`.
    pub lost_by_what: BTreeMap<String, u64>,
    /// Alerts by rule.
    pub alerts_by_rule: BTreeMap<String, u64>,
    pub probe_hits: u64,
    pub ring_used_bytes: Option<u64>,
    pub ring_size_bytes: u64,
    /// Records read from the ring since start (its rate is the ring's inflow).
    pub ring_records: u64,
    pub rss_bytes: u64,
    pub log_bytes: u64,
    pub log_rotations: u64,
    pub log_write_errors: u64,
    pub subscribers: usize,
    pub uptime_seconds: f64,
}

/// Resident memory of this process (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |p| p * page)
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl MetricsSnapshot {
    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
            let _ = writeln!(o, "# HELP map_auditor_{name} {help}");
            let _ = writeln!(o, "# TYPE map_auditor_{name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(o, "map_auditor_{name}{labels} {value}");
            }
        };
        let t = |f: &dyn Fn(&TargetMetrics) -> u64| -> Vec<(String, String)> {
            self.targets
                .iter()
                .map(|x| {
                    (
                        format!("{{pid=\"{}\",exe=\"{}\"}}", x.pid, label(&x.exe)),
                        f(x).to_string(),
                    )
                })
                .collect()
        };
        let plain = |v: u64| vec![(String::new(), v.to_string())];
        metric(
            "targets_attached",
            "gauge",
            "Go processes attached.",
            &plain(self.targets.len() as u64),
        );
        metric(
            "watches",
            "gauge",
            "Executables watched for new processes.",
            &plain(self.watches as u64),
        );
        metric(
            "target_events_total",
            "counter",
            "Events delivered per attached target.",
            &t(&|x| x.events),
        );
        metric(
            "target_accesses_total",
            "counter",
            "Map accesses per attached target.",
            &t(&|x| x.accesses),
        );
        metric(
            "target_overlaps_total",
            "counter",
            "Overlaps (concurrent map access findings) per attached target.",
            &t(&|x| x.overlaps),
        );
        metric(
            "target_drops_total",
            "counter",
            "Kernel drops attributed to a target (only while it was the only one attached).",
            &t(&|x| x.drops),
        );
        let by = |m: &BTreeMap<String, u64>, key: &str| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (format!("{{{key}=\"{}\"}}", label(k)), v.to_string()))
                .collect()
        };
        let kinds: BTreeMap<String, u64> = self
            .events_by_kind
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        metric(
            "events_total",
            "counter",
            "Events written to the audit log, by kind.",
            &by(&kinds, "kind"),
        );
        metric(
            "lost_total",
            "counter",
            "Events lost, by what was lost.",
            &by(&self.lost_by_what, "what"),
        );
        metric(
            "alerts_total",
            "counter",
            "BPF map alerts, by rule.",
            &by(&self.alerts_by_rule, "rule"),
        );
        metric(
            "probe_hits_total",
            "counter",
            "Uprobe hits on Go map functions (all targets).",
            &plain(self.probe_hits),
        );
        if let Some(u) = self.ring_used_bytes {
            metric(
                "ring_used_bytes",
                "gauge",
                "Ring buffer bytes written by the kernel and not yet read.",
                &plain(u),
            );
            let fill = if self.ring_size_bytes > 0 {
                u as f64 / self.ring_size_bytes as f64
            } else {
                0.0
            };
            metric(
                "ring_fill_ratio",
                "gauge",
                "Ring buffer fill (0-1) at the last tick.",
                &[(String::new(), format!("{fill:.6}"))],
            );
        }
        metric(
            "ring_size_bytes",
            "gauge",
            "Ring buffer size.",
            &plain(self.ring_size_bytes),
        );
        metric(
            "ring_records_total",
            "counter",
            "Records read from the ring buffer.",
            &plain(self.ring_records),
        );
        metric(
            "resident_memory_bytes",
            "gauge",
            "Daemon resident set size.",
            &plain(self.rss_bytes),
        );
        metric(
            "log_bytes_total",
            "counter",
            "Bytes written to the audit log since start.",
            &plain(self.log_bytes),
        );
        metric(
            "log_rotations_total",
            "counter",
            "Audit log files rotated since start.",
            &plain(self.log_rotations),
        );
        metric(
            "log_write_errors_total",
            "counter",
            "Failed audit log writes.",
            &plain(self.log_write_errors),
        );
        metric(
            "subscribers",
            "gauge",
            "Clients streaming events.",
            &plain(self.subscribers as u64),
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            &[(String::new(), format!("{:.1}", self.uptime_seconds))],
        );
        o
    }
}

/// Serve `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<Mutex<MetricsSnapshot>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            // Read the request head (bounded, with a deadline).
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if head.is_err() {
                return;
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let first = req.lines().next().unwrap_or("");
            let (status, body) = if first.starts_with("GET /metrics ") || first == "GET /metrics" {
                let body = state.lock().map(|s| s.render()).unwrap_or_default();
                ("200 OK", body)
            } else {
                ("404 Not Found", "only GET /metrics is served\n".to_string())
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Bind the endpoint; warn when it is not on loopback.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        say!(
            Warn,
            "metrics on {addr} are reachable beyond this host: restrict access with a firewall or use 127.0.0.1"
        );
    }
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_escaped_labels() {
        let s = MetricsSnapshot {
            targets: vec![TargetMetrics {
                pid: 7,
                exe: "/srv/a\"b".into(),
                overlaps: 2,
                ..Default::default()
            }],
            ring_used_bytes: Some(512),
            ring_size_bytes: 1024,
            ..Default::default()
        };
        let text = s.render();
        assert!(text.contains("# TYPE map_auditor_target_overlaps_total counter"));
        assert!(
            text.contains(r#"map_auditor_target_overlaps_total{pid="7",exe="/srv/a\"b"} 2"#),
            "{text}"
        );
        assert!(text.contains("map_auditor_ring_fill_ratio 0.500000"));
        assert!(text.contains("map_auditor_targets_attached 1"));
    }
}
