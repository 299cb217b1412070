//! Escalated exit probes the kernel single-steps (entry mode): a read-mostly
//! cache read through a method whose map call returns onto value copies and
//! a deferred unlock has no emulated instruction to stand in for the return
//! address. Under the default `--stepped-exits sampled` such a probe is
//! attached only part of the time, within a CPU budget, so the reads run at
//! full rate, and a silent race there is still reported within the longest
//! gap between windows. Each test runs on an idle machine and again with a
//! busy loop on every core.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use common::{GoToolchain, Link, bpf_available, build_go};
use map_auditor::audit::exits::{FIRST_WINDOW, MAX_PERIOD, STEPPED_HIT_NS};
use serde_json::Value;

const CACHE: &str = include_str!("go/cache.go");
const LOOKUP: &str = "main.(*cache).lookup";

/// These tests measure rates: one at a time, so a busy-core variant does
/// not load the others.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A spinning thread on every core until dropped.
struct BusyCores(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl BusyCores {
    fn start(on: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let n = if on {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            0
        };
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self(stop, threads)
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// `map-auditor run --quiet --format json ARGS -- cache MODE MS`, read
/// as it runs: JSON events and the target's lines, each with when it came.
fn start(
    tc: GoToolchain,
    args: &[&str],
    mode: &str,
    ms: u64,
) -> (std::process::Child, mpsc::Receiver<(Instant, String)>) {
    let exe = build_go("cache", CACHE, tc, Link::Plain);
    let mut child = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
        .args(["run", "--quiet", "--format", "json"])
        .args(args)
        .arg("--")
        .arg(&exe)
        .arg(mode)
        .arg(ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start map-auditor");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Every line until the output closes.
fn rest(rx: &mpsc::Receiver<(Instant, String)>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while let Ok((_, l)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        lines.push(l);
    }
    lines
}

fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The lookup's escalation: single-stepped, held as `tracking`.
fn check_escalation(events: &[Value], tracking: &str, ctx: &str) {
    let esc = of_kind(events, "escalation");
    let e = esc
        .iter()
        .find(|e| e["function"] == LOOKUP)
        .unwrap_or_else(|| panic!("no escalation of {LOOKUP}: {esc:?} {ctx}"));
    assert_eq!(
        e["emulated"], false,
        "the test needs a stepped exit: {e} {ctx}"
    );
    assert_eq!(e["tracking"], tracking, "{e} {ctx}");
    assert!(e.get("error").is_none(), "{e} {ctx}");
}

/// The summary's entry for the lookup's exit probe.
fn lookup_site(events: &[Value], ctx: &str) -> Value {
    let s = of_kind(events, "summary");
    let s = s.last().unwrap_or_else(|| panic!("no summary {ctx}"));
    s["exit_sites"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["function"] == LOOKUP))
        .cloned()
        .unwrap_or_else(|| panic!("no exit site for {LOOKUP} in {s} {ctx}"))
}

/// One steady run: (reads by the target, hits of the lookup's exit, the
/// site's summary entry).
fn steady(tc: GoToolchain, tracking: &str, ms: u64) -> (u64, u64, Value) {
    let (mut child, rx) = start(tc, &["--stepped-exits", tracking], "steady", ms);
    let lines = rest(&rx, Duration::from_millis(ms) + Duration::from_secs(60));
    let status = child.wait().unwrap();
    let ctx = format!("{tc:?} {tracking}: {lines:?}");
    assert!(status.success(), "{status} {ctx}");
    let reads: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("reads "))
        .unwrap_or_else(|| panic!("no reads line {ctx}"))
        .parse()
        .unwrap();
    let ev = events(&lines);
    check_escalation(&ev, tracking, &ctx);
    let site = lookup_site(&ev, &ctx);
    assert_eq!(site["stepped"], true, "{site}");
    assert_eq!(site["tracking"], tracking, "{site}");
    (reads, site["hits"].as_u64().unwrap(), site)
}

fn stepped_exit_stays_within_its_budget(busy: bool) {
    let _one = one_at_a_time();
    let _load = BusyCores::start(busy);
    let ms = 5000;
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        // Attached all the time: every read single-steps its exit.
        let (reads_always, hits_always, _) = steady(tc, "always", ms);
        assert!(
            hits_always * 2 >= reads_always,
            "{tc:?}: always attached, {hits_always} hits for {reads_always} reads"
        );
        let rate = hits_always as f64 / (ms as f64 / 1000.0);
        // Sampled: the budget (1% of a CPU at ~13 µs a hit) over the run,
        // plus the first window and its removal (a grace period) at the
        // rate the site was hit when attached.
        let (reads, hits, site) = steady(tc, "sampled", ms);
        let budget_hits = 0.01 * (ms as f64 / 1000.0) / (STEPPED_HIT_NS / 1e9);
        let first = rate * (FIRST_WINDOW.as_secs_f64() + 0.1 + 0.5);
        let ctx = format!(
            "{tc:?}: sampled {hits} hits for {reads} reads, always {hits_always} for {reads_always}: {site}"
        );
        assert!(hits as f64 <= budget_hits + first, "{ctx}");
        assert!(hits * 20 <= reads, "{ctx}");
        // The reads run at full rate, not at the single step's (several
        // times faster on an idle machine; CPU-bound on busy cores).
        assert!(reads >= 2 * reads_always, "{ctx}");
        let armed = site["armed_pct"].as_f64().unwrap();
        assert!(armed < 50.0, "{ctx}");
    }
}

#[test]
fn a_busy_stepped_exit_is_sampled_within_its_budget() {
    if !bpf_available("a_busy_stepped_exit_is_sampled_within_its_budget") {
        return;
    }
    stepped_exit_stays_within_its_budget(false);
}

#[test]
fn a_busy_stepped_exit_is_sampled_within_its_budget_on_busy_cores() {
    if !bpf_available("a_busy_stepped_exit_is_sampled_within_its_budget_on_busy_cores") {
        return;
    }
    stepped_exit_stays_within_its_budget(true);
}

fn silent_race_is_reported(busy: bool) {
    let _one = one_at_a_time();
    let _load = BusyCores::start(busy);
    // The longest gap between windows, plus the window, the removal and
    // a loaded machine's scheduling.
    let bound = MAX_PERIOD + Duration::from_secs(6);
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let (mut child, rx) = start(tc, &[], "silent", 0);
        let mut seen = Vec::new();
        let mut racing = None;
        let mut found = None;
        let mut pid = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while found.is_none() && Instant::now() < deadline {
            let Ok((at, line)) =
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                break;
            };
            if line == "racing" {
                racing = Some(at);
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["kind"] == "escalation" {
                    pid = v["pid"].as_u64();
                }
                if v["kind"] == "overlap"
                    && v["detection"] == "exit"
                    && v["first"]["function"] == LOOKUP
                    && v["second"]["function"] == "main.(*cache).restock"
                {
                    found = Some(at);
                }
            }
            seen.push(line);
        }
        // Stop the target (run passes SIGTERM on), then read the summary.
        if let Some(p) = pid {
            unsafe { libc::kill(p as i32, libc::SIGTERM) };
        }
        seen.extend(rest(&rx, Duration::from_secs(30)));
        let _ = child.wait();
        let ctx = format!("{tc:?}: {seen:?}");
        let racing = racing.unwrap_or_else(|| panic!("the target never raced {ctx}"));
        let found = found.unwrap_or_else(|| panic!("the silent race was not reported {ctx}"));
        let took = found.saturating_duration_since(racing);
        assert!(took <= bound, "reported {took:?} after racing began {ctx}");
        let ev = events(&seen);
        check_escalation(&ev, "sampled", &ctx);
        let s = of_kind(&ev, "summary");
        assert!(
            s.last().is_some_and(|s| s.get("target_fatal").is_none()),
            "the race was meant to be silent {ctx}"
        );
        let site = lookup_site(&ev, &ctx);
        assert_eq!(site["tracking"], "sampled", "{site}");
    }
}

#[test]
fn a_silent_race_at_a_sampled_stepped_exit_is_reported_within_its_period() {
    if !bpf_available("a_silent_race_at_a_sampled_stepped_exit_is_reported_within_its_period") {
        return;
    }
    silent_race_is_reported(false);
}

#[test]
fn a_silent_race_at_a_sampled_stepped_exit_is_reported_on_busy_cores() {
    if !bpf_available("a_silent_race_at_a_sampled_stepped_exit_is_reported_on_busy_cores") {
        return;
    }
    silent_race_is_reported(true);
}

/// Under `--max-overhead`, escalated exits are parked while the sampling
/// window is closed (even one held `always`), and the windows opening and
/// closing around a correctly locked cache report nothing.
#[test]
fn escalated_exits_are_parked_while_an_overhead_window_is_closed() {
    if !bpf_available("escalated_exits_are_parked_while_an_overhead_window_is_closed") {
        return;
    }
    let _one = one_at_a_time();
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let ms = 6000;
        let args = ["--stepped-exits", "always", "--max-overhead", "1"];
        let (mut child, rx) = start(tc, &args, "steady", ms);
        let lines = rest(&rx, Duration::from_millis(ms) + Duration::from_secs(60));
        let status = child.wait().unwrap();
        let ctx = format!("{tc:?}: {lines:?}");
        assert!(status.success(), "{status} {ctx}");
        let ev = events(&lines);
        check_escalation(&ev, "always", &ctx);
        assert!(
            of_kind(&ev, "overlap").is_empty(),
            "the cache is locked {ctx}"
        );
        let s = of_kind(&ev, "summary");
        let coverage = s.last().and_then(|s| s["coverage_pct"].as_f64());
        let coverage = coverage.unwrap_or_else(|| panic!("no coverage in the summary {ctx}"));
        assert!(coverage < 50.0, "{coverage} {ctx}");
        let site = lookup_site(&ev, &ctx);
        let armed = site["armed_pct"].as_f64().unwrap();
        // Attached at escalation, parked at the first closing: at most
        // the windows' share plus the first second before any estimate.
        assert!(armed < 100.0 && armed <= coverage + 25.0, "{site} {ctx}");
    }
}

/// `--stepped-exits off`: the stepped exit is not placed; the escalation
/// and the summary say so.
#[test]
fn stepped_exits_off_places_no_stepped_exit() {
    if !bpf_available("stepped_exits_off_places_no_stepped_exit") {
        return;
    }
    let _one = one_at_a_time();
    let (mut child, rx) = start(
        GoToolchain::Swiss,
        &["--stepped-exits", "off"],
        "steady",
        2000,
    );
    let lines = rest(&rx, Duration::from_secs(60));
    let status = child.wait().unwrap();
    let ctx = format!("{lines:?}");
    assert!(status.success(), "{status} {ctx}");
    let ev = events(&lines);
    check_escalation(&ev, "off", &ctx);
    let site = lookup_site(&ev, &ctx);
    assert_eq!(site["hits"], 0, "{site}");
    assert_eq!(site["armed_pct"].as_f64(), Some(0.0), "{site}");
    // Emulated exits are placed whatever the flag says.
    let esc = of_kind(&ev, "escalation");
    assert!(
        esc.iter()
            .filter(|e| e["emulated"] == true)
            .all(|e| e["tracking"] == "always"),
        "{esc:?}"
    );
}
