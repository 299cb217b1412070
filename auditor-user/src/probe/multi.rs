//! One kernel link for all of a target's probes: the `uprobe_multi` link
//! (Linux 6.6+).
//!
//! A uprobe attached through `perf_event_open` is removed one at a time, and
//! the kernel waits for two RCU grace periods per probe while holding the
//! trace events' mutex (~80 ms a probe on the project's machines): detaching
//! 46 probes took ~4 s and closing them from several threads is no faster.
//! A `uprobe_multi` link registers every site in one `bpf(BPF_LINK_CREATE)`
//! and unregisters them with a single grace period when its fd is closed
//! (~40 ms for 40 sites here).
//!
//! aya 0.14 cannot load a program for this attach type (the expected attach
//! type must be given at load time), so [`MultiProgram::load`] loads a second
//! copy of the same kernel program itself: the instructions come from the
//! embedded object through `aya-obj`, relocated against the maps aya already
//! created (found through the loaded program's map ids), so both copies share
//! every map. When any step fails, the caller falls back to one perf link
//! per site.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::Path,
};

use aya::{maps::MapInfo, programs::UProbe};

use super::EBPF_OBJECT;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// Kernel object names keep 15 bytes and a NUL.
const OBJ_NAME_LEN: usize = 16;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`; the
/// kernel treats the fields after it as zero.
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
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE of a `uprobe_multi` link.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

use crate::bpf::sys::bpf_fd as sys_bpf;

/// The kernel program loaded a second time, for `uprobe_multi` links.
#[derive(Debug)]
pub struct MultiProgram {
    fd: OwnedFd,
}

impl MultiProgram {
    /// Load `name` (already loaded by aya as `prog`) for `uprobe_multi`
    /// links, sharing `prog`'s maps. The error says which step failed.
    pub fn load(prog: &UProbe, name: &str) -> Result<Self, String> {
        // The maps the kernel holds for aya's copy, by (truncated) name.
        let ids = prog
            .info()
            .and_then(|i| i.map_ids())
            .map_err(|e| format!("reading the program's maps: {e}"))?
            .unwrap_or_default();
        let mut kernel_maps = Vec::new();
        for id in ids {
            let info = MapInfo::from_id(id).map_err(|e| format!("map id {id}: {e}"))?;
            let map_name = info.name_as_str().unwrap_or_default().to_string();
            let fd = info.fd().map_err(|e| format!("map {map_name}: {e}"))?;
            kernel_maps.push((map_name, fd));
        }

        let mut obj = aya_obj::Object::parse(EBPF_OBJECT)
            .map_err(|e| format!("parsing the kernel object: {e}"))?;
        let program = obj
            .programs
            .get(name)
            .cloned()
            .ok_or_else(|| format!("program {name} not in the object"))?;
        // Only this program and the shared subprograms (sections without
        // a program): the other programs use maps this one does not hold.
        let program_sections: HashSet<usize> =
            obj.programs.values().map(|p| p.section_index).collect();
        obj.programs.retain(|n, _| n == name);
        obj.functions
            .retain(|k, _| *k == program.function_key() || !program_sections.contains(&k.0));
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();

        let maps = obj.maps.iter().filter_map(|(obj_name, map)| {
            let short: String = obj_name.chars().take(OBJ_NAME_LEN - 1).collect();
            kernel_maps
                .iter()
                .find(|(k, _)| *k == short)
                .map(|(_, fd)| (obj_name.as_str(), fd.as_fd().as_raw_fd(), map))
        });
        // `relocate_maps` borrows the maps while changing the functions.
        let maps: Vec<_> = maps
            .map(|(n, fd, m)| (n.to_string(), fd, m.clone()))
            .collect();
        obj.relocate_maps(
            maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
            &text_sections,
        )
        .map_err(|e| format!("relocating maps: {e}"))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| format!("linking calls: {e}"))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| format!("program {name} has no code"))?;

        let license = CString::new(program.license.as_bytes())
            .map_err(|_| "license is not a C string".to_string())?;
        let mut prog_name = [0u8; OBJ_NAME_LEN];
        for (d, s) in prog_name
            .iter_mut()
            .zip(name.bytes().take(OBJ_NAME_LEN - 1))
        {
            *d = s;
        }
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_KPROBE,
            insn_cnt: function.instructions.len() as u32,
            insns: function.instructions.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name,
            expected_attach_type: BPF_TRACE_UPROBE_MULTI,
            ..Default::default()
        };
        let fd = sys_bpf(BPF_PROG_LOAD, &mut attr)
            .map_err(|e| format!("loading for uprobe_multi: {e}"))?;
        drop(kernel_maps);
        Ok(Self { fd })
    }

    /// Attach to `sites` (file offset, cookie) of `exe`, in process `pid`
    /// only. Every site is placed, or none.
    pub fn attach(&self, exe: &Path, pid: u32, sites: &[(u64, u64)]) -> io::Result<MultiLink> {
        let path = CString::new(exe.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let offsets: Vec<u64> = sites.iter().map(|s| s.0).collect();
        let cookies: Vec<u64> = sites.iter().map(|s| s.1).collect();
        let mut attr = UprobeMultiLinkAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            attach_type: BPF_TRACE_UPROBE_MULTI,
            path: path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cookies: cookies.as_ptr() as u64,
            cnt: sites.len() as u32,
            pid,
            ..Default::default()
        };
        sys_bpf(BPF_LINK_CREATE, &mut attr).map(|fd| MultiLink { fd })
    }
}

/// An attached `uprobe_multi` link: closing it removes every site at once.
#[derive(Debug)]
pub struct MultiLink {
    fd: OwnedFd,
}

impl MultiLink {
    /// Remove every site of the link.
    pub fn detach(self) {
        drop(self.fd);
    }
}
