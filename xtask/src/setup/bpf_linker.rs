//! bpf-linker, built against the nightly toolchain's own libLLVM.
//!
//! bpf-linker must speak the same LLVM bitcode as the rustc that emits it
//! (nightly), and no prebuilt LLVM can be downloaded here. Nightly ships its
//! LLVM as a shared library, so we point `LLVM_PREFIX` at a folder whose
//! `lib/` links to it. llvm-sys records that folder as the binary's RUNPATH,
//! so the links must stay where they are: they live in the user cache, and
//! every setup run re-checks them (a nightly update renames the library).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};

use super::Outcome;
use crate::{paths, process};

/// Versions of bpf-linker this project builds with (aya-build 0.2.0's era).
const VERSION_REQ: &str = "^0.13";

/// Make sure a working bpf-linker for nightly's LLVM major is installed.
pub fn ensure() -> Result<Outcome> {
    let llvm = NightlyLlvm::find()?;
    let prefix = paths::cache_dir().join("llvm-prefix");
    let relinked = link_prefix(&prefix, &llvm)?;

    // The stamp names what the installed binary was built for; a different
    // LLVM major or library means its bitcode reader no longer matches.
    let stamp_path = paths::cache_dir().join("bpf-linker.stamp");
    let stamp = format!(
        "bpf-linker {VERSION_REQ} llvm-{} {}\n",
        llvm.major,
        llvm.file_name()
    );
    let current = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if current == stamp
        && let Some(version) = installed_version()
    {
        let note = if relinked { ", relinked libLLVM" } else { "" };
        return Ok(Outcome::Present(format!(
            "{version} for LLVM {}{note}",
            llvm.major
        )));
    }

    println!(
        "building bpf-linker {VERSION_REQ} for LLVM {} (about a minute) ...",
        llvm.major
    );
    process::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(VERSION_REQ)
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", llvm.major))
            .env("LLVM_PREFIX", &prefix),
    )
    .with_context(|| {
        format!(
            "building bpf-linker against {} failed: read the compiler output above; \
             a C compiler (Debian `build-essential`) and crates.io access are needed",
            llvm.library.display()
        )
    })?;
    let version = installed_version().ok_or_else(|| {
        anyhow!(
            "bpf-linker was installed but `bpf-linker --version` does not run: \
             make sure ~/.cargo/bin is on PATH and {} exists",
            prefix.join("lib").display()
        )
    })?;
    std::fs::write(&stamp_path, stamp)
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(Outcome::Installed(format!(
        "{version} for LLVM {}",
        llvm.major
    )))
}

/// The shared LLVM library inside the nightly sysroot.
struct NightlyLlvm {
    major: u32,
    library: PathBuf,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let verbose = process::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
        let major = parse_llvm_major(&verbose).ok_or_else(|| {
            anyhow!(
                "`rustc +nightly -vV` shows no `LLVM version:` line; cannot pick bpf-linker's LLVM"
            )
        })?;
        let sysroot =
            process::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let wanted = format!("libLLVM.so.{major}.");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
            .with_context(|| format!("reading {}", lib.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&wanted))
            .map(|e| e.path())
            .collect();
        found.sort();
        let Some(library) = found.pop() else {
            bail!(
                "nightly's sysroot {} has no {wanted}*: this nightly does not ship a shared \
                 libLLVM, so bpf-linker cannot be built against it",
                lib.display()
            );
        };
        Ok(Self { major, library })
    }

    fn file_name(&self) -> String {
        self.library
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The LLVM major version from `rustc -vV` output (`LLVM version: 22.1.4`).
fn parse_llvm_major(verbose: &str) -> Option<u32> {
    verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

/// Make `prefix/lib/libLLVM.so` (what llvm-sys links) and
/// `prefix/lib/<soname>` (what the loader looks up through RUNPATH) point at
/// nightly's library. Returns whether any link had to change.
fn link_prefix(prefix: &Path, llvm: &NightlyLlvm) -> Result<bool> {
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let mut changed = false;
    for name in ["libLLVM.so".to_string(), llvm.file_name()] {
        let link = lib.join(&name);
        if std::fs::read_link(&link).is_ok_and(|t| t == llvm.library) {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm.library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), llvm.library.display()))?;
        changed = true;
    }
    Ok(changed)
}

/// `bpf-linker --version` if the binary on PATH runs (it fails to start
/// when its libLLVM link is gone).
fn installed_version() -> Option<String> {
    let out = process::output(Command::new("bpf-linker").arg("--version")).ok()?;
    Some(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_comes_from_rustc_verbose_version() {
        let vv = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }
}
