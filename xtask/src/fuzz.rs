//! `cargo xtask fuzz`: run the libFuzzer targets in `fuzz/` for a fixed
//! time each, one after the other, and fail naming the crash file.
//!
//! cargo-fuzz needs the nightly toolchain (sanitizers, `-Z` flags); it is
//! installed on first use. Each target fuzzes its working corpus
//! (`fuzz/corpus/<target>/`, not checked in, grows across runs) together
//! with the checked-in seeds (`fuzz/seeds/<target>/`, read only).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{paths, process};

/// Every target, in the order they run. Keep in step with fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "decode_record",
    "pclntab",
    "buildinfo",
    "type_name",
    "probe_plan",
    "recording",
    "bpf_attr",
    "btf",
    "daemon_request",
    "daemon_config",
];

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds per target (libFuzzer `-max_total_time`). `--seconds 5` is a
    /// smoke run cheap enough for CI.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Targets to run (default: all). See fuzz/Cargo.toml.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

fn cargo_fuzz_installed() -> bool {
    process::succeeds(Command::new("cargo").args(["+nightly", "fuzz", "--version"]))
}

/// Install cargo-fuzz unless it is already there.
fn ensure_cargo_fuzz() -> Result<()> {
    if !process::succeeds(Command::new("cargo").args(["+nightly", "--version"])) {
        bail!("the nightly toolchain is missing: run `rustup toolchain install nightly`");
    }
    if cargo_fuzz_installed() {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz");
    process::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")?;
    Ok(())
}

/// The crash, leak or timeout file libFuzzer reported, from its output.
fn artifact_path(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
}

/// `exec/s` from libFuzzer's last status line.
fn execs_per_second(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        l.split_once("exec/s: ")?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // Two inputs a second is a hang for parsers of a few KiB.
        .arg("-timeout=10")
        .arg("-print_final_stats=1");
    let line = process::display(&cmd);
    let started = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        eprintln!("{text}");
        match artifact_path(&text) {
            Some(path) => bail!(
                "fuzz target {target} failed; input: {}; reproduce with `cd fuzz && cargo +nightly fuzz run {target} {path}`",
                fuzz_dir.join(path).display()
            ),
            None => bail!("`{line}` failed ({}); see its output above", out.status),
        }
    }
    let speed = execs_per_second(&text).map_or_else(|| "?".to_owned(), |e| e.to_string());
    println!(
        "fuzz: {target}: ok in {:.0?}, {speed} exec/s",
        started.elapsed()
    );
    Ok(())
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = paths::workspace_root().join("fuzz");
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    // Build all targets once up front, so build errors show before any
    // fuzzing time is spent and the per-target timings are fuzzing only.
    process::run(
        Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "build"]),
    )
    .context("building the fuzz targets")?;
    for target in targets {
        run_target(&fuzz_dir, target, args.seconds)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_path_and_speed_come_from_libfuzzer_output() {
        let out = "#1024\tpulse  cov: 10 ft: 12 corp: 3/40b exec/s: 512 rss: 40Mb\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='artifacts/pclntab/'; Test unit written to artifacts/pclntab/crash-abc\n";
        assert_eq!(artifact_path(out), Some("artifacts/pclntab/crash-abc"));
        assert_eq!(execs_per_second(out), Some(512));
        assert_eq!(artifact_path("Done 10 runs"), None);
    }

    #[test]
    fn target_list_matches_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(paths::workspace_root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} missing from fuzz/Cargo.toml"
            );
        }
        assert_eq!(manifest.matches("[[bin]]").count(), TARGETS.len());
    }
}
