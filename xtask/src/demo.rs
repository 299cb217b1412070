//! `cargo xtask demo`: build map-auditor, build the bundled racy Go program
//! (xtask/demo/main.go) and audit it for fifteen seconds.
//!
//! The program shares one map under a mutex and races on another; the demo
//! shows the auditor naming the racing accesses. Attaching uprobes needs
//! root (or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::setup::GoToolchains;
use crate::{paths, process, setup};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which Go builds the demo program: its map implementation differs.
    #[arg(long, value_enum, default_value_t = GoFlavour::Swiss)]
    pub go: GoFlavour,
    /// How long map-auditor watches (passed as `--duration`).
    #[arg(long, default_value = "15s")]
    pub duration: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GoFlavour {
    /// Go 1.19: classic hashmap.
    Classic,
    /// Go 1.24+: Swiss tables.
    Swiss,
}

/// Build both programs, then run the auditor on the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    if !paths::is_root() {
        bail!(
            "the demo attaches uprobes, which needs root: run `sudo -E cargo xtask demo` \
             (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE)"
        );
    }
    let go = setup::run()?;
    let root = paths::workspace_root();
    let auditor = process::build_auditor(&root)?;
    let demo = build_demo(&root, &go, args.go)?;

    let recording = root.join("target/demo/session.jsonl");
    let report = root.join("target/demo/report.html");
    println!(
        "auditing {} for {} (live log below)",
        demo.display(),
        args.duration
    );
    // The demo program races on purpose: the Go runtime may kill it with
    // "fatal error: concurrent map writes", and `map-auditor run` then exits
    // with the target's status. That is the expected ending, not a failure.
    let status = Command::new(&auditor)
        .args(["run", "--duration", &args.duration, "--record"])
        .arg(&recording)
        .arg("--")
        .arg(&demo)
        .status()
        .context("starting map-auditor")?;
    match status.code() {
        Some(0) | Some(2) => {}
        _ => bail!("map-auditor run ended with {status}: see its message above"),
    }
    process::run(
        Command::new(&auditor)
            .args(["report", "--format", "html", "-o"])
            .arg(&report)
            .arg(&recording),
    )
    .context("rendering the HTML report")?;
    // The text report is the demo's result: on the terminal, not in the log.
    let status = Command::new(&auditor)
        .arg("report")
        .arg(&recording)
        .status()
        .context("rendering the text report")?;
    if !status.success() {
        bail!("`map-auditor report` ended with {status}: see its message above");
    }
    println!("HTML report: {}", report.display());
    println!("recording:   {}", recording.display());
    println!("set-up and build output: {}", setup::log_file().display());
    Ok(())
}

/// Compile xtask/demo with the chosen Go into target/demo/racy-maps-<flavour>.
fn build_demo(root: &Path, go: &GoToolchains, flavour: GoFlavour) -> Result<PathBuf> {
    let exe = root
        .join("target/demo")
        .join(format!("racy-maps-{flavour:?}").to_lowercase());
    process::go_build(
        go.for_flavour(flavour),
        &root.join("xtask/demo"),
        &exe,
        false,
    )
    .context("building the demo Go program failed")?;
    Ok(exe)
}
