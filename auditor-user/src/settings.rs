//! What the user asked for, in the library's own types: output formats, the
//! detection mode, the ring size, and the settings of each audit. The command
//! line (`cli` → `commands`) and the daemon's TOML configuration both end in
//! these types and are validated by the same functions here, so a value one
//! of them refuses the other refuses with the same words.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use thiserror::Error;

use crate::{audit::engine::TargetOptions, pipeline::filter::AccessFilter, probe::LoadOptions};

/// Live-log and `tail` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, colour on a terminal.
    Text,
    /// One JSON object per line (docs/events.md).
    Json,
}

/// How overlaps are detected in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectMode {
    /// Entry probes only: cheapest; catches accesses that enter while another
    /// goroutine holds the runtime's writing marker.
    Entry,
    /// Entry and RET probes: full intervals; also catches a writer entering
    /// while readers are inside. Costs more per access.
    Interval,
}

impl DetectMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::Interval => "interval",
        }
    }
}

impl fmt::Display for DetectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "entry" => Ok(Self::Entry),
            "interval" => Ok(Self::Interval),
            _ => Err(format!("detect {s:?}: use \"entry\" or \"interval\"")),
        }
    }
}

/// What becomes of an escalated call site's exit probe when no instruction
/// the kernel emulates can stand in for its return address, so every hit
/// is single-stepped (~12 µs here, against ~0.5 µs emulated). Exit probes
/// the kernel emulates are always attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SteppedExits {
    /// Attached all the time: every read at the site is decided, whatever
    /// it costs.
    Always,
    /// Attached for a window, then removed for a while, the share of the
    /// time chosen from the site's measured hit rate so that the stepped
    /// exits of a target cost at most [`STEPPED_EXIT_BUDGET_PCT`] of one
    /// CPU (the entry-mode default).
    #[default]
    Sampled,
    /// Not attached: such a site's reads are decided only at their entry.
    Off,
}

/// What the single-stepped exit probes of one target may cost under
/// [`SteppedExits::Sampled`], in percent of one CPU.
pub const STEPPED_EXIT_BUDGET_PCT: f64 = 1.0;

impl SteppedExits {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Sampled => "sampled",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for SteppedExits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SteppedExits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "sampled" => Ok(Self::Sampled),
            "off" => Ok(Self::Off),
            _ => Err(format!(
                "stepped_exits (--stepped-exits) {s:?}: use \"always\", \"sampled\" or \"off\""
            )),
        }
    }
}

/// Where entry probes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The cheapest instruction that still sees the arguments.
    Cheapest,
    /// Each function's first instruction (to measure the difference).
    FunctionStart,
}

/// Output of `map-auditor report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Dot,
    Html,
}

/// A setting out of range. The names are the daemon's configuration keys
/// and the command-line flags, so the message fits either.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("ring_mib (--ring-mib) {0} must be a power of two between 1 and 1024")]
    RingMib(u32),
    #[error("stack_depth (--stack-depth) {0} must be between 0 and 16")]
    StackDepth(u32),
    #[error(
        "aggregate_interval (--aggregate-interval) {0:?} must be between 100ms and 1h, e.g. 1s"
    )]
    AggregateInterval(Duration),
    #[error(
        "max_overhead (--max-overhead) {0:?} must be a percentage of the target's CPU time above 0 and at most 100, e.g. 5"
    )]
    MaxOverhead(String),
}

/// Largest ring buffer, in MiB.
pub const MAX_RING_MIB: u32 = 1024;
/// Most user stack frames recorded per access (the kernel's array size).
pub const MAX_STACK_DEPTH: u32 = 16;

/// The ring buffer every target shares, in MiB: a power of two (the kernel
/// refuses others) between 1 and [`MAX_RING_MIB`].
pub fn validate_ring_mib(mib: u32) -> Result<u32, SettingsError> {
    if mib == 0 || !mib.is_power_of_two() || mib > MAX_RING_MIB {
        return Err(SettingsError::RingMib(mib));
    }
    Ok(mib)
}

/// User stack frames recorded per access: 0 to [`MAX_STACK_DEPTH`].
pub fn validate_stack_depth(depth: u32) -> Result<u32, SettingsError> {
    if depth > MAX_STACK_DEPTH {
        return Err(SettingsError::StackDepth(depth));
    }
    Ok(depth)
}

/// Shortest and longest interval between two drains of the kernel's
/// access counts.
pub const MIN_AGGREGATE_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_AGGREGATE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often access counts are read from the kernel and emitted.
pub fn validate_aggregate_interval(d: Duration) -> Result<Duration, SettingsError> {
    if !(MIN_AGGREGATE_INTERVAL..=MAX_AGGREGATE_INTERVAL).contains(&d) {
        return Err(SettingsError::AggregateInterval(d));
    }
    Ok(d)
}

/// An overhead budget in percent of the target's CPU time: a number above
/// 0 and at most 100 (`5`, `0.5`, `12.5%`).
pub fn validate_max_overhead(s: &str) -> Result<f64, SettingsError> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    t.parse::<f64>()
        .ok()
        .and_then(|p| check_max_overhead(p).ok())
        .ok_or_else(|| SettingsError::MaxOverhead(s.to_string()))
}

/// The same rule for a number already parsed (the daemon's TOML).
pub fn check_max_overhead(p: f64) -> Result<f64, SettingsError> {
    if p.is_finite() && p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(SettingsError::MaxOverhead(p.to_string()))
    }
}

/// What the kernel sends for each Go map access, besides findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessStream {
    /// Nothing (`--quiet` without a recording): findings only.
    None,
    /// Counts per (goroutine, map, call site, operation), drained at an
    /// interval: one `access_counts` event per key (the default).
    #[default]
    Counts,
    /// One record per access, with its stack (`--all-accesses`, `--record`).
    Records,
}

impl AccessStream {
    /// The kernel's `GoTargetConfig::emit_access` value.
    pub const fn kernel_value(self) -> u32 {
        use auditor_common::go_map::emit;
        match self {
            Self::None => emit::NONE,
            Self::Counts => emit::COUNTS,
            Self::Records => emit::RECORDS,
        }
    }
}

/// How the kernel object is loaded for a Go audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    /// Ring buffer size in MiB.
    pub ring_mib: u32,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self { ring_mib: 16 }
    }
}

impl LoadSettings {
    /// The ring buffer a session gets when `--ring-mib` is not given: 16
    /// MiB, room for bursts; a session whose kernel sends nothing per
    /// access ([`AccessStream::None`]: findings have their own 1 MiB ring)
    /// gets 1 MiB. The ring's pages are the kernel's, but they are mapped
    /// into the auditor twice (to read across the wrap) and count in its
    /// resident size.
    pub fn for_session(ring_mib: Option<u32>, stream: AccessStream) -> Self {
        let default = if stream == AccessStream::None { 1 } else { 16 };
        Self {
            ring_mib: ring_mib.unwrap_or(default),
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        validate_ring_mib(self.ring_mib).map(drop)
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            ring_bytes: self.ring_mib.saturating_mul(1 << 20),
            ..LoadOptions::default()
        }
    }
}

/// Where a Go audit's events go besides the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSettings {
    pub format: Format,
    /// The live log goes here instead of stdout (`-o`).
    pub file: Option<PathBuf>,
    /// When text is coloured.
    pub color: crate::output::ColorChoice,
    /// Also write every event as JSON lines here (input for `report`).
    pub record: Option<PathBuf>,
    /// Print the probe plan before tailing.
    pub show_plan: bool,
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            format: Format::Text,
            file: None,
            color: crate::output::ColorChoice::Auto,
            record: None,
            show_plan: false,
        }
    }
}

/// One Go audit (`attach`, `run`): how to load, what to attach to the
/// target, which events to show, where they go, and for how long.
#[derive(Clone, Debug)]
pub struct GoAuditSettings {
    pub load: LoadSettings,
    pub target: TargetOptions,
    pub filter: AccessFilter,
    pub output: OutputSettings,
    /// Stop after this long (default: until Ctrl-C or the target's exit).
    pub duration: Option<Duration>,
    /// Exit with [`crate::audit::FOUND_OVERLAP_STATUS`] when an overlap was found.
    pub fail_on_overlap: bool,
    /// One record per access instead of counts (`--all-accesses`).
    pub all_accesses: bool,
    /// How often access counts are drained (`--aggregate-interval`).
    pub aggregate_interval: Duration,
}

impl Default for GoAuditSettings {
    fn default() -> Self {
        Self {
            load: LoadSettings::default(),
            target: TargetOptions::default(),
            filter: AccessFilter::default(),
            output: OutputSettings::default(),
            duration: None,
            fail_on_overlap: false,
            all_accesses: false,
            aggregate_interval: DEFAULT_AGGREGATE_INTERVAL,
        }
    }
}

/// Default interval between two drains of the access counts.
pub const DEFAULT_AGGREGATE_INTERVAL: Duration = Duration::from_secs(1);

impl GoAuditSettings {
    /// Every rule these settings must satisfy (the daemon's configuration
    /// checks its own ring and stack depth with the same functions).
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.load.validate()?;
        validate_aggregate_interval(self.aggregate_interval)?;
        self.target.validate()
    }

    /// What the kernel sends per access: nothing when nobody reads
    /// accesses (`--quiet` without a recording), a record per access when
    /// asked for or recorded (`report` reads every access), counts
    /// otherwise.
    pub fn access_stream(&self) -> AccessStream {
        if self.output.record.is_some() || self.all_accesses {
            AccessStream::Records
        } else if self.filter.quiet {
            AccessStream::None
        } else {
            AccessStream::Counts
        }
    }
}

/// One bpf(2) audit (`map-auditor bpf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfAuditSettings {
    /// Only calls made by this process.
    pub pid: Option<u32>,
    /// Only calls made by processes with this command name.
    pub comm: Option<String>,
    /// Only this map id.
    pub map_id: Option<u32>,
    /// Only maps with this name.
    pub map_name: Option<String>,
    /// Maps to guard: NAME, ID or pin path.
    pub guard: Vec<String>,
    /// Executables allowed to write guarded maps.
    pub allow_exe: Vec<PathBuf>,
    /// Allowed executables must also match their SHA-256 at start.
    pub verify_hash: bool,
    /// Also show the auditor's own bpf() calls.
    pub include_self: bool,
    pub format: Format,
    pub duration: Option<Duration>,
    /// Only alerts, findings and the summary.
    pub quiet: bool,
    /// Also write every event as JSON lines here.
    pub record: Option<PathBuf>,
}

/// Parse `500ms`, `30s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 500ms, 30s, 5m, 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_must_be_a_power_of_two_from_1_to_1024_mib() {
        for ok in [1, 2, 16, 1024] {
            assert_eq!(validate_ring_mib(ok), Ok(ok));
        }
        for bad in [0, 3, 24, 2048] {
            let e = validate_ring_mib(bad).unwrap_err();
            assert_eq!(e, SettingsError::RingMib(bad));
            assert!(e.to_string().contains("--ring-mib"), "{e}");
        }
    }

    #[test]
    fn go_audit_settings_refuse_a_bad_ring_or_stack_depth() {
        assert_eq!(GoAuditSettings::default().validate(), Ok(()));
        let mut s = GoAuditSettings::default();
        s.load.ring_mib = 3;
        assert_eq!(s.validate(), Err(SettingsError::RingMib(3)));
        let mut s = GoAuditSettings::default();
        s.target.stack_depth = 17;
        assert_eq!(s.validate(), Err(SettingsError::StackDepth(17)));
    }

    #[test]
    fn max_overhead_is_a_percentage_above_0_up_to_100() {
        for (ok, v) in [("5", 5.0), ("0.5", 0.5), ("100", 100.0), ("12.5%", 12.5)] {
            assert_eq!(validate_max_overhead(ok), Ok(v));
        }
        for bad in ["0", "101", "abc", "-1", "", "nan", "inf"] {
            let e = validate_max_overhead(bad).unwrap_err();
            assert!(e.to_string().contains("--max-overhead"), "{e}");
        }
    }

    #[test]
    fn aggregate_interval_is_between_100ms_and_an_hour() {
        assert!(validate_aggregate_interval(Duration::from_secs(1)).is_ok());
        assert!(validate_aggregate_interval(Duration::from_millis(100)).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_millis(99),
            Duration::from_secs(3601),
        ] {
            let e = validate_aggregate_interval(bad).unwrap_err();
            assert!(e.to_string().contains("--aggregate-interval"), "{e}");
        }
    }

    #[test]
    fn accesses_are_counted_unless_recorded_asked_for_or_quiet() {
        let mut s = GoAuditSettings::default();
        assert_eq!(s.access_stream(), AccessStream::Counts);
        s.filter.quiet = true;
        assert_eq!(s.access_stream(), AccessStream::None);
        s.output.record = Some("r.jsonl".into());
        assert_eq!(s.access_stream(), AccessStream::Records);
        let s = GoAuditSettings {
            all_accesses: true,
            ..GoAuditSettings::default()
        };
        assert_eq!(s.access_stream(), AccessStream::Records);
    }

    #[test]
    fn detect_mode_names_round_trip() {
        for m in [
            SteppedExits::Always,
            SteppedExits::Sampled,
            SteppedExits::Off,
        ] {
            assert_eq!(m.as_str().parse::<SteppedExits>(), Ok(m));
        }
        let e = "every".parse::<SteppedExits>().unwrap_err();
        assert!(
            e.contains("--stepped-exits") && e.contains("sampled"),
            "{e}"
        );
        for m in [DetectMode::Entry, DetectMode::Interval] {
            assert_eq!(m.as_str().parse::<DetectMode>(), Ok(m));
        }
        assert!(
            "both"
                .parse::<DetectMode>()
                .unwrap_err()
                .contains("\"entry\"")
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
        assert!(parse_duration("3 weeks").is_err());
    }
}
