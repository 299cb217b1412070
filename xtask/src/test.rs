//! `cargo xtask test`: setup, then the workspace tests (all members but the
//! BPF-only auditor-ebpf, unless the caller picks packages with `-p`).
//!
//! The tests build Go target programs with both map implementations; their
//! toolchains are handed over in MAP_AUDITOR_GO_CLASSIC and
//! MAP_AUDITOR_GO_SWISS (values already in the environment win, so a
//! developer can point a run at another Go).

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::{paths, process, setup};

/// Run the tests; returns cargo test's exit code.
pub fn run(cargo_args: &[String]) -> Result<i32> {
    let started = Instant::now();
    let go = setup::run()?;
    let setup_secs = started.elapsed().as_secs_f64();

    let mut cmd = Command::new("cargo");
    cmd.current_dir(paths::workspace_root())
        .args(["test", "--no-fail-fast"]);
    let picks_packages = cargo_args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-p" || a.starts_with("--package") || a.starts_with("-p"));
    if !picks_packages {
        // Every member except the kernel-side crate, which only builds for
        // the BPF target (auditor-user's build script compiles it, and
        // tests it through the programs it loads).
        cmd.args(["--workspace", "--exclude", "auditor-ebpf"]);
    }
    cmd.args(cargo_args).stdout(Stdio::piped());
    for (var, default) in [
        ("MAP_AUDITOR_GO_CLASSIC", &go.classic),
        ("MAP_AUDITOR_GO_SWISS", &go.swiss),
    ] {
        if std::env::var_os(var).is_none() {
            cmd.env(var, default);
        }
    }
    println!("running `{}`", process::display(&cmd));

    let tests_started = Instant::now();
    let mut child = cmd.spawn().context("could not start cargo test")?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        tally.add_line(&line);
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    drop(out);
    let status = child.wait().context("waiting for cargo test")?;
    let test_secs = tests_started.elapsed().as_secs_f64();

    let verdict = if status.success() {
        "ok".to_string()
    } else {
        format!("FAILED ({status})")
    };
    println!(
        "cargo xtask test: {verdict} in {:.1} s (setup {setup_secs:.1} s, build and tests {test_secs:.1} s, {} test binaries)",
        started.elapsed().as_secs_f64(),
        tally.binaries
    );
    // Last line, in the plain form CI reads as the run's count.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    Ok(status.code().unwrap_or(1))
}

/// Counts summed over every libtest `test result:` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    binaries: u32,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Account one line of output; lines other than libtest's summary
    /// (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`) are ignored.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        // Skip the verdict ("ok." / "FAILED."), then read "N word" pairs.
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(word), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_sums_libtest_result_lines() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.2s");
        t.add_line("test foo ... ok");
        assert_eq!(
            t,
            Tally {
                binaries: 2,
                passed: 4,
                failed: 2,
                ignored: 1
            }
        );
    }
}
