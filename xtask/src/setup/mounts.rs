//! tracefs and bpffs: the syscall tracepoints are found through tracefs, and
//! pinned maps live in bpffs. A fresh machine may have neither mounted.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::Outcome;
use crate::{paths, process};

/// A pseudo filesystem and where it belongs.
struct PseudoFs {
    fstype: &'static str,
    target: &'static str,
    source: &'static str,
}

const MOUNTS: &[PseudoFs] = &[
    PseudoFs {
        fstype: "tracefs",
        target: "/sys/kernel/tracing",
        source: "nodev",
    },
    PseudoFs {
        fstype: "bpf",
        target: "/sys/fs/bpf",
        source: "bpf",
    },
];

/// Mount what is missing.
pub fn ensure() -> Result<Vec<Outcome>> {
    let table =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    MOUNTS
        .iter()
        .map(|fs| {
            let what = format!("{} at {}", fs.fstype, fs.target);
            if is_mounted(&table, fs) {
                return Ok(Outcome::Present(what));
            }
            let line = format!("mount -t {} {} {}", fs.fstype, fs.source, fs.target);
            if !paths::is_root() {
                bail!("{what} is not mounted and mounting needs root: run `sudo {line}`");
            }
            process::output(Command::new("mount").args(["-t", fs.fstype, fs.source, fs.target]))
                .with_context(|| format!("could not mount {what}: try `{line}` by hand"))?;
            Ok(Outcome::Installed(format!("mounted {what}")))
        })
        .collect()
}

/// Whether `/proc/self/mounts` lists `fs` at its target.
fn is_mounted(table: &str, fs: &PseudoFs) -> bool {
    table.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next(), fields.next(), fields.next());
        target == Some(fs.target) && fstype == Some(fs.fstype)
    })
}
