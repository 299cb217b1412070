//! Minimal raw bpf(2) calls that ask the kernel directly whether a feature
//! works, independent of the loader: creating a ring buffer map and loading
//! a trivial fentry program.

use std::io;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_FENTRY: u32 = 24;

/// The head of `union bpf_attr` for BPF_MAP_CREATE. The kernel zero-fills
/// the fields of a shorter attr, so only what we set is declared.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to attach_prog_fd.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
}

use crate::bpf::sys::bpf_fd as sys_bpf;

/// Create (and, by dropping the descriptor, free) a one-page ring buffer map.
pub fn create_ringbuf() -> io::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        // Ring buffers have no keys or values; the size must be a power-of-two
        // multiple of the page size.
        max_entries: page,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut attr).map(drop)
}

/// Why loading a trivial fentry program failed.
pub struct LoadFailure {
    pub error: io::Error,
    /// The verifier's first line, when it said anything.
    pub verifier: Option<String>,
}

/// Load `r0 = 0; exit` as a BPF_TRACE_FENTRY program on the kernel function
/// with BTF id `attach_btf_id`. The program is not attached: loading is what
/// decides whether trampolines are allowed at all.
pub fn load_fentry(attach_btf_id: u32) -> Result<(), LoadFailure> {
    // mov64 r0, 0 ; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"doctor_probe");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_TRACE_FENTRY,
        attach_btf_id,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_LOAD, &mut attr)
        .map(drop)
        .map_err(|error| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            LoadFailure {
                error,
                verifier: text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string),
            }
        })
}

/// The symbolic name of an errno (`EPERM`), for messages people search for.
pub fn errno_name(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::E2BIG) => "E2BIG".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(libc::ENOSYS) => "ENOSYS".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        // The kernel-internal ENOTSUPP, seen from trampoline setup.
        Some(524) => "ENOTSUPP".into(),
        Some(n) => format!("errno {n}"),
        None => err.to_string(),
    }
}
