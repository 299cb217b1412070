//! Loading the bpf(2) tracepoint programs, giving them the kernel's struct
//! offsets, and calibrating which `f_op` marks a BPF map file.
//!
//! Calibration: the kernel's `bpf_map_fops` is a data symbol, listed in
//! /proc/kallsyms only with CONFIG_KALLSYMS_ALL (absent on the project's
//! machines). So the auditor makes one BPF_MAP_LOOKUP_ELEM on its own config
//! map; the enter program walks that fd with the BTF offsets and records the
//! `f_op` it finds and the map id behind it. The id must equal the config
//! map's real id: that proves the offsets and the walk before any event is
//! trusted. When kallsyms does list `bpf_map_fops`, both must agree.

use std::os::fd::{AsFd, AsRawFd};

use auditor_common::bpf_syscall::{BpfAuditConfig, CALIB_MAP, CONFIG_MAP, KernelOffsets};
use aya::{
    Ebpf,
    maps::{Array, IterableMap, MapData},
    programs::RawTracePoint,
};
use thiserror::Error;

use super::btf::{BtfError, KernelBtf};
use crate::probe::{self, LoadOptions, ProbeError};

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Probe(Box<ProbeError>),
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed: {0}; run `mount -t tracefs nodev {TRACEFS}`"
    )]
    Tracefs(String),
    #[error(
        "map-auditor bpf needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): it attaches to syscall tracepoints; run it with sudo"
    )]
    NotRoot,
    #[error(
        "calibration failed: {0}; the fd→map walk cannot be trusted on this kernel (please report with `uname -r`)"
    )]
    Calibration(String),
}

impl From<ProbeError> for SessionError {
    fn from(e: ProbeError) -> Self {
        Self::Probe(Box::new(e))
    }
}

/// Where the `bpf_map_fops` address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FopsSource {
    /// Both /proc/kallsyms and the self-calibration, agreeing.
    KallsymsAndCalibration,
    /// Self-calibration only (kallsyms lists no data symbols).
    Calibration,
}

/// A loaded, attached and calibrated auditing session.
pub struct BpfAuditSession {
    pub ebpf: Ebpf,
    pub offsets: KernelOffsets,
    pub map_fops: u64,
    pub fops_source: FopsSource,
    /// Whether 32-bit (`int $0x80`) calls are seen; the reason when not.
    pub compat: Result<(), String>,
    config: Array<MapData, BpfAuditConfig>,
}

/// Program name and raw tracepoint: every system call's entry and exit
/// (see auditor-ebpf's `bpf_syscall.rs` for why not `syscalls:*_bpf`).
const PROGRAMS: [(&str, &str); 2] = [("bpf_sys_enter", "sys_enter"), ("bpf_sys_exit", "sys_exit")];

fn attach(ebpf: &mut Ebpf, prog: &'static str, tp: &str) -> Result<(), ProbeError> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or(ProbeError::MissingProgram { name: prog })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            name: prog,
            source: Box::new(source),
        })?;
    p.load().map_err(|source| ProbeError::Program {
        name: prog,
        source: Box::new(source),
    })?;
    p.attach(tp).map_err(|source| ProbeError::Program {
        name: prog,
        source: Box::new(source),
    })?;
    Ok(())
}

/// Mount tracefs if it is missing (fresh machines), so tracepoints resolve.
pub fn ensure_tracefs() -> Result<(), SessionError> {
    if std::path::Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    // tracefs is 0700 root: a user cannot see inside it even when it is
    // mounted, and could not mount it either. Privileges are the problem.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SessionError::NotRoot);
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: NUL-terminated constants; no data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(SessionError::Tracefs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

/// `bpf_map_fops` from /proc/kallsyms when listed (and not zeroed by
/// kptr_restrict).
pub fn kallsyms_map_fops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let addr = it.next()?;
            let _kind = it.next()?;
            (it.next()? == "bpf_map_fops").then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .filter(|a| *a != 0)
}

impl BpfAuditSession {
    /// Load, attach to `raw_syscalls:sys_{enter,exit}`, and calibrate.
    pub fn start(include_self: bool) -> Result<Self, SessionError> {
        ensure_tracefs()?;
        let offsets = KernelBtf::from_sys_fs()?.kernel_offsets()?;
        // The Go per-map state table is not used here: keep it tiny.
        let mut ebpf = probe::load(LoadOptions {
            ring_bytes: 16 << 20,
            max_maps: 1,
            bpf_offsets: Some(offsets),
        })?;

        let config = ebpf
            .take_map(CONFIG_MAP)
            .ok_or(ProbeError::MissingMap { name: CONFIG_MAP })?;
        let mut config: Array<MapData, BpfAuditConfig> =
            Array::try_from(config).map_err(|source| ProbeError::Map {
                name: CONFIG_MAP,
                source: Box::new(source),
            })?;
        let calib_fd = config.map().fd().as_fd().as_raw_fd() as u32;
        let config_id = config
            .map()
            .info()
            .map_err(|source| ProbeError::Map {
                name: CONFIG_MAP,
                source: Box::new(source),
            })?
            .id();

        // Exit first: a call the enter program records must find the exit
        // program attached, or its slot would wait for the thread's next
        // system call and be finished with that call's return value.
        for (prog, tp) in PROGRAMS.into_iter().rev() {
            attach(&mut ebpf, prog, tp)?;
        }
        // 32-bit calls come through the same raw tracepoints: seen whenever
        // the programs are attached.
        let compat = Ok(());
        let (calib_prog_fd, calib_prog_id) = {
            let p: &RawTracePoint = ebpf
                .program(PROGRAMS[0].0)
                .ok_or(ProbeError::MissingProgram {
                    name: PROGRAMS[0].0,
                })?
                .try_into()
                .map_err(|source| ProbeError::Program {
                    name: PROGRAMS[0].0,
                    source: Box::new(source),
                })?;
            let fd = p.fd().map_err(|source| ProbeError::Program {
                name: PROGRAMS[0].0,
                source: Box::new(source),
            })?;
            let id = p
                .info()
                .map_err(|source| ProbeError::Program {
                    name: PROGRAMS[0].0,
                    source: Box::new(source),
                })?
                .id();
            (fd.as_fd().as_raw_fd(), id)
        };

        let mut cfg = BpfAuditConfig {
            self_tgid: std::process::id(),
            include_self: include_self as u32,
            calib_fd,
            enabled: 1,
            map_fops: 0,
            prog_fops: 0,
            calib_prog_fd: calib_prog_fd as u32,
            _pad: 0,
        };
        let set = |config: &mut Array<MapData, BpfAuditConfig>,
                   cfg: &BpfAuditConfig|
         -> Result<(), SessionError> {
            config.set(0, cfg, 0).map_err(|source| {
                ProbeError::Map {
                    name: CONFIG_MAP,
                    source: Box::new(source),
                }
                .into()
            })
        };
        set(&mut config, &cfg)?;

        // The calls the enter program calibrates on.
        let _ = config.get(&0, 0);
        let _ = super::sys::obj_info_by_raw_fd(calib_prog_fd);
        let calib = ebpf
            .map(CALIB_MAP)
            .ok_or(ProbeError::MissingMap { name: CALIB_MAP })?;
        let calib: Array<&MapData, u64> =
            Array::try_from(calib).map_err(|source| ProbeError::Map {
                name: CALIB_MAP,
                source: Box::new(source),
            })?;
        let fops = calib.get(&0, 0).unwrap_or(0);
        let seen_id = calib.get(&1, 0).unwrap_or(0);
        if fops == 0 {
            return Err(SessionError::Calibration(
                "the enter tracepoint did not see the calibration call".into(),
            ));
        }
        if seen_id != config_id as u64 {
            return Err(SessionError::Calibration(format!(
                "walking the calibration fd read map id {seen_id}, the map's id is {config_id}"
            )));
        }
        let prog_fops = calib.get(&2, 0).unwrap_or(0);
        let seen_prog = calib.get(&3, 0).unwrap_or(0);
        if prog_fops == 0 || seen_prog != calib_prog_id as u64 {
            return Err(SessionError::Calibration(format!(
                "walking the program calibration fd read program id {seen_prog} (f_op {prog_fops:#x}), the program's id is {calib_prog_id}"
            )));
        }
        let fops_source = match kallsyms_map_fops() {
            Some(k) if k != fops => {
                return Err(SessionError::Calibration(format!(
                    "f_op {fops:#x} differs from bpf_map_fops {k:#x} in /proc/kallsyms"
                )));
            }
            Some(_) => FopsSource::KallsymsAndCalibration,
            None => FopsSource::Calibration,
        };
        cfg.map_fops = fops;
        cfg.prog_fops = prog_fops;
        set(&mut config, &cfg)?;
        Ok(Self {
            ebpf,
            offsets,
            map_fops: fops,
            fops_source,
            compat,
            config,
        })
    }

    /// Stop producing events (programs stay attached until drop).
    pub fn disable(&mut self) {
        if let Ok(mut cfg) = self.config.get(&0, 0) {
            cfg.enabled = 0;
            let _ = self.config.set(0, cfg, 0);
        }
    }
}
