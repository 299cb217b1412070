//! End-to-end Go map auditing: real BPF programs, real Go processes built
//! with a classic-map Go (1.19) and a Swiss-map Go (>= 1.24), plain and
//! stripped+PIE, in `run` and `attach --pid` modes.

mod common;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, Stdio},
};

use common::{GoToolchain, Link, bpf_available, build_go};
use serde_json::Value;

const OPS: &str = include_str!("go/ops.go");
const RACE: &str = include_str!("go/race.go");
const SYNCED: &str = include_str!("go/synced.go");
const STRESS: &str = include_str!("go/stress.go");
const READMOSTLY: &str = include_str!("go/readmostly.go");
const GLOBALRACE: &str = include_str!("go/globalrace.go");
const NARROW: &str = include_str!("go/narrow.go");

fn auditor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_map-auditor"))
}

/// Output of one auditor run: its JSON events and the target's stdout.
struct Audit {
    events: Vec<Value>,
    status: std::process::ExitStatus,
    stderr: String,
}

impl Audit {
    fn kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }
    fn summary(&self) -> &Value {
        self.kind("summary")
            .last()
            .copied()
            .expect("a summary event")
    }
}

fn parse_events(stdout: &[u8]) -> (Vec<Value>, Vec<String>) {
    let mut events = Vec::new();
    let mut other = Vec::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("kind").is_some() => events.push(v),
            _ => other.push(line.to_string()),
        }
    }
    (events, other)
}

/// `map-auditor run --quiet --record FILE [extra] -- exe args`. The target
/// writes to the same stdout as the live log, so the events are read from
/// the recording (every event, unfiltered) and the target's lines from
/// stdout, which `--quiet` keeps nearly free of the auditor's own lines.
fn run_audit(exe: &Path, args: &[&str], extra: &[&str]) -> (Audit, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("session.jsonl");
    let out = auditor()
        .args(["run", "--quiet", "--format", "json", "--record"])
        .arg(&recording)
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(args)
        .output()
        .expect("start map-auditor");
    let recorded = std::fs::read(&recording).unwrap_or_default();
    let (events, _) = parse_events(&recorded);
    let (_, target_out) = parse_events(&out.stdout);
    (
        Audit {
            events,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        },
        target_out,
    )
}

fn toolchains() -> [(GoToolchain, Link); 3] {
    [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::Plain),
        (GoToolchain::Swiss, Link::StrippedPie),
    ]
}

fn ops_by_function(audit: &Audit) -> HashMap<String, HashSet<String>> {
    let mut m: HashMap<String, HashSet<String>> = HashMap::new();
    for a in audit.kind("access") {
        m.entry(a["function"].as_str().unwrap().to_string())
            .or_default()
            .insert(a["op"].as_str().unwrap().to_string());
    }
    m
}

#[test]
fn run_mode_sees_every_operation_with_call_sites_and_goroutines() {
    if !bpf_available("run_mode_sees_every_operation_with_call_sites_and_goroutines") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("ops", OPS, tc, link);
        let (audit, out) = run_audit(&exe, &[], &[]);
        let ctx = format!("{tc:?}/{link:?}: stderr {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        assert!(
            out.iter().any(|l| l == "result 0 0 1"),
            "target output {out:?} {ctx}"
        );
        let main_goid: u64 = out
            .iter()
            .find_map(|l| l.strip_prefix("main goid "))
            .unwrap()
            .parse()
            .unwrap();
        let worker_goid: u64 = out
            .iter()
            .find_map(|l| l.strip_prefix("worker goid "))
            .unwrap()
            .parse()
            .unwrap();

        let ops = ops_by_function(&audit);
        let has = |f: &str, op: &str| ops.get(f).is_some_and(|s| s.contains(op));
        assert!(has("main.writeInts", "write"), "{ops:?} {ctx}");
        assert!(has("main.writeStrings", "write"), "{ops:?} {ctx}");
        assert!(has("main.readInts", "read"), "{ops:?} {ctx}");
        assert!(has("main.deleteInts", "delete"), "{ops:?} {ctx}");
        assert!(has("main.iterate", "iterate"), "{ops:?} {ctx}");
        assert!(
            has("main.writePoints", "write") && has("main.writePoints", "read"),
            "{ops:?} {ctx}"
        );
        assert!(
            has("main.clearAll", "clear") || has("main.clearAll", "delete"),
            "{ops:?} {ctx}"
        );
        assert!(has("main.main", "make"), "{ops:?} {ctx}");

        // Goroutine ids: what the program says of itself.
        let accesses = audit.kind("access");
        let by = |f: &str| -> HashSet<u64> {
            accesses
                .iter()
                .filter(|a| a["function"] == f)
                .map(|a| a["goid"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(by("main.readInts"), HashSet::from([main_goid]), "{ctx}");
        assert_eq!(by("main.deleteInts"), HashSet::from([worker_goid]), "{ctx}");
        assert_eq!(
            by("main.writeInts"),
            HashSet::from([main_goid, worker_goid]),
            "{ctx}"
        );

        // Call sites resolve to the source file with a line inside the function.
        let w = accesses
            .iter()
            .find(|a| a["function"] == "main.writeInts")
            .unwrap();
        assert!(
            w["file"].as_str().unwrap().ends_with("main.go"),
            "{w} {ctx}"
        );
        assert!(w["line"].as_u64().unwrap() > 0, "{w} {ctx}");
        assert_eq!(w["pid"], w["pid"].as_u64().unwrap());
        assert_eq!(
            accesses
                .iter()
                .filter(|a| a["function"] == "main.readInts")
                .count(),
            10,
            "{ctx}"
        );

        // With a symbol table, a map is also named by the variable holding it.
        if link == Link::Plain {
            assert!(
                accesses.iter().any(
                    |a| a["map_global"] == "main.registry" && a["map_type"] == "map[string]int"
                ),
                "main.registry not named {ctx}"
            );
        }
        // Maps are named by their Go type, read from the type descriptor.
        for ty in ["map[int64]int64", "map[string]int", "map[main.point]string"] {
            assert!(
                accesses.iter().any(|a| a["map_type"] == ty),
                "no access names type {ty} {ctx}"
            );
        }
        let s = audit.summary();
        assert_eq!(s["target_exit_code"], 0, "{ctx}");
        assert_eq!(s["dropped"], 0, "{ctx}");
        assert_eq!(s["overlaps"], 0, "{ctx}");
        assert!(
            audit.kind("attach")[0]["probes"].as_array().unwrap().len() > 10,
            "{ctx}"
        );
    }
}

#[test]
fn attach_by_pid_sees_accesses_of_a_running_program() {
    if !bpf_available("attach_by_pid_sees_accesses_of_a_running_program") {
        return;
    }
    for (tc, link) in [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::StrippedPie),
    ] {
        let exe = build_go("ops", OPS, tc, link);
        let mut target = Command::new(&exe)
            .arg("wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = target.id();
        let mut auditor = auditor()
            .args([
                "attach",
                "--format",
                "json",
                "--all-accesses",
                "--pid",
                &pid.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The target works only after the attach report: no race with a
        // slow attach on a loaded machine.
        let mut err = BufReader::new(auditor.stderr.take().unwrap());
        let mut banner = String::new();
        while !banner.contains("attached to pid") {
            banner.clear();
            assert!(err.read_line(&mut banner).unwrap() > 0, "no attach banner");
        }
        writeln!(target.stdin.take().unwrap(), "go").unwrap();
        let mut rest = String::new();
        let stderr_thread = std::thread::spawn(move || {
            let _ = err.read_to_string(&mut rest);
            rest
        });
        let mut out = auditor.wait_with_output().unwrap();
        out.stderr = stderr_thread.join().unwrap().into_bytes();
        let status = target.wait().unwrap();
        assert!(status.success());
        let mut lines = Vec::new();
        BufReader::new(target.stdout.take().unwrap())
            .lines()
            .for_each(|l| lines.push(l.unwrap()));
        let (events, _) = parse_events(&out.stdout);
        let audit = Audit {
            events,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        };
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        let ops = ops_by_function(&audit);
        assert!(
            ops.get("main.deleteInts")
                .is_some_and(|s| s.contains("delete")),
            "{ops:?} {ctx}"
        );
        let main_goid: u64 = lines
            .iter()
            .find_map(|l| l.strip_prefix("main goid "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            audit
                .kind("access")
                .iter()
                .any(|a| a["function"] == "main.readInts" && a["goid"] == main_goid),
            "{ctx}"
        );
        // The summary comes after the target exits on its own.
        assert!(audit.summary()["accesses"].as_u64().unwrap() >= 40, "{ctx}");
    }
}

#[test]
fn race_is_reported_with_both_writers_named() {
    if !bpf_available("race_is_reported_with_both_writers_named") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("race", RACE, tc, link);
        let (audit, _) = run_audit(&exe, &[], &[]);
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        let overlaps = audit.kind("overlap");
        assert!(!overlaps.is_empty(), "no overlap reported {ctx}");
        let o = overlaps[0];
        let sides: HashSet<&str> = [
            o["first"]["function"].as_str().unwrap(),
            o["second"]["function"].as_str().unwrap(),
        ]
        .into();
        assert!(
            sides
                .iter()
                .all(|f| *f == "main.writerA" || *f == "main.writerB"),
            "{o} {ctx}"
        );
        assert_ne!(o["first"]["goid"], o["second"]["goid"], "{ctx}");
        assert!(o["first"]["stack"].as_array().unwrap().len() >= 2, "{o}");
        // When the runtime kills the target the summary says so.
        let s = audit.summary();
        if s["target_exit_code"] != 0 {
            assert_eq!(s["target_fatal"], "concurrent map writes", "{s}");
            assert_eq!(s["target_exit_code"], 2, "{s}");
        }
    }
}

/// A CPU-bound thread per core until dropped: the machine as loaded as a
/// busy CI runner, so the target and the auditor are preempted at will.
struct BusyCores {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The runtime ends the target microseconds after it sees the race, often
/// before userspace has read the finding: the variable holding the map is
/// read by the kernel at the finding, so the name never depends on that.
#[test]
fn runtime_killed_race_names_its_global_every_run_on_a_loaded_machine() {
    if !bpf_available("runtime_killed_race_names_its_global_every_run_on_a_loaded_machine") {
        return;
    }
    let configs = [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::Plain),
        // Symbols and DWARF at a random load address.
        (GoToolchain::Swiss, Link::Pie),
    ];
    let exes: Vec<_> = configs
        .iter()
        .map(|&(tc, link)| (tc, link, build_go("globalrace", GLOBALRACE, tc, link)))
        .collect();
    let _load = BusyCores::start();
    for run in 0..10 {
        let (tc, link, exe) = &exes[run % exes.len()];
        let (audit, _) = run_audit(exe, &[], &[]);
        let ctx = format!("run {run} {tc:?}/{link:?}: {}", audit.stderr);
        let s = audit.summary();
        // Killed by the runtime (its fatal-error status).
        assert_eq!(s["target_exit_code"], 2, "{s} {ctx}");
        let findings = s["findings"].as_array().expect("findings");
        assert!(!findings.is_empty(), "no finding {s} {ctx}");
        for f in findings {
            assert_eq!(f["map_global"], "main.sessions", "{f} {ctx}");
        }
        let overlaps = audit.kind("overlap");
        assert!(!overlaps.is_empty(), "{ctx}");
        for o in overlaps {
            assert_eq!(o["map_global"], "main.sessions", "{o} {ctx}");
        }
        let watched = &audit.kind("attach")[0]["map_globals"];
        assert_eq!(watched["map_typed"], true, "{watched} {ctx}");
        assert_eq!(watched["not_watched"], 0, "{watched} {ctx}");
    }
}

/// The worst timing, made certain: the auditor is stopped before the
/// target races and continued only once the runtime has killed the target
/// (a zombie: its memory is gone), so every finding is read after the
/// process could be. The name was read by the kernel at the finding.
#[test]
fn finding_read_after_the_target_died_still_names_its_global() {
    if !bpf_available("finding_read_after_the_target_died_still_names_its_global") {
        return;
    }
    for (tc, link) in [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::Pie),
    ] {
        let exe = build_go("globalrace", GLOBALRACE, tc, link);
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("session.jsonl");
        let mut auditor = auditor()
            .args(["run", "--quiet", "--format", "json", "--record"])
            .arg(&recording)
            .arg("--")
            .arg(&exe)
            .arg("wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(auditor.stderr.take().unwrap());
        let mut banner = String::new();
        while !banner.contains("attached to pid") {
            banner.clear();
            assert!(err.read_line(&mut banner).unwrap() > 0, "no attach banner");
        }
        let target: i32 = banner
            .split("attached to pid ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {banner:?}"));
        // `run` holds its target traced until the probes are in: stopped
        // before releasing it, the auditor would keep it stopped too.
        let traced = || {
            std::fs::read_to_string(format!("/proc/{target}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim() != "0"))
                })
                .unwrap_or(false)
        };
        while traced() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let me = auditor.id() as i32;
        // SAFETY: signals to the auditor this test started.
        assert_eq!(unsafe { libc::kill(me, libc::SIGSTOP) }, 0);
        writeln!(auditor.stdin.take().unwrap(), "go").unwrap();
        // The auditor cannot reap its child while stopped: the target stays
        // a zombie once the runtime has killed it.
        let state = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
                .flatten()
        };
        while state(target) != Some('Z') {
            assert!(
                state(target).is_some(),
                "target {target} gone while the auditor was stopped"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mem = std::fs::read(format!("/proc/{target}/mem"));
        assert!(
            mem.map_or(true, |m| m.is_empty()),
            "a zombie's memory is readable"
        );
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(me, libc::SIGCONT) }, 0);
        let stderr_thread = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            rest
        });
        let _ = auditor.wait_with_output().unwrap();
        let stderr = stderr_thread.join().unwrap();
        let (events, _) = parse_events(&std::fs::read(&recording).unwrap_or_default());
        let audit = Audit {
            events,
            status: std::process::ExitStatus::default(),
            stderr,
        };
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        let s = audit.summary();
        assert_eq!(s["target_exit_code"], 2, "{s} {ctx}");
        let findings = s["findings"].as_array().expect("findings");
        assert!(!findings.is_empty(), "no finding {s} {ctx}");
        for f in findings {
            assert_eq!(f["map_global"], "main.sessions", "{f} {ctx}");
        }
        for o in audit.kind("overlap") {
            assert_eq!(o["map_global"], "main.sessions", "{o} {ctx}");
        }
    }
}

#[test]
fn correctly_synchronised_programs_report_no_overlap() {
    if !bpf_available("correctly_synchronised_programs_report_no_overlap") {
        return;
    }
    for (tc, link) in [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::Plain),
    ] {
        let exe = build_go("synced", SYNCED, tc, link);
        for pattern in ["mutex", "rwmutex", "shards", "syncmap", "owner"] {
            for detect in ["entry", "interval"] {
                let (audit, out) = run_audit(&exe, &[pattern], &["--detect", detect]);
                let ctx = format!("{tc:?} {pattern} {detect}: {}", audit.stderr);
                assert!(audit.status.success(), "{ctx}");
                assert!(
                    out.iter().any(|l| l.starts_with("result ")),
                    "{out:?} {ctx}"
                );
                assert_eq!(
                    audit.kind("overlap").len(),
                    0,
                    "{:?} {ctx}",
                    audit.kind("overlap")
                );
                // sync.Map is a hash trie since Go 1.24, not a runtime map:
                // there is nothing to probe then; before, its maps are only
                // touched by package sync, outside the default (user) scope
                // of entry mode, and watched in interval mode (scope all).
                // Every other pattern must really have been watched.
                if !(pattern == "syncmap" && (tc == GoToolchain::Swiss || detect == "entry")) {
                    assert!(
                        audit.summary()["probe_hits"].as_u64().unwrap() > 1000,
                        "{ctx}"
                    );
                }
            }
        }
    }
}

#[test]
fn fully_probed_target_survives_gc_and_stack_growth() {
    if !bpf_available("fully_probed_target_survives_gc_and_stack_growth") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("stress", STRESS, tc, link);
        let plain = Command::new(&exe).output().unwrap();
        assert!(plain.status.success());
        let expected = String::from_utf8_lossy(&plain.stdout).trim().to_string();
        // Interval mode puts probes on every RET as well: the most invasive mode.
        let (audit, out) = run_audit(&exe, &[], &["--detect", "interval"]);
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        assert_eq!(
            out.last().map(String::as_str),
            Some(expected.as_str()),
            "{ctx}"
        );
        assert!(
            audit.summary()["probe_hits"].as_u64().unwrap() > 10_000,
            "{ctx}"
        );
        assert_eq!(audit.kind("overlap").len(), 0, "{ctx}");
    }
}

#[test]
fn bad_targets_get_one_line_errors() {
    if !bpf_available("bad_targets_get_one_line_errors") {
        return;
    }
    let out = auditor()
        .args(["attach", "--pid", "999999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("999999999"), "{err}");

    let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
    let out = auditor()
        .args(["attach", "--pid", &sleeper.id().to_string()])
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.to_lowercase().contains("go"), "{err}");

    // Not root: refused before anything is loaded, saying what to do.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_map-auditor"))
        .args(["attach", "--pid", "1"])
        .output()
        .expect("setpriv (util-linux) runs the auditor as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
}

#[test]
fn every_installed_go_version_is_audited_end_to_end() {
    if !bpf_available("every_installed_go_version_is_audited_end_to_end") {
        return;
    }
    let chains = common::installed_toolchains();
    assert!(
        chains.len() >= 2,
        "expected Go 1.19 and a Swiss-map Go: run `cargo xtask setup`"
    );
    for (label, go) in chains {
        let exe = common::build_go_with("ops", OPS, &go, &label, Link::Plain);
        let (audit, out) = run_audit(&exe, &[], &[]);
        let ctx = format!("{label}: {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        let worker: u64 = out
            .iter()
            .find_map(|l| l.strip_prefix("worker goid "))
            .unwrap_or_else(|| panic!("no worker line {out:?} {ctx}"))
            .parse()
            .unwrap();
        // The goroutine id offset differs between versions (1.23 and 1.24
        // added a field before it): the ids must still be the program's own.
        let deleters: HashSet<u64> = audit
            .kind("access")
            .iter()
            .filter(|a| a["function"] == "main.deleteInts")
            .map(|a| a["goid"].as_u64().unwrap())
            .collect();
        assert_eq!(deleters, HashSet::from([worker]), "{ctx}");
        let ops = ops_by_function(&audit);
        assert!(
            ops.get("main.iterate")
                .is_some_and(|s| s.contains("iterate")),
            "{ops:?} {ctx}"
        );
        assert_eq!(audit.summary()["dropped"], 0, "{ctx}");
    }
}

#[test]
fn lost_events_name_the_target_and_add_up_to_the_summary() {
    if !bpf_available("lost_events_name_the_target_and_add_up_to_the_summary") {
        return;
    }
    // A tight map loop against a 1 MiB ring: accesses must be lost, and
    // every loss must be said, on the target's own pid.
    let exe = build_go(
        "mapbench",
        include_str!("../../xtask/bench/main.go"),
        GoToolchain::Swiss,
        Link::Plain,
    );
    let (audit, out) = run_audit(&exe, &["300000"], &["--ring-mib", "1"]);
    let ctx = audit.stderr.clone();
    assert!(audit.status.success(), "{ctx}");
    assert!(out.iter().any(|l| l.starts_with("ns_per_op ")), "{out:?}");
    let s = audit.summary();
    let pid = s["pid"].as_u64().unwrap();
    let dropped = s["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "expected losses with a 1 MiB ring: {s}");
    let lost = audit.kind("lost");
    assert!(lost.iter().all(|l| l["pid"] == pid), "{lost:?}");
    let said: u64 = lost.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(said, dropped, "{lost:?} {s}");
}

/// `map-auditor run --quiet --format json [extra] -- exe args`: the
/// findings-only session (no access stream), whose events share stdout
/// with the target.
fn run_findings_only(exe: &Path, extra: &[&str], args: &[&str]) -> Audit {
    let out = auditor()
        .args(["run", "--quiet", "--format", "json"])
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(args)
        .output()
        .expect("start map-auditor");
    let (events, _) = parse_events(&out.stdout);
    Audit {
        events,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn writer_entering_while_a_reader_is_inside_is_reported_at_the_readers_exit() {
    if !bpf_available("writer_entering_while_a_reader_is_inside_is_reported_at_the_readers_exit") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("readmostly", READMOSTLY, tc, link);
        // The lookup's exit may be single-stepped (Go 1.19): attached all
        // the time here, so every read is decided (sampling is tested in
        // stepped_exits.rs).
        // The runtime may catch the race first (a reader entering during a
        // write) and kill the target before any write lands inside a read:
        // such a run decides nothing and is tried again, a few times.
        let mut attempt = 0;
        let audit = loop {
            attempt += 1;
            let audit = run_findings_only(&exe, &["--stepped-exits", "always"], &["2000"]);
            let decided = audit
                .kind("overlap")
                .iter()
                .any(|o| o["detection"] == "exit");
            let killed_by_runtime = audit.stderr.contains("fatal error: concurrent map");
            if decided || !killed_by_runtime || attempt == 4 {
                break audit;
            }
            eprintln!("{tc:?}/{link:?}: attempt {attempt}: the runtime killed the target first");
        };
        let ctx = format!("{tc:?}/{link:?} (attempt {attempt}): {}", audit.stderr);
        // The read site was escalated, and said so in the live log.
        let escalations = audit.kind("escalation");
        assert!(
            escalations
                .iter()
                .any(|e| e["function"] == "main.lookup" && e.get("error").is_none()),
            "{escalations:?} {ctx}"
        );
        // Nested runtime calls (Go 1.27's mapaccess1 -> mapaccess2) are part
        // of the caller's access: never escalated themselves.
        assert!(
            escalations
                .iter()
                .all(|e| !e["function"].as_str().unwrap().starts_with("runtime.")),
            "{escalations:?} {ctx}"
        );
        let exits: Vec<_> = audit
            .kind("overlap")
            .into_iter()
            .filter(|o| o["detection"] == "exit")
            .collect();
        assert!(!exits.is_empty(), "no exit-decided overlap {ctx}");
        for o in exits {
            assert_eq!(o["first"]["function"], "main.lookup", "{o} {ctx}");
            assert_eq!(o["first"]["op"], "read", "{o} {ctx}");
            assert_eq!(o["second"]["function"], "main.update", "{o} {ctx}");
            assert_eq!(o["second"]["op"], "write", "{o} {ctx}");
            assert_ne!(o["first"]["goid"], o["second"]["goid"], "{o}");
            assert!(o["first"]["goid"].as_u64().unwrap() != 0, "{o}");
            assert!(
                o["first"]["ts_ns"].as_u64() <= o["second"]["ts_ns"].as_u64(),
                "first must have entered first: {o}"
            );
            assert!(o["first"]["stack"].as_array().unwrap().len() >= 2, "{o}");
        }
        // Identical pairs are rate-limited in the kernel: at most one report
        // of this pair per second of the run.
        let pairs = audit
            .kind("overlap")
            .into_iter()
            .filter(|o| o["detection"] == "exit")
            .count();
        assert!(pairs <= 4, "{pairs} reports of one pair {ctx}");
    }
}

#[test]
fn scope_probes_only_the_chosen_packages_call_sites() {
    if !bpf_available("scope_probes_only_the_chosen_packages_call_sites") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("ops", OPS, tc, link);
        let (audit, out) = run_audit(&exe, &[], &["--scope", "main-module"]);
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        assert!(
            out.iter().any(|l| l.starts_with("result ")),
            "{out:?} {ctx}"
        );
        // The attach report lists the call sites probed: calls in the
        // program's own code, on the emulated `call` instruction (a
        // `make`, streamed here, is seen where its call returns).
        let attach = audit.kind("attach");
        let probes = attach[0]["probes"].as_array().unwrap();
        let calls: Vec<&Value> = probes
            .iter()
            .filter(|p| p.get("call_site").is_some())
            .collect();
        assert!(!calls.is_empty(), "{attach:?} {ctx}");
        assert!(
            calls
                .iter()
                .all(|p| p["call_site"].as_str().unwrap().starts_with("main.")
                    && (p["emulated"] == true || p["op"] == "make" && p["exit"] == true)),
            "{calls:?}"
        );
        // No probe on a runtime map function's own entry.
        assert!(
            probes.iter().all(|p| p.get("call_site").is_some()
                || p["exit"] == true
                || p.get("hook").is_some()),
            "{probes:?}"
        );
        // Accesses are seen, from main's functions only, with their op.
        let ops = ops_by_function(&audit);
        assert!(
            ops.get("main.deleteInts")
                .is_some_and(|s| s.contains("delete")),
            "{ops:?} {ctx}"
        );
        assert!(ops.keys().all(|f| f.starts_with("main.")), "{ops:?} {ctx}");
    }
}

/// `map-auditor run [args] -- exe`: events and target lines share stdout.
fn run_sharing_stdout(exe: &Path, args: &[&str]) -> (Audit, Vec<String>) {
    let out = auditor()
        .arg("run")
        .args(args)
        .arg("--")
        .arg(exe)
        .output()
        .expect("start map-auditor");
    let (events, target) = parse_events(&out.stdout);
    (
        Audit {
            events,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        },
        target,
    )
}

fn goid_line(out: &[String], prefix: &str) -> u64 {
    out.iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {out:?}"))
        .parse()
        .unwrap()
}

#[test]
fn json_stream_counts_accesses_per_goroutine_map_site_and_op() {
    if !bpf_available("json_stream_counts_accesses_per_goroutine_map_site_and_op") {
        return;
    }
    for (tc, link) in toolchains() {
        let exe = build_go("ops", OPS, tc, link);
        let (audit, out) =
            run_sharing_stdout(&exe, &["--format", "json", "--aggregate-interval", "100ms"]);
        let ctx = format!("{tc:?}/{link:?}: {}", audit.stderr);
        assert!(audit.status.success(), "{ctx}");
        let main = goid_line(&out, "main goid ");
        let worker = goid_line(&out, "worker goid ");
        // Counts, not records.
        assert!(audit.kind("access").is_empty(), "{ctx}");
        let counts = audit.kind("access_counts");
        assert!(!counts.is_empty(), "{ctx}");
        // The program's own numbers, per goroutine, call site and op,
        // whichever intervals they fell in.
        let total = |function: &str, goid: u64, op: &str| -> u64 {
            counts
                .iter()
                .filter(|c| c["function"] == function && c["goid"] == goid && c["op"] == op)
                .map(|c| c["count"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            total("main.writeInts", main, "write"),
            10,
            "{counts:?} {ctx}"
        );
        assert_eq!(total("main.writeInts", worker, "write"), 5, "{ctx}");
        assert_eq!(total("main.readInts", main, "read"), 10, "{ctx}");
        assert_eq!(total("main.deleteInts", worker, "delete"), 10, "{ctx}");
        assert_eq!(total("main.deleteInts", main, "delete"), 0, "{ctx}");
        for c in &counts {
            assert!(c["first_ts_ns"].as_u64() <= c["last_ts_ns"].as_u64(), "{c}");
            assert!(c["map"].as_str().unwrap().starts_with("0x"), "{c}");
            assert!(!c["runtime_fn"].as_str().unwrap().is_empty(), "{c}");
        }
        // The summary adds up: every event is an access_counts event or a
        // finding, and the counted accesses are the sum of the counts.
        let s = audit.summary();
        let sum: u64 = counts.iter().map(|c| c["count"].as_u64().unwrap()).sum();
        assert_eq!(s["counted_accesses"].as_u64(), Some(sum), "{s}");
        assert_eq!(
            s["access_counts"].as_u64(),
            Some(counts.len() as u64),
            "{s}"
        );
        assert_eq!(
            s["events"].as_u64().unwrap(),
            counts.len() as u64 + s["overlaps"].as_u64().unwrap(),
            "{s}"
        );
        assert_eq!(s["accesses"], 0, "{s}");
        assert_eq!(s["dropped"], 0, "{s}");
    }
}

#[test]
fn quiet_mode_sends_nothing_per_access_or_make() {
    if !bpf_available("quiet_mode_sends_nothing_per_access_or_make") {
        return;
    }
    // 125,000 accesses and five maps made: in quiet mode none of them may
    // cost a record or a count (and no `make` RET probe is placed).
    let exe = build_go(
        "mapbench",
        include_str!("../../xtask/bench/main.go"),
        GoToolchain::Swiss,
        Link::Plain,
    );
    let out = auditor()
        .args(["run", "--quiet", "--format", "json", "--"])
        .arg(&exe)
        .arg("50000")
        .output()
        .expect("start map-auditor");
    let (events, _) = parse_events(&out.stdout);
    let audit = Audit {
        events,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(audit.status.success(), "{}", audit.stderr);
    let s = audit.summary();
    assert!(s["probe_hits"].as_u64().unwrap() >= 50_000, "{s}");
    assert_eq!(s["accesses"], 0, "{s}");
    assert!(s.get("access_counts").is_none(), "{s}");
    assert!(s.get("counted_accesses").is_none(), "{s}");
    assert_eq!(s["events"], s["overlaps"], "{s}");
    assert!(audit.kind("access").is_empty());
    assert!(audit.kind("access_counts").is_empty());
}

/// `map-auditor run --quiet --format json --max-overhead PCT -- mapbench N`.
fn run_with_budget(pct: &str, n: &str) -> Audit {
    let exe = build_go(
        "mapbench",
        include_str!("../../xtask/bench/main.go"),
        GoToolchain::Swiss,
        Link::Plain,
    );
    let out = auditor()
        .args([
            "run",
            "--quiet",
            "--format",
            "json",
            "--max-overhead",
            pct,
            "--",
        ])
        .arg(&exe)
        .arg(n)
        .output()
        .expect("start map-auditor");
    let (events, _) = parse_events(&out.stdout);
    Audit {
        events,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn tight_budget_narrows_coverage_and_says_why() {
    if !bpf_available("tight_budget_narrows_coverage_and_says_why") {
        return;
    }
    // A map hammered on five goroutines: every probe on costs the target
    // far more than 1% of its CPU. Long enough for the ladder's first
    // second at full cost and its second of per-site counting (which
    // finds no call site outside the main module worth detaching).
    let audit = run_with_budget("1", "3000000");
    assert!(audit.status.success(), "{}", audit.stderr);
    let changes = audit.kind("coverage");
    assert!(!changes.is_empty(), "no coverage event: {}", audit.stderr);
    let c = changes[0];
    assert!(c["coverage_pct"].as_f64().unwrap() < 100.0, "{c}");
    assert!(c["estimated_pct"].as_f64().unwrap() > 1.0, "{c}");
    assert_eq!(c["budget_pct"], 1.0, "{c}");
    assert!(c["window_on_ms"].as_u64() < c["window_ms"].as_u64(), "{c}");
    assert!(c["hits_per_s"].as_f64().unwrap() > 0.0, "{c}");
    assert!(c["reason"].as_str().unwrap().contains("1% budget"), "{c}");
    let s = audit.summary();
    let pct = s["coverage_pct"].as_f64().expect("coverage in the summary");
    assert!(pct < 100.0, "{s}");
    assert!(
        s["coverage_reason"].as_str().unwrap().contains("sampling"),
        "{s}"
    );
}

/// Under a budget a hot reflect call site breaks, the auditor detaches
/// that call site first (the scope step) and keeps the main module's: a
/// race in the program's own code, started only once the narrowing was
/// reported, is still named. Sampling, if any, comes after.
fn budget_narrows_scope_before_sampling(busy: bool) {
    use std::io::BufRead;
    let _busy = busy.then(BusyCores::start);
    let exe = build_go("narrow", NARROW, GoToolchain::Swiss, Link::Plain);
    let go = std::env::temp_dir().join(format!(
        "map-auditor-narrow-{}-{}",
        std::process::id(),
        busy as u8
    ));
    let _ = std::fs::remove_file(&go);
    let mut child = auditor()
        .args([
            "run",
            "--quiet",
            "--format",
            "json",
            "--max-overhead",
            "5",
            "--",
        ])
        .arg(&exe)
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start map-auditor");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v.get("kind").is_some()
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    // Synchronised on the event: the race starts once the narrowing is
    // reported (or after a minute, for the assertions to say what failed).
    let mut events = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(v) => {
                let scope = v["kind"] == "coverage" && v["step"] == "scope";
                events.push(v);
                if scope {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    std::fs::write(&go, b"go").unwrap();
    let mut stderr = String::new();
    {
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    }
    let status = child.wait().expect("map-auditor ends");
    reader.join().unwrap();
    events.extend(rx.try_iter());
    let _ = std::fs::remove_file(&go);
    let audit = Audit {
        events,
        status,
        stderr,
    };
    let ctx = format!("busy={busy}: {}", audit.stderr);
    let changes = audit.kind("coverage");
    let first = changes
        .first()
        .unwrap_or_else(|| panic!("no coverage event {ctx}"));
    // Scope first: the first change detaches call sites, in reflect only.
    assert_eq!(first["step"], "scope", "{first} {ctx}");
    let narrowed = first["narrowed"].as_array().expect("narrowed sites");
    assert!(!narrowed.is_empty(), "{first}");
    for n in narrowed {
        let site = n["call_site"].as_str().unwrap();
        assert!(site.starts_with("reflect."), "{n}");
        assert!(n["hits_per_s"].as_f64().unwrap() > 0.0, "{n}");
    }
    assert!(first["estimated_pct"].as_f64().unwrap() > 5.0, "{first}");
    assert!(
        first["reason"].as_str().unwrap().contains("scope narrowed"),
        "{first}"
    );
    assert!(first["sites_narrowed"].as_u64().unwrap() >= 1, "{first}");
    assert!(
        first["sites_narrowed"].as_u64() < first["sites"].as_u64(),
        "{first}"
    );
    // No change before it sampled; any sampling comes after the scope step.
    assert!(
        changes
            .iter()
            .take_while(|c| c["step"] != "scope")
            .all(|c| c["coverage_pct"] == 100.0),
        "{changes:?}"
    );
    // The main module's race is still seen.
    let overlaps = audit.kind("overlap");
    assert!(!overlaps.is_empty(), "no overlap reported {ctx}");
    let o = overlaps[0];
    for side in ["first", "second"] {
        let f = o[side]["function"].as_str().unwrap();
        assert!(f == "main.writerA" || f == "main.writerB", "{o} {ctx}");
    }
    // The summary says what was narrowed and for how long.
    let s = audit.summary();
    let sites = s["narrowed_sites"]
        .as_array()
        .expect("narrowed sites in the summary");
    assert!(!sites.is_empty(), "{s}");
    for x in sites {
        assert!(
            x["call_site"].as_str().unwrap().starts_with("reflect."),
            "{x}"
        );
        assert!(x["narrowed_ms"].as_u64().unwrap() > 0, "{x}");
        assert!(x["times"].as_u64().unwrap() >= 1, "{x}");
    }
    assert!(s["coverage_reason"].as_str().is_some(), "{s}");
}

#[test]
fn budget_narrows_scope_before_sampling_and_main_module_races_are_still_named() {
    if !bpf_available("budget_narrows_scope_before_sampling_and_main_module_races_are_still_named")
    {
        return;
    }
    budget_narrows_scope_before_sampling(false);
}

#[test]
fn budget_narrows_scope_on_busy_cores() {
    if !bpf_available("budget_narrows_scope_on_busy_cores") {
        return;
    }
    budget_narrows_scope_before_sampling(true);
}

/// A call site detached for its cost that goes cold meanwhile is attached
/// again (on trial after three holds, since nothing can show it went cold)
/// and stays attached: the summary says it was detached for part of the
/// session only.
#[test]
fn detached_site_that_went_cold_is_attached_again() {
    use std::io::BufRead;
    if !bpf_available("detached_site_that_went_cold_is_attached_again") {
        return;
    }
    let exe = build_go("narrow", NARROW, GoToolchain::Swiss, Link::Plain);
    let go = std::env::temp_dir().join(format!("map-auditor-widen-{}", std::process::id()));
    let done = go.with_extension("done");
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&done);
    let mut child = auditor()
        .args([
            "run",
            "--quiet",
            "--format",
            "json",
            "--max-overhead",
            "5",
            "--",
        ])
        .arg(&exe)
        .arg("widen")
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start map-auditor");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v.get("kind").is_some()
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    // Each step waits for the event that says the previous one happened.
    let mut events = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&Value) -> bool, secs: u64| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(v) => {
                    let hit = pred(&v);
                    events.push(v);
                    if hit {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return false,
            }
        }
        false
    };
    let narrowed = wait_for(
        &|v| v["kind"] == "coverage" && v["narrowed"].as_array().is_some_and(|a| !a.is_empty()),
        60,
    );
    std::fs::write(&go, b"cold").unwrap();
    let widened = narrowed
        && wait_for(
            &|v| v["kind"] == "coverage" && v["widened"].as_array().is_some_and(|a| !a.is_empty()),
            90,
        );
    std::fs::write(&done, b"done").unwrap();
    let status = child.wait().expect("map-auditor ends");
    reader.join().unwrap();
    events.extend(rx.try_iter());
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&done);
    let audit = Audit {
        events,
        status,
        stderr: String::new(),
    };
    let changes = audit.kind("coverage");
    assert!(narrowed, "never narrowed: {changes:?}");
    assert!(widened, "never widened: {changes:?}");
    assert!(audit.status.success());
    let w = changes
        .iter()
        .find(|c| c["widened"].as_array().is_some_and(|a| !a.is_empty()))
        .unwrap();
    assert_eq!(w["step"], "scope", "{w}");
    assert!(
        w["reason"].as_str().unwrap().contains("scope widened"),
        "{w}"
    );
    for x in w["widened"].as_array().unwrap() {
        assert!(
            x["call_site"].as_str().unwrap().starts_with("reflect."),
            "{x}"
        );
    }
    // Cold, it is not detached again.
    let after: Vec<_> = changes
        .iter()
        .skip_while(|c| !std::ptr::eq(**c, *w))
        .skip(1)
        .filter(|c| c["narrowed"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    let s = audit.summary();
    let sites = s["narrowed_sites"].as_array().expect("narrowed sites");
    assert!(!sites.is_empty(), "{s}");
    for x in sites {
        assert_eq!(x["narrowed_at_end"], false, "{x}");
        assert!(x["narrowed_ms"].as_u64().unwrap() >= 10_000, "{x}");
        assert!(x["narrowed_pct"].as_f64().unwrap() < 100.0, "{x}");
    }
}

#[test]
fn generous_budget_keeps_every_probe_on() {
    if !bpf_available("generous_budget_keeps_every_probe_on") {
        return;
    }
    let audit = run_with_budget("100", "300000");
    assert!(audit.status.success(), "{}", audit.stderr);
    assert!(
        audit
            .kind("coverage")
            .iter()
            .all(|c| c["coverage_pct"] == 100.0),
        "{:?}",
        audit.kind("coverage")
    );
    let s = audit.summary();
    assert_eq!(s["coverage_pct"].as_f64(), Some(100.0), "{s}");
}
