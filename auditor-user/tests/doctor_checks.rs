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
