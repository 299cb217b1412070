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
pub enum DetectMode {
    /// Entry probes only: cheapest; catches accesses that enter while another
    /// goroutine holds the runtime's writing marker.
    Entry,
    /// Entry and RET probes: full intervals; also catches a writer entering
    /// while readers are inside. Costs more per access.
    Interval,
}

/// Output and filtering options shared by `attach` and `run`.
#[derive(Debug, Args, Clone)]
pub struct GoAuditOptions {
    /// Output format of the live log.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only these operations (comma-separated: read,write,delete,iterate,clear,make).
    #[arg(long, value_delimiter = ',')]
    pub ops: Vec<String>,
    /// Only this map (hex address, e.g. 0xc000012000).
    #[arg(long)]
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
    /// Print only findings and the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Overlap detection mode.
    #[arg(long, value_enum, default_value_t = DetectMode::Entry)]
    pub detect: DetectMode,
    /// User stack frames to record per access (0-16).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub stack_depth: u32,
    /// Also write every event as JSON lines to this file (input for `report`).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Ring buffer size in MiB (a power of two, 1-1024).
    #[arg(long, default_value_t = 16)]
    pub ring_mib: u32,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
