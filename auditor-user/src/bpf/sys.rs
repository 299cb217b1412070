//! The few bpf(2) calls userspace makes itself: walking map ids for the
//! lifecycle view and resolving guarded pin paths. Raw syscalls, because
//! aya's `MapInfo` does not expose the numeric map type.

use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

use auditor_common::bpf_syscall::cmd;

/// What `BPF_OBJ_GET_INFO_BY_FD` says about a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapInfo {
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: String,
}

fn bpf(c: u32, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid buffer of the length passed; the kernel
    // reads and writes within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            c as libc::c_long,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A bpf(2) command that returns a new file descriptor (map or program
/// creation, link creation), with `attr` a `repr(C)` prefix of `bpf_attr`.
pub(crate) fn bpf_fd<T>(c: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `bpf_attr`
    // of the size passed; every pointer in it outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            c,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// The map id after `start` (0 starts the walk), or None at the end.
pub fn next_map_id(start: u32) -> std::io::Result<Option<u32>> {
    let mut attr = [0u8; 12];
    attr[..4].copy_from_slice(&start.to_ne_bytes());
    match bpf(cmd::MAP_GET_NEXT_ID, &mut attr) {
        Ok(_) => Ok(Some(u32::from_ne_bytes(attr[4..8].try_into().unwrap()))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every map id alive now.
pub fn map_ids() -> std::io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut at = 0;
    while let Some(id) = next_map_id(at)? {
        ids.push(id);
        at = id;
    }
    Ok(ids)
}

fn info_by_fd(fd: &OwnedFd) -> std::io::Result<MapInfo> {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 96];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(cmd::OBJ_GET_INFO_BY_FD, &mut attr)?;
    let w = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
    Ok(MapInfo {
        map_type: w(0),
        id: w(4),
        key_size: w(8),
        value_size: w(12),
        max_entries: w(16),
        map_flags: w(20),
        name: super::attr::c_str(&info[24..40]),
    })
}

/// BPF_OBJ_GET_INFO_BY_FD on a raw fd of this process (any object type):
/// the call the session's calibration watches.
pub fn obj_info_by_raw_fd(fd: i32) -> std::io::Result<()> {
    let mut info = [0u8; 256];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(cmd::OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// Information about the map with this id (None when it is gone).
pub fn map_info_by_id(id: u32) -> Option<MapInfo> {
    let mut attr = [0u8; 12];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(cmd::MAP_GET_FD_BY_ID, &mut attr).ok()?;
    // SAFETY: the kernel returned a fresh fd we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    info_by_fd(&fd).ok()
}

/// Information about the map pinned at `path`.
pub fn map_info_by_pin(path: &Path) -> std::io::Result<MapInfo> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(cmd::OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a fresh fd we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    info_by_fd(&fd)
}
