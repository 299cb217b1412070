//! `cargo xtask`: the project's developer and CI tooling.
//!
//! - `setup`: install what builds and tests need (idempotent).
//! - `test`: setup, then the workspace tests with the Go toolchains exported.
//! - `lint`: rustfmt check and clippy with warnings denied.
//! - `demo`: build map-auditor and audit a bundled racy Go program.
//! - `bench`: the auditor's overhead on a tight map loop; `bench http` on a
//!   Go HTTP service under load.
//! - `detect`: run the corpus of racy and clean Go programs under each
//!   detection mode and tabulate what was reported.
//! - `soak`: the daemon with busy Go targets and bpf(2) traffic for N
//!   minutes, sampled, ending in PASS or FAIL.
//! - `fuzz`: run the libFuzzer targets in `fuzz/` for a fixed time each.
//!
//! Exit codes: 0 success, 1 failure (the reason is printed on one line,
//! followed by what to do), 2 bad command line (clap).

mod bench;
mod demo;
mod detect;
mod fuzz;
mod lint;
mod paths;
mod process;
mod setup;
mod shellfiles;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Developer and CI tasks for map-auditor")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install toolchains, packages and mounts the build and tests need.
    /// Safe to run again: steps already done are only checked.
    Setup,
    /// Run setup, then `cargo test --workspace` with the Go toolchains exported.
    ///
    /// Extra arguments go to `cargo test`, e.g.
    /// `cargo xtask test -p auditor-user -- --nocapture`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// Check formatting (rustfmt) and lints (clippy, warnings denied).
    Lint,
    /// Build map-auditor and audit a bundled Go program that races on a map.
    Demo(demo::DemoArgs),
    /// Measure the auditor's overhead on Go map operations.
    Bench(bench::BenchArgs),
    /// Run the corpus of racy and clean Go programs under each detection
    /// mode and Go version; tabulate races reported, crashes, false positives.
    ///
    /// `cargo xtask detect --programs readmostly,rwmutex --go 1.27 --runs 2`
    /// is a quick run.
    Detect(detect::DetectArgs),
    /// Fuzz the parsers of untrusted bytes (nightly; installs cargo-fuzz).
    ///
    /// `cargo xtask fuzz --seconds 5` is a quick smoke run;
    /// `cargo xtask fuzz pclntab --seconds 600` digs into one target.
    Fuzz(fuzz::FuzzArgs),
    /// Run the daemon with several busy Go targets and bpf(2) map traffic,
    /// sampling RSS, fds, events, drops and log size; ends with PASS/FAIL.
    ///
    /// `cargo xtask soak --minutes 2 --every 5` is a quick run.
    Soak(soak::SoakArgs),
    /// Install the man page and bash/zsh/fish completions, generated from
    /// the auditor's own flag definitions (default prefix /usr/local).
    InstallShellFiles(shellfiles::ShellFilesArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|_| 0),
        Task::Test { cargo_args } => test::run(&cargo_args),
        Task::Lint => lint::run().map(|()| 0),
        Task::Demo(args) => demo::run(&args).map(|()| 0),
        Task::Bench(args) => bench::run(&args).map(|()| 0),
        Task::Detect(args) => detect::run(&args).map(|()| 0),
        Task::Fuzz(args) => fuzz::run(&args).map(|()| 0),
        Task::Soak(args) => soak::run(&args).map(|()| 0),
        Task::InstallShellFiles(args) => shellfiles::run(&args).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // `{:#}` prints the whole context chain on one line:
            // "what failed: why: what to do".
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
    }
}
