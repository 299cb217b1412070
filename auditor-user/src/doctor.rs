//! `map-auditor doctor`: can this kernel, with these privileges, run the
//! auditor — and which optional kernel features are missing, so that other
//! code knows which fallbacks are in force.
//!
//! [`checks`] returns structured results for reuse (tests, the daemon);
//! [`run`] prints them, one line each, or as JSON with `--json`.
//!
//! ```no_run
//! use map_auditor::doctor::{self, Status};
//! let fentry = doctor::checks().into_iter().find(|c| c.name == "fentry");
//! let use_tracepoints = fentry.is_none_or(|c| c.status != Status::Ok);
//! ```

mod bpf_syscall;
mod probes;
pub mod system;

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Required and absent: the auditor cannot work until it is fixed.
    Missing,
    /// Works, but something is off (a missing mount, an odd limit).
    Warn,
    /// An optional kernel feature this machine lacks; a fallback is used.
    Unavailable,
}

impl Status {
    /// The word printed in the first column.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
            Status::Unavailable => "unavailable",
        }
    }
}

/// One finding about this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier (`kernel`, `btf`, `uprobes`, `fentry`, ...).
    pub name: String,
    pub status: Status,
    /// What was found, in plain English.
    pub detail: String,
    /// What to do about it, when there is something to do.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Run every check, in the order they are printed.
///
/// Side effect: when tracefs is not mounted and we may mount it, it is
/// mounted at /sys/kernel/tracing (the auditor needs it anyway, and the
/// tracepoint check cannot look without it).
pub fn checks() -> Vec<Check> {
    probes::all()
}

/// Whether the auditor can work with these results: nothing required is missing.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Missing)
}

/// `map-auditor doctor`: print the checks; exit code 0 when the auditor can
/// work here, 1 otherwise.
pub fn run(json: bool) -> anyhow::Result<i32> {
    let checks = checks();
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&checks)?)
    } else {
        render_text(&checks)
    };
    crate::output::pipe::print(&text)?;
    Ok(if can_run(&checks) { 0 } else { 1 })
}

/// The human form: one aligned line per check, then a verdict.
pub fn render_text(checks: &[Check]) -> String {
    let name_width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<11} {:<name_width$}  {}",
            c.status.label(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" — fix: {fix}"));
        }
        out.push('\n');
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    if can_run(checks) {
        let fallbacks = count(Status::Unavailable);
        out.push_str(&format!(
            "map-auditor can run here{}.\n",
            if fallbacks > 0 {
                format!(" ({fallbacks} optional feature(s) unavailable; fallbacks in use)")
            } else {
                String::new()
            }
        ));
    } else {
        out.push_str(&format!(
            "map-auditor cannot run here: fix the {} missing item(s) above.\n",
            count(Status::Missing)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_check_means_cannot_run_and_unavailable_does_not() {
        let fine = vec![
            Check::ok("btf", "present"),
            Check::new("kprobes", Status::Unavailable, "absent"),
            Check::new("bpffs", Status::Warn, "not mounted"),
        ];
        assert!(can_run(&fine));
        let broken = vec![Check::new("btf", Status::Missing, "absent").with_fix("rebuild")];
        assert!(!can_run(&broken));
        let text = render_text(&broken);
        assert!(
            text.starts_with("missing     btf  absent — fix: rebuild\n"),
            "{text}"
        );
        assert!(text.contains("cannot run here"));
    }

    #[test]
    fn statuses_serialise_as_lowercase_words() {
        let json = serde_json::to_string(&Check::new("fentry", Status::Unavailable, "x")).unwrap();
        assert_eq!(
            json,
            r#"{"name":"fentry","status":"unavailable","detail":"x","fix":null}"#
        );
    }
}
