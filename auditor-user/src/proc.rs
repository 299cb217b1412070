//! Everything read from `/proc` about another process: whether it is the
//! same process as before ([`ProcessIdentity`]), its executable, where that
//! executable is mapped, its memory, its groups, and the list of processes.
//!
//! Kept in one place so a reader sees every question the auditor asks the
//! kernel about a target, and so each answer (zombie, vanished, kernel
//! thread) is decided the same way everywhere.

use std::{
    collections::HashSet,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// `/proc/PID`.
pub fn dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// `/proc/PID/exe`: opening it reaches the executable even when the file was
/// deleted or lives in another mount namespace.
pub fn exe_link(pid: u32) -> PathBuf {
    dir(pid).join("exe")
}

/// `/proc/PID/maps`.
pub fn maps_path(pid: u32) -> PathBuf {
    dir(pid).join("maps")
}

/// The path a process's executable link names, for messages (`None` for
/// kernel threads, zombies and vanished processes).
pub fn exe_path(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(exe_link(pid)).ok()
}

/// Device and inode of a process's executable (`None` for kernel threads,
/// zombies and vanished processes).
pub fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(exe_link(pid)).ok()?;
    Some((m.dev(), m.ino()))
}

/// PIDs of /proc (processes, not threads), except `skip`.
pub fn all_pids(skip: &HashSet<u32>) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| !skip.contains(p))
        .collect()
}

/// `/proc/PID/mem`, for reading the process's memory at its addresses.
pub fn open_mem(pid: u32) -> std::io::Result<File> {
    File::open(dir(pid).join("mem"))
}

/// Supplementary groups of a process (`Groups:` of `/proc/PID/status`);
/// empty when the process is gone.
pub fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// What makes a PID the same process over time: its start time (a reused
/// PID has another) and its executable (an exec replaces it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Field 22 of /proc/PID/stat, clock ticks after boot.
    pub start_time: u64,
    pub exe_dev: u64,
    pub exe_ino: u64,
}

impl ProcessIdentity {
    /// `None` when the process is gone, a zombie, or has no executable.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(dir(pid).join("stat")).ok()?;
        let start_time = start_time_from_stat(&stat)?;
        let (exe_dev, exe_ino) = exe_identity(pid)?;
        Some(Self {
            start_time,
            exe_dev,
            exe_ino,
        })
    }
}

/// Start time (field 22) of a `/proc/PID/stat` line; `None` for a zombie,
/// which still has `/proc/PID` but no longer runs code.
fn start_time_from_stat(stat: &str) -> Option<u64> {
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    // state is field 3; starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in field 9 of its stat):
/// it has no executable and runs no user code.
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_to_string(dir(pid).join("stat"))
        .ok()
        .and_then(|s| kthread_flags(&s))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

fn kthread_flags(stat: &str) -> Option<u64> {
    // Fields after the last ')': state (3), ppid, pgrp, session, tty_nr,
    // tpgid, flags (9).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(6)?
        .parse()
        .ok()
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub offset: u64,
    pub major: u64,
    pub minor: u64,
    pub inode: u64,
    pub path: &'a str,
}

/// Start address of the first offset-0 mapping that `is_exe` accepts.
pub fn parse_maps(maps: &str, is_exe: impl Fn(&MapsLine<'_>) -> bool) -> Option<u64> {
    maps.lines().find_map(|line| {
        let mut it = line.splitn(6, ' ');
        let range = it.next()?;
        let _perms = it.next()?;
        let offset = u64::from_str_radix(it.next()?, 16).ok()?;
        let (maj, min) = it.next()?.split_once(':')?;
        let inode = it.next()?.parse().ok()?;
        let path = it.next().unwrap_or("").trim_start();
        let start = u64::from_str_radix(range.split_once('-')?.0, 16).ok()?;
        let m = MapsLine {
            start,
            offset,
            major: u64::from_str_radix(maj, 16).ok()?,
            minor: u64::from_str_radix(min, 16).ok()?,
            inode,
            path,
        };
        (m.offset == 0 && is_exe(&m)).then_some(m.start)
    })
}

/// Where `exe` starts in a `/proc/PID/maps` text. The mapping is matched by
/// device and inode (the path may be deleted or in another mount
/// namespace), falling back to the path text. Errors when `exe` cannot be
/// stat'ed; `Ok(None)` when it is not mapped.
pub fn exe_start_in_maps(maps: &str, exe: &Path) -> std::io::Result<Option<u64>> {
    let meta = std::fs::metadata(exe)?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let (major, minor) = (
        (dev >> 8) & 0xfff | (dev >> 32) & !0xfff,
        (dev & 0xff) | (dev >> 12) & !0xff,
    );
    let canonical = std::fs::canonicalize(exe).ok();
    Ok(parse_maps(maps, |m| {
        (m.inode == ino && m.major == major && m.minor == minor)
            || canonical
                .as_deref()
                .is_some_and(|t| Path::new(m.path.trim_end_matches(" (deleted)")) == t)
    }))
}

#[cfg(test)]
mod tests {

    #[test]
    fn kernel_thread_flag_is_read_after_the_command_name() {
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0";
        assert_eq!(kthread_flags(kthreadd), Some(2129984));
        let user = "77 (a) b) c) S 1 77 77 0 -1 4194560 0 0";
        assert_eq!(kthread_flags(user), Some(4194560));
        assert!(!is_kernel_thread(std::process::id()));
    }

    use super::*;

    const MAPS: &str = "\
55d4a0a00000-55d4a0a9b000 r-xp 00000000 fd:01 1234   /tmp/app (deleted)
55d4a0a9b000-55d4a0b00000 r--p 0009b000 fd:01 1234   /tmp/app (deleted)
";

    #[test]
    fn maps_line_for_exe_gives_mapped_start() {
        let s = parse_maps(MAPS, |m| m.inode == 1234 && m.major == 0xfd && m.minor == 1);
        assert_eq!(s, Some(0x55d4a0a00000));
        assert_eq!(parse_maps(MAPS, |m| m.inode == 99), None);
        let by_path = parse_maps(MAPS, |m| m.path == "/tmp/app (deleted)");
        assert_eq!(by_path, Some(0x55d4a0a00000));
    }

    #[test]
    fn our_own_executable_is_found_in_our_maps() {
        let me = std::env::current_exe().unwrap();
        let maps = std::fs::read_to_string(maps_path(std::process::id())).unwrap();
        assert!(exe_start_in_maps(&maps, &me).unwrap().is_some());
        assert_eq!(exe_start_in_maps("", &me).unwrap(), None);
    }

    #[test]
    fn stat_start_time_skips_a_comm_with_parentheses_and_refuses_zombies() {
        let fields = (4..=21)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let running = format!("42 (a) b (c)) S {fields} 987654 0 0");
        assert_eq!(start_time_from_stat(&running), Some(987654));
        let zombie = format!("42 (a) Z {fields} 987654 0 0");
        assert_eq!(start_time_from_stat(&zombie), None);
    }

    #[test]
    fn our_own_process_has_an_identity_and_groups_line() {
        let me = std::process::id();
        let id = ProcessIdentity::of(me).unwrap();
        assert_eq!((id.exe_dev, id.exe_ino), exe_identity(me).unwrap());
        assert_eq!(exe_path(me), std::env::current_exe().ok());
        assert!(all_pids(&HashSet::new()).contains(&me));
        assert!(!all_pids(&HashSet::from([me])).contains(&me));
    }
}
