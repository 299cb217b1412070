//! Loading the kernel programs and attaching them.
//!
//! - [`load`]: the embedded eBPF object, sized for this session.
//! - [`go`]: attaching a Go [`crate::goexe::ProbePlan`] to one process.
//! - [`counters`]: the kernel's per-CPU counters, summed.

pub mod counters;
pub mod go;

use aya::{Ebpf, EbpfLoader};
use thiserror::Error;

/// The kernel programs, compiled by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/auditor"));

/// Errors while loading or attaching kernel programs.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "cannot load the kernel programs: {0}; run as root (or with CAP_BPF+CAP_PERFMON) and check `map-auditor doctor`"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("kernel program {name} missing from the object (build mismatch): rebuild map-auditor")]
    MissingProgram { name: &'static str },
    #[error("kernel map {name} missing from the object (build mismatch): rebuild map-auditor")]
    MissingMap { name: &'static str },
    #[error("kernel refused program {name}: {source}; run `map-auditor doctor`")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("cannot attach uprobe to {function} at {exe}+{offset:#x}: {source}")]
    Attach {
        function: String,
        exe: String,
        offset: u64,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Sizes chosen at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Maps whose state the kernel tracks at once.
    pub max_maps: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            max_maps: 65536,
        }
    }
}

/// Load the embedded object (programs are loaded lazily by their users).
pub fn load(opts: LoadOptions) -> Result<Ebpf, ProbeError> {
    let ring = opts.ring_bytes.max(4096).next_power_of_two();
    EbpfLoader::new()
        .map_max_entries(auditor_common::RING_MAP, ring)
        .map_max_entries(auditor_common::go_map::MAP_STATE_MAP, opts.max_maps.max(1))
        .load(EBPF_OBJECT)
        .map_err(|e| ProbeError::Load(Box::new(e)))
}
