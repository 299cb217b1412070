//! The command layer: parsed flags ([`crate::cli`]) become the library's
//! settings here, once, with `TryFrom`, and each subcommand calls the
//! library with them. Values the user typed (`--ops`, `--map`, `--kind`,
//! `--ring-mib`) are parsed and checked here, so the library only ever sees
//! typed, valid settings; the daemon's TOML configuration reaches the same
//! settings and is checked by the same functions.

use anyhow::{Context, Result};

use crate::{
    audit::engine::TargetOptions,
    cli::{
        self, AttachArgs, BpfArgs, Cli, Command, CtlArgs, CtlTarget, DaemonArgs, GoAuditOptions,
        ReportArgs, RunArgs, TailArgs,
    },
    daemon::{
        client::{CtlCommand, CtlSettings, TailSettings},
        config::DaemonConfig,
        protocol::TargetSpec,
    },
    event::{EventKind, kinds::parse_op},
    output::report::ReportSettings,
    pipeline::filter::{AccessFilter, parse_addr},
    settings::{
        BpfAuditSettings, DetectMode, Format, GoAuditSettings, LoadSettings, OutputSettings,
        ReportFormat, SteppedExits,
    },
};

/// Run one parsed command line; the process exit code on success.
pub fn run(cli: &Cli) -> Result<i32> {
    match &cli.command {
        Command::Doctor(args) => crate::doctor::run(args.json),
        Command::Report(args) => {
            let settings = ReportSettings::from(args);
            if crate::daemon::client::is_daemon_report(&settings) {
                crate::daemon::client::report(&settings)
            } else {
                crate::output::report::run_report(&settings).map(|()| 0)
            }
        }
        Command::Ctl(args) => crate::daemon::client::ctl(&CtlSettings::try_from(args)?),
        Command::Tail(args) => crate::daemon::client::tail(&TailSettings::try_from(args)?),
        // bpf(2) auditing runs its own single-threaded runtime.
        Command::Bpf(args) => crate::bpf::run(&BpfAuditSettings::from(args)),
        Command::Attach(AttachArgs { pid, opts }) => {
            let settings = GoAuditSettings::try_from(opts)?;
            block_on(crate::audit::attach(*pid, &settings))
        }
        Command::Run(RunArgs { opts, command }) => {
            let settings = GoAuditSettings::try_from(opts)?;
            block_on(crate::audit::run(command, &settings))
        }
        Command::Generate { what } => {
            let bytes = cli::generate(*what)?;
            crate::output::pipe::print(&String::from_utf8_lossy(&bytes)).map(|()| 0)
        }
        Command::Daemon(args) => {
            let config = DaemonConfig::try_from(args)?;
            block_on(crate::daemon::run(config))
        }
    }
}

/// The Go audits and the daemon run on a small multi-threaded runtime.
fn block_on(f: impl std::future::Future<Output = Result<i32>>) -> Result<i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?
        .block_on(f)
}

impl From<cli::Format> for Format {
    fn from(f: cli::Format) -> Self {
        match f {
            cli::Format::Text => Self::Text,
            cli::Format::Json => Self::Json,
        }
    }
}

impl From<cli::DetectMode> for DetectMode {
    fn from(d: cli::DetectMode) -> Self {
        match d {
            cli::DetectMode::Entry => Self::Entry,
            cli::DetectMode::Interval => Self::Interval,
        }
    }
}

impl From<cli::SteppedExits> for SteppedExits {
    fn from(d: cli::SteppedExits) -> Self {
        match d {
            cli::SteppedExits::Always => Self::Always,
            cli::SteppedExits::Sampled => Self::Sampled,
            cli::SteppedExits::Off => Self::Off,
        }
    }
}

impl From<cli::ReportFormat> for ReportFormat {
    fn from(f: cli::ReportFormat) -> Self {
        match f {
            cli::ReportFormat::Text => Self::Text,
            cli::ReportFormat::Json => Self::Json,
            cli::ReportFormat::Dot => Self::Dot,
            cli::ReportFormat::Html => Self::Html,
        }
    }
}

impl TryFrom<&GoAuditOptions> for AccessFilter {
    type Error = anyhow::Error;

    fn try_from(opts: &GoAuditOptions) -> Result<Self> {
        let ops = if opts.ops.is_empty() {
            None
        } else {
            Some(
                opts.ops
                    .iter()
                    .map(|s| parse_op(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(anyhow::Error::msg)?,
            )
        };
        let map = opts
            .map
            .as_deref()
            .map(parse_addr)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            ops,
            map,
            function: opts.function.clone(),
            package: opts.package.clone(),
            quiet: opts.quiet,
        })
    }
}

impl TryFrom<&GoAuditOptions> for GoAuditSettings {
    type Error = anyhow::Error;

    fn try_from(opts: &GoAuditOptions) -> Result<Self> {
        let mut settings = Self {
            load: LoadSettings::default(),
            target: TargetOptions {
                detect: opts.detect.into(),
                scope: opts.scope.clone(),
                stack_depth: opts.stack_depth,
                function_start: opts.placement == cli::Placement::FunctionStart,
                max_overhead: opts.max_overhead,
                stepped_exits: opts.stepped_exits.into(),
                ..TargetOptions::default()
            },
            filter: AccessFilter::try_from(opts)?,
            output: OutputSettings {
                format: opts.format.into(),
                file: opts.output.clone(),
                color: opts.color.into(),
                record: opts.record.clone(),
                show_plan: opts.show_plan,
            },
            duration: opts.duration,
            fail_on_overlap: opts.fail_on_overlap,
            all_accesses: opts.all_accesses,
            aggregate_interval: opts.aggregate_interval,
        };
        settings.load = LoadSettings::for_session(opts.ring_mib, settings.access_stream());
        settings.validate()?;
        Ok(settings)
    }
}

impl TryFrom<&TailArgs> for TailSettings {
    type Error = anyhow::Error;

    fn try_from(args: &TailArgs) -> Result<Self> {
        let kinds = args
            .kind
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| k.parse::<EventKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            follow: args.follow,
            pid: args.pid,
            kinds,
            since: args.since,
            lines: args.lines,
            format: args.format.into(),
            color: args.color.into(),
            log_dir: args.log_dir.clone(),
            socket: args.socket.clone(),
        })
    }
}

impl TryFrom<&CtlTarget> for TargetSpec {
    type Error = anyhow::Error;

    fn try_from(t: &CtlTarget) -> Result<Self> {
        match (t.pid, &t.exe) {
            (Some(pid), _) => Ok(Self::Pid(pid)),
            (None, Some(exe)) => Ok(Self::Exe(exe.clone())),
            (None, None) => anyhow::bail!("give --pid PID or --exe PATH"),
        }
    }
}

impl TryFrom<&CtlArgs> for CtlSettings {
    type Error = anyhow::Error;

    fn try_from(args: &CtlArgs) -> Result<Self> {
        let command = match &args.command {
            cli::CtlCommand::Attach(t) => CtlCommand::Attach(t.try_into()?),
            cli::CtlCommand::Detach(t) => CtlCommand::Detach(t.try_into()?),
            cli::CtlCommand::List => CtlCommand::List,
            cli::CtlCommand::Status => CtlCommand::Status,
        };
        Ok(Self {
            socket: args.socket.clone(),
            json: args.json,
            command,
        })
    }
}

impl From<&ReportArgs> for ReportSettings {
    fn from(args: &ReportArgs) -> Self {
        Self {
            input: args.input.clone(),
            socket: args.socket.clone(),
            format: args.format.into(),
            output: args.output.clone(),
        }
    }
}

impl From<&BpfArgs> for BpfAuditSettings {
    fn from(args: &BpfArgs) -> Self {
        Self {
            pid: args.pid,
            comm: args.comm.clone(),
            map_id: args.map_id,
            map_name: args.map_name.clone(),
            guard: args.guard.clone(),
            allow_exe: args.allow_exe.clone(),
            verify_hash: args.verify_hash,
            include_self: args.include_self,
            format: args.format.into(),
            duration: args.duration,
            quiet: args.quiet,
            record: args.record.clone(),
        }
    }
}

/// The daemon's settings: the configuration file, then the flags over it,
/// validated as a whole.
impl TryFrom<&DaemonArgs> for DaemonConfig {
    type Error = anyhow::Error;

    fn try_from(args: &DaemonArgs) -> Result<Self> {
        let mut cfg = match &args.config {
            Some(p) => DaemonConfig::load(p)?,
            None => DaemonConfig::default(),
        };
        if let Some(s) = &args.socket {
            cfg.socket = s.clone();
        }
        if let Some(d) = &args.log_dir {
            cfg.log_dir = d.clone();
        }
        if args.stdout_json {
            cfg.stdout_json = true;
        }
        if let Some(m) = &args.metrics_listen {
            cfg.metrics_listen = Some(m.parse().with_context(|| {
                format!("--metrics-listen {m:?} is not ADDRESS:PORT, e.g. 127.0.0.1:9464")
            })?);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use auditor_common::go_map::MapOp;
    use clap::Parser;

    use super::*;
    use crate::settings::SettingsError;

    fn go_settings(args: &[&str]) -> Result<GoAuditSettings> {
        let cli = Cli::try_parse_from(
            ["map-auditor", "attach", "--pid", "1"]
                .iter()
                .chain(args)
                .copied(),
        )
        // A bad --ops or --map is refused by clap already (a usage error,
        // exit 2), with the same words.
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let Command::Attach(a) = &cli.command else {
            unreachable!()
        };
        GoAuditSettings::try_from(&a.opts)
    }

    #[test]
    fn ops_and_map_are_typed_at_the_edge() {
        let s = go_settings(&["--ops", "write,delete", "--map", "0xc000012000"]).unwrap();
        assert_eq!(s.filter.ops, Some(vec![MapOp::Write, MapOp::Delete]));
        assert_eq!(s.filter.map, Some(0xc000012000));
        let e = go_settings(&["--ops", "upsert"]).unwrap_err();
        assert!(e.to_string().contains("use read, write"), "{e}");
        let e = go_settings(&["--map", "xyz"]).unwrap_err();
        assert!(e.to_string().contains("invalid map address"), "{e}");
    }

    #[test]
    fn ring_mib_is_refused_by_the_flags_as_by_the_daemon_config() {
        for bad in ["3", "0"] {
            let flag = go_settings(&["--ring-mib", bad]).unwrap_err();
            let toml = DaemonConfig::from_toml(&format!("ring_mib = {bad}"), "d.toml")
                .unwrap_err()
                .to_string();
            let mib: u32 = bad.parse().unwrap();
            assert_eq!(
                flag.downcast_ref::<SettingsError>(),
                Some(&SettingsError::RingMib(mib))
            );
            assert_eq!(toml, format!("config: {flag}"));
        }
        assert_eq!(go_settings(&["--ring-mib", "4"]).unwrap().load.ring_mib, 4);
    }

    #[test]
    fn a_findings_only_session_gets_a_small_ring_unless_told() {
        let mib = |args: &[&str]| go_settings(args).unwrap().load.ring_mib;
        assert_eq!(mib(&[]), 16);
        assert_eq!(mib(&["--quiet"]), 1);
        assert_eq!(mib(&["--quiet", "--record", "r.jsonl"]), 16);
        assert_eq!(mib(&["--quiet", "--all-accesses"]), 16);
        assert_eq!(mib(&["--quiet", "--ring-mib", "8"]), 8);
    }

    #[test]
    fn quiet_and_detect_reach_the_settings() {
        let s = go_settings(&["-q", "--detect", "interval", "--stack-depth", "3"]).unwrap();
        assert!(s.filter.quiet);
        assert_eq!(s.target.detect, DetectMode::Interval);
        assert_eq!(s.target.stack_depth, 3);
    }

    #[test]
    fn tail_kinds_are_typed_and_a_bad_one_is_named() {
        let parse = |kinds: &str| {
            let cli = Cli::try_parse_from(["map-auditor", "tail", "--kind", kinds]).unwrap();
            let Command::Tail(t) = &cli.command else {
                unreachable!()
            };
            TailSettings::try_from(t)
        };
        let t = parse("overlap, target").unwrap();
        assert_eq!(t.kinds, [EventKind::Overlap, EventKind::Target]);
        let e = parse("overlap,bogus").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown event kind \"bogus\": use attach"),
            "{e}"
        );
    }

    #[test]
    fn ctl_targets_become_protocol_targets() {
        let cli = Cli::try_parse_from(["map-auditor", "ctl", "attach", "--exe", "/bin/x"]).unwrap();
        let Command::Ctl(c) = &cli.command else {
            unreachable!()
        };
        let s = CtlSettings::try_from(c).unwrap();
        assert_eq!(
            s.command,
            CtlCommand::Attach(TargetSpec::Exe("/bin/x".into()))
        );
    }
}
