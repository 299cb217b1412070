//! What a report says about each audited process before its findings: the
//! executable, its Go version, the detection mode, when the session ran and
//! how the target ended (with the Go runtime's fatal message when the
//! recording has it).

use crate::analysis::AuditReport;
use crate::event::Summary;

/// One audited process, as the report header shows it.
pub(crate) struct SessionFacts {
    pub pid: u32,
    pub exe: Option<String>,
    pub go_version: Option<String>,
    pub module: Option<String>,
    pub detection: Option<String>,
    /// (first, last) event time, Unix ns.
    pub span: Option<(u64, u64)>,
    pub ending: String,
}

/// Every process the report knows of, by pid.
pub(crate) fn session_facts(report: &AuditReport) -> Vec<SessionFacts> {
    let g = &report.graph;
    let mut pids: Vec<u32> = g
        .attachments()
        .keys()
        .chain(g.summaries().keys())
        .copied()
        .chain(g.processes().map(|p| p.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| {
            let attach = g.attachments().get(&pid);
            let summary = g.summaries().get(&pid);
            let mut times: Vec<u64> = Vec::new();
            if let Some(p) = g.process_graph(pid) {
                times.extend([p.first_ts_ns, p.last_ts_ns]);
            }
            times.extend(attach.map(|a| a.ts_ns));
            times.extend(summary.map(|s| s.ts_ns));
            times.retain(|&t| t > 0);
            let span = times
                .iter()
                .min()
                .zip(times.iter().max())
                .map(|(a, b)| (*a, *b));
            SessionFacts {
                pid,
                exe: attach.map(|a| a.exe.clone()),
                go_version: attach.map(|a| format!("Go {}", a.go_version)),
                module: attach.and_then(|a| a.module.clone()),
                detection: attach.map(|a| detection_name(&a.detect)),
                span,
                ending: ending(summary),
            }
        })
        .collect()
}

fn detection_name(detect: &str) -> String {
    match detect {
        "entry" => "entry (default: overlaps decided at map-function entry)".into(),
        "interval" => "interval (full access intervals, exit probes)".into(),
        other => other.to_string(),
    }
}

/// How the target ended, as far as the summary says.
pub(crate) fn ending(summary: Option<&Summary>) -> String {
    let Some(s) = summary else {
        return "not recorded (no summary: the session may have been cut short)".into();
    };
    let mut out = match (s.target_exit_code, s.target_signal) {
        (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "still running when the audit ended".into(),
    };
    if let Some(f) = &s.target_fatal {
        out.push_str(&format!("; the Go runtime's fatal error: {f}"));
    }
    out
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        3 => " (SIGQUIT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        13 => " (SIGPIPE)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// `2026-12-07 09:18:54.123 UTC` of a Unix-epoch nanosecond time.
pub(crate) fn utc_time(unix_ns: u64) -> String {
    // utc_stamp gives YYYYMMDDTHHMMSS.NNNNNNNNNZ.
    let s = crate::daemon::log::utc_stamp(unix_ns);
    format!(
        "{}-{}-{} {}:{}:{}.{} UTC",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15],
        &s[16..19]
    )
}

/// `09:18:54.123 UTC – 09:18:56.001 UTC (1.878 s)`, the date given once.
pub(crate) fn span_text((first, last): (u64, u64)) -> String {
    let a = utc_time(first);
    let b = utc_time(last);
    let b = if a[..10] == b[..10] { &b[11..] } else { &b[..] };
    format!(
        "{a} – {b} ({:.3} s)",
        last.saturating_sub(first) as f64 / 1e9
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(
            utc_time(1_796_635_134_123_456_789),
            "2026-12-07 09:18:54.123 UTC"
        );
        assert_eq!(
            span_text((1_796_635_134_123_456_789, 1_796_635_136_001_000_000)),
            "2026-12-07 09:18:54.123 UTC – 09:18:56.001 UTC (1.878 s)"
        );
    }

    #[test]
    fn the_ending_names_the_runtime_fatal_error() {
        let s = Summary {
            target_exit_code: Some(2),
            target_fatal: Some("concurrent map writes".into()),
            ..Summary::default()
        };
        assert_eq!(
            ending(Some(&s)),
            "exited with status 2; the Go runtime's fatal error: concurrent map writes"
        );
        let s = Summary {
            target_signal: Some(9),
            ..Summary::default()
        };
        assert_eq!(ending(Some(&s)), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            ending(Some(&Summary::default())),
            "still running when the audit ended"
        );
    }
}
