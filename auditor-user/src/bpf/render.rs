//! One readable line per bpf(2) event, alert or loss (the text format);
//! JSON lines come straight from serde.

use std::fmt::Write as _;

use super::{Alert, BpfMapEvent, BpfMapGraph};
use crate::event::{Lost, Summary};

/// `HH:MM:SS.uuuuuu` local time of a Unix-epoch nanosecond stamp.
pub fn clock_time(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as libc::time_t;
    let micros = (unix_ns / 1000) % 1_000_000;
    // SAFETY: zeroed tm is a valid out-parameter; localtime_r is re-entrant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

fn latency(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".to_string();
    };
    if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

pub fn event_line(e: &BpfMapEvent) -> String {
    let mut s = format!(
        "{} {:>7}/{:<7} {:<16} {:<27} map={:<6} {:<16} {:<14} {:<8} {:>8}",
        clock_time(e.ts_ns),
        e.pid,
        e.tid,
        e.comm,
        e.cmd,
        e.map_id,
        e.map_name,
        e.map_type,
        e.result,
        latency(e.latency_ns),
    );
    if e.cmd == "map_create" || e.cmd == super::MAP_DESTROYED {
        let _ = write!(
            s,
            " key={} value={} entries={}",
            e.key_size, e.value_size, e.max_entries
        );
    }
    if let Some(n) = e.batch_count {
        let _ = write!(s, " batch={n}");
    }
    if let Some(p) = &e.path {
        let _ = write!(s, " path={p}");
    }
    if e.flags != 0 {
        let _ = write!(s, " flags={:#x}", e.flags);
    }
    if let Some(id) = e.prog_id {
        let maps: Vec<String> = e
            .prog_maps
            .iter()
            .map(|m| format!("{}({})", m.id, m.name))
            .collect();
        let _ = write!(s, " prog={id} maps=[{}]", maps.join(","));
    }
    if e.map_id == 0
        && let Some(fd) = e.fd
    {
        let _ = write!(s, " fd={fd}");
    }
    if e.compat {
        s.push_str(" 32-bit");
    }
    if let Some(c) = &e.concurrent_with {
        let _ = write!(s, " CONCURRENT with {}/{} {}", c.pid, c.tid, c.cmd);
    }
    s
}

pub fn alert_line(a: &Alert) -> String {
    let rule = serde_json::to_value(a.rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{} ALERT {rule}: {}", clock_time(a.ts_ns), a.message)
}

pub fn lost_line(l: &Lost) -> String {
    format!(
        "{} LOST {} {} (total {})",
        clock_time(l.ts_ns),
        l.count,
        l.what,
        l.total
    )
}

/// The closing summary; `keep` says which processes' rows to list
/// (`--pid`/`--comm`).
pub fn summary_text(
    s: &Summary,
    graph: &BpfMapGraph,
    resolve_failed: u64,
    keep: &dyn Fn(u32, &str) -> bool,
) -> String {
    let mut out = format!(
        "summary: {} events in {:.1}s, {} bpf() calls seen, {} dropped, {} unresolved fds ({} fd walks failed in the kernel), {} alerts\n",
        s.events,
        s.duration_ms as f64 / 1000.0,
        s.probe_hits,
        s.dropped,
        s.unresolved_fds.unwrap_or(0),
        resolve_failed,
        graph.alerts
    );
    let rows: Vec<_> = graph
        .edges
        .values()
        .filter(|e| keep(e.pid, &e.comm))
        .collect();
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>7} {:<16} {:>6} {:<16} calls",
        "pid", "comm", "map", "name"
    );
    for e in rows {
        let counts: Vec<String> = e.counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
        let _ = writeln!(
            out,
            "{:>7} {:<16} {:>6} {:<16} {}{}",
            e.pid,
            e.comm,
            e.map_id,
            e.map_name,
            counts.join(" "),
            if e.failed > 0 {
                format!(" (failed {})", e.failed)
            } else {
                String::new()
            }
        );
    }
    out
}
