//! Running external commands with failures that name the command.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

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

/// Where [`run`] sends the output of the commands it runs, once set.
static LOG: OnceLock<PathBuf> = OnceLock::new();

/// From now on [`run`] appends each command's stdout and stderr to `path`
/// (emptied first) instead of the terminal; returns the path.
pub fn log_to(path: &Path) -> Result<&'static Path> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    File::create(path).with_context(|| format!("cannot create the log {}", path.display()))?;
    Ok(LOG.get_or_init(|| path.to_path_buf()))
}

/// The log set by [`log_to`], if any.
pub fn log_path() -> Option<&'static Path> {
    LOG.get().map(PathBuf::as_path)
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run; fail unless it exits 0. Output goes to the terminal, or to the
/// log set by [`log_to`] (then a failure quotes the log's last lines).
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    if let Some(log) = log_path() {
        let out = OpenOptions::new().append(true).open(log)?;
        use std::io::Write as _;
        writeln!(&out, "$ {line}")?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let status = cmd
            .status()
            .with_context(|| format!("could not start `{line}`"))?;
        if !status.success() {
            bail!(
                "`{line}` failed ({status}); its output is in {}; last lines:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
        return Ok(());
    }
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
    let started = std::time::Instant::now();
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "auditor-user"]))
    .context("building map-auditor failed")?;
    if log_path().is_some() {
        println!(
            "built: map-auditor (release, {:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_commands_write_to_the_log_not_the_terminal() {
        let dir = std::env::temp_dir().join(format!("xtask-log-{}", std::process::id()));
        let log = log_to(&dir.join("setup.log")).unwrap();
        run(Command::new("sh").args(["-c", "echo to-stdout; echo to-stderr >&2"])).unwrap();
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("to-stdout") && text.contains("to-stderr"),
            "{text}"
        );
        let e = run(Command::new("sh").args(["-c", "echo why-it-failed; exit 3"])).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("why-it-failed") && e.contains(&log.display().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
