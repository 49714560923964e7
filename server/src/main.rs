//! The `nimbus` binary: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    nimbus::cli::run(nimbus::cli::Cli::parse())
}
