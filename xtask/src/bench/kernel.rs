//! Raw bpf(2) and perf_event_open(2) calls the benchmarks need and no tool
//! here offers:
//! - an empty uprobe program (`r0 = 0; exit`) attached at given file
//!   offsets, the floor any probe at those instructions costs. Debian's
//!   bpftrace (0.17) refuses probes at an offset inside a function (it is
//!   built without the disassembler that checks instruction boundaries),
//!   and the auditor probes the `jbe` four bytes in, so the floor is loaded
//!   here instead;
//! - BPF run-time statistics switched on with `BPF_ENABLE_STATS`, which
//!   lasts as long as its file descriptor: unlike writing the
//!   `kernel.bpf_stats_enabled` sysctl there is nothing to restore, even if
//!   the benchmark is killed;
//! - per-program `run_time_ns` / `run_cnt` read from `/proc/PID/fdinfo`, so
//!   only the programs of one process (one auditor run) are counted while
//!   other BPF users share the machine.

use std::ffi::CString;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::Path;

use anyhow::{Context as _, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_STATS_RUN_TIME: u32 = 0;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a valid buffer of the size passed; the kernel reads
    // at most that many bytes and requires unknown trailing bytes be zero.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of these commands is a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF program run-time statistics, on while this value lives.
pub struct StatsEnabled(#[allow(dead_code)] OwnedFd);

impl StatsEnabled {
    pub fn new() -> Result<Self> {
        let mut attr = [0u8; 4];
        attr.copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        bpf(BPF_ENABLE_STATS, &mut attr)
            .map(Self)
            .context("BPF_ENABLE_STATS failed (needs root and Linux 5.8+)")
    }
}

/// An empty program (`r0 = 0; exit`) attached to uprobes; detached when
/// dropped.
pub struct EmptyProbes {
    _prog: OwnedFd,
    _events: Vec<OwnedFd>,
}

impl EmptyProbes {
    /// Attach to every `file_offsets` of `exe`, in all processes (the
    /// benchmark's executable is private to it).
    pub fn attach(exe: &Path, file_offsets: &[u64]) -> Result<Self> {
        let prog = load_empty()?;
        let pmu: u32 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
            .context("reading the uprobe PMU type (is this Linux 4.17+?)")?
            .trim()
            .parse()
            .context("parsing the uprobe PMU type")?;
        let path = CString::new(exe.as_os_str().as_encoded_bytes())?;
        let mut events = Vec::new();
        for &off in file_offsets {
            let ev = open_uprobe(pmu, &path, off)
                .with_context(|| format!("uprobe at {}+{off:#x}", exe.display()))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&ev);
            let pfd = std::os::fd::AsRawFd::as_raw_fd(&prog);
            // SAFETY: plain ioctls on a perf event fd we own.
            unsafe {
                if libc::ioctl(fd, PERF_EVENT_IOC_SET_BPF, pfd) != 0 {
                    bail!(
                        "attaching the empty program: {}",
                        std::io::Error::last_os_error()
                    );
                }
                if libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0 {
                    bail!("enabling the uprobe: {}", std::io::Error::last_os_error());
                }
            }
            events.push(ev);
        }
        Ok(Self {
            _prog: prog,
            _events: events,
        })
    }
}

fn load_empty() -> Result<OwnedFd> {
    // mov64 r0, 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    // log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16].
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_KPROBE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let name = b"empty_uprobe";
    attr[48..48 + name.len()].copy_from_slice(name);
    bpf(BPF_PROG_LOAD, &mut attr).context("loading the empty BPF program")
}

fn open_uprobe(pmu: u32, path: &CString, offset: u64) -> std::io::Result<OwnedFd> {
    // struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1, 72 bytes):
    // type, size, config, sample_period, sample_type, read_format, flags,
    // wakeup_events, bp_type, config1 (uprobe_path), config2 (offset).
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&pmu.to_ne_bytes());
    attr[4..8].copy_from_slice(&72u32.to_ne_bytes());
    attr[56..64].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    attr[64..72].copy_from_slice(&offset.to_ne_bytes());
    // All processes (pid -1) needs one CPU; the program runs on hits on
    // every CPU all the same.
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Time and runs of uprobe programs (BPF_PROG_TYPE_KPROBE) held open by one
/// process, summed over distinct programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgRuns {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgRuns {
    pub fn since(self, earlier: ProgRuns) -> ProgRuns {
        ProgRuns {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }
}

/// Read the statistics of `pid`'s uprobe programs from its fdinfo.
pub fn prog_runs(pid: u32) -> Result<ProgRuns> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut seen = std::collections::HashSet::new();
    let mut total = ProgRuns::default();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        // Descriptors come and go while the process runs: skip vanished ones.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some((id, runs)) = parse_prog_fdinfo(&text)
            && seen.insert(id)
        {
            total.run_time_ns += runs.run_time_ns;
            total.run_cnt += runs.run_cnt;
        }
    }
    Ok(total)
}

/// `(prog_id, runs)` of a BPF program fd's fdinfo, if it is a uprobe
/// program.
fn parse_prog_fdinfo(text: &str) -> Option<(u64, ProgRuns)> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    if field("prog_type")? != u64::from(BPF_PROG_TYPE_KPROBE) {
        return None;
    }
    Some((
        field("prog_id")?,
        ProgRuns {
            run_time_ns: field("run_time_ns")?,
            run_cnt: field("run_cnt")?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uprobe_program_fdinfo_parses() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t2\n\
                    prog_jited:\t1\nprog_tag:\t3b185187f1855c4c\nmemlock:\t4096\n\
                    prog_id:\t41\nrun_time_ns:\t1200\nrun_cnt:\t3\nrecursion_misses:\t0\n";
        assert_eq!(
            parse_prog_fdinfo(text),
            Some((
                41,
                ProgRuns {
                    run_time_ns: 1200,
                    run_cnt: 3
                }
            ))
        );
    }

    #[test]
    fn other_program_types_and_descriptors_are_skipped() {
        assert_eq!(
            parse_prog_fdinfo("prog_type:\t5\nprog_id:\t1\nrun_time_ns:\t0\nrun_cnt:\t0\n"),
            None
        );
        assert_eq!(parse_prog_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }
}
