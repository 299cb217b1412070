//! `cargo xtask bench`: the auditor's overhead on Go map operations.
//!
//! The measurements themselves are still to be written; the shape is fixed
//! here so that CI and docs can refer to the command.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Map operations per measured run.
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: u64,
}

/// Not written yet: says so instead of pretending to measure.
pub fn run(args: &BenchArgs) -> Result<()> {
    bail!(
        "bench: no benchmarks are defined yet (requested {} ops); \
         the lead adds them in xtask/src/bench.rs",
        args.ops
    )
}
