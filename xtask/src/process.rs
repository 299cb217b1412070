//! Running external commands with failures that name the command.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The command line as a person would type it, for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Run with inherited stdio; fail unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run quietly and return stdout; on failure the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the command runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Build `map-auditor` in release mode and return its path.
pub fn build_auditor(root: &std::path::Path) -> Result<std::path::PathBuf> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "auditor-user"]))
    .context("building map-auditor failed")?;
    Ok(root.join("target/release/map-auditor"))
}

/// Build the Go main package in `src` with the toolchain `go` into `exe`
/// (build cache beside `exe`). Static (no cgo) like most services, unless
/// `race`: the race detector needs cgo.
pub fn go_build(
    go: &std::path::Path,
    src: &std::path::Path,
    exe: &std::path::Path,
    race: bool,
) -> Result<()> {
    let goroot = go
        .parent()
        .and_then(std::path::Path::parent)
        .context("go binary is not inside a GOROOT")?;
    let out = exe.parent().context("output path has no folder")?;
    let mut cmd = Command::new(go);
    cmd.current_dir(src)
        .env("GOROOT", goroot)
        .env("GOCACHE", out.join(".gocache"))
        .env("GOPATH", out.join(".gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", if race { "1" } else { "0" })
        .arg("build");
    if race {
        cmd.arg("-race");
    }
    run(cmd.arg("-o").arg(exe).arg("."))
}
