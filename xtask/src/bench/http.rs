//! `cargo xtask bench http`: what the auditor costs a Go HTTP service under
//! load, against the same service unprobed and built with `-race`.
//!
//! The service (xtask/bench-http) is a JSON catalogue with a read-mostly
//! cache behind a `sync.RWMutex`; net/http gives every request its header
//! and query maps, and the handler builds one more. It runs pinned to CPU 0
//! with GOMAXPROCS=1; `wrk` loads it from CPU 1, and the auditor runs on
//! CPU 1 too, so the service's core pays only what the probes cost it.
//! Every configuration is measured once per round, rounds repeat `--repeat`
//! times and the medians are reported: load from other work on the machine
//! then falls on every configuration alike.
//!
//! For auditor configurations the BPF programs' run-time statistics give
//! the time per probe hit and the hits per request.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::kernel::{EmptyProbes, ProgRuns, StatsEnabled, prog_runs};
use super::{median, wrk};
use crate::{paths, process, setup};

/// CPU the service runs on; the load generator and the auditor use the other.
const SERVICE_CPU: usize = 0;
const LOAD_CPU: usize = 1;

/// The auditor configurations measured by default: `attach` arguments and
/// where the live log goes. A configuration whose flags this build of
/// map-auditor does not know is skipped with a note, so modes can be listed
/// here before they land.
const AUDITOR_MODES: &[AuditorMode] = &[
    AuditorMode {
        args: &["--quiet"],
        log_to_file: false,
    },
    AuditorMode {
        args: &["--format", "json"],
        log_to_file: true,
    },
    AuditorMode {
        args: &["--format", "json", "--all-accesses"],
        log_to_file: true,
    },
    AuditorMode {
        args: &["--quiet", "--detect", "interval"],
        log_to_file: false,
    },
    AuditorMode {
        args: &["--quiet", "--scope", "main-module"],
        log_to_file: false,
    },
    AuditorMode {
        args: &["--quiet", "--scope", "all"],
        log_to_file: false,
    },
    AuditorMode {
        args: &["--quiet", "--max-overhead", "5"],
        log_to_file: false,
    },
];

struct AuditorMode {
    args: &'static [&'static str],
    /// Write the live log to a file (a user streaming events), rather than
    /// discarding it.
    log_to_file: bool,
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Seconds of load per measured run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Rounds; each configuration runs once per round, medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Open connections wrk keeps.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Which Go builds the service.
    #[arg(long, value_enum, default_value_t = crate::demo::GoFlavour::Swiss)]
    pub go: crate::demo::GoFlavour,
    /// Another auditor configuration to measure, as `attach` arguments, e.g.
    /// `--mode "--quiet --stack-depth 0"`; repeat for several. Its live log
    /// goes to a file.
    #[arg(long = "mode", allow_hyphen_values = true)]
    pub modes: Vec<String>,
    /// Measure only configurations whose label contains this text (repeat
    /// for several), e.g. `--only native --only quiet`.
    #[arg(long)]
    pub only: Vec<String>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Measure this map-auditor executable instead of building one (e.g.
    /// to compare two builds).
    #[arg(long)]
    pub auditor: Option<PathBuf>,
}

/// One row of the table.
struct Config {
    label: String,
    kind: Kind,
}

enum Kind {
    Native,
    Race,
    /// The native service with an empty BPF program (`r0 = 0; exit`) on
    /// each of these file offsets: what the traps alone cost at exactly
    /// an auditor mode's entry sites.
    Floor {
        offsets: Vec<u64>,
    },
    Auditor {
        args: Vec<String>,
        log_to_file: bool,
    },
}

/// What one run of one configuration measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    load: wrk::WrkResult,
    /// BPF program statistics over the measured load (auditor runs).
    runs: Option<ProgRuns>,
    auditor_hwm_kib: Option<u64>,
}

/// Build everything, measure every configuration, print the table.
pub fn run(args: &HttpArgs) -> Result<()> {
    if !paths::is_root() {
        bail!("bench http attaches uprobes, which needs root: run it as root");
    }
    if args.repeat == 0 || args.seconds == 0 {
        bail!("--repeat and --seconds must be at least 1");
    }
    let go = setup::run()?;
    let root = paths::workspace_root();
    let auditor = match &args.auditor {
        Some(path) => path.clone(),
        None => process::build_auditor(&root)?,
    };
    let go_bin = go.for_flavour(args.go);
    let out_dir = root.join("target/bench/http");
    let native = out_dir.join("cacheservice");
    let src = root.join("xtask/bench-http");
    process::go_build(go_bin, &src, &native, false).context("building the HTTP service")?;
    let race = out_dir.join("cacheservice-race");
    let race_ok = match process::go_build(go_bin, &src, &race, true) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("note: -race build unavailable ({e:#}); skipping that row");
            false
        }
    };

    let mut configs = configurations(&auditor, race_ok, args)?;
    add_floors(&mut configs, &auditor, &native, args)?;
    if configs.is_empty() {
        bail!("--only matched no configuration");
    }
    let _stats = StatsEnabled::new()?;
    let load_before = loadavg();
    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.repeat {
        for (config, got) in configs.iter().zip(&mut samples) {
            let exe = match config.kind {
                Kind::Race => &race,
                _ => &native,
            };
            let s = measure(config, exe, &auditor, &out_dir, args)
                .with_context(|| format!("measuring `{}` (round {round})", config.label))?;
            eprintln!(
                "round {round}/{}: {}: {:.0} req/s, p99 {:.2} ms{}",
                args.repeat,
                config.label,
                s.load.requests_per_sec,
                s.load.p99_ms,
                s.runs
                    .map(|r| format!(", {} probe hits", r.run_cnt))
                    .unwrap_or_default()
            );
            got.push(s);
        }
    }
    let load_after = loadavg();
    let table = render(&configs, &samples);
    let heading = format!(
        "HTTP service (Go {:?}) on CPU {SERVICE_CPU} with GOMAXPROCS=1, wrk -t1 -c{} on CPU {LOAD_CPU}, \
         {} s per run, median of {} rounds, {:.0} s in all; load average {} before, {} after",
        args.go,
        args.connections,
        args.seconds,
        args.repeat,
        started.elapsed().as_secs_f64(),
        load_before,
        load_after
    );
    println!("{heading}\n\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, format!("{heading}\n\n{table}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn configurations(auditor: &Path, race_ok: bool, args: &HttpArgs) -> Result<Vec<Config>> {
    let help = process::output(Command::new(auditor).args(["attach", "--help"]))?;
    let known = |flag: &str| !flag.starts_with("--") || help.contains(flag);
    let mut configs = vec![Config {
        label: "native".into(),
        kind: Kind::Native,
    }];
    if race_ok {
        configs.push(Config {
            label: "go -race".into(),
            kind: Kind::Race,
        });
    }
    let defaults = AUDITOR_MODES.iter().map(|m| {
        (
            m.args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            m.log_to_file,
        )
    });
    let extra = args.modes.iter().map(|m| {
        (
            m.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
            true,
        )
    });
    for (mode_args, log_to_file) in defaults.chain(extra) {
        let label = format!(
            "attach {}{}",
            mode_args.join(" "),
            if log_to_file { " > file" } else { "" }
        );
        if let Some(unknown) = mode_args.iter().find(|a| !known(a)) {
            eprintln!("note: this map-auditor has no `{unknown}`; skipping `{label}`");
            continue;
        }
        configs.push(Config {
            label,
            kind: Kind::Auditor {
                args: mode_args,
                log_to_file,
            },
        });
    }
    if !args.only.is_empty() {
        configs.retain(|c| args.only.iter().any(|o| c.label.contains(o.as_str())));
    }
    Ok(configs)
}

/// The empty-program floor of the default mode and of `--scope
/// main-module`: their entry sites (and the runtime hooks every plan
/// has), read from the attach report of a short attach to the service.
/// Escalated exits are placed at run time and are not part of the floor.
fn add_floors(
    configs: &mut Vec<Config>,
    auditor: &Path,
    exe: &Path,
    args: &HttpArgs,
) -> Result<()> {
    for (mode, scope) in [
        ("attach --quiet", None),
        ("attach --quiet --scope main-module", Some("main-module")),
    ] {
        let label = format!("empty program at `{mode}`'s sites");
        if !args.only.is_empty() && !args.only.iter().any(|o| label.contains(o.as_str())) {
            continue;
        }
        let offsets = entry_sites(auditor, exe, scope)
            .with_context(|| format!("finding the probe sites of `{mode}`"))?;
        let at = configs
            .iter()
            .position(|c| c.label == mode)
            .map_or(configs.len(), |i| i + 1);
        configs.insert(
            at,
            Config {
                label,
                kind: Kind::Floor { offsets },
            },
        );
    }
    Ok(())
}

/// File offsets of the entry probes (not exits) `attach` places on a
/// running copy of `exe` with `--scope scope` (None: the default).
fn entry_sites(auditor: &Path, exe: &Path, scope: Option<&str>) -> Result<Vec<u64>> {
    let mut service = Reaped(
        Command::new(exe)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?,
    );
    let mut line = String::new();
    BufReader::new(service.0.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    let mut cmd = Command::new(auditor);
    cmd.args(["attach", "--format", "json", "--duration", "1s", "--pid"])
        .arg(service.0.id().to_string());
    if let Some(scope) = scope {
        cmd.args(["--scope", scope]);
    }
    let out = process::output(&mut cmd)?;
    super::attach_report_offsets(&out, |p| p["exit"] == false)
        .context("map-auditor attach: entry probes")
}

/// A child process killed (and reaped) when dropped, so a failed run
/// leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(
    config: &Config,
    exe: &Path,
    auditor: &Path,
    out_dir: &Path,
    args: &HttpArgs,
) -> Result<Sample> {
    let mut service = Reaped(
        Command::new("taskset")
            .arg("-c")
            .arg(SERVICE_CPU.to_string())
            .arg(exe)
            .arg("127.0.0.1:0")
            .env("GOMAXPROCS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?,
    );
    let mut line = String::new();
    BufReader::new(service.0.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .map(str::trim)
        .with_context(|| format!("the service did not say where it listens: {line:?}"))?
        .to_string();
    let url = format!("http://{addr}/item");

    let mut watcher = match &config.kind {
        Kind::Auditor {
            args: a,
            log_to_file,
        } => {
            let log = out_dir.join(format!("{}.log", slug(&config.label)));
            let stdout = if *log_to_file {
                Stdio::from(std::fs::File::create(&log)?)
            } else {
                Stdio::null()
            };
            let stderr_path = out_dir.join(format!("{}.stderr", slug(&config.label)));
            let child = Command::new("taskset")
                .arg("-c")
                .arg(LOAD_CPU.to_string())
                .arg(auditor)
                .args(["attach", "--pid"])
                .arg(service.0.id().to_string())
                .args(a)
                .stdout(stdout)
                .stderr(std::fs::File::create(&stderr_path)?)
                .spawn()
                .context("starting map-auditor")?;
            let mut child = Reaped(child);
            wait_attached(&mut child, &addr, &stderr_path)?;
            Some((child, stderr_path))
        }
        _ => None,
    };
    let floor = match &config.kind {
        Kind::Floor { offsets } => Some(EmptyProbes::attach(exe, offsets)?),
        _ => None,
    };

    // Warm-up: connections, the service's caches, the auditor's tables.
    wrk::run(&url, 1, args.connections, LOAD_CPU)?;
    // The empty program is this process's own.
    let watcher_pid = watcher
        .as_ref()
        .map(|(c, _)| c.0.id())
        .or(floor.as_ref().map(|_| std::process::id()));
    let before = watcher_pid.map(prog_runs).transpose()?;
    let load = wrk::run(&url, args.seconds, args.connections, LOAD_CPU)?;
    let after = watcher_pid.map(prog_runs).transpose()?;
    if load.errors >= load.requests {
        bail!("every request failed ({} errors)", load.errors);
    }
    if let Some(status) = service.0.try_wait()? {
        bail!("the service died under load ({status})");
    }
    let auditor_hwm_kib = watcher
        .as_ref()
        .map(|(c, _)| vm_hwm_kib(c.0.id()))
        .transpose()?;
    drop(floor);
    if let Some((child, stderr_path)) = &mut watcher {
        stop(&mut child.0, Duration::from_secs(30))?;
        let status = child.0.wait()?;
        if !status.success() {
            bail!(
                "map-auditor ended with {status}: {}",
                std::fs::read_to_string(stderr_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
    }
    stop(&mut service.0, Duration::from_secs(10))?;
    Ok(Sample {
        load,
        runs: after.zip(before).map(|(a, b)| a.since(b)),
        auditor_hwm_kib,
    })
}

/// Wait until the auditor's probes are in place: its programs have run on a
/// request and the number of its perf event and link descriptors (one or
/// two per probe) has stopped growing.
fn wait_attached(auditor: &mut Reaped, addr: &str, stderr: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = auditor.0.id();
    let mut last_fds = 0;
    loop {
        if let Some(status) = auditor.0.try_wait()? {
            bail!(
                "map-auditor exited before attaching ({status}): {}",
                std::fs::read_to_string(stderr).unwrap_or_default().trim()
            );
        }
        if Instant::now() > deadline {
            bail!("map-auditor did not attach within 60 s");
        }
        request(addr)?;
        let fds = probe_fds(pid);
        if prog_runs(pid)?.run_cnt > 0 && fds > 0 && fds == last_fds {
            return Ok(());
        }
        last_fds = fds;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One GET, answer read to the end.
fn request(addr: &str) -> Result<()> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /item HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") {
        bail!("the service answered {:?}", answer.lines().next());
    }
    Ok(())
}

fn probe_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t == "anon_inode:[perf_event]" || t == "anon_inode:bpf_link"
        })
        .count()
}

/// SIGINT (the auditor detaches and prints its summary; the service shuts
/// down), then SIGKILL if it is still there after `grace`.
fn stop(child: &mut Child, grace: Duration) -> Result<()> {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    bail!("pid {} did not stop within {grace:?} of SIGINT", child.id())
}

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn render(configs: &[Config], samples: &[Vec<Sample>]) -> String {
    let rps = |s: &[Sample]| median(s.iter().map(|s| s.load.requests_per_sec).collect());
    let native = rps(&samples[0]);
    let race = configs
        .iter()
        .position(|c| matches!(c.kind, Kind::Race))
        .map(|i| rps(&samples[i]));
    let mut t = String::from(
        "| configuration | requests/s | vs native | vs -race | p99 latency | BPF ns per hit | probe hits per request | auditor peak RSS | failed requests |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (config, s) in configs.iter().zip(samples) {
        let r = rps(s);
        let p99 = median(s.iter().map(|s| s.load.p99_ms).collect());
        let per_hit = stat(s, |runs, _| {
            (runs.run_cnt > 0).then(|| runs.run_time_ns as f64 / runs.run_cnt as f64)
        });
        let per_req = stat(s, |runs, load| {
            (load.requests > 0).then(|| runs.run_cnt as f64 / load.requests as f64)
        });
        let hwm = {
            let v: Vec<f64> = s
                .iter()
                .filter_map(|s| s.auditor_hwm_kib)
                .map(|k| k as f64)
                .collect();
            (!v.is_empty()).then(|| median(v))
        };
        t.push_str(&format!(
            "| {} | {r:.0} | {:.2}x | {} | {p99:.2} ms | {} | {} | {} | {} |\n",
            config.label,
            r / native,
            race.map(|x| format!("{:.2}x", r / x))
                .unwrap_or_else(|| "-".into()),
            per_hit
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            per_req
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            hwm.map(|k| format!("{:.1} MiB", k / 1024.0))
                .unwrap_or_else(|| "-".into()),
            s.iter().map(|s| s.load.errors).sum::<u64>(),
        ));
    }
    t
}

/// Median over runs of a value derived from the BPF statistics.
fn stat(s: &[Sample], f: impl Fn(&ProgRuns, &wrk::WrkResult) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = s
        .iter()
        .filter_map(|s| f(s.runs.as_ref()?, &s.load))
        .collect();
    (!v.is_empty()).then(|| median(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_file_names() {
        assert_eq!(
            slug("attach --format json > file"),
            "attach-format-json-file"
        );
    }
}
