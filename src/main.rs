//! `datasync`: parse the command line and hand over to [`cli::execute`]; everything
//! testable lives in the library (`datasync::daemon`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::execute(cli::args::Cli::parse())
}
