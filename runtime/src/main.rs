use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sluice::cli::main(sluice::cli::Cli::parse())
}
