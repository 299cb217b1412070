//! The daemon's configuration: a TOML file, overridden by flags. Parsing and
//! validation are pure so every rule is unit-tested.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;

use crate::settings::{
    DEFAULT_AGGREGATE_INTERVAL, DetectMode, SettingsError, SteppedExits, check_max_overhead,
    parse_duration, validate_aggregate_interval, validate_ring_mib, validate_stack_depth,
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/map-auditor/control.sock";
/// Where the daemon logs unless told otherwise.
pub const DEFAULT_LOG_DIR: &str = "/var/log/map-auditor";
/// Largest configuration file read (it is small; a huge one is a mistake).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path} is larger than 1 MiB: point --config at the daemon's TOML file")]
    TooLarge { path: String },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("config: {0}")]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Untrusted(String),
}

/// The file as written (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    socket: Option<PathBuf>,
    socket_group: Option<GroupSpec>,
    log_dir: Option<PathBuf>,
    stdout_json: Option<bool>,
    metrics_listen: Option<String>,
    max_targets: Option<usize>,
    max_watches: Option<usize>,
    ring_mib: Option<u32>,
    detect: Option<String>,
    scope: Option<String>,
    stack_depth: Option<u32>,
    all_accesses: Option<bool>,
    aggregate_interval: Option<String>,
    max_overhead: Option<f64>,
    stepped_exits: Option<String>,
    scan_interval: Option<String>,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    targets: TargetsSection,
    #[serde(default)]
    bpf: BpfSection,
}

/// `socket_group = "audit"` or `socket_group = 1234`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GroupSpec {
    Name(String),
    Gid(u32),
}

impl GroupSpec {
    fn into_string(self) -> String {
        match self {
            Self::Name(n) => n,
            Self::Gid(g) => g.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    max_file_mib: Option<u64>,
    max_file_age: Option<String>,
    keep_files: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsSection {
    #[serde(default)]
    pids: Vec<u32>,
    #[serde(default)]
    exes: Vec<PathBuf>,
}

/// bpf(2) auditing and guarded maps, as in `map-auditor bpf`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BpfSection {
    #[serde(default)]
    pub enabled: bool,
    /// Maps to guard: name, id or pin path (as `--guard`).
    #[serde(default)]
    pub guard: Vec<String>,
    /// Executables allowed to write guarded maps.
    #[serde(default)]
    pub allow_exe: Vec<PathBuf>,
    /// Allowed executables must also match their SHA-256 at start.
    #[serde(default)]
    pub verify_hash: bool,
    /// Log only alerts and losses, not every bpf_map event (bpf(2)
    /// traffic of a busy node can be heavy).
    #[serde(default)]
    pub alerts_only: bool,
}

/// Rotation of the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    /// Rotated files kept besides the current one.
    pub keep_files: usize,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_file_age: Duration::from_secs(24 * 3600),
            keep_files: 10,
        }
    }
}

/// The daemon's effective settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    /// Group (name or numeric gid) whose members may use the socket.
    pub socket_group: Option<String>,
    pub log_dir: PathBuf,
    pub stdout_json: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub max_targets: usize,
    pub max_watches: usize,
    pub ring_mib: u32,
    pub detect: DetectMode,
    /// Whose map accesses are probed (`scope = "user"`, `"all"`,
    /// `"main-module"` or package paths separated by commas); unset: the
    /// detection mode's default.
    pub scope: Option<crate::goexe::Scope>,
    pub stack_depth: u32,
    /// Log one `access` event per access (with its stack) instead of
    /// `access_counts` every `aggregate_interval` (the default).
    pub all_accesses: bool,
    pub aggregate_interval: Duration,
    /// Overhead budget per target, in percent of its CPU time.
    pub max_overhead: Option<f64>,
    /// What becomes of escalated exit probes the kernel single-steps
    /// (`stepped_exits = "always" | "sampled" | "off"`).
    pub stepped_exits: SteppedExits,
    /// How often /proc is scanned for watched executables and target exits.
    pub scan_interval: Duration,
    pub rotation: RotationPolicy,
    /// Re-attached at every start.
    pub pids: Vec<u32>,
    pub exes: Vec<PathBuf>,
    pub bpf: BpfSection,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            log_dir: DEFAULT_LOG_DIR.into(),
            stdout_json: false,
            metrics_listen: None,
            max_targets: 64,
            max_watches: 16,
            ring_mib: 16,
            detect: DetectMode::Entry,
            scope: None,
            stack_depth: 8,
            all_accesses: false,
            aggregate_interval: DEFAULT_AGGREGATE_INTERVAL,
            max_overhead: None,
            stepped_exits: SteppedExits::Sampled,
            scan_interval: Duration::from_millis(500),
            rotation: RotationPolicy::default(),
            pids: Vec::new(),
            exes: Vec::new(),
            bpf: BpfSection::default(),
        }
    }
}

/// Highest PID Linux hands out (`pid_max` cannot exceed 2^22).
pub const PID_MAX: u32 = 1 << 22;

/// Check an executable path given by the config or a client: absolute,
/// bounded, no NUL. It is only ever stat'ed, never opened or run.
pub fn validate_exe_path(p: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()));
    }
    if bytes.len() > 4096 {
        return Err("executable path longer than 4096 bytes".into());
    }
    if bytes.contains(&0) {
        return Err("executable path contains a NUL byte".into());
    }
    Ok(())
}

pub fn validate_pid(pid: u32) -> Result<(), String> {
    if pid == 0 || pid > PID_MAX {
        return Err(format!("pid {pid} is out of range 1..={PID_MAX}"));
    }
    Ok(())
}

fn duration(field: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| ConfigError::Invalid(format!("{field}: {e}")))
}

impl DaemonConfig {
    /// Parse a TOML text (`path` names it in errors) over the defaults.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let f: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.message().to_string(),
        })?;
        let mut c = Self::default();
        if let Some(v) = f.socket {
            c.socket = v;
        }
        c.socket_group = f
            .socket_group
            .map(GroupSpec::into_string)
            .filter(|g| !g.is_empty());
        if let Some(v) = f.log_dir {
            c.log_dir = v;
        }
        c.stdout_json = f.stdout_json.unwrap_or(false);
        if let Some(m) = f.metrics_listen.filter(|m| !m.is_empty()) {
            c.metrics_listen = Some(m.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "metrics_listen {m:?} is not ADDRESS:PORT, e.g. \"127.0.0.1:9464\""
                ))
            })?);
        }
        if let Some(v) = f.max_targets {
            c.max_targets = v;
        }
        if let Some(v) = f.max_watches {
            c.max_watches = v;
        }
        if let Some(v) = f.ring_mib {
            c.ring_mib = v;
        }
        if let Some(d) = f.detect {
            c.detect = d.parse().map_err(ConfigError::Invalid)?;
        }
        if let Some(s) = f.scope {
            c.scope = crate::goexe::Scope::parse(&s)
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("scope: {e}")))?;
        }
        if let Some(v) = f.stack_depth {
            c.stack_depth = v;
        }
        if let Some(v) = f.all_accesses {
            c.all_accesses = v;
        }
        if let Some(s) = f.aggregate_interval {
            c.aggregate_interval = duration("aggregate_interval", &s)?;
        }
        c.max_overhead = f.max_overhead;
        if let Some(s) = f.stepped_exits {
            c.stepped_exits = s.parse().map_err(ConfigError::Invalid)?;
        }
        if let Some(s) = f.scan_interval {
            c.scan_interval = duration("scan_interval", &s)?;
        }
        if let Some(v) = f.log.max_file_mib {
            c.rotation.max_file_bytes = v.saturating_mul(1 << 20);
        }
        if let Some(s) = f.log.max_file_age {
            c.rotation.max_file_age = duration("log.max_file_age", &s)?;
        }
        if let Some(v) = f.log.keep_files {
            c.rotation.keep_files = v;
        }
        c.pids = f.targets.pids;
        c.exes = f.targets.exes;
        c.bpf = f.bpf;
        c.validate()?;
        Ok(c)
    }

    /// Read and parse a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // The daemon runs as root with what the file says: a file another
        // user can change (directly, or through a symlink or a directory
        // on the way) is refused.
        super::trust::check_config(path).map_err(ConfigError::Untrusted)?;
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: name });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_toml(&text, &name)
    }

    /// Rules every configuration must satisfy (also after flags override it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.socket.is_absolute() {
            return bad(format!(
                "socket {} must be an absolute path",
                self.socket.display()
            ));
        }
        if !self.log_dir.is_absolute() {
            return bad(format!(
                "log_dir {} must be an absolute path",
                self.log_dir.display()
            ));
        }
        if !(1..=4096).contains(&self.max_targets) {
            return bad("max_targets must be between 1 and 4096".into());
        }
        if self.max_watches > 256 {
            return bad("max_watches must be at most 256".into());
        }
        // The same rules as `attach` and `run` apply to their flags.
        validate_ring_mib(self.ring_mib)?;
        validate_stack_depth(self.stack_depth)?;
        validate_aggregate_interval(self.aggregate_interval)?;
        if let Some(p) = self.max_overhead {
            check_max_overhead(p)?;
        }
        if self.scan_interval < Duration::from_millis(50)
            || self.scan_interval > Duration::from_secs(60)
        {
            return bad("scan_interval must be between 50ms and 60s".into());
        }
        if self.rotation.max_file_bytes < 4096 {
            return bad("log.max_file_mib must be at least 1".into());
        }
        if self.rotation.max_file_age < Duration::from_secs(1) {
            return bad("log.max_file_age must be at least 1s".into());
        }
        if self.pids.len() + self.exes.len() > self.max_targets {
            return bad("more [targets] than max_targets".into());
        }
        if self.exes.len() > self.max_watches {
            return bad("more [targets].exes than max_watches".into());
        }
        for &p in &self.pids {
            validate_pid(p).map_err(ConfigError::Invalid)?;
        }
        for e in &self.exes {
            validate_exe_path(e).map_err(ConfigError::Invalid)?;
        }
        crate::bpf::BpfSettings::new(&self.bpf.guard, &self.bpf.allow_exe, false)
            .map_err(|e| ConfigError::Invalid(format!("[bpf] {e}")))?;
        Ok(())
    }
}

/// Resolve a group name (from /etc/group) or a numeric gid.
pub fn resolve_group(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = DaemonConfig::from_toml("", "x").unwrap();
        assert_eq!(c, DaemonConfig::default());
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert!(c.metrics_listen.is_none(), "metrics are opt-in");
    }

    #[test]
    fn socket_group_is_a_name_or_a_number() {
        let c = DaemonConfig::from_toml("socket_group = 4321\n", "x").unwrap();
        assert_eq!(c.socket_group.as_deref(), Some("4321"));
        assert_eq!(resolve_group("4321"), Some(4321));
        let c = DaemonConfig::from_toml("socket_group = \"4321\"\n", "x").unwrap();
        assert_eq!(c.socket_group.as_deref(), Some("4321"));
        let c = DaemonConfig::from_toml("socket_group = \"root\"\n", "x").unwrap();
        assert_eq!(resolve_group(c.socket_group.as_deref().unwrap()), Some(0));
        assert!(DaemonConfig::from_toml("socket_group = -1\n", "x").is_err());
    }

    #[test]
    fn full_file_parses() {
        let c = DaemonConfig::from_toml(
            r#"
            socket = "/tmp/s.sock"
            socket_group = "audit"
            log_dir = "/tmp/logs"
            stdout_json = true
            metrics_listen = "127.0.0.1:9464"
            detect = "interval"
            [log]
            max_file_mib = 2
            max_file_age = "1h"
            keep_files = 3
            [targets]
            pids = [42]
            exes = ["/usr/bin/svc"]
            [bpf]
            enabled = true
            guard = ["agent_map"]
            "#,
            "x",
        )
        .unwrap();
        assert_eq!(c.rotation.max_file_bytes, 2 << 20);
        assert_eq!(c.rotation.max_file_age, Duration::from_secs(3600));
        assert_eq!(c.pids, [42]);
        assert_eq!(c.detect, DetectMode::Interval);
        assert!(c.bpf.enabled);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_field_named() {
        let e = DaemonConfig::from_toml("sockett = \"/x\"", "d.toml").unwrap_err();
        assert!(e.to_string().contains("sockett"), "{e}");
        let e = DaemonConfig::from_toml("ring_mib = 3", "d.toml").unwrap_err();
        assert!(e.to_string().contains("ring_mib"), "{e}");
        let e = DaemonConfig::from_toml("[targets]\nexes = [\"svc\"]", "d.toml").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = DaemonConfig::from_toml("metrics_listen = \"loopback\"", "d.toml").unwrap_err();
        assert!(e.to_string().contains("ADDRESS:PORT"), "{e}");
        let e = DaemonConfig::from_toml("[bpf]\nguard = [\"a_map_name_too_long\"]", "d.toml")
            .unwrap_err();
        assert!(e.to_string().contains("at most 15 bytes"), "{e}");
    }

    #[test]
    fn aggregation_and_overhead_keys_use_the_flags_rules() {
        let c = DaemonConfig::from_toml(
            "all_accesses = true\naggregate_interval = \"250ms\"\nmax_overhead = 5\n",
            "x",
        )
        .unwrap();
        assert!(c.all_accesses);
        assert_eq!(c.aggregate_interval, Duration::from_millis(250));
        assert_eq!(c.max_overhead, Some(5.0));
        assert_eq!(c.stepped_exits, SteppedExits::Sampled);
        let c = DaemonConfig::from_toml("stepped_exits = \"always\"\n", "d.toml").unwrap();
        assert_eq!(c.stepped_exits, SteppedExits::Always);
        let e = DaemonConfig::from_toml("stepped_exits = \"every\"\n", "d.toml").unwrap_err();
        assert!(e.to_string().contains("--stepped-exits"), "{e}");
        assert!(!DaemonConfig::default().all_accesses, "counts by default");
        for (text, key) in [
            ("max_overhead = 0", "--max-overhead"),
            ("max_overhead = 101", "--max-overhead"),
            ("aggregate_interval = \"10ms\"", "--aggregate-interval"),
        ] {
            let e = DaemonConfig::from_toml(text, "d.toml").unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        assert!(DaemonConfig::from_toml("max_overhead = \"abc\"", "d.toml").is_err());
    }

    #[test]
    fn exe_paths_are_bounded() {
        assert!(validate_exe_path(Path::new("/usr/bin/x")).is_ok());
        assert!(validate_exe_path(Path::new("rel/x")).is_err());
        let long = format!("/{}", "a".repeat(5000));
        assert!(validate_exe_path(Path::new(&long)).is_err());
        assert!(validate_pid(0).is_err());
        assert!(validate_pid(PID_MAX + 1).is_err());
    }
}
