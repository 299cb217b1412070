//! `doctor::checks()` must describe the machine it runs on. Each assertion
//! compares a check with an independent look at the same kernel interface.

mod common;

use std::path::Path;

use map_auditor::doctor::{self, Check, Status};

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

#[test]
fn every_check_is_reported_once_with_a_detail() {
    let checks = doctor::checks();
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "kernel",
        "privileges",
        "btf",
        "tracefs",
        "bpffs",
        "uprobes",
        "uprobe_attach",
        "bpf_syscall_tracepoints",
        "ringbuf",
        "memlock",
        "kprobes",
        "fentry",
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == expected).count(),
            1,
            "{names:?}"
        );
    }
    for c in &checks {
        assert!(!c.detail.is_empty(), "{c:?}");
        if c.status == Status::Missing {
            assert!(
                c.fix.is_some(),
                "a missing item must say how to fix it: {c:?}"
            );
        }
    }
}

#[test]
fn optional_features_are_never_reported_missing() {
    for c in doctor::checks() {
        if c.name == "kprobes" || c.name == "fentry" {
            assert!(
                matches!(c.status, Status::Ok | Status::Unavailable),
                "{c:?}"
            );
        }
    }
}

#[test]
fn checks_match_what_the_kernel_offers() {
    let checks = doctor::checks();
    let ok_iff = |name: &str, present: bool| {
        let c = find(&checks, name);
        assert_eq!(c.status == Status::Ok, present, "{c:?}");
    };
    ok_iff("btf", Path::new("/sys/kernel/btf/vmlinux").exists());
    ok_iff(
        "uprobes",
        Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
    );

    let kprobes = find(&checks, "kprobes");
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert_eq!(kprobes.status, Status::Ok, "{kprobes:?}");
    } else {
        assert_eq!(kprobes.status, Status::Unavailable, "{kprobes:?}");
        assert!(
            kprobes.detail.contains("tracepoint fallback"),
            "{kprobes:?}"
        );
    }
}

#[test]
fn as_root_the_auditor_can_run_here() {
    if !common::bpf_available("as_root_the_auditor_can_run_here") {
        return;
    }
    let checks = doctor::checks();
    for name in [
        "privileges",
        "ringbuf",
        "tracefs",
        "bpf_syscall_tracepoints",
    ] {
        let c = find(&checks, name);
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }
    // The check mounts tracefs when missing; the tracepoints must then be visible.
    assert!(
        Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_bpf").exists()
            || Path::new("/sys/kernel/debug/tracing/events/syscalls/sys_enter_bpf").exists()
    );
    assert!(doctor::can_run(&checks), "{}", doctor::render_text(&checks));
}

#[test]
fn fentry_answer_names_the_errno_when_unavailable() {
    if !common::bpf_available("fentry_answer_names_the_errno_when_unavailable") {
        return;
    }
    let checks = doctor::checks();
    let fentry = find(&checks, "fentry");
    if fentry.status == Status::Unavailable {
        assert!(fentry.detail.starts_with("unavailable ("), "{fentry:?}");
        assert!(
            fentry.detail.ends_with("tracepoint fallback used"),
            "{fentry:?}"
        );
    }
}

#[test]
fn json_form_round_trips() {
    let checks = doctor::checks();
    let json = serde_json::to_string(&checks).unwrap();
    let back: Vec<Check> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, checks);
    assert!(json.starts_with('['));
}

/// `doctor` run with only the capabilities in `caps` (root uid, the
/// bounding set cut down, as a systemd unit or a container grants them).
fn doctor_with_caps(caps: &str) -> Option<Vec<Check>> {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        assert!(
            std::env::var_os("MAP_AUDITOR_REQUIRE_BPF").is_none(),
            "MAP_AUDITOR_REQUIRE_BPF is set but this test needs root and setpriv"
        );
        return None;
    }
    let out = std::process::Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg("--inh-caps=-all")
        .arg(env!("CARGO_BIN_EXE_map-auditor"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

#[test]
fn doctor_opens_a_real_uprobe_with_the_documented_capabilities() {
    // The set README and docs/security.md name works.
    let Some(checks) = doctor_with_caps("+bpf,+perfmon,+sys_ptrace,+sys_admin") else {
        return;
    };
    let c = find(&checks, "uprobe_attach");
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(find(&checks, "privileges").status == Status::Ok);
    // Without CAP_SYS_ADMIN the answer comes from the kernel, not from the
    // capability list: either the uprobe opens, or doctor says it cannot
    // run and names the errno.
    let checks = doctor_with_caps("+bpf,+perfmon,+sys_ptrace").unwrap();
    let c = find(&checks, "uprobe_attach");
    match c.status {
        Status::Ok => {}
        Status::Missing => {
            assert!(
                c.detail.contains("failed: EACCES") || c.detail.contains("failed: EPERM"),
                "{c:?}"
            );
            assert!(c.fix.as_deref().unwrap().contains("CAP_SYS_ADMIN"), "{c:?}");
            assert!(!doctor::can_run(&checks));
        }
        s => panic!("unexpected {s:?}: {c:?}"),
    }
}
