//! Command-line interface (clap derive). Exit codes: 0 success, 1 runtime failure or an
//! error reply from the daemon, 2 invalid configuration or usage, 3 daemon unreachable
//! (`ctl`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use datasync::core::Mode;

/// Keep two MongoDB collections in sync both ways, in near real time.
#[derive(Debug, Parser)]
#[command(name = "datasync", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Changes flow both ways, last writer wins.
    BothWays,
    /// Only local → cloud.
    LocalToCloud,
    /// Only cloud → local.
    CloudToLocal,
    /// Cloud is authoritative; local is made identical.
    OverwriteLocal,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::BothWays => Mode::BothWays,
            ModeArg::LocalToCloud => Mode::LocalToCloud,
            ModeArg::CloudToLocal => Mode::CloudToLocal,
            ModeArg::OverwriteLocal => Mode::OverwriteLocal,
        }
    }
}

/// `seed --side` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedSide {
    /// The local collection.
    Local,
    /// The cloud collection.
    Cloud,
    /// Both collections (the same documents on each).
    Both,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sync daemon in the foreground.
    Run {
        /// Configuration file (default /etc/datasync/datasync.toml, optional).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Talk to a running daemon over its admin socket.
    Ctl {
        /// Admin socket path.
        #[arg(long, env = "DATASYNC_ADMIN__SOCKET", default_value = datasync::daemon::config::raw::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the daemon's JSON reply as is.
        #[arg(long)]
        json: bool,
        /// The request.
        #[command(subcommand)]
        request: CtlRequest,
    },
    /// Run one full reconcile without a daemon and print its report.
    Reconcile {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Mode (default: the configured one).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate and print the effective configuration (passwords redacted).
    CheckConfig {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Insert dummy documents {name, value, updatedAt}.
    Seed {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How many documents.
        #[arg(long)]
        count: u64,
        /// Where to insert them.
        #[arg(long, value_enum, default_value = "local")]
        side: SeedSide,
    },
    /// See it work without MongoDB: embedded emulator, daemon and scripted live writes.
    #[cfg(feature = "demo")]
    Demo {
        /// Documents seeded on local before the daemon starts.
        #[arg(long, default_value_t = 1000)]
        docs: u64,
        /// Exit after the script (0 when every step arrived in time).
        #[arg(long)]
        once: bool,
    },
}

/// `ctl` requests.
#[derive(Debug, Subcommand)]
pub enum CtlRequest {
    /// Show the daemon's state, lag and counters.
    Status,
    /// Run one full reconcile now (waits for a running one first) and print its report.
    Sync {
        /// Reconcile only this collection pair (names: `ctl status`); default: all.
        #[arg(long)]
        pair: Option<String>,
        /// Mode (default: the configured one).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop applying changes (they are still read and queued).
    Pause,
    /// Resume applying changes.
    Resume,
}
