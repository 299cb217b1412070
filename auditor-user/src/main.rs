use clap::Parser;
use map_auditor::cli::Cli;

fn main() {
    let _cli = Cli::parse();
}
