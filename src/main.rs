//! `datasync`: parse the command line and hand over to [`cli::execute`]; everything
//! testable lives in the library (`datasync::daemon`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The daemon allocates for every change event (BSON documents, queue entries,
/// statements); mimalloc serves those about twice as fast as the system allocator
/// (profile of issue 7, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::execute(cli::args::Cli::parse())
}
