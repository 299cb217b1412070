//! Command-line definitions (clap). Nothing here does work: `commands`
//! turns these into the library's settings. No other module sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    daemon::config::{DEFAULT_LOG_DIR, DEFAULT_SOCKET},
    settings::parse_duration,
};

#[derive(Debug, Parser)]
#[command(
    name = "map-auditor",
    version,
    about = "Audit map accesses at run time: Go maps through uprobes, BPF maps through bpf(2)",
    long_about = "Attach to a running Go process by PID and see, live, which goroutine reads, writes, \
                  iterates or deletes which map and from where; catch concurrent map accesses with \
                  both sides named. Or audit who touches which BPF map through the bpf() syscall.\n\n\
                  Needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE). Run `map-auditor doctor` \
                  to check this machine."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this kernel and these privileges can run the auditor.
    Doctor(DoctorArgs),
    /// Attach to a running Go process and tail its map accesses.
    Attach(AttachArgs),
    /// Start a Go program with probes in place before it runs, and audit it.
    Run(RunArgs),
    /// Audit bpf(2) calls on BPF maps (system-wide by default).
    Bpf(BpfArgs),
    /// Render the report of a recorded session (JSON lines file), a daemon's
    /// log directory, or a running daemon's log (--socket).
    Report(ReportArgs),
    /// Run the privileged daemon in the foreground (systemd, Kubernetes).
    Daemon(DaemonArgs),
    /// Control a running daemon: attach, detach, list, status.
    Ctl(CtlArgs),
    /// Show the daemon's audit log, and follow it across rotations.
    Tail(TailArgs),
    /// Write a shell completion script or the man page to stdout
    /// (`cargo xtask install-shell-files` installs them).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

/// What `map-auditor generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, map-auditor.1 (roff).
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

/// Render `what` from these very clap definitions, so completions and the
/// man page never drift from the flags.
pub fn generate(what: Generated) -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match what {
        Generated::Man => clap_mangen::Man::new(cmd).render(&mut out)?,
        Generated::CompleteBash => clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut cmd,
            "map-auditor",
            &mut out,
        ),
        Generated::CompleteZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "map-auditor", &mut out)
        }
        Generated::CompleteFish => clap_complete::generate(
            clap_complete::Shell::Fish,
            &mut cmd,
            "map-auditor",
            &mut out,
        ),
    }
    Ok(out)
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML configuration (docs/daemon.md); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Control socket [default: /run/map-auditor/control.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Audit log directory [default: /var/log/map-auditor].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Also write every event as JSON lines to stdout (container log pipelines).
    #[arg(long)]
    pub stdout_json: bool,
    /// Serve Prometheus metrics on ADDRESS:PORT (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Attach to a process, or watch an executable (every current and future process).
    Attach(CtlTarget),
    /// Detach a process, or stop watching an executable (detaching its processes).
    Detach(CtlTarget),
    /// Targets with their state and counters, and the watched executables.
    List,
    /// The daemon's state: targets, log, drops, memory.
    Status,
}

#[derive(Debug, Args)]
pub struct CtlTarget {
    /// Process id.
    #[arg(long, conflicts_with = "exe", required_unless_present = "exe")]
    pub pid: Option<u32>,
    /// Executable path: every process running it, now and later.
    #[arg(long)]
    pub exe: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep printing new events as they are logged (across rotations).
    #[arg(long, short)]
    pub follow: bool,
    /// Only events of this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only these kinds (comma-separated: attach,access,overlap,bpf_map,alert,lost,summary,target).
    #[arg(long, value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Start this far back (e.g. 10m, 2h) over every log file.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Without --since: how many of the latest events to show first.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub lines: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Colour text lines: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// The daemon's log directory (read directly; needs read access).
    #[arg(long, default_value = DEFAULT_LOG_DIR)]
    pub log_dir: PathBuf,
    /// Read through the daemon's control socket instead of the log files.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, colour on a terminal.
    Text,
    /// One JSON object per line (docs/events.md).
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SteppedExits {
    /// Attached all the time, whatever they cost.
    Always,
    /// Attached for windows sized to a 1% CPU budget.
    Sampled,
    /// Not placed.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectMode {
    /// Entry probes only: cheapest; catches accesses that enter while another
    /// goroutine holds the runtime's writing marker.
    Entry,
    /// Entry and RET probes: full intervals; also catches a writer entering
    /// while readers are inside. Costs more per access.
    Interval,
}

/// `--color`: when text output is coloured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

impl From<ColorArg> for crate::output::ColorChoice {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => Self::Auto,
            ColorArg::Always => Self::Always,
            ColorArg::Never => Self::Never,
        }
    }
}

/// Output and filtering options shared by `attach` and `run`.
#[derive(Debug, Args, Clone)]
pub struct GoAuditOptions {
    /// Output format of the live log.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Colour the text log: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// Only these operations (comma-separated: read,write,delete,iterate,clear,make).
    #[arg(long, value_delimiter = ',', value_parser = checked_op)]
    pub ops: Vec<String>,
    /// Only this map (hex address, e.g. 0xc000012000).
    #[arg(long, value_parser = checked_addr)]
    pub map: Option<String>,
    /// Only accesses whose calling function contains this text.
    #[arg(long)]
    pub function: Option<String>,
    /// Only accesses whose calling function is in this Go package (e.g. main, net/http).
    #[arg(long)]
    pub package: Option<String>,
    /// Stop after this long (e.g. 30s, 5m). Default: until Ctrl-C or target exit.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Print only findings and the summary (nothing is sent per access).
    #[arg(long, short)]
    pub quiet: bool,
    /// One line per access, with its stack. Without it, the kernel counts
    /// accesses per (goroutine, map, call site, operation) and one
    /// `access_counts` line per key is printed each --aggregate-interval:
    /// far cheaper for the target. --record implies it.
    #[arg(long)]
    pub all_accesses: bool,
    /// How often access counts are read and printed (100ms to 1h).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = checked_aggregate_interval)]
    pub aggregate_interval: std::time::Duration,
    /// Keep the auditor's cost below PCT percent of the target's CPU time
    /// (above 0, at most 100), estimated from probe hits and measured
    /// per-hit cost; when over, the hottest call sites outside the main
    /// module are detached first, then probes are switched on only part
    /// of the time, and the coverage is reported.
    #[arg(long, value_name = "PCT", value_parser = checked_max_overhead)]
    pub max_overhead: Option<f64>,
    /// Overlap detection mode.
    #[arg(long, value_enum, default_value_t = DetectMode::Entry)]
    pub detect: DetectMode,
    /// Entry mode: exit probes placed at call sites that read a map
    /// another goroutine writes, when the kernel must single-step them
    /// (~12 µs a hit): `sampled` keeps them attached only part of the time,
    /// so they cost at most 1% of one CPU per target, the coverage said in
    /// the summary; `always` keeps them attached; `off` does not place
    /// them. Exit probes the kernel emulates are always attached.
    #[arg(long, value_enum, default_value_t = SteppedExits::Sampled)]
    pub stepped_exits: SteppedExits,
    /// Whose map accesses are probed: `user` (the program's own code, its
    /// dependency modules, reflect and maps; the default in entry mode),
    /// `all` (every access, at the runtime's map functions; the default in
    /// interval mode), `main-module`, or Go packages (comma-separated
    /// import paths; a path includes the packages below it). Except with
    /// `all`, the calls in their code are probed instead of the runtime's
    /// map functions, so maps only other packages touch cost nothing.
    #[arg(long, value_name = "user|all|main-module|PKG[,PKG]", value_parser = crate::goexe::Scope::parse)]
    pub scope: Option<crate::goexe::Scope>,
    /// User stack frames to record per access (0-16).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub stack_depth: u32,
    /// Also write every event as JSON lines to this file (input for `report`).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Write the live log to FILE instead of stdout (the target's output
    /// then stays apart from it).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit with status 66 when an overlap was found (for CI gates).
    #[arg(long)]
    pub fail_on_overlap: bool,
    /// Ring buffer size in MiB (a power of two, 1-1024). Default: 16, or 1
    /// with --quiet and neither --record nor --all-accesses (nothing is
    /// sent per access then).
    #[arg(long)]
    pub ring_mib: Option<u32>,
    /// Print the probe plan (functions, offsets, instructions) before tailing.
    #[arg(long)]
    pub show_plan: bool,
    /// Where entry probes go: the cheapest instruction that still sees the
    /// arguments (default), or each function's first instruction (to
    /// measure the difference).
    #[arg(long, value_enum, default_value_t = Placement::Cheapest, hide = true)]
    pub placement: Placement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    Cheapest,
    FunctionStart,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process id of the Go program.
    #[arg(long, short)]
    pub pid: u32,
    #[command(flatten)]
    pub opts: GoAuditOptions,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: GoAuditOptions,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BpfArgs {
    /// Only calls made by this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only calls made by processes with this command name.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only this map id.
    #[arg(long)]
    pub map_id: Option<u32>,
    /// Only maps with this name.
    #[arg(long)]
    pub map_name: Option<String>,
    /// Raise an alert when anyone but the map's creator (or an allowed
    /// executable) writes, deletes or freezes it: NAME, ID or pin path.
    #[arg(long)]
    pub guard: Vec<String>,
    /// Executables allowed to write guarded maps.
    #[arg(long)]
    pub allow_exe: Vec<PathBuf>,
    /// Allow an --allow-exe caller only when the SHA-256 of what it runs
    /// (/proc/PID/exe, hashed when first seen) equals the file's SHA-256
    /// when the audit started.
    #[arg(long, requires = "allow_exe")]
    pub verify_hash: bool,
    /// Also show the auditor's own bpf() calls.
    #[arg(long)]
    pub include_self: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Stop after this long.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Print only alerts, findings and the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write every event as JSON lines to this file.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Dot,
    Html,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A JSON-lines recording (from `--record`), or a daemon's log directory.
    #[arg(required_unless_present = "socket")]
    pub input: Option<PathBuf>,
    /// Report on a running daemon's whole log, read through its socket.
    #[arg(long, conflicts_with = "input")]
    pub socket: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// An operation name, checked here so a typo is a usage error (exit 2).
fn checked_op(s: &str) -> Result<String, String> {
    crate::pipeline::filter::parse_op(s).map(|_| s.to_string())
}

/// `--aggregate-interval`, checked by the rule the daemon's config uses.
fn checked_aggregate_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    crate::settings::validate_aggregate_interval(d).map_err(|e| e.to_string())
}

/// `--max-overhead`, checked by the rule the daemon's config uses.
fn checked_max_overhead(s: &str) -> Result<f64, String> {
    crate::settings::validate_max_overhead(s).map_err(|e| e.to_string())
}

/// A map address, checked here so a typo is a usage error (exit 2).
fn checked_addr(s: &str) -> Result<String, String> {
    crate::pipeline::filter::parse_addr(s).map(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_page_and_completions_name_the_flags() {
        let man = String::from_utf8(generate(Generated::Man).unwrap()).unwrap();
        assert!(man.contains(".TH map-auditor"), "{}", &man[..200]);
        assert!(man.contains("attach"));
        let bash = String::from_utf8(generate(Generated::CompleteBash).unwrap()).unwrap();
        for flag in ["--fail-on-overlap", "--color", "--output", "--duration"] {
            assert!(bash.contains(flag), "{flag} missing from bash completion");
        }
        let zsh = String::from_utf8(generate(Generated::CompleteZsh).unwrap()).unwrap();
        assert!(zsh.contains("#compdef map-auditor"));
        let fish = String::from_utf8(generate(Generated::CompleteFish).unwrap()).unwrap();
        assert!(fish.contains("complete -c map-auditor"));
    }
}
