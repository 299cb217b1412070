//! The `map-auditor` binary: parse the command line, run one subcommand,
//! print errors on one line. Exit codes: 0 ok, 1 error (or `doctor` found
//! the machine unfit), 2 bad usage; `run` exits with the target's status.

use clap::Parser;
use map_auditor::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Doctor(args) => map_auditor::doctor::run(args),
        Command::Report(args) if map_auditor::daemon::client::is_daemon_report(args) => {
            map_auditor::daemon::client::report(args)
        }
        Command::Report(args) => map_auditor::output::report::run_report(args).map(|()| 0),
        Command::Ctl(args) => map_auditor::daemon::client::ctl(args),
        Command::Tail(args) => map_auditor::daemon::client::tail(args),
        // bpf(2) auditing runs its own single-threaded runtime.
        Command::Bpf(args) => map_auditor::bpf::run(args),
        other => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    match other {
                        Command::Attach(args) => map_auditor::audit::attach(args).await,
                        Command::Run(args) => map_auditor::audit::run(args).await,
                        Command::Daemon(args) => map_auditor::daemon::run(args).await,
                        Command::Doctor(_)
                        | Command::Report(_)
                        | Command::Bpf(_)
                        | Command::Ctl(_)
                        | Command::Tail(_) => {
                            unreachable!("handled above")
                        }
                    }
                })
            }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: the chain of causes, no backtrace.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = msg[0].clone();
            for m in &msg[1..] {
                if !line.contains(m.as_str()) {
                    line.push_str(": ");
                    line.push_str(m);
                }
            }
            eprintln!("map-auditor: {line}");
            std::process::exit(1);
        }
    }
}
