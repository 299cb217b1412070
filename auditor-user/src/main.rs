use clap::Parser;
use map_auditor::cli::Cli;

fn main() {
    let cli = Cli::parse();
    // Temporary wiring on the bpf branch (the lead wires main.rs).
    if let map_auditor::cli::Command::Bpf(args) = &cli.command {
        match map_auditor::bpf::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        }
    }
}
