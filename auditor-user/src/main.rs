//! The `map-auditor` binary: parse the command line, run one subcommand,
//! print errors on one line. Exit codes: 0 ok, 1 error (or `doctor` found
//! the machine unfit), 2 bad usage, 66 an overlap found with
//! `--fail-on-overlap`; `run` exits with the target's status; a closed
//! stdout ends the process as SIGPIPE would.

use clap::Parser;
use map_auditor::{cli::Cli, commands};

fn main() {
    let cli = Cli::parse();
    let result = commands::run(&cli);
    match result {
        Ok(code) => std::process::exit(code),
        // The reader of our output left (`| head`): end as grep does.
        Err(e) if map_auditor::output::pipe::is_stdout_closed(&e) => {
            map_auditor::output::pipe::exit_as_sigpipe()
        }
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
