//! Compile the kernel programs (auditor-ebpf) for the BPF target with the
//! nightly toolchain; the object is embedded in the binary.
//!
//! This does what aya-build 0.2.0's `build_ebpf` does (`rustup run nightly
//! cargo build -Z build-std=core --target bpfel-unknown-none`, BTF linker
//! flags, a target dir of its own under OUT_DIR), except for the inner
//! cargo's output: aya-build passes every line of it on as `cargo:warning`,
//! so a plain `cargo build` showed ~80 "warning: ... Compiling ..." lines.
//! Here it goes to `OUT_DIR/ebpf-build.log`; the kernel crate's own compiler
//! warnings are still shown, and a failure shows its errors and the log's path.

use std::{
    env,
    ffi::OsString,
    fmt::Write as _,
    fs,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, CompilerMessage, Message, diagnostic::DiagnosticLevel};

#[path = "build/inner_log.rs"]
mod inner_log;

const TOOLCHAIN: &str = "nightly";
/// How many lines of a failed inner build are repeated as warnings.
const FAILURE_LINES: usize = 60;

fn main() -> anyhow::Result<()> {
    // The object embeds the shared ABI: a change there must rebuild it.
    println!("cargo:rerun-if-changed=../auditor-common/src");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:warning=AYA_BUILD_SKIP is set; skipping the eBPF build");
        return Ok(());
    }
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "auditor-ebpf")
        .ok_or_else(|| anyhow!("auditor-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("auditor-ebpf has no directory"))?;
    println!("cargo:rerun-if-changed={root}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    build_kernel_crate("auditor-ebpf", &out_dir)
}

/// `rustup run nightly <program>`, or the program itself without rustup.
fn toolchain_command(program: &str) -> Command {
    if Command::new("rustup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", TOOLCHAIN, program]);
        cmd
    } else {
        println!(
            "cargo:warning=rustup not found; building the eBPF crate with the current toolchain"
        );
        Command::new(program)
    }
}

/// Whether `-Z build-std=core` may be used: nightly, unless RUSTC_BOOTSTRAP
/// says otherwise (as aya-build decides).
fn use_build_std(package: &str) -> anyhow::Result<bool> {
    match env::var("RUSTC_BOOTSTRAP").ok().as_deref() {
        Some("1") => return Ok(true),
        Some("-1") => return Ok(false),
        Some(crate_name) if crate_name == package => return Ok(true),
        _ => {}
    }
    let out = toolchain_command("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV for the eBPF toolchain")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .any(|l| l.starts_with("release:") && l.contains("nightly")))
}

fn bpf_target() -> anyhow::Result<(String, String)> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endian={other}"),
    };
    let mut arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    if arch.starts_with("riscv64") {
        arch = "riscv64".into();
    }
    Ok((target.into(), arch))
}

fn build_kernel_crate(package: &str, out_dir: &Path) -> anyhow::Result<()> {
    let (target, arch) = bpf_target()?;
    let log_path = out_dir.join("ebpf-build.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let mut cmd = toolchain_command("cargo");
    cmd.args([
        "build",
        "--package",
        package,
        "--bins",
        "--message-format=json",
        "--release",
    ])
    .args(["--target", &target]);
    if use_build_std(package)? {
        cmd.args(["-Z", "build-std=core"]);
    }
    let mut rustflags = OsString::new();
    for (i, flag) in [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer cargo's compiler and wrapper are for the host toolchain.
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    // A target dir of its own: the outer cargo holds the lock on ours.
    let target_dir = out_dir.join("ebpf-target").join(package);
    cmd.arg("--target-dir").arg(&target_dir);

    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("failed to spawn {cmd:?}"))?;
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut executables = Vec::new();
    let mut diagnostics = String::new();
    for message in Message::parse_stream(stdout) {
        match message.context("the eBPF build's cargo wrote invalid JSON")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(executable),
                target,
                ..
            }) => executables.push((target.name, executable.into_std_path_buf())),
            Message::CompilerMessage(CompilerMessage { message, .. }) => {
                let rendered = message.rendered.unwrap_or(message.message);
                diagnostics.push_str(&rendered);
                if message.level == DiagnosticLevel::Warning {
                    for line in rendered.lines() {
                        println!("cargo:warning={line}");
                    }
                }
            }
            Message::TextLine(line) => {
                let _ = writeln!(diagnostics, "{line}");
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the eBPF build")?;
    let stderr = fs::read_to_string(&log_path).unwrap_or_default();
    let full = format!("{diagnostics}{stderr}");
    let _ = fs::write(&log_path, &full);
    if !status.success() {
        for line in inner_log::failure_lines(&full, FAILURE_LINES) {
            println!("cargo:warning={line}");
        }
        bail!(
            "building the eBPF crate {package} failed ({status}); full output in {}",
            log_path.display()
        );
    }
    for (name, binary) in executables {
        let dst = out_dir.join(name);
        fs::copy(&binary, &dst)
            .with_context(|| format!("copying {} to {}", binary.display(), dst.display()))?;
    }
    Ok(())
}
