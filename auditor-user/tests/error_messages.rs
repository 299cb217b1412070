//! Errors that say what happened: targets that cannot be audited, and
//! commands run without the privileges they need.

use std::{os::unix::process::CommandExt, process::Command};

fn auditor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_map-auditor"))
}

fn stderr_of(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_kernel_thread_is_named_as_such() {
    // kthreadd is pid 2 on Linux.
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    if comm.trim() != "kthreadd" {
        eprintln!("SKIPPED: pid 2 is not kthreadd here");
        return;
    }
    let (ok, err) = stderr_of(auditor().args(["attach", "--pid", "2", "--duration", "1s"]));
    assert!(!ok);
    assert!(
        err.contains("process 2 is a kernel thread"),
        "not 'exited (or is a zombie)': {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn bpf_as_a_user_says_it_needs_root() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to switch to nobody");
        return;
    }
    let mut cmd = auditor();
    cmd.args(["bpf", "--duration", "1s"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (ok, err) = stderr_of(&mut cmd);
    assert!(!ok);
    assert!(err.contains("needs root"), "{err}");
    assert!(!err.contains("not mounted"), "tracefs is mounted: {err}");
}
