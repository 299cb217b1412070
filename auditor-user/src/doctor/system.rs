//! Reading what the kernel says about itself: release, capabilities, mounts
//! and build configuration. Parsers take text so they can be tested on
//! samples; readers wrap the files.

use std::fmt;
use std::io::Read as _;

/// A kernel version from `uname -r`, ignoring the distribution suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parse a release string: `6.18.0`, `5.15.0-91-generic`, `6.1`,
    /// `6.8.0-rc3+`. Components after the first non-digit are ignored.
    pub fn parse(release: &str) -> Option<Self> {
        let numeric = release
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()?;
        let mut parts = numeric.split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// This machine's kernel (`uname(2)`): release string and machine.
    pub fn running() -> (String, String) {
        // SAFETY: utsname is plain old data; uname fills it or fails.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut uts) } != 0 {
            return (String::new(), String::new());
        }
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (field(&uts.release), field(&uts.machine))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Linux capability numbers (include/uapi/linux/capability.h).
pub mod cap {
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_RESOURCE: u32 = 24;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;

    /// The name `capabilities(7)` uses.
    pub fn name(cap: u32) -> &'static str {
        match cap {
            SYS_PTRACE => "CAP_SYS_PTRACE",
            SYS_ADMIN => "CAP_SYS_ADMIN",
            SYS_RESOURCE => "CAP_SYS_RESOURCE",
            PERFMON => "CAP_PERFMON",
            BPF => "CAP_BPF",
            _ => "CAP_?",
        }
    }
}

/// A set of capabilities, as the hex masks of /proc/PID/status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The effective set from /proc/PID/status text (`CapEff:\t000001ffffffffff`).
    pub fn effective_from_status(status: &str) -> Option<Self> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .map(Self)
    }

    /// This process's effective capabilities.
    pub fn current() -> Option<Self> {
        Self::effective_from_status(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    pub fn has(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }
}

/// Where a filesystem of type `fstype` is mounted, from /proc/self/mounts
/// text; the first of `preferred` that has one wins, else any mount point.
pub fn mount_point(mounts: &str, fstype: &str, preferred: &[&str]) -> Option<String> {
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == fstype).then_some(target)
        })
        .collect();
    preferred
        .iter()
        .find(|p| points.contains(p))
        .map(|p| p.to_string())
        .or_else(|| points.first().map(|p| p.to_string()))
}

/// This process's mount table.
pub fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mounts").unwrap_or_default()
}

/// The value of `option` in kernel config text: `Some("y")`/`Some("m")`,
/// `Some("n")` for `# CONFIG_X is not set`, `None` if not mentioned.
pub fn config_value(config: &str, option: &str) -> Option<String> {
    let not_set = format!("# {option} is not set");
    config.lines().find_map(|line| {
        if line.trim() == not_set {
            return Some("n".to_string());
        }
        line.strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|v| v.trim().to_string())
    })
}

/// The running kernel's build configuration, from /proc/config.gz or
/// /boot/config-RELEASE; `None` when neither is readable.
pub fn kernel_config(release: &str) -> Option<String> {
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    std::fs::read_to_string(format!("/boot/config-{release}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_parses_with_distribution_suffixes() {
        assert_eq!(
            KernelVersion::parse("6.18.0"),
            Some(KernelVersion::new(6, 18, 0))
        );
        assert_eq!(
            KernelVersion::parse("5.15.0-91-generic"),
            Some(KernelVersion::new(5, 15, 0))
        );
        assert_eq!(
            KernelVersion::parse("6.1"),
            Some(KernelVersion::new(6, 1, 0))
        );
        assert_eq!(
            KernelVersion::parse("6.8.0-rc3+"),
            Some(KernelVersion::new(6, 8, 0))
        );
        assert_eq!(
            KernelVersion::parse("6.9-rc1"),
            Some(KernelVersion::new(6, 9, 0))
        );
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert_eq!(KernelVersion::parse("6"), None);
    }

    #[test]
    fn kernel_versions_order_numerically() {
        assert!(KernelVersion::new(5, 11, 0) > KernelVersion::new(5, 8, 12));
        assert!(KernelVersion::new(6, 0, 0) > KernelVersion::new(5, 19, 9));
    }

    #[test]
    fn cap_eff_bits_are_read_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                      CapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        let caps = CapSet::effective_from_status(status).unwrap();
        assert!(caps.has(cap::BPF));
        assert!(caps.has(cap::PERFMON));
        assert!(caps.has(cap::SYS_ADMIN));
        assert!(caps.has(cap::SYS_PTRACE));
        // 0x...fe... : bit 24 cleared.
        assert!(!caps.has(cap::SYS_RESOURCE));
    }

    #[test]
    fn cap_eff_of_an_unprivileged_process_is_empty() {
        let caps = CapSet::effective_from_status("CapEff:\t0000000000000000\n").unwrap();
        assert!(!caps.has(cap::BPF));
        assert_eq!(CapSet::effective_from_status("Name:\tx\n"), None);
    }

    #[test]
    fn mount_point_prefers_the_standard_location() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n\
                      nodev /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            mount_point(mounts, "tracefs", &["/sys/kernel/tracing"]).as_deref(),
            Some("/sys/kernel/tracing")
        );
        assert_eq!(
            mount_point(mounts, "tracefs", &["/nowhere"]).as_deref(),
            Some("/sys/kernel/debug/tracing")
        );
        assert_eq!(mount_point(mounts, "bpf", &["/sys/fs/bpf"]), None);
    }

    #[test]
    fn config_values_include_not_set() {
        let config = "CONFIG_UPROBES=y\n# CONFIG_KPROBES is not set\nCONFIG_BPF=y\n";
        assert_eq!(config_value(config, "CONFIG_KPROBES").as_deref(), Some("n"));
        assert_eq!(config_value(config, "CONFIG_UPROBES").as_deref(), Some("y"));
        assert_eq!(config_value(config, "CONFIG_KPROBE_EVENTS"), None);
    }
}
