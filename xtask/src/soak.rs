//! `cargo xtask soak --minutes N`: the daemon with several busy Go targets
//! (Go 1.19 classic maps, 1.21, and 1.27 Swiss maps) and bpf(2) traffic on a
//! BPF map, sampled every `--every` seconds (RSS, fds, events, drops, log
//! size). It ends with one line: PASS or FAIL and why.
//!
//! Checks: memory and fds flat (the last third of the run does not grow
//! past the first third by more than 25 % + 16 MiB, resp. 8 fds); nothing
//! lost silently (every kernel drop the daemon counted appears as `lost`
//! events in the log); counters consistent (after the targets are detached
//! and traffic stops, the daemon's per-kind event counts equal the lines in
//! the log, and each target's `summary` counts the accesses logged for it).

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{paths, process};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Requests per second of each Go target (each is ~7 map operations).
    #[arg(long, default_value_t = 100)]
    rate: u32,
}

struct Sample {
    at_s: u64,
    rss_mib: f64,
    fds: usize,
    events: u64,
    dropped: u64,
    log_mib: f64,
    ring_used: u64,
}

/// Children killed when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn go_targets(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let gos = [
        ("go1.19", PathBuf::from("/usr/lib/go-1.19/bin/go")),
        ("go1.21", paths::go_wheel_binary("1.21.13")),
        ("go1.27", paths::go_wheel_binary("1.27.3")),
    ];
    for (name, go) in gos {
        if !go.exists() {
            eprintln!("soak: {name} not installed ({}), skipped", go.display());
            continue;
        }
        let exe = root.join("target/soak").join(format!("soak-{name}"));
        process::go_build(&go, &root.join("xtask/soak"), &exe, false)
            .with_context(|| format!("building the soak target with {name}"))?;
        out.push((name.to_string(), exe));
    }
    if out.is_empty() {
        bail!("no Go toolchain found: run `cargo xtask setup`");
    }
    Ok(out)
}

fn ctl(auditor: &Path, socket: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(auditor)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .arg("--json")
        .output()?;
    if !out.status.success() {
        bail!(
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// bpf(2) map traffic: a hash map pinned in bpffs, updated ~20 times a
/// second by bpftool until `stop`.
fn bpf_traffic(stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<u64>> {
    let pin = "/sys/fs/bpf/map_auditor_soak";
    let _ = std::fs::remove_file(pin);
    process::run(Command::new("bpftool").args([
        "map", "create", pin, "type", "hash", "key", "4", "value", "8", "entries", "1024", "name",
        "soak_map",
    ]))
    .context("creating the soak BPF map (bpftool, bpffs mounted?)")?;
    Ok(std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let k = (n % 256) as u8;
            let ok = Command::new("bpftool")
                .args(["map", "update", "pinned", pin, "key"])
                .args([&k.to_string(), "0", "0", "0", "value"])
                .args(["1", "0", "0", "0", "0", "0", "0", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            n += u64::from(ok);
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(pin);
        n
    }))
}

/// What the log directory holds, counted line by line (it can be many GiB).
#[derive(Default)]
struct LogCounts {
    by_kind: BTreeMap<String, u64>,
    lost_by_what: BTreeMap<String, u64>,
    accesses_by_pid: BTreeMap<u64, u64>,
    summary_accesses: BTreeMap<u64, u64>,
}

fn count_log(dir: &Path) -> Result<LogCounts> {
    use std::io::BufRead as _;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.sort_by_key(|p| p.ends_with("audit.jsonl"));
    #[derive(serde::Deserialize)]
    struct Head {
        kind: String,
        #[serde(default)]
        pid: u64,
        #[serde(default)]
        what: Option<String>,
        #[serde(default)]
        count: u64,
        #[serde(default)]
        accesses: u64,
    }
    let mut c = LogCounts::default();
    for p in files {
        let f = std::io::BufReader::new(std::fs::File::open(&p)?);
        for line in f.lines() {
            let line = line?;
            let Ok(h) = serde_json::from_str::<Head>(&line) else {
                *c.by_kind.entry("unparsable".into()).or_default() += 1;
                continue;
            };
            match h.kind.as_str() {
                "lost" => {
                    *c.lost_by_what
                        .entry(h.what.unwrap_or_default())
                        .or_default() += h.count
                }
                "access" => *c.accesses_by_pid.entry(h.pid).or_default() += 1,
                "summary" => {
                    c.summary_accesses.insert(h.pid, h.accesses);
                }
                _ => {}
            }
            *c.by_kind.entry(h.kind).or_default() += 1;
        }
    }
    Ok(c)
}

pub fn run(args: &SoakArgs) -> Result<()> {
    if !paths::is_root() {
        bail!("the soak loads BPF programs: run it as root");
    }
    let root = paths::workspace_root();
    let auditor = process::build_auditor(&root)?;
    let targets = go_targets(&root)?;
    let work = root.join("target/soak/run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let socket = work.join("control.sock");
    let log_dir = work.join("log");
    let config = work.join("daemon.toml");
    std::fs::write(
        &config,
        "scan_interval = \"500ms\"\n[log]\nmax_file_mib = 16\nkeep_files = 1000\n[bpf]\nenabled = true\n",
    )?;

    let mut procs = Procs(Vec::new());
    // Two processes per toolchain.
    for (_, exe) in targets.iter().chain(targets.iter()) {
        procs.0.push(
            Command::new(exe)
                .arg(args.rate.to_string())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?,
        );
    }
    let daemon_err = std::fs::File::create(work.join("daemon.stderr"))?;
    let mut daemon = Command::new(&auditor)
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--log-dir")
        .arg(&log_dir)
        .stdout(Stdio::null())
        .stderr(daemon_err)
        .spawn()?;
    let dpid = daemon.id();
    let started = Instant::now();
    while ctl(&auditor, &socket, &["status"]).is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = daemon.kill();
            bail!(
                "the daemon did not start: see {}",
                work.join("daemon.stderr").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &procs.0 {
        ctl(&auditor, &socket, &["attach", "--pid", &c.id().to_string()])?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = bpf_traffic(stop.clone())?;
    println!(
        "soak: {} targets ({}), {} req/s each, bpf(2) traffic, {} min, sampling every {} s; files in {}",
        procs.0.len(),
        targets
            .iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.rate,
        args.minutes,
        args.every,
        work.display()
    );
    println!(
        "{:>6} {:>8} {:>5} {:>12} {:>10} {:>9} {:>10}",
        "t_s", "rss_mib", "fds", "events", "dropped", "log_mib", "ring_used"
    );
    let mut csv = std::fs::File::create(work.join("samples.csv"))?;
    writeln!(csv, "t_s,rss_mib,fds,events,dropped,log_mib,ring_used")?;
    let mut samples = Vec::new();
    let t0 = Instant::now();
    let end = Duration::from_secs(args.minutes * 60);
    loop {
        let s = ctl(&auditor, &socket, &["status"])?;
        let events: u64 = s["events_by_kind"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        let sample = Sample {
            at_s: t0.elapsed().as_secs(),
            rss_mib: s["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            fds: fd_count(dpid),
            events,
            dropped: s["dropped"].as_u64().unwrap_or(0),
            log_mib: s["log_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            ring_used: s["ring_used_bytes"].as_u64().unwrap_or(0),
        };
        println!(
            "{:>6} {:>8.1} {:>5} {:>12} {:>10} {:>9.1} {:>10}",
            sample.at_s,
            sample.rss_mib,
            sample.fds,
            sample.events,
            sample.dropped,
            sample.log_mib,
            sample.ring_used
        );
        writeln!(
            csv,
            "{},{:.1},{},{},{},{:.1},{}",
            sample.at_s,
            sample.rss_mib,
            sample.fds,
            sample.events,
            sample.dropped,
            sample.log_mib,
            sample.ring_used
        )?;
        samples.push(sample);
        if t0.elapsed() >= end {
            break;
        }
        std::thread::sleep(Duration::from_secs(args.every));
    }

    // Quiesce: bpf traffic stops, targets are detached (summaries), then
    // the counts are compared.
    stop.store(true, Ordering::Relaxed);
    let bpf_updates = traffic.join().unwrap_or(0);
    let mut problems = Vec::new();
    for c in &procs.0 {
        if let Err(e) = ctl(&auditor, &socket, &["detach", "--pid", &c.id().to_string()]) {
            problems.push(format!("detach {}: {e}", c.id()));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = ctl(&auditor, &socket, &["status"])?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dpid as i32, libc::SIGTERM) };
    let exit = daemon.wait()?;
    if !exit.success() {
        problems.push(format!("daemon exited with {exit}"));
    }
    for c in &mut procs.0 {
        if c.try_wait()?.is_some() {
            problems.push(format!("target {} died during the soak", c.id()));
        }
    }

    let counts = count_log(&log_dir)?;
    let by_kind = &counts.by_kind;
    let lost_logged = &counts.lost_by_what;
    // The shutdown adds lines after the status was taken (stop messages);
    // compare the kinds the status counted.
    if let Some(m) = status["events_by_kind"].as_object() {
        for (k, v) in m {
            let logged = by_kind.get(k).copied().unwrap_or(0);
            let counted = v.as_u64().unwrap_or(0);
            if logged != counted {
                problems.push(format!("{k}: daemon counted {counted}, log holds {logged}"));
            }
        }
    }
    if let Some(m) = status["lost_by_what"].as_object() {
        for (k, v) in m {
            let counted = v.as_u64().unwrap_or(0);
            let logged = lost_logged.get(k).copied().unwrap_or(0);
            if logged != counted {
                problems.push(format!(
                    "lost {k}: daemon counted {counted}, lost events in the log say {logged}"
                ));
            }
        }
    }
    let dropped = status["dropped"].as_u64().unwrap_or(0);
    let lost_kernel: u64 = lost_logged
        .iter()
        .filter(|(k, _)| k.as_str() != "subscriber" && k.as_str() != "audit_log")
        .map(|(_, v)| v)
        .sum();
    if lost_kernel < dropped {
        problems.push(format!(
            "{dropped} records dropped in the kernel, only {lost_kernel} reported as lost"
        ));
    }
    for c in &procs.0 {
        let pid = u64::from(c.id());
        let accesses = counts.accesses_by_pid.get(&pid).copied().unwrap_or(0);
        match counts.summary_accesses.get(&pid) {
            Some(&n) if n == accesses => {}
            Some(&n) => problems.push(format!(
                "pid {pid}: summary says {n} accesses, the log holds {accesses}"
            )),
            None => problems.push(format!("pid {pid}: no summary")),
        }
    }

    // Flat memory and fds: the last third against the first third (after
    // a one-sample warm-up).
    let third = (samples.len() / 3).max(1);
    let first = &samples[1.min(samples.len() - 1)..third.max(2).min(samples.len())];
    let last = &samples[samples.len() - third..];
    let max = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).fold(0.0, f64::max);
    let rss_first = max(first, |s| s.rss_mib);
    let rss_last = max(last, |s| s.rss_mib);
    if rss_last > rss_first * 1.25 + 16.0 {
        problems.push(format!(
            "RSS grew from {rss_first:.0} MiB to {rss_last:.0} MiB"
        ));
    }
    let fds_first = max(first, |s| s.fds as f64);
    let fds_last = max(last, |s| s.fds as f64);
    if fds_last > fds_first + 8.0 {
        problems.push(format!("fds grew from {fds_first} to {fds_last}"));
    }
    let events = samples.last().map_or(0, |s| s.events);
    let log_mib = samples.last().map_or(0.0, |s| s.log_mib);
    let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
    println!(
        "soak: {verdict}: {} min, {} targets, {events} events, {dropped} dropped (all reported as lost: {}), {bpf_updates} bpf map updates, log {log_mib:.0} MiB, RSS {rss_first:.0} -> {rss_last:.0} MiB, fds {fds_first} -> {fds_last}{}",
        samples.last().map_or(0, |s| s.at_s) / 60,
        procs.0.len(),
        lost_kernel >= dropped,
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    if !problems.is_empty() {
        bail!("the soak failed: see the line above and {}", work.display());
    }
    Ok(())
}
