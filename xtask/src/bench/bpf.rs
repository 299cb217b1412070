//! `cargo xtask bench bpf`: what the bpf(2) audit costs a process making
//! bpf() calls, side by side in one run.
//!
//! The load is the test helper `maptool lookups` (BPF_MAP_LOOKUP_ELEM in a
//! loop on one pinned map; it times itself, so start-up is not counted).
//! Configurations, interleaved per repeat and reported as medians:
//! - no auditor;
//! - a counting tracepoint program (`bpftrace`, `count()` on
//!   `syscalls:sys_enter_bpf`): the floor any program on the tracepoint
//!   costs;
//! - `map-auditor bpf --quiet` (events decoded, nothing printed);
//! - `map-auditor bpf --format json` to a file.
//!
//! Kernel time: BPF run-time statistics are switched on with
//! `BPF_ENABLE_STATS` (the same counters as `kernel.bpf_stats_enabled=1`,
//! but tied to a file descriptor, so nothing is left to restore even if the
//! benchmark is killed), and each configuration's programs are read from
//! the fdinfo of the process that holds them (only its programs count, not
//! other BPF users of the machine). The auditor's two programs sit on the
//! raw `sys_enter`/`sys_exit` tracepoints, so they also run (and return at
//! once) on every other system call of the machine. Their cost per bpf()
//! call is split out: a one-second window with the auditor up and no load
//! gives each program's ns per run on other system calls (`b`); during the
//! load, per bpf() call = (run time − (runs − calls) × b) / calls. The
//! cost on every other system call is reported beside it, with the
//! machine's system call rate in that window.
//!
//! Then a paced run at `--rate` calls/s (100k by default) writing JSON to a
//! file: the summary's `dropped` must be 0.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::kernel::StatsEnabled;
use crate::{paths, process};

#[derive(Debug, Args)]
pub struct BpfBenchArgs {
    /// bpf() calls per measured run.
    #[arg(long, default_value_t = 200_000)]
    pub calls: u64,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Calls per second of the paced JSON-to-file run.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

const PIN: &str = "/sys/fs/bpf/map_auditor_bench";

/// Run time and runs of the BPF programs one process holds, by program id.
fn prog_stats(pid: u32) -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        if let (Some(id), Some(t), Some(n)) =
            (field("prog_id"), field("run_time_ns"), field("run_cnt"))
        {
            out.insert(id, (t, n));
        }
    }
    out
}

fn stats_delta(
    before: &BTreeMap<u64, (u64, u64)>,
    after: &BTreeMap<u64, (u64, u64)>,
) -> BTreeMap<u64, (u64, u64)> {
    after
        .iter()
        .map(|(id, (t, n))| {
            let (t0, n0) = before.get(id).copied().unwrap_or_default();
            (*id, (t - t0, n - n0))
        })
        .collect()
}

fn prog_name(id: u64) -> String {
    Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("prog {id}"))
}

/// `maptool lookups`: ns per call it measured itself.
fn lookups(tool: &Path, calls: u64, rate: Option<u64>) -> Result<f64> {
    let mut c = Command::new(tool);
    c.args(["lookups", PIN, &calls.to_string()]);
    if let Some(r) = rate {
        c.arg(r.to_string());
    }
    let out = process::output(&mut c)?;
    out.trim().parse().context("maptool printed no ns per call")
}

/// A program holder running while a load is measured.
struct Holder {
    child: Child,
    /// Where its stdout went (auditor JSON runs).
    out: Option<PathBuf>,
}

impl Holder {
    fn auditor(auditor: &Path, json_to: Option<&Path>) -> Result<Self> {
        let mut c = Command::new(auditor);
        c.arg("bpf").args(["--map-name", "ma_bench"]);
        let out = match json_to {
            Some(p) => {
                c.args(["--format", "json"]);
                c.stdout(std::fs::File::create(p)?);
                Some(p.to_path_buf())
            }
            None => {
                // Quiet still decodes every event; the summary is JSON.
                let p = std::env::temp_dir().join("map-auditor-bench-quiet.json");
                c.args(["--quiet", "--format", "json"]);
                c.stdout(std::fs::File::create(&p)?);
                Some(p)
            }
        };
        c.stderr(Stdio::piped());
        let mut child = c.spawn().context("starting map-auditor bpf")?;
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("map-auditor bpf ended before it was live");
            }
            if line.starts_with("auditing") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Ok(Self { child, out })
    }

    fn counting() -> Result<Self> {
        let child = Command::new("bpftrace")
            .args([
                "-e",
                "tracepoint:syscalls:sys_enter_bpf { @calls = count(); }",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (apt-get install bpftrace)")?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Live once its program is loaded (and attached right after).
        while prog_stats(pid).is_empty() {
            if Instant::now() > deadline {
                bail!("bpftrace loaded no program within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self { child, out: None })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, wait, and the auditor's `dropped` from its summary.
    fn stop(mut self) -> Result<Option<u64>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        let Some(p) = self.out else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&p)?;
        let summary = text
            .lines()
            .rev()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["kind"] == "summary").then_some(v)
            })
            .context("the auditor wrote no summary")?;
        Ok(summary["dropped"].as_u64())
    }
}

#[derive(Default)]
struct Row {
    ns: Vec<f64>,
    kernel_ns: Vec<f64>,
    /// All program time during the load / calls (other system calls' runs
    /// included).
    kernel_all_ns: Vec<f64>,
    /// ns per other system call (both programs' early returns).
    other_ns: Vec<f64>,
    /// System calls per second on the machine in the idle window.
    other_rate: Vec<f64>,
    dropped: u64,
    /// Program name → (ns per bpf() call, ns per other system call), last
    /// repeat.
    per_prog: BTreeMap<String, (f64, f64)>,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measure one configuration once with `holder` running.
/// With `idle_window`, the holder's programs also run on other system
/// calls: their per-run cost there is measured first and taken out.
fn measured(
    tool: &Path,
    calls: u64,
    holder: Holder,
    row: &mut Row,
    idle_window: bool,
) -> Result<()> {
    let pid = holder.pid();
    let mut bail: BTreeMap<u64, f64> = BTreeMap::new();
    if idle_window {
        let t0 = Instant::now();
        let s0 = prog_stats(pid);
        std::thread::sleep(Duration::from_secs(1));
        let s1 = prog_stats(pid);
        let secs = t0.elapsed().as_secs_f64();
        let idle = stats_delta(&s0, &s1);
        for (id, (t, n)) in &idle {
            bail.insert(*id, if *n > 0 { *t as f64 / *n as f64 } else { 0.0 });
        }
        row.other_ns.push(bail.values().sum());
        let runs = idle.values().map(|(_, n)| *n).max().unwrap_or(0);
        row.other_rate.push(runs as f64 / secs);
    }
    let before = prog_stats(pid);
    let ns = lookups(tool, calls, None)?;
    let after = prog_stats(pid);
    let delta = stats_delta(&before, &after);
    let total: u64 = delta.values().map(|(t, _)| t).sum();
    row.ns.push(ns);
    row.kernel_all_ns.push(total as f64 / calls as f64);
    row.per_prog.clear();
    let mut per_call = 0.0;
    for (id, (t, n)) in &delta {
        if *n == 0 {
            continue;
        }
        let b = bail.get(id).copied().unwrap_or(0.0);
        let others = n.saturating_sub(calls) as f64;
        let c = ((*t as f64 - others * b) / calls as f64).max(0.0);
        per_call += c;
        row.per_prog.insert(prog_name(*id), (c, b));
    }
    row.kernel_ns.push(per_call);
    row.dropped += holder.stop()?.unwrap_or(0);
    Ok(())
}

pub fn run(args: &BpfBenchArgs) -> Result<()> {
    if !paths::is_root() {
        bail!("bench bpf loads BPF programs, which needs root: run it as root");
    }
    let root = paths::workspace_root();
    let auditor = process::build_auditor(&root)?;
    let tool = root.join("target/bench/bpf-maptool");
    std::fs::create_dir_all(tool.parent().unwrap())?;
    process::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&tool)
            .arg(root.join("auditor-user/tests/bpf-helpers/maptool.c")),
    )
    .context("building the bpf(2) load helper")?;
    let _ = std::fs::remove_file(PIN);
    process::output(Command::new(&tool).args(["create", "ma_bench", PIN]))?;
    let _stats = StatsEnabled::new()?;
    let json = root.join("target/bench/bpf-events.json");

    let names = [
        "no auditor",
        "counting tracepoint program (bpftrace count())",
        "map-auditor bpf --quiet",
        "map-auditor bpf --format json > file",
    ];
    let mut rows: Vec<Row> = names.iter().map(|_| Row::default()).collect();
    for rep in 0..args.repeat {
        eprintln!("repeat {}/{}", rep + 1, args.repeat);
        rows[0].ns.push(lookups(&tool, args.calls, None)?);
        measured(&tool, args.calls, Holder::counting()?, &mut rows[1], false)?;
        measured(
            &tool,
            args.calls,
            Holder::auditor(&auditor, None)?,
            &mut rows[2],
            true,
        )?;
        measured(
            &tool,
            args.calls,
            Holder::auditor(&auditor, Some(&json))?,
            &mut rows[3],
            true,
        )?;
    }
    // Paced: JSON to a file at --rate calls/s, for about five seconds.
    let paced_calls = args.rate * 5;
    let h = Holder::auditor(&auditor, Some(&json))?;
    lookups(&tool, paced_calls, Some(args.rate))?;
    let paced_dropped = h.stop()?.unwrap_or(0);
    let paced_events = std::fs::read_to_string(&json)?
        .lines()
        .filter(|l| l.contains("\"cmd\":\"map_lookup_elem\""))
        .count();
    let _ = std::fs::remove_file(PIN);

    let base = median(&rows[0].ns);
    let floor = median(&rows[1].kernel_ns);
    let mut md = String::new();
    md.push_str(
        "| configuration | ns per bpf() call | vs no auditor | kernel ns per bpf() call | vs counting program | kernel ns per other system call | dropped |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (name, r) in names.iter().zip(&rows) {
        let k = median(&r.kernel_ns);
        let o = median(&r.other_ns);
        md.push_str(&format!(
            "| {name} | {:.0} | {:.2}x | {} | {} | {} | {} |\n",
            median(&r.ns),
            median(&r.ns) / base,
            if k.is_nan() {
                "-".into()
            } else {
                format!("{k:.0}")
            },
            if k.is_nan() {
                "-".into()
            } else {
                format!("{:.2}x", k / floor)
            },
            if o.is_nan() {
                "-".into()
            } else {
                format!("{o:.0}")
            },
            if r.kernel_ns.is_empty() || name.starts_with("counting") {
                "-".to_string()
            } else {
                r.dropped.to_string()
            },
        ));
    }
    md.push_str("\nPer program (last repeat): ns per bpf() call, and ns per run on other system calls (the early return):\n\n| configuration | program | ns per bpf() call | ns per other system call |\n| --- | --- | ---: | ---: |\n");
    for (name, r) in names.iter().zip(&rows) {
        for (p, (c, b)) in &r.per_prog {
            let b = if r.other_ns.is_empty() {
                "-".to_string()
            } else {
                format!("{b:.0}")
            };
            md.push_str(&format!("| {name} | {p} | {c:.0} | {b} |\n"));
        }
    }
    for (name, r) in names.iter().zip(&rows).skip(2) {
        md.push_str(&format!(
            "\n{name}: all program time during the load / calls = {:.0} ns (other system calls' early returns included); the machine made {:.0} system calls/s in the idle window.\n",
            median(&r.kernel_all_ns),
            median(&r.other_rate)
        ));
    }
    md.push_str(&format!(
        "\nPaced run, JSON to a file: {paced_calls} calls at {} calls/s: {paced_events} events written, {paced_dropped} dropped.\n",
        args.rate
    ));
    md.push_str(&format!(
        "\n{} calls per run, {} repeats (medians); load average at the end: {}.\n",
        args.calls,
        args.repeat,
        super::loadavg()
    ));
    println!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
