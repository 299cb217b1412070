//! The nightly toolchain and its `rust-src` component.
//!
//! auditor-user/build.rs compiles auditor-ebpf with `+nightly -Z build-std=core`, which
//! needs the standard library's source.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::Outcome;
use crate::process;

/// Make sure `nightly` exists and has `rust-src`.
pub fn ensure() -> Result<Outcome> {
    let mut installed = Vec::new();
    let toolchains = process::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to manage the nightly toolchain: install it from rustup.rs")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        process::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context(
            "the nightly toolchain is missing and could not be installed; it must come \
             with the machine (rustup's own downloads are not reachable from CI): \
             install it where rustup's server is reachable",
        )?;
        installed.push("nightly toolchain");
    }
    let components = process::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        process::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to nightly failed: run the command above by hand to see why")?;
        installed.push("rust-src for nightly");
    }
    let version = process::output(Command::new("rustc").args(["+nightly", "--version"]))?;
    let version = version.trim();
    if version.is_empty() {
        bail!("`rustc +nightly --version` printed nothing");
    }
    Ok(if installed.is_empty() {
        Outcome::Present(format!("{version} with rust-src"))
    } else {
        Outcome::Installed(format!("{} ({version})", installed.join(" and ")))
    })
}
