//! map-auditor: an eBPF runtime map-access auditor.
//!
//! - [`goexe`]: Go executable inspection (ELF, build info, pclntab, DWARF)
//!   and probe planning.
//! - [`proc`]: what is read from `/proc` about a target process.
//! - [`probe`]: loading the kernel programs, attaching a plan.
//! - [`pipeline`]: ring-buffer reading, decoding, enrichment, loss accounting.
//! - [`analysis`]: access graphs, rankings, overlap bookkeeping.
//! - [`output`]: live log, JSON lines, reports.
//! - [`bpf`]: bpf(2) syscall auditing.
//! - [`doctor`]: environment checks.
//! - [`daemon`]: the privileged daemon, its control socket, log and clients.
//! - [`settings`]: what a command asks for, in the library's types, validated once.
//! - [`cli`], [`commands`]: the command layer: clap definitions, and their
//!   conversion into settings. No other module sees clap or `cli`.

pub mod analysis;
pub mod audit;
pub mod bpf;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod event;
pub mod goexe;
pub mod output;
pub mod pipeline;
pub mod probe;
pub mod proc;
pub mod settings;

/// The build script's sorting of the inner eBPF build's output, tested here
/// (build scripts have no test harness of their own).
#[cfg(test)]
#[path = "../build/inner_log.rs"]
mod ebpf_build_log;
