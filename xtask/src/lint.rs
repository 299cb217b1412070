//! `cargo xtask lint`: what CI-clean code must pass.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{paths, process};

/// rustfmt in check mode, then clippy on every target with warnings denied.
pub fn run() -> Result<()> {
    let root = paths::workspace_root();
    process::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )
    .context("formatting differs: run `cargo fmt --all`")?;
    process::run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        // Host clippy cannot build the BPF-only crate (no_std, no main).
        "--exclude",
        "auditor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems: fix the warnings above")?;
    println!("lint: ok (rustfmt, clippy -D warnings)");
    Ok(())
}
