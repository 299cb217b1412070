//! `cargo xtask bench`: what the auditor costs a Go program, measured side
//! by side in one run and reported as ratios to the unprobed program.
//!
//! The target (xtask/bench/main.go) times its own map loop and reports its
//! peak RSS, so the auditor's start-up is not counted. Each configuration
//! runs `--repeat` times; the median is reported. Configurations:
//! - native: no probes;
//! - `-race`: the same program built with the race detector (the usual
//!   alternative to the auditor);
//! - entry, findings only (`--quiet`): the default detection, as a
//!   production user would run it;
//! - entry, every access streamed as JSON;
//! - entry with probes on each function's first instruction instead of the
//!   stack-check `jbe` (what naive placement would cost);
//! - interval, findings only: entry plus RET probes;
//! - the floor: an empty BPF program on exactly the auditor's probe sites
//!   (read from its attach report), so the auditor's own share of a probe
//!   hit is measured against what any uprobe at that instruction costs.
//!
//! `cargo xtask bench http` (bench/http.rs) measures a Go HTTP service
//! under load instead of a tight loop; `cargo xtask bench bpf`
//! (bench/bpf.rs) measures the bpf(2) audit.

mod bpf;
mod http;
pub use http::loadavg;
mod kernel;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

use crate::setup::GoToolchains;
use crate::{paths, process, setup};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
    /// Loop iterations (two map operations each) per measured run.
    #[arg(long, default_value_t = 200_000)]
    pub ops: u64,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Which Go builds the target.
    #[arg(long, value_enum, default_value_t = crate::demo::GoFlavour::Swiss)]
    pub go: crate::demo::GoFlavour,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Measure this map-auditor executable instead of building one (e.g.
    /// to compare two builds).
    #[arg(long)]
    pub auditor: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// A Go HTTP service under wrk: requests/s and p99 latency for native,
    /// -race and each auditor mode, BPF time per probe hit, hits per request.
    Http(http::HttpArgs),
    /// bpf(2) calls: ns per call with no auditor, a counting tracepoint
    /// program, the auditor quiet and the auditor writing JSON to a file,
    /// with each one's kernel program time per call; then a paced run at
    /// 100k calls/s writing JSON to a file, which must lose nothing.
    Bpf(bpf::BpfBenchArgs),
}

/// The label of the empty-program floor.
const EMPTY_PROGRAM: &str = "uprobe with an empty program on the same sites";
/// The auditor configuration compared against the floor.
const DEFAULT_QUIET: &str = "auditor entry, findings only";

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ns_per_op: f64,
    target_rss_kib: u64,
    auditor_rss_kib: u64,
}

fn parse_target_line(stdout: &str) -> Option<(f64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("ns_per_op "))?;
    let mut it = line.split_whitespace();
    it.next()?;
    let ns: f64 = it.next()?.parse().ok()?;
    it.next()?;
    let rss: u64 = it.next()?.parse().ok()?;
    Some((ns, rss))
}

/// Run `cmd` and wait for it with wait4, to get its own peak RSS.
fn run_measured(cmd: &mut Command) -> Result<(String, u64)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    let out = {
        use std::io::{BufRead, BufReader, Read};
        let mut child = child;
        // Keep only the measurement line: holding a JSON run's whole output
        // here would grow this process, and children inherit its peak RSS.
        let mut s = String::new();
        for line in BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(i) = line.find("ns_per_op ") {
                s = line[i..].to_string();
            }
        }
        let mut e = String::new();
        child.stderr.take().unwrap().read_to_string(&mut e)?;
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter; pid is our child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("{} failed: {}", process::display(cmd), e.trim());
        }
        std::mem::forget(child);
        (s, ru.ru_maxrss as u64)
    };
    Ok(out)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn build(root: &Path, go: &Path, race: bool) -> Result<PathBuf> {
    let exe = root
        .join("target/bench")
        .join(if race { "mapbench-race" } else { "mapbench" });
    process::go_build(go, &root.join("xtask/bench"), &exe, race)
        .context("building the bench target")?;
    Ok(exe)
}

/// Run the benchmark the arguments name.
pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        Some(BenchWhat::Http(h)) => http::run(h),
        Some(BenchWhat::Bpf(b)) => bpf::run(b),
        None => run_loop(args),
    }
}

/// File offsets of every probe the auditor places on `exe`, from the attach
/// report of a short `run`.
fn probe_sites(auditor: &Path, exe: &Path) -> Result<Vec<u64>> {
    let out = process::output(
        Command::new(auditor)
            .args(["run", "--format", "json", "--ops", "make", "--"])
            .arg(exe)
            .arg("1000"),
    )?;
    attach_report_offsets(&out, |_| true).context("map-auditor run")
}

/// File offsets of the probes in the attach report among JSON lines `out`
/// that `pick` keeps (a probe as the report's JSON object).
fn attach_report_offsets(out: &str, pick: impl Fn(&serde_json::Value) -> bool) -> Result<Vec<u64>> {
    let attach = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "attach")
        .context("no attach report printed")?;
    let sites: Vec<u64> = attach["probes"]
        .as_array()
        .context("attach report without probes")?
        .iter()
        .filter(|p| pick(p))
        .filter_map(|p| {
            let hex = p["file_offset"].as_str()?.strip_prefix("0x")?;
            u64::from_str_radix(hex, 16).ok()
        })
        .collect();
    if sites.is_empty() {
        bail!("the attach report lists no such probe file offsets");
    }
    Ok(sites)
}

/// The tight-loop table.
fn run_loop(args: &BenchArgs) -> Result<()> {
    if !paths::is_root() {
        bail!("bench attaches uprobes, which needs root: run it as root");
    }
    let go: GoToolchains = setup::run()?;
    let root = paths::workspace_root();
    let auditor = match &args.auditor {
        Some(path) => path.clone(),
        None => process::build_auditor(&root)?,
    };
    let go_bin = go.for_flavour(args.go);
    let plain = build(&root, go_bin, false)?;
    let race = build(&root, go_bin, true);
    let n = args.ops.to_string();

    type Config<'a> = (&'a str, Box<dyn Fn() -> Command + 'a>);
    let audited = |extra: &'static [&'static str]| -> Box<dyn Fn() -> Command + '_> {
        let (auditor, plain, n) = (&auditor, &plain, &n);
        Box::new(move || {
            let mut c = Command::new(auditor);
            c.arg("run").args(extra).arg("--").arg(plain).arg(n);
            c
        })
    };
    let mut configs: Vec<Config> = vec![(
        "native",
        Box::new(|| {
            let mut c = Command::new(&plain);
            c.arg(&n);
            c
        }),
    )];
    match &race {
        Ok(race) => {
            let n = &n;
            configs.push((
                "go -race",
                Box::new(move || {
                    let mut c = Command::new(race);
                    c.arg(n);
                    c
                }),
            ))
        }
        Err(e) => eprintln!("note: -race build unavailable ({e:#}); skipping that row"),
    }
    configs.push(("auditor entry, findings only", audited(&["--quiet"])));
    configs.push((
        "auditor entry, all accesses as JSON",
        audited(&["--format", "json"]),
    ));
    configs.push((
        "auditor entry, probe on first instruction",
        audited(&["--quiet", "--placement", "function-start"]),
    ));
    configs.push((
        "auditor interval, findings only",
        audited(&["--quiet", "--detect", "interval"]),
    ));
    let sites = probe_sites(&auditor, &plain)?;
    configs.push((
        EMPTY_PROGRAM,
        Box::new(|| {
            let mut c = Command::new(&plain);
            c.arg(&n);
            c
        }),
    ));

    // Round by round, so load from other work falls on every configuration.
    let load_before = http::loadavg();
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.repeat.max(1) {
        for ((name, make), got) in configs.iter().zip(&mut samples) {
            let _floor = if *name == EMPTY_PROGRAM {
                Some(kernel::EmptyProbes::attach(&plain, &sites)?)
            } else {
                None
            };
            let (stdout, self_rss) = run_measured(&mut make())?;
            let (ns_op, rss) = parse_target_line(&stdout)
                .with_context(|| format!("{name}: no measurement line in output"))?;
            let is_auditor = name.starts_with("auditor");
            got.push(Sample {
                ns_per_op: ns_op,
                target_rss_kib: rss,
                auditor_rss_kib: if is_auditor { self_rss } else { 0 },
            });
        }
    }
    let load_after = http::loadavg();
    let mut rows = Vec::new();
    for ((name, _), got) in configs.iter().zip(samples) {
        let m = median(got.iter().map(|s| s.ns_per_op).collect());
        let s = got.iter().find(|s| s.ns_per_op == m).copied().unwrap();
        eprintln!("measured: {name}: {m:.1} ns/op");
        rows.push((name.to_string(), s));
    }
    let base = rows[0].1;
    let mut table = String::new();
    table.push_str(
        "| configuration | ns per map op | time vs native | target peak RSS | RSS vs native | auditor peak RSS |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (name, s) in &rows {
        table.push_str(&format!(
            "| {name} | {:.1} | {:.1}x | {} KiB | {:.2}x | {} |\n",
            s.ns_per_op,
            s.ns_per_op / base.ns_per_op,
            s.target_rss_kib,
            s.target_rss_kib as f64 / base.target_rss_kib as f64,
            if s.auditor_rss_kib > 0 {
                format!("{} KiB", s.auditor_rss_kib)
            } else {
                "-".into()
            }
        ));
    }
    let per_op = |label: &str| {
        rows.iter()
            .find(|(n, _)| n == label)
            .map(|(_, s)| s.ns_per_op)
    };
    if let (Some(audited), Some(floor)) = (per_op(DEFAULT_QUIET), per_op(EMPTY_PROGRAM)) {
        table.push_str(&format!(
            "\nDefault mode against the floor: {audited:.1} / {floor:.1} ns per map op = {:.2}x\n",
            audited / floor
        ));
    }
    println!(
        "{} loop iterations x 2 map ops, median of {} runs, Go {:?}; load average {load_before} before, {load_after} after\n",
        args.ops, args.repeat, args.go
    );
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_line_parses() {
        assert_eq!(
            parse_target_line("x\nns_per_op 12.50 maxrss_kib 4096\n"),
            Some((12.5, 4096))
        );
        assert_eq!(parse_target_line("nothing"), None);
    }
}
