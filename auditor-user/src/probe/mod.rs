//! Loading the kernel programs and attaching them.
//!
//! - [`load`]: the embedded eBPF object, sized for this session.
//! - [`go`]: attaching a Go [`crate::goexe::ProbePlan`] to one process.
//! - [`multi`]: the kernel's `uprobe_multi` link (one link per target).
//! - [`counters`]: the kernel's per-CPU counters, summed.
//! - [`counts`]: the kernel's access counts, drained epoch by epoch.

pub mod counters;
pub mod counts;
pub mod go;
pub mod multi;

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
    #[error("pid 0 is not a process: give the PID of a running program")]
    PidZero,
    #[error(
        "already auditing {0} Go processes, the most one map-auditor can: detach one first or start another map-auditor"
    )]
    TooManyTargets(u32),
    #[error("kernel map {name} missing from the object (build mismatch): rebuild map-auditor")]
    MissingMap { name: &'static str },
    #[error("kernel refused program {name}: {source}; run `map-auditor doctor`")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "cannot attach uprobe to {function} at {exe}+{offset:#x}: {}; run `map-auditor doctor`",
        error_chain(source.as_ref())
    )]
    Attach {
        function: String,
        exe: String,
        offset: u64,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "the embedded kernel programs speak event ABI {found}, this map-auditor ABI {expected} (build mismatch): rebuild map-auditor"
    )]
    AbiMismatch { found: u32, expected: u32 },
    #[error(
        "the embedded kernel programs carry no `{}` section (build mismatch): rebuild map-auditor",
        auditor_common::ABI_SECTION
    )]
    AbiMissing,
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// An error and every cause under it, joined by ": ", so the kernel's errno
/// (kept by aya as the source of `perf_event_open failed`) is shown.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Sizes chosen at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Maps whose state the kernel tracks at once.
    pub max_maps: u32,
    /// The running kernel's struct offsets for the bpf(2) programs, written
    /// into the object's read-only data (`BPF_OFFSETS`) so the verifier
    /// sees them as constants. None for sessions that do not load them.
    pub bpf_offsets: Option<auditor_common::bpf_syscall::KernelOffsets>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            max_maps: 65536,
            bpf_offsets: None,
        }
    }
}

/// The program `name` of a loaded object, as type `P`.
pub fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            name,
            source: Box::new(source),
        })
}

/// Take the map `name` out of a loaded object, as type `M` (owning it).
pub fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap { name })?;
    typed_map(name, map)
}

/// Borrow the map `name` of a loaded object, as type `M`.
pub fn map_mut<'a, M>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap { name })?;
    typed_map(name, map)
}

fn typed_map<T, M: TryFrom<T, Error = aya::maps::MapError>>(
    name: &'static str,
    map: T,
) -> Result<M, ProbeError> {
    M::try_from(map).map_err(|source| ProbeError::Map {
        name,
        source: Box::new(source),
    })
}

/// The ABI version a kernel object was built for (its
/// [`auditor_common::ABI_SECTION`]), `None` when it has none.
pub fn object_abi_version(object: &[u8]) -> Option<u32> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(object).ok()?;
    let data = file
        .section_by_name(auditor_common::ABI_SECTION)?
        .data()
        .ok()?;
    Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))
}

/// Refuse an object built for another event ABI: its records would be
/// misread field by field, silently.
pub fn check_abi(object: &[u8]) -> Result<(), ProbeError> {
    let expected = auditor_common::ABI_VERSION;
    match object_abi_version(object) {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(ProbeError::AbiMismatch { found, expected }),
        None => Err(ProbeError::AbiMissing),
    }
}

/// Load the embedded object (programs are loaded lazily by their users)
/// after checking that it speaks this build's event ABI.
pub fn load(opts: LoadOptions) -> Result<Ebpf, ProbeError> {
    check_abi(EBPF_OBJECT)?;
    let ring = opts.ring_bytes.max(4096).next_power_of_two();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(auditor_common::RING_MAP, ring)
        .map_max_entries(auditor_common::go_map::MAP_STATE_MAP, opts.max_maps.max(1));
    if let Some(off) = opts.bpf_offsets.as_ref() {
        loader.override_global(auditor_common::bpf_syscall::OFFSETS_GLOBAL, off, true);
    }
    loader
        .load(EBPF_OBJECT)
        .map_err(|e| ProbeError::Load(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection};

    use super::*;

    #[test]
    fn attach_errors_carry_the_kernels_errno() {
        let e = ProbeError::Attach {
            function: "runtime.mapaccess1".into(),
            exe: "/bin/svc".into(),
            offset: 0x40,
            source: Box::new(aya::programs::ProgramError::SyscallError(
                aya::sys::SyscallError {
                    call: "perf_event_open",
                    io_error: std::io::Error::from_raw_os_error(libc::EACCES),
                },
            )),
        };
        let text = e.to_string();
        assert!(text.contains("perf_event_open"), "{text}");
        assert!(text.contains("Permission denied (os error 13)"), "{text}");
    }

    #[test]
    fn embedded_object_speaks_this_abi() {
        assert_eq!(
            object_abi_version(EBPF_OBJECT),
            Some(auditor_common::ABI_VERSION)
        );
        check_abi(EBPF_OBJECT).unwrap();
    }

    #[test]
    fn object_of_another_abi_or_none_is_refused() {
        let file = object::File::parse(EBPF_OBJECT).unwrap();
        let (start, _) = file
            .section_by_name(auditor_common::ABI_SECTION)
            .unwrap()
            .file_range()
            .unwrap();
        let mut other = EBPF_OBJECT.to_vec();
        let at = start as usize;
        other[at..at + 4].copy_from_slice(&(auditor_common::ABI_VERSION + 1).to_le_bytes());
        let e = check_abi(&other).unwrap_err();
        assert!(matches!(e, ProbeError::AbiMismatch { found, expected }
            if found == expected + 1 && expected == auditor_common::ABI_VERSION));
        assert!(e.to_string().contains("rebuild map-auditor"), "{e}");
        assert!(matches!(
            check_abi(b"not an object"),
            Err(ProbeError::AbiMissing)
        ));
    }
}
