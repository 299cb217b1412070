//! The individual checks. Each looks at the machine the way the auditor
//! will use it, and says what to do when the answer is no.

use std::path::Path;

use super::bpf_syscall::{self, errno_name};
use super::system::{self, CapSet, KernelVersion, cap};
use super::{Check, Status};

/// Ring buffer maps and CAP_BPF/CAP_PERFMON arrived in 5.8.
const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);
/// From 5.11 BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK.
const MEMCG_ACCOUNTING: KernelVersion = KernelVersion::new(5, 11, 0);
const TRACEFS_MOUNT_POINTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";
const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// Kernel functions to aim the fentry probe at, most likely first. Any
/// traceable function will do: the program is loaded, never attached.
const FENTRY_TARGETS: &[&str] = &["bpf_fentry_test1", "__sys_bpf", "do_sys_openat2"];

/// Facts several checks depend on.
struct Machine {
    release: String,
    version: Option<KernelVersion>,
    euid: u32,
    caps: Option<CapSet>,
}

impl Machine {
    fn probe() -> Self {
        let (release, _) = KernelVersion::running();
        Self {
            version: KernelVersion::parse(&release),
            release,
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
            caps: CapSet::current(),
        }
    }

    fn has(&self, c: u32) -> bool {
        self.caps.is_some_and(|caps| caps.has(c))
    }

    /// Capabilities the auditor needs that this process lacks. CAP_SYS_ADMIN
    /// stands in for CAP_BPF and CAP_PERFMON (and is the only way before 5.8).
    fn missing_caps(&self) -> Vec<&'static str> {
        let admin = self.has(cap::SYS_ADMIN);
        let mut missing = Vec::new();
        for c in [cap::BPF, cap::PERFMON] {
            if !self.has(c) && !admin {
                missing.push(cap::name(c));
            }
        }
        // Reading another process's executable mappings and memory.
        if !self.has(cap::SYS_PTRACE) {
            missing.push(cap::name(cap::SYS_PTRACE));
        }
        missing
    }

    fn privileged(&self) -> bool {
        self.missing_caps().is_empty()
    }
}

pub fn all() -> Vec<Check> {
    let machine = Machine::probe();
    let tracefs = tracefs(&machine);
    let tracefs_point = (tracefs.status == Status::Ok).then(|| {
        system::mount_point(&system::mounts(), "tracefs", TRACEFS_MOUNT_POINTS).unwrap_or_default()
    });
    vec![
        kernel(&machine),
        privileges(&machine),
        btf(),
        tracefs,
        bpffs(),
        uprobes(),
        uprobe_attach(),
        syscall_tracepoints(tracefs_point.as_deref()),
        ringbuf(&machine),
        memlock(&machine),
        kprobes(&machine),
        fentry(&machine),
    ]
}

fn kernel(m: &Machine) -> Check {
    let (_, arch) = KernelVersion::running();
    match m.version {
        Some(v) if v >= MIN_KERNEL => Check::ok("kernel", format!("Linux {} ({arch})", m.release)),
        Some(_) => Check::new(
            "kernel",
            Status::Missing,
            format!(
                "Linux {} is older than {MIN_KERNEL} (no BPF ring buffer)",
                m.release
            ),
        )
        .with_fix(format!("run on Linux {MIN_KERNEL} or newer")),
        None => Check::new(
            "kernel",
            Status::Warn,
            format!("cannot read the version from release {:?}", m.release),
        ),
    }
}

fn privileges(m: &Machine) -> Check {
    let missing = m.missing_caps();
    let who = if m.euid == 0 {
        "root (euid 0)".to_string()
    } else {
        format!("euid {}", m.euid)
    };
    if missing.is_empty() {
        let via = if m.has(cap::BPF) && m.has(cap::PERFMON) {
            "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_SYS_ADMIN"
        } else {
            "CAP_SYS_ADMIN, CAP_SYS_PTRACE"
        };
        if !m.has(cap::SYS_ADMIN) {
            // Some kernels refuse uprobe perf events without CAP_SYS_ADMIN;
            // `uprobe_attach` tries one and says.
            return Check::new(
                "privileges",
                Status::Warn,
                format!(
                    "{who} with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE but not CAP_SYS_ADMIN: see uprobe_attach"
                ),
            )
            .with_fix("if uprobe_attach fails, grant CAP_SYS_ADMIN too");
        }
        return Check::ok("privileges", format!("{who} with {via}"));
    }
    let detail = format!("{who} lacks {}", missing.join(", "));
    let fix = if m.euid == 0 {
        "root without these capabilities (a restricted container?): run with them granted, \
         e.g. `docker run --privileged` or `--cap-add BPF,PERFMON,SYS_PTRACE,SYS_ADMIN`"
            .to_string()
    } else {
        "run as root (sudo), or `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_sys_admin+ep $(command -v map-auditor)`"
            .to_string()
    };
    Check::new("privileges", Status::Missing, detail).with_fix(fix)
}

fn btf() -> Check {
    // Check the magic too: a readable but empty file would fail later with a
    // far less helpful message.
    let magic = std::fs::File::open(BTF_VMLINUX).and_then(|mut f| {
        use std::io::Read as _;
        let mut buf = [0u8; 2];
        f.read_exact(&mut buf).map(|()| u16::from_le_bytes(buf))
    });
    match magic {
        Ok(0xeb9f) => {
            let size = std::fs::metadata(BTF_VMLINUX)
                .map(|m| m.len() / 1024)
                .unwrap_or(0);
            Check::ok("btf", format!("{BTF_VMLINUX} ({size} KiB)"))
        }
        Ok(other) => Check::new(
            "btf",
            Status::Missing,
            format!("{BTF_VMLINUX} has magic {other:#06x}, not BTF"),
        )
        .with_fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
        Err(e) => Check::new("btf", Status::Missing, format!("{BTF_VMLINUX}: {e}"))
            .with_fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
    }
}

fn tracefs(m: &Machine) -> Check {
    if let Some(point) = system::mount_point(&system::mounts(), "tracefs", TRACEFS_MOUNT_POINTS) {
        return Check::ok("tracefs", format!("mounted at {point}"));
    }
    let fix = "mount -t tracefs nodev /sys/kernel/tracing";
    if !m.privileged() {
        return Check::new("tracefs", Status::Missing, "not mounted")
            .with_fix(format!("as root: {fix}"));
    }
    // We need it anyway and mounting it is harmless, so do it now.
    match mount("nodev", TRACEFS_MOUNT_POINTS[0], "tracefs") {
        Ok(()) => Check::ok(
            "tracefs",
            format!("was not mounted; mounted it at {}", TRACEFS_MOUNT_POINTS[0]),
        ),
        Err(e) => Check::new(
            "tracefs",
            Status::Missing,
            format!("not mounted, and mounting failed: {e}"),
        )
        .with_fix(fix),
    }
}

fn mount(source: &str, target: &str, fstype: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in mount arguments");
    let (source, target, fstype) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn bpffs() -> Check {
    match system::mount_point(&system::mounts(), "bpf", &[BPFFS_MOUNT_POINT]) {
        Some(point) => Check::ok("bpffs", format!("mounted at {point}")),
        None => Check::new(
            "bpffs",
            Status::Warn,
            "not mounted (only needed to pin maps)",
        )
        .with_fix(format!("mount -t bpf bpf {BPFFS_MOUNT_POINT}")),
    }
}

fn uprobes() -> Check {
    let path = "/sys/bus/event_source/devices/uprobe/type";
    match std::fs::read_to_string(path) {
        Ok(t) => Check::ok(
            "uprobes",
            format!("uprobe event source (type {})", t.trim()),
        ),
        Err(_) => Check::new("uprobes", Status::Missing, format!("{path} does not exist"))
            .with_fix("use a kernel built with CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y"),
    }
}

/// Never called: the function `uprobe_attach` places (and removes) a uprobe on.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn map_auditor_doctor_probe_point() -> u64 {
    std::hint::black_box(7)
}

/// The file offset of `addr` in this process's executable, from /proc/self/maps.
fn own_file_offset(addr: u64) -> Option<(String, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
        let path = f.nth(2)?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let offset = u64::from_str_radix(offset, 16).ok()?;
        (lo <= addr && addr < hi && path.starts_with('/'))
            .then(|| (path.to_string(), addr - lo + offset))
    })
}

/// Open a uprobe perf event on `offset` of `path` for this process alone,
/// the way `attach` opens one per call site, and close it at once.
pub fn open_uprobe(path: &str, offset: u64) -> std::io::Result<()> {
    let pmu: u32 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::ENOENT))?;
    let path = std::ffi::CString::new(path)?;
    // struct perf_event_attr, 128 bytes: type and size, then config at
    // word 1, the flag bits at word 5, config1 (uprobe_path) at word 7 and
    // config2 (probe_offset) at word 8.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(pmu) | (128u64 << 32);
    attr[5] = 1; // disabled
    attr[7] = path.as_ptr() as u64;
    attr[8] = offset;
    // SAFETY: attr is a zero-padded perf_event_attr of the size given and
    // path outlives the call; a returned fd is closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            8 as libc::c_ulong, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned to us and is closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// What `attach` really needs: a uprobe on a function of an executable,
/// opened for one process. Capabilities alone do not tell (on some kernels
/// CAP_BPF+CAP_PERFMON+CAP_SYS_PTRACE still get EACCES here).
fn uprobe_attach() -> Check {
    let name = "uprobe_attach";
    let addr = map_auditor_doctor_probe_point as *const () as usize as u64;
    let Some((exe, offset)) = own_file_offset(addr) else {
        return Check::new(
            name,
            Status::Warn,
            "cannot find this executable's mapping in /proc/self/maps: not tested",
        );
    };
    match open_uprobe(&exe, offset) {
        Ok(()) => Check::ok(
            name,
            format!("a uprobe on {exe}+{offset:#x} opens (perf_event_open)"),
        ),
        Err(e) => {
            let errno = errno_name(&e);
            let fix = if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
                "run as root, or grant CAP_SYS_ADMIN as well as CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (see docs/security.md)"
            } else {
                "check that the kernel has CONFIG_UPROBE_EVENTS=y and that tracefs is mounted"
            };
            Check::new(
                name,
                Status::Missing,
                format!("perf_event_open of a uprobe on {exe}+{offset:#x} failed: {errno} ({e})"),
            )
            .with_fix(fix)
        }
    }
}

fn syscall_tracepoints(tracefs: Option<&str>) -> Check {
    let name = "bpf_syscall_tracepoints";
    let Some(root) = tracefs else {
        return Check::new(name, Status::Missing, "cannot look: tracefs is not mounted")
            .with_fix("mount -t tracefs nodev /sys/kernel/tracing");
    };
    let events = Path::new(root).join("events/syscalls");
    // tracefs is root-only (mode 0700) on most systems: an unprivileged
    // look fails with EACCES, which says nothing about the kernel.
    if let Err(e) = std::fs::read_dir(&events)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Check::new(
            name,
            Status::Missing,
            format!("cannot look: {} is not readable", events.display()),
        )
        .with_fix("run as root (see privileges)");
    }
    let missing: Vec<&str> = ["sys_enter_bpf", "sys_exit_bpf"]
        .into_iter()
        .filter(|tp| !events.join(tp).join("id").exists())
        .collect();
    if missing.is_empty() {
        Check::ok(name, "syscalls:sys_enter_bpf and syscalls:sys_exit_bpf")
    } else {
        Check::new(
            name,
            Status::Missing,
            format!("{} not in {}", missing.join(" and "), events.display()),
        )
        .with_fix("use a kernel built with CONFIG_FTRACE_SYSCALLS=y")
    }
}

fn ringbuf(m: &Machine) -> Check {
    match bpf_syscall::create_ringbuf() {
        Ok(()) => Check::ok("ringbuf", "created and freed a BPF ring buffer map"),
        Err(e) if !m.privileged() => Check::new(
            "ringbuf",
            Status::Missing,
            format!(
                "cannot create a ring buffer map ({}) without privileges",
                errno_name(&e)
            ),
        )
        .with_fix("run as root (see privileges)"),
        Err(e) => Check::new(
            "ringbuf",
            Status::Missing,
            format!("creating a ring buffer map failed ({})", errno_name(&e)),
        )
        .with_fix(format!(
            "run on Linux {MIN_KERNEL} or newer with CONFIG_BPF_SYSCALL=y"
        )),
    }
}

fn memlock(m: &Machine) -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out pointer.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0 {
        if lim.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", lim.rlim_cur / 1024)
        }
    } else {
        "unknown".to_string()
    };
    match m.version {
        Some(v) if v >= MEMCG_ACCOUNTING => Check::ok(
            "memlock",
            format!("limit {limit}; irrelevant: Linux >= 5.11 charges BPF memory to the memory cgroup"),
        ),
        _ if lim.rlim_cur == libc::RLIM_INFINITY => Check::ok("memlock", "limit unlimited"),
        _ => Check::new(
            "memlock",
            Status::Warn,
            format!("limit {limit}; this kernel counts BPF maps against it, so large ring buffers may fail"),
        )
        .with_fix("run with `ulimit -l unlimited` (or grant CAP_SYS_RESOURCE)"),
    }
}

fn kprobes(m: &Machine) -> Check {
    let config = system::kernel_config(&m.release);
    let option = config
        .as_deref()
        .and_then(|c| system::config_value(c, "CONFIG_KPROBES"));
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Check::ok("kprobes", "kprobe event source present");
    }
    let why = match option.as_deref() {
        Some("n") => "CONFIG_KPROBES is not set".to_string(),
        Some(v) => format!("CONFIG_KPROBES={v} but no kprobe event source"),
        None => "no kprobe event source".to_string(),
    };
    Check::new(
        "kprobes",
        Status::Unavailable,
        format!("unavailable ({why}): tracepoint fallback used"),
    )
}

fn fentry(m: &Machine) -> Check {
    let name = "fentry";
    if !m.privileged() {
        return Check::new(
            name,
            Status::Unavailable,
            "not probed without privileges: tracepoint fallback used",
        );
    }
    let target = aya_obj::btf::Btf::from_sys_fs().ok().and_then(|btf| {
        FENTRY_TARGETS.iter().find_map(|f| {
            btf.id_by_type_name_kind(f, aya_obj::btf::BtfKind::Func)
                .ok()
                .map(|id| (*f, id))
        })
    });
    let Some((function, btf_id)) = target else {
        return Check::new(
            name,
            Status::Unavailable,
            "unavailable (no BTF id for a probe target): tracepoint fallback used",
        );
    };
    match bpf_syscall::load_fentry(btf_id) {
        Ok(()) => Check::ok(name, format!("a fentry program on {function} loads")),
        Err(failure) => {
            let mut why = errno_name(&failure.error);
            if let Some(line) = failure.verifier {
                why.push_str(&format!(", verifier: {line}"));
            }
            Check::new(
                name,
                Status::Unavailable,
                format!("unavailable ({why}): tracepoint fallback used"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uprobe_check_opens_a_real_uprobe_or_names_the_errno() {
        let c = uprobe_attach();
        let root = unsafe { libc::geteuid() } == 0;
        if root && std::env::var_os("MAP_AUDITOR_REQUIRE_BPF").is_some() {
            assert_eq!(c.status, Status::Ok, "{c:?}");
        }
        match c.status {
            Status::Ok => assert!(c.detail.contains("opens"), "{c:?}"),
            _ => assert!(c.detail.contains("failed: E") && c.fix.is_some(), "{c:?}"),
        }
        // A file that is not an executable mapping: the kernel's errno is named.
        let e = open_uprobe("/nonexistent/map-auditor", 0).unwrap_err();
        assert_eq!(errno_name(&e), "ENOENT");
    }
}
