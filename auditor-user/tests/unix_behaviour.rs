//! The auditor behaves like a Unix tool: a closed pipe ends it cleanly, a
//! deadline holds against a slow reader, signals reach the program `run`
//! started, its lines are never torn by the target's output, and `run`
//! never changes what its target does or sees.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::ExitStatusExt,
    },
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{GoToolchain, Link, bpf_available, build_go};
use serde_json::Value;

const BEHAVE: &str = include_str!("go/behave.go");
const RACE: &str = include_str!("go/race.go");

fn auditor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_map-auditor"))
}

fn behave() -> std::path::PathBuf {
    build_go("behave", BEHAVE, GoToolchain::Swiss, Link::Plain)
}

/// A pipe whose reading end is already closed: every write to the other
/// end fails with EPIPE, as after `| head` has left.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a local array; both fds are owned below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds from pipe(2), owned once each.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    Stdio::from(w)
}

/// Wait for `child` for at most `limit`; kill it if it is still running.
fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Read stderr lines on a thread; hand them over as they come.
fn stderr_lines(err: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Block until the auditor's attach banner appears on its stderr.
fn wait_for_banner(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = l.contains("attached to pid");
            seen.push(l);
            if done {
                return;
            }
        }
    }
    panic!("no attach banner on stderr: {seen:?}");
}

fn rest(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(l);
    }
}

#[test]
fn report_into_a_closed_pipe_ends_as_for_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.jsonl");
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(&format!(
            r#"{{"kind":"access","ts_ns":{i},"pid":7,"tid":7,"goid":1,"map":"0xc000","map_gen":1,"op":"write","runtime_fn":"runtime.mapassign","function":"main.f{i}","file":"/m.go","line":{i},"stack":[]}}"#
        ));
        lines.push('\n');
    }
    std::fs::write(&rec, lines).unwrap();
    let out = auditor()
        .arg("report")
        .arg(&rec)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ctl_list_into_a_closed_pipe_does_not_panic() {
    // A stand-in daemon answering `list` with many targets.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        let req: Value = serde_json::from_str(&line).unwrap();
        let targets: Vec<Value> = (0..5000)
            .map(|p| serde_json::json!({"pid": p, "state": "attached", "exe": "/x", "origin": "request"}))
            .collect();
        let resp = serde_json::json!({"v": req["v"], "ok": true, "result": {"targets": targets, "watches": []}});
        let mut w = &conn;
        writeln!(w, "{resp}").unwrap();
    });
    let out = auditor()
        .args(["ctl", "--socket"])
        .arg(&sock)
        .arg("list")
        .stdout(closed_pipe())
        .output()
        .unwrap();
    server.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?} {err}");
}

/// A stand-in daemon that answers one request with `lines` after its
/// response line; returns the socket path.
fn fake_daemon(dir: &std::path::Path, result: Value, lines: Vec<String>) -> std::path::PathBuf {
    let sock = dir.join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        let req: Value = serde_json::from_str(&line).unwrap();
        let resp = serde_json::json!({"v": req["v"], "ok": true, "result": result});
        let mut w = &conn;
        let _ = writeln!(w, "{resp}");
        for l in lines {
            let _ = writeln!(w, "{l}");
        }
    });
    sock
}

#[test]
fn tail_through_the_socket_prints_the_last_n_lines_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for i in 0..21 {
        lines.push(format!(
            r#"{{"kind":"lost","ts_ns":{i},"pid":4242,"what":"access","count":1,"total":{i}}}"#
        ));
    }
    lines.push(r#"{"kind":"alert","ts_ns":5,"rule":"guarded_map_write","pid":9,"tid":9,"result":"ok","comm":"x","exe":"/x","map_id":3,"map_name":"m","cmd":"map_update_elem","message":"pid 9 wrote guarded map m"}"#.into());
    let sock = fake_daemon(dir.path(), serde_json::json!({"subscribed": true}), lines);
    let out = auditor()
        .args(["tail", "-n", "1", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text.lines().count(), 1, "{text}");
    // Rendered as text, not the JSON it came as.
    assert!(text.contains("ALERT") && !text.contains('{'), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let lost = vec![format!(
        r#"{{"kind":"lost","ts_ns":1,"pid":4242,"what":"access","count":3,"total":3}}"#
    )];
    let sock = fake_daemon(dir.path(), serde_json::json!({"subscribed": true}), lost);
    let out = auditor()
        .args(["tail", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LOST pid 4242"), "{text}");
}

#[test]
fn ctl_status_is_text_unless_json_is_asked() {
    let status = serde_json::json!({"version": "0.1.0", "protocol": 1, "pid": 77, "uptime_s": 3725,
        "targets": 2, "attaching": 0, "watches": 1, "max_targets": 64, "log_dir": "/var/log/m",
        "log_bytes": 1048576, "log_rotations": 0, "log_write_errors": 0,
        "events_by_kind": {"access": 10}, "lost_by_what": {}, "dropped": 0, "probe_hits": 12,
        "rss_bytes": 2097152, "subscribers": 0});
    let dir = tempfile::tempdir().unwrap();
    let sock = fake_daemon(dir.path(), status.clone(), vec![]);
    let out = auditor()
        .args(["ctl", "--socket"])
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("pid 77, up 1h02m05s"), "{text}");
    assert!(!text.contains('{'), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let sock = fake_daemon(dir.path(), status, vec![]);
    let out = auditor()
        .args(["ctl", "--json", "--socket"])
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"], 77);
}

#[test]
fn attach_ends_when_its_reader_leaves_and_the_target_runs_on() {
    if !bpf_available("attach_ends_when_its_reader_leaves_and_the_target_runs_on") {
        return;
    }
    let exe = behave();
    let mut target = Command::new(&exe)
        .arg("busy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut a = auditor()
        .args(["attach", "--pid", &target.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(a.stderr.take().unwrap());
    let mut err = Vec::new();
    wait_for_banner(&rx, &mut err);
    let mut tin = target.stdin.take().unwrap();
    writeln!(tin, "go").unwrap();
    // `| head -5`: five lines, then the reader is gone.
    let mut out = BufReader::new(a.stdout.take().unwrap());
    for _ in 0..5 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
    }
    drop(out);
    let status = wait_within(&mut a, Duration::from_secs(20));
    rest(&rx, &mut err);
    let status = status.unwrap_or_else(|| panic!("still running after its reader left: {err:?}"));
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} {err:?}");
    assert!(
        err.iter().any(|l| l.contains("--- summary")),
        "the summary goes to stderr: {err:?}"
    );
    // The target was left unharmed and keeps working.
    assert!(target.try_wait().unwrap().is_none(), "target died");
    writeln!(tin, "stop").unwrap();
    let t = target.wait_with_output().unwrap();
    assert!(t.status.success(), "{t:?}");
    assert_eq!(String::from_utf8_lossy(&t.stdout).trim(), "stopped");
}

#[test]
fn duration_is_a_deadline_even_for_a_slow_reader() {
    if !bpf_available("duration_is_a_deadline_even_for_a_slow_reader") {
        return;
    }
    let exe = behave();
    // Thousands of accesses a second: far more than the reader takes, few
    // enough that detaching stays quick on a loaded machine.
    let mut target = Command::new(&exe)
        .args(["busy", "paced"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut a = auditor()
        .args([
            "attach",
            "--format",
            "json",
            "--all-accesses",
            "--duration",
            "2s",
            "--pid",
            &target.id().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(a.stderr.take().unwrap());
    let mut err = Vec::new();
    wait_for_banner(&rx, &mut err);
    let started = Instant::now();
    let mut tin = target.stdin.take().unwrap();
    writeln!(tin, "go").unwrap();
    // A reader that takes a line every 20 ms: far slower than the accesses.
    let mut out = BufReader::new(a.stdout.take().unwrap());
    let (done_tx, done_rx) = mpsc::channel();
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap() == 0 {
            break;
        }
        lines.push(l);
        if done_rx.try_recv().is_ok() {
            continue;
        }
        if let Some(st) = a.try_wait().unwrap() {
            let _ = done_tx.send(st);
            // Exited: read the rest at full speed.
            let mut tail = String::new();
            out.read_to_string(&mut tail).unwrap();
            lines.extend(tail.lines().map(|l| format!("{l}\n")));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = a.wait().unwrap();
    let took = started.elapsed();
    rest(&rx, &mut err);
    let _ = writeln!(tin, "stop");
    let _ = target.wait();
    assert!(status.success(), "{status:?} {err:?}");
    // Blocked writes would have held it for minutes (the reader takes 50
    // lines a second of the thousands made); what remains is detaching,
    // which a loaded machine slows.
    assert!(took < Duration::from_secs(20), "2 s deadline took {took:?}");
    let summary: Value = lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "summary")
        .unwrap_or_else(|| panic!("no summary last: {:?}", lines.last()));
    let shed = summary["shed"].as_u64().unwrap_or(0);
    assert!(
        shed > 0,
        "a slow reader means shed lines, counted: {summary}"
    );
    assert!(
        summary["shown"].as_u64().unwrap() + shed <= summary["events"].as_u64().unwrap(),
        "{summary}"
    );
}

fn run_behave(args: &[&str], mode: &[&str]) -> std::process::Output {
    auditor()
        .arg("run")
        .args(args)
        .arg("--")
        .arg(behave())
        .args(mode)
        .output()
        .unwrap()
}

#[test]
fn run_passes_bytes_that_are_not_utf8_through_unchanged() {
    if !bpf_available("run_passes_bytes_that_are_not_utf8_through_unchanged") {
        return;
    }
    let plain = Command::new(behave()).arg("stderr-bytes").output().unwrap();
    assert!(plain.status.success());
    let out = run_behave(&["--quiet", "-o", "/dev/null"], &["stderr-bytes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The target's bytes are all there, in order, byte for byte.
    let err = out.stderr;
    let pos = err
        .windows(plain.stderr.len())
        .position(|w| w == plain.stderr.as_slice());
    assert!(pos.is_some(), "{:?}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
}

#[test]
fn run_ending_first_leaves_its_target_running_unchanged() {
    if !bpf_available("run_ending_first_leaves_its_target_running_unchanged") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let mut a = auditor()
        .args([
            "run",
            "--quiet",
            "-o",
            "/dev/null",
            "--duration",
            "500ms",
            "--",
        ])
        .arg(behave())
        .arg("outlive")
        .arg(&marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_within(&mut a, Duration::from_secs(20)).expect("run keeps its deadline");
    assert_eq!(st.code(), Some(0), "{st:?}");
    // The target outlives the session, still writing to the same stderr.
    let until = Instant::now() + Duration::from_secs(20);
    while !marker.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        marker.exists(),
        "the target did not finish after the auditor ended (killed by SIGPIPE?)"
    );
}

#[test]
fn sigterm_to_run_reaches_the_target_and_run_exits_with_its_status() {
    if !bpf_available("sigterm_to_run_reaches_the_target_and_run_exits_with_its_status") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let mut a = auditor()
        .args(["run", "--quiet", "--record"])
        .arg(&rec)
        .arg("--")
        .arg(behave())
        .arg("term")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(a.stdout.take().unwrap());
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "ready");
    // SAFETY: signalling the auditor we started.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    let st = wait_within(&mut a, Duration::from_secs(30)).expect("run ends after SIGTERM");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("got SIGTERM"),
        "target never saw it: {rest:?}"
    );
    assert_eq!(st.code(), Some(3), "{st:?}");
    let recorded = std::fs::read_to_string(&rec).unwrap();
    let summary: Value = recorded
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "summary")
        .expect("a summary");
    assert_eq!(summary["target_exit_code"], 3, "{summary}");
}

#[test]
fn a_second_signal_detaches_at_once_and_leaves_the_target() {
    if !bpf_available("a_second_signal_detaches_at_once_and_leaves_the_target") {
        return;
    }
    // The first SIGINT is passed on to the target, which is stopped and so
    // cannot act on it yet: only the second signal can end `run`.
    let mut a = auditor()
        .args(["run", "--quiet", "--"])
        .arg(behave())
        .arg("busy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(a.stderr.take().unwrap());
    let mut err = Vec::new();
    wait_for_banner(&rx, &mut err);
    let target_pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", a.id(), a.id()))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    // SAFETY: signalling processes this test started.
    unsafe {
        libc::kill(target_pid, libc::SIGSTOP);
        libc::kill(a.id() as i32, libc::SIGINT);
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(a.id() as i32, libc::SIGINT) };
    let st = wait_within(&mut a, Duration::from_secs(20)).expect("second signal ends run");
    rest(&rx, &mut err);
    assert_eq!(st.code(), Some(128 + libc::SIGINT), "{st:?} {err:?}");
    // Detached, not killed: the target is still there (stopped by us).
    let state = std::fs::read_to_string(format!("/proc/{target_pid}/stat")).unwrap();
    let after_comm = state.rsplit(')').next().unwrap().trim().to_string();
    assert!(after_comm.starts_with('T'), "{state}");
    // SAFETY: as above.
    unsafe {
        libc::kill(target_pid, libc::SIGKILL);
    }
}

#[test]
fn target_output_never_lands_inside_the_auditors_lines() {
    if !bpf_available("target_output_never_lands_inside_the_auditors_lines") {
        return;
    }
    let out = run_behave(
        &["--format", "json", "--all-accesses"],
        &["chatty", "20000"],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut json = 0;
    let mut target = 0;
    for line in text.lines() {
        if line.starts_with("target line ") {
            assert!(
                line.split(' ').count() == 7 && !line.contains('{'),
                "torn: {line}"
            );
            target += 1;
        } else {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("torn ({e}): {line}"));
            assert!(v.get("kind").is_some(), "{line}");
            json += 1;
        }
    }
    assert_eq!(target, 20000);
    assert!(json > 1000, "{json}");
}

#[test]
fn output_file_keeps_the_live_log_apart_from_the_target() {
    if !bpf_available("output_file_keeps_the_live_log_apart_from_the_target") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.jsonl");
    let out = auditor()
        .args(["run", "--format", "json", "-o"])
        .arg(&log)
        .arg("--")
        .arg(behave())
        .args(["chatty", "100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 100, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("target line ")));
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["kind"], "attach");
    assert_eq!(events.last().unwrap()["kind"], "summary");
}

#[test]
fn fail_on_overlap_exits_66_and_bad_usage_exits_2() {
    for bad in [
        vec!["attach", "--pid", "1", "--ops", "bogus"],
        vec!["attach", "--pid", "1", "--map", "nothex"],
        vec!["attach", "--pid", "1", "--aggregate-interval", "1ms"],
        vec!["attach"],
        vec!["bogus-command"],
    ] {
        let out = auditor().args(&bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(!err.is_empty());
    }
    // An overhead budget out of range: one line that says what to give.
    for bad in ["0", "101", "abc"] {
        let out = auditor()
            .args(["attach", "--pid", "1", "--max-overhead", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains("--max-overhead") && first.contains("at most 100"),
            "{bad}: {err}"
        );
    }
    if !bpf_available("fail_on_overlap_exits_66_and_bad_usage_exits_2") {
        return;
    }
    let exe = build_go("race", RACE, GoToolchain::Swiss, Link::Plain);
    let out = auditor()
        .args([
            "run",
            "--quiet",
            "--fail-on-overlap",
            "-o",
            "/dev/null",
            "--",
        ])
        .arg(&exe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    // Findings stand out: each new one also reaches stderr when the live
    // log is not on a terminal, and the summary repeats it.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OVERLAP"), "{err}");
}

#[test]
fn color_always_colours_a_file_and_never_does_not() {
    if !bpf_available("color_always_colours_a_file_and_never_does_not") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (when, coloured) in [("always", true), ("never", false), ("auto", false)] {
        let log = dir.path().join(format!("{when}.log"));
        let out = auditor()
            .env("NO_COLOR", "1")
            .args(["run", "--color", when, "-o"])
            .arg(&log)
            .arg("--")
            .arg(behave())
            .args(["chatty", "10"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.contains("\x1b["), coloured, "--color {when}: {text}");
    }
}
