//! `datasync-bench`: the performance harness of issue 7. Thin: parses the command line,
//! then runs the figures ([`figures::run_all`]) or, as a child process, one of the
//! comparison programs whose time and peak memory the harness measures from outside.

mod child;
mod ctx;
mod daemon;
mod data;
mod engine_only;
mod figures;
mod lag;
mod pairs;
mod plot;
mod proc;
mod reconcile;
mod relay;
mod report;
mod stats;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Benchmarks datasync against the raw server and the naive baseline.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// The CI version: shorter runs, 100k documents for the reconcile (< 2 minutes).
    #[arg(long)]
    pub quick: bool,
    /// A MongoDB replica set to run against instead of the in-process emulator.
    #[arg(long, env = "DATASYNC_TEST_MONGODB_URI")]
    pub uri: Option<String>,
    /// Run only these figures (comma-separated: lag,throughput,reconcile,naive,engine,pairs).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Reconcile sizes in documents (default: quick 100k; full 100k and 1M).
    #[arg(long, value_delimiter = ',')]
    pub reconcile_docs: Vec<i64>,
    /// Where the SVG plots and the results text go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Directory holding the release `datasync` binary (default: next to this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Emulator only: the WAN round trip (edge <-> cloud) of figure 4's official line,
    /// modelled by delaying every reply of the cloud server (never the local one) by
    /// this many milliseconds while the reconcile and the naive baseline run. Figure 3
    /// and figure 4's informational line run undelayed. 0 disables the WAN line.
    #[arg(long, default_value_t = 10)]
    pub rtt_ms: u64,
    /// Figure 6: the number of pairs compared with one.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// A comparison program run as a child process (internal).
    #[command(subcommand)]
    pub child: Option<child::ChildCmd>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let result = match cli.child {
        Some(cmd) => rt.block_on(child::run(cmd)).map(|()| true),
        None => rt.block_on(figures::run_all(&cli)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("datasync-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
