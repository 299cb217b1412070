//! Debian packages: `bpftool` (inspecting loaded programs and maps),
//! `golang-go` (Go 1.19, the last classic-hashmap toolchain Debian ships)
//! and `wrk` (the load generator of `cargo xtask bench http`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::Outcome;
use crate::{paths, process};

/// A Debian package and the file that proves it is installed.
struct DebianPackage {
    name: &'static str,
    provides: &'static str,
}

const PACKAGES: &[DebianPackage] = &[
    DebianPackage {
        name: "bpftool",
        provides: "/usr/sbin/bpftool",
    },
    DebianPackage {
        name: "golang-go",
        provides: paths::GO_CLASSIC,
    },
    DebianPackage {
        name: "wrk",
        provides: "/usr/bin/wrk",
    },
];

/// Install the missing packages with one `apt-get install`.
pub fn ensure() -> Result<Vec<Outcome>> {
    let missing: Vec<&DebianPackage> = PACKAGES
        .iter()
        .filter(|p| !Path::new(p.provides).exists())
        .collect();
    if !missing.is_empty() {
        if !paths::is_root() {
            bail!(
                "Debian packages missing: {}; run `sudo apt-get install -y {}` or `cargo xtask setup` as root",
                names(&missing),
                names(&missing)
            );
        }
        // Only refresh the package lists when we must: it is the slow part.
        process::run(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed: check that Debian's package mirror is reachable")?;
        process::run(
            Command::new("apt-get")
                .args(install_args(&missing))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("apt-get could not install {}", names(&missing)))?;
    }
    PACKAGES
        .iter()
        .map(|p| {
            if !Path::new(p.provides).exists() {
                bail!(
                    "package {} is installed but {} does not exist: this Debian release lays it out differently; \
                     update paths in xtask/src/setup/apt.rs",
                    p.name,
                    p.provides
                );
            }
            let what = format!("{} ({})", p.name, p.provides);
            Ok(if missing.iter().any(|m| m.name == p.name) {
                Outcome::Installed(what)
            } else {
                Outcome::Present(what)
            })
        })
        .collect()
}

/// `apt-get` arguments installing exactly `packages`: nothing recommended,
/// and no package already installed is upgraded.
fn install_args<'a>(packages: &[&'a DebianPackage]) -> Vec<&'a str> {
    let mut args = vec![
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-upgrade",
    ];
    args.extend(packages.iter().map(|p| p.name));
    args
}

fn names(packages: &[&DebianPackage]) -> String {
    packages
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_names_only_the_missing_packages_and_upgrades_nothing() {
        let missing: Vec<&DebianPackage> = PACKAGES.iter().take(2).collect();
        let args = install_args(&missing);
        assert_eq!(args[0], "install");
        assert!(args.contains(&"--no-upgrade"), "{args:?}");
        assert!(!args.iter().any(|a| *a == "upgrade" || *a == "dist-upgrade"));
        let packages: Vec<&str> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .skip(1)
            .copied()
            .collect();
        assert_eq!(packages, missing.iter().map(|p| p.name).collect::<Vec<_>>());
    }
}
