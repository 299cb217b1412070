//! The daemon end to end: a real daemon process, its real socket, real BPF
//! and real Go targets.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{fs::FileExt, fs::PermissionsExt, net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{GoToolchain, Link, bpf_available, build_go};
use serde_json::Value;

/// A Go program that writes one map `n` times from `main.work`, after an
/// initial sleep (time for the daemon to attach), then prints a checksum.
const WORKER: &str = r#"package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var m = map[int]int{}

//go:noinline
func work(i int) { m[i%1000] = i }

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	pause, _ := strconv.Atoi(os.Args[2])
	delay, _ := time.ParseDuration(os.Args[3])
	time.Sleep(delay)
	for i := 0; i < n; i++ {
		work(i)
		if pause > 0 {
			time.Sleep(time.Duration(pause) * time.Microsecond)
		}
	}
	sum := 0
	for _, v := range m {
		sum += v
	}
	fmt.Println("done", n, sum)
}
"#;

fn worker() -> PathBuf {
    build_go("worker", WORKER, GoToolchain::Swiss, Link::Plain)
}

/// What the worker prints for `n` iterations.
fn expected_output(n: usize) -> String {
    let sum: usize = (n.saturating_sub(1000)..n).sum();
    format!("done {n} {sum}")
}

fn start_worker(exe: &Path, n: usize, pause_us: u32, delay: &str) -> Child {
    Command::new(exe)
        .args([n.to_string(), pause_us.to_string(), delay.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn auditor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_map-auditor"))
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("daemon.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = auditor()
            .arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(dir.path().join("control.sock"))
            .arg("--log-dir")
            .arg(dir.path().join("log"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let d = Self {
            child: child_take(&mut child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(d.socket()).is_err() {
            assert!(Instant::now() < deadline, "daemon did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        auditor()
            .arg("ctl")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One raw request line; the response lines until the daemon stops
    /// answering for a moment.
    fn raw(&self, line: &[u8]) -> Vec<Value> {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(line);
        let mut r = BufReader::new(s);
        let mut l = String::new();
        let _ = r.read_line(&mut l);
        serde_json::from_str(&l).into_iter().collect()
    }

    /// Every logged event, over the rotated files in order. A last line
    /// without its newline is still being written by the daemon (its
    /// buffered writer flushes whole buffers, not whole lines): not yet an
    /// event.
    fn events(&self) -> Vec<Value> {
        log_files(&self.log_dir())
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'))
                    .map(|l| serde_json::from_str::<Value>(l).expect(l))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn stop(&mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "daemon exit {status}: {err}");
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn child_take(c: &mut Child) -> Child {
    // Child is not Clone; move it out by swapping with a finished dummy.
    let dummy = Command::new("true").spawn().unwrap();
    std::mem::replace(c, dummy)
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("audit-") && n.ends_with(".jsonl")
        })
        .collect();
    rotated.sort();
    rotated.push(dir.join("audit.jsonl"));
    rotated
}

fn kind<'a>(events: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["pid"] == pid)
        .collect()
}

/// Writes by `main.work`: one per `access` record, `count` per
/// `access_counts` event (the daemon's default).
fn work_writes(events: &[Value], pid: u32) -> usize {
    events
        .iter()
        .filter(|e| e["pid"] == pid && e["function"] == "main.work" && e["op"] == "write")
        .map(|e| match e["kind"].as_str() {
            Some("access") => 1,
            Some("access_counts") => e["count"].as_u64().unwrap() as usize,
            _ => 0,
        })
        .sum()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(mut target: Child) -> String {
    let mut out = String::new();
    target
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(target.wait().unwrap().success());
    out.trim().to_string()
}

#[test]
fn attach_tail_detach_end_to_end() {
    if !bpf_available("attach_tail_detach_end_to_end") {
        return;
    }
    let exe = worker();
    let mut d = Daemon::start("metrics_listen = \"127.0.0.1:19464\"\n");
    let mut tail = auditor()
        .args([
            "tail",
            "--follow",
            "--format",
            "json",
            "--kind",
            "attach,summary,target",
            "--socket",
        ])
        .arg(d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    // First target: runs to its end while attached.
    let t1 = start_worker(&exe, 300, 1000, "1s");
    let pid1 = t1.id();
    let started = Instant::now();
    let out = d.ctl_ok(&["attach", "--pid", &pid1.to_string()]);
    eprintln!("attach request took {:?}", started.elapsed());
    assert!(out.contains(&format!("attached pid {pid1}")), "{out}");
    let list = d.ctl_ok(&["list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["targets"][0]["pid"], pid1, "{list}");
    assert_eq!(finish(t1), expected_output(300));

    // Second target: detached by request while it runs, and keeps running.
    let t2 = start_worker(&exe, 5000, 1000, "200ms");
    let pid2 = t2.id();
    d.ctl_ok(&["attach", "--pid", &pid2.to_string()]);
    std::thread::sleep(Duration::from_millis(800));
    let out = d.ctl(&["detach", "--pid", &pid2.to_string()]);
    assert!(
        out.status.success(),
        "{}: {:?}",
        String::from_utf8_lossy(&out.stderr),
        d.events()
            .iter()
            .filter(|e| e["kind"] != "access")
            .collect::<Vec<_>>()
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("detached"), "{out}");
    let refused = d.ctl(&["detach", "--pid", &pid2.to_string()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not attached"));
    assert_eq!(finish(t2), expected_output(5000));

    wait_for("exit of the first target", Duration::from_secs(5), || {
        kind(&d.events(), "target", pid1)
            .iter()
            .any(|t| t["state"] == "exited")
    });
    let metrics = {
        let mut s = std::net::TcpStream::connect("127.0.0.1:19464").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut m = String::new();
        s.read_to_string(&mut m).unwrap();
        m
    };
    assert!(
        metrics.contains("map_auditor_events_total{kind=\"access_counts\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("map_auditor_resident_memory_bytes"),
        "{metrics}"
    );
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("map_auditor_resident"))
            .collect::<String>()
    );

    let err = d.stop();
    assert!(err.contains("stopped"), "{err}");

    // The log: every write of the first target (counted: the daemon's
    // default), its summary, its exit.
    let events = d.events();
    assert_eq!(work_writes(&events, pid1), 300);
    assert!(kind(&events, "access", pid1).is_empty());
    let summary = kind(&events, "summary", pid1);
    let counts = kind(&events, "access_counts", pid1);
    assert_eq!(
        summary[0]["access_counts"].as_u64().unwrap() as usize,
        counts.len()
    );
    assert_eq!(
        summary[0]["counted_accesses"].as_u64().unwrap(),
        counts
            .iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>()
    );
    let w2 = work_writes(&events, pid2);
    assert!(
        w2 > 0 && w2 < 5000,
        "{w2} writes of the detached target: {:?}",
        events
            .iter()
            .filter(|e| e["kind"] != "access" && e["pid"] == pid2)
            .collect::<Vec<_>>()
    );
    assert!(kind(&events, "lost", 0).is_empty() && kind(&events, "lost", pid1).is_empty());
    let mode = std::fs::metadata(d.log_dir().join("audit.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // `report` reads the log directory.
    let rep = auditor()
        .arg("report")
        .arg(d.log_dir())
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let mut tailed = String::new();
    tail.stdout
        .take()
        .unwrap()
        .read_to_string(&mut tailed)
        .unwrap();
    let _ = tail.wait();
    let tailed: Vec<Value> = tailed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(kind(&tailed, "attach", pid1).len() == 1, "{tailed:?}");
    assert!(
        kind(&tailed, "target", pid1)
            .iter()
            .any(|t| t["state"] == "exited")
    );
    assert!(
        kind(&tailed, "target", pid2)
            .iter()
            .any(|t| t["state"] == "detached")
    );
    assert!(
        kind(&tailed, "access", pid1).is_empty(),
        "kinds filter applies"
    );
}

/// Run `map-auditor ctl` as uid/gid 65534 (nobody).
fn ctl_as_nobody(socket: &Path) -> Output {
    let mut cmd = auditor();
    cmd.arg("ctl").arg("--socket").arg(socket).arg("list");
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
    cmd.output().unwrap()
}

#[test]
fn non_root_client_is_refused() {
    if !bpf_available("non_root_client_is_refused") {
        return;
    }
    let d = Daemon::start("");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket is root-only");
    // Let nobody reach the socket file, so the peer-credential check (not
    // the file mode) is what refuses.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ctl_as_nobody(&d.socket());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") || err.contains("Permission denied"),
        "{err}"
    );
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = ctl_as_nobody(&d.socket());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only root or the daemon's socket_group"),
        "{err}"
    );
    // Root still works.
    assert!(d.ctl_ok(&["status", "--json"]).contains("\"targets\":0"));
}

#[test]
fn malformed_oversized_and_flooding_requests_are_refused_without_harm() {
    if !bpf_available("malformed_oversized_and_flooding_requests_are_refused_without_harm") {
        return;
    }
    let d = Daemon::start("");
    let code = |v: &[Value]| {
        v.first()
            .map(|r| r["error"]["code"].clone())
            .unwrap_or_default()
    };
    assert_eq!(code(&d.raw(b"garbage\n")), "bad_request");
    assert_eq!(code(&d.raw(b"{\"op\":\"list\"}\n")), "bad_request");
    assert_eq!(
        code(&d.raw(b"{\"v\":9,\"op\":\"list\"}\n")),
        "unsupported_version"
    );
    let pwned = d.dir.path().join("pwned");
    let run = format!(
        "{{\"v\":1,\"op\":\"run\",\"cmd\":\"touch {}\"}}\n",
        pwned.display()
    );
    assert_eq!(code(&d.raw(run.as_bytes())), "bad_request");
    let read = b"{\"v\":1,\"op\":\"attach\",\"exe\":\"/etc/shadow\"}\n";
    assert_eq!(
        code(&d.raw(read)),
        "not_found",
        "a non-executable is not watched"
    );
    assert_eq!(
        code(&d.raw(b"{\"v\":1,\"op\":\"attach\",\"pid\":999999999}\n")),
        "bad_request"
    );
    assert_eq!(
        code(&d.raw(b"{\"v\":1,\"op\":\"attach\",\"pid\":4000000}\n")),
        "not_found"
    );
    assert!(!pwned.exists());

    // Oversized: refused, connection closed.
    let mut big = vec![b'a'; 200 * 1024];
    big.push(b'\n');
    assert_eq!(code(&d.raw(&big)), "too_large");

    // Flood: 2000 requests at once on one connection.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let flood = "{\"v\":1,\"op\":\"status\"}\n".repeat(2000);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(flood.as_bytes());
        })
    };
    let (mut ok, mut limited) = (0, 0);
    for line in BufReader::new(&mut s).lines() {
        let Ok(line) = line else { break };
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["ok"] == true {
            ok += 1;
        } else if v["error"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    let _ = writer.join();
    assert!(ok >= 40 && limited > 0, "ok {ok}, rate limited {limited}");
    assert!(ok + limited < 2000, "the flooding connection was closed");

    // Too many connections at once: the extra ones are told `busy`.
    let conns: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(d.socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = conns
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut l = String::new();
            BufReader::new(*c).read_line(&mut l).is_ok() && l.contains("\"busy\"")
        })
        .count();
    assert!(busy >= 16, "busy {busy}");
    drop(conns);

    // And the daemon keeps serving: once the flood's connections are closed
    // (the daemon notices within moments), `status` answers again.
    let started = Instant::now();
    let mut status = d.raw(b"{\"v\":1,\"id\":5,\"op\":\"status\"}\n");
    while status[0]["ok"] != true && started.elapsed() < Duration::from_secs(5) {
        assert_eq!(status[0]["error"]["code"], "busy", "{:?}", status[0]);
        std::thread::sleep(Duration::from_millis(100));
        status = d.raw(b"{\"v\":1,\"id\":5,\"op\":\"status\"}\n");
    }
    eprintln!("status answered after {:?}", started.elapsed());
    assert_eq!(status[0]["ok"], true, "{:?}", status[0]);
    assert_eq!(status[0]["id"], 5);
}

#[test]
fn rotation_under_load_loses_nothing() {
    if !bpf_available("rotation_under_load_loses_nothing") {
        return;
    }
    let exe = worker();
    let mut d = Daemon::start("all_accesses = true\n[log]\nmax_file_mib = 1\nkeep_files = 1000\n");
    let n = 40_000;
    let target = start_worker(&exe, n, 0, "1s");
    let pid = target.id();
    d.ctl_ok(&["attach", "--pid", &pid.to_string()]);
    // A file follower across rotations sees every event too.
    let mut tail = auditor()
        .args([
            "tail",
            "--follow",
            "--format",
            "json",
            "-n",
            "0",
            "--kind",
            "access",
            "--log-dir",
        ])
        .arg(d.log_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read it as it goes: a full pipe would stall it.
    let tail_out = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(tail_out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    assert_eq!(finish(target), expected_output(n));
    wait_for("exit of the target", Duration::from_secs(20), || {
        kind(&d.events(), "target", pid)
            .iter()
            .any(|t| t["state"] == "exited")
    });
    let took = started.elapsed();
    let mut tailed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while work_writes(&tailed, pid) < n && Instant::now() < deadline {
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            tailed.push(serde_json::from_str::<Value>(&line).unwrap());
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    d.stop();
    let files = log_files(&d.log_dir());
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    eprintln!(
        "{n} accesses, {} files, {} MiB in {took:?}",
        files.len(),
        bytes >> 20
    );
    assert!(files.len() > 5, "rotated {} times", files.len() - 1);
    let events = d.events();
    assert_eq!(
        work_writes(&events, pid),
        n,
        "every write is in the rotated files"
    );
    assert!(
        events.iter().all(|e| e["kind"] != "lost"),
        "nothing dropped"
    );
    assert_eq!(
        work_writes(&tailed, pid),
        n,
        "tail --follow crossed every rotation"
    );
}

/// Bytes at the probed file offsets of `exe` in `pid`'s memory.
fn probed_bytes(pid: u32, exe: &Path, file_offsets: &[u64]) -> Vec<u8> {
    let exe = std::fs::canonicalize(exe).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    file_offsets
        .iter()
        .map(|&off| {
            let addr = maps
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if f.len() < 6 || Path::new(f[5]) != exe {
                        return None;
                    }
                    let (s, e) = f[0].split_once('-')?;
                    let (s, e) = (
                        u64::from_str_radix(s, 16).ok()?,
                        u64::from_str_radix(e, 16).ok()?,
                    );
                    let moff = u64::from_str_radix(f[2], 16).ok()?;
                    (moff <= off && off < moff + (e - s)).then_some(s + off - moff)
                })
                .expect("probed offset is mapped");
            let mut b = [0u8];
            mem.read_exact_at(&mut b, addr).unwrap();
            b[0]
        })
        .collect()
}

#[test]
fn sigkill_leaves_no_probes_behind() {
    if !bpf_available("sigkill_leaves_no_probes_behind") {
        return;
    }
    let exe = worker();
    let mut d = Daemon::start("");
    let target = start_worker(&exe, 4000, 1000, "300ms");
    let pid = target.id();
    d.ctl_ok(&["attach", "--pid", &pid.to_string()]);
    let events = d.events();
    let offsets: Vec<u64> = kind(&events, "attach", pid)[0]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            u64::from_str_radix(
                p["file_offset"].as_str().unwrap().trim_start_matches("0x"),
                16,
            )
            .unwrap()
        })
        .collect();
    let file = std::fs::read(&exe).unwrap();
    let original: Vec<u8> = offsets.iter().map(|&o| file[o as usize]).collect();
    // While attached, every probed instruction holds the breakpoint.
    assert!(probed_bytes(pid, &exe, &offsets).iter().all(|&b| b == 0xcc));

    unsafe { libc::kill(d.child.id() as i32, libc::SIGKILL) };
    let _ = d.child.wait();
    wait_for("the probes to be removed", Duration::from_secs(5), || {
        probed_bytes(pid, &exe, &offsets) == original
    });
    let uprobe_events =
        std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(
        !uprobe_events.contains(exe.to_str().unwrap()),
        "{uprobe_events}"
    );
    // The target runs on and ends with the right answer.
    assert_eq!(finish(target), expected_output(4000));
}

#[test]
fn watched_executable_attaches_new_processes() {
    if !bpf_available("watched_executable_attaches_new_processes") {
        return;
    }
    // Its own executable: a watch on the shared worker would also attach
    // the other tests' targets.
    let exe = build_go("watched", WORKER, GoToolchain::Swiss, Link::Plain);
    let mut d = Daemon::start("");
    let out = d.ctl_ok(&["attach", "--exe", exe.to_str().unwrap()]);
    assert!(out.contains("watching"), "{out}");
    let target = start_worker(&exe, 200, 1000, "2s");
    let pid = target.id();
    wait_for(
        "the watch to attach the new process",
        Duration::from_secs(3),
        || {
            d.ctl_ok(&["list", "--json"])
                .contains(&format!("\"pid\":{pid}"))
        },
    );
    assert_eq!(finish(target), expected_output(200));
    wait_for("exit of the target", Duration::from_secs(5), || {
        kind(&d.events(), "target", pid)
            .iter()
            .any(|t| t["state"] == "exited")
    });
    let events = d.events();
    assert_eq!(work_writes(&events, pid), 200);
    let out = d.ctl_ok(&["detach", "--exe", exe.to_str().unwrap()]);
    assert!(out.contains("detached"), "{out}");
    d.stop();
}

/// A lookup table raced by an unsynchronised writer, paced so the log is
/// not flooded with accesses: in interval mode the same race is caught
/// again and again. The runtime may also notice it and kill the program
/// ("concurrent map read and map write"): that is the bug, not a failure.
const PACED_RACE: &str = r#"package main

import (
	"os"
	"strconv"
	"time"
)

var table = map[int]int{}

//go:noinline
func lookup(k int) int { return table[k] }

//go:noinline
func update(k, v int) { table[k] = v }

func main() {
	ms, _ := strconv.Atoi(os.Args[1])
	for i := 0; i < 64; i++ {
		table[i] = i
	}
	stop := time.Now().Add(time.Duration(ms) * time.Millisecond)
	for r := 0; r < 2; r++ {
		go func() {
			for i := 0; time.Now().Before(stop); i++ {
				lookup(i % 64)
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	for i := 0; time.Now().Before(stop); i++ {
		update(i%64, i)
		time.Sleep(50 * time.Microsecond)
	}
}
"#;

/// (map, sorted sides) of an overlap line: one race however it is oriented.
fn race_of(o: &Value) -> (String, Vec<(String, u64, String)>) {
    let side = |p: &Value| {
        (
            p["function"].as_str().unwrap_or_default().to_string(),
            p["line"].as_u64().unwrap_or(0),
            p["op"].as_str().unwrap_or_default().to_string(),
        )
    };
    let mut sides = vec![side(&o["first"]), side(&o["second"])];
    sides.sort();
    (o["map"].as_str().unwrap_or_default().to_string(), sides)
}

#[test]
fn daemon_logs_a_race_once_and_counts_its_repeats() {
    if !bpf_available("daemon_logs_a_race_once_and_counts_its_repeats") {
        return;
    }
    let exe = build_go("pacedrace", PACED_RACE, GoToolchain::Swiss, Link::Plain);
    let mut d = Daemon::start("detect = \"interval\"\n");
    // A race must be caught at least three times for its repeats to be
    // folded into fewer lines (the kernel reports one pair at most once a
    // second): a run the runtime cuts short may not get there, so up to
    // three runs.
    let mut repeated = None;
    for attempt in 0..3 {
        let mut target = Command::new(&exe)
            .arg("5000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = target.id();
        d.ctl_ok(&["attach", "--pid", &pid.to_string()]);
        // It ends by itself, or of the runtime's fatal error.
        let status = target.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while kind(&d.events(), "summary", pid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no summary for pid {pid} ({status}): {:?}",
                d.events()
                    .iter()
                    .filter(|e| e["kind"] != "access")
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let events = d.events();
        let summary = kind(&events, "summary", pid)[0].clone();
        let lines = kind(&events, "overlap", pid);
        let delivered = summary["overlaps"].as_u64().unwrap();
        eprintln!(
            "attempt {attempt}: target {status}, {delivered} overlap records delivered, {} logged",
            lines.len()
        );
        let mut races: std::collections::BTreeMap<_, Vec<&Value>> = Default::default();
        for l in &lines {
            races.entry(race_of(l)).or_default().push(*l);
        }
        // Every record is in the log, as itself or inside a counted line;
        // each counted line stands for 1 + suppressed instances.
        let instances: u64 = lines
            .iter()
            .map(|l| 1 + l["suppressed"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            instances >= delivered,
            "{instances} < {delivered}: {lines:?}"
        );
        for (race, ls) in &races {
            // First instance in full, then at most one counted line per
            // repeat interval (10 s) and one at the end: 5 s of racing
            // leave at most two lines.
            assert!(ls.len() <= 2, "{race:?} logged {} times: {ls:?}", ls.len());
        }
        // More than two records per race: some race was caught 3+ times.
        if delivered > 2 * races.len() as u64 {
            repeated = Some((pid, races.len(), delivered, lines.len()));
            break;
        }
    }
    let (pid, races, delivered, logged) =
        repeated.expect("no run caught one race twice (see the attempts above)");
    assert!(
        (logged as u64) < delivered,
        "{delivered} records of {races} race(s) in {logged} lines"
    );
    // `report` counts every instance, each race once.
    let rep = auditor()
        .arg("report")
        .arg(d.log_dir())
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let rep: Value = serde_json::from_slice(&rep.stdout).unwrap();
    let events = d.events();
    let lines = kind(&events, "overlap", pid);
    let logged_instances: u64 = lines
        .iter()
        .map(|l| 1 + l["suppressed"].as_u64().unwrap_or(0))
        .sum();
    let reported: Vec<&Value> = rep["findings"]["overlaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["map"]["pid"] == pid)
        .collect();
    let reported_instances: u64 = reported.iter().map(|o| o["count"].as_u64().unwrap()).sum();
    assert_eq!(reported_instances, logged_instances, "{reported:?}");
    assert!(reported.len() <= races, "{reported:?}");
    d.stop();
}
