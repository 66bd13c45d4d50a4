//! The binary's edge: turns parsed arguments into library calls, prints results, maps
//! failures to exit codes. `anyhow` is used here and nowhere in the library.

pub mod args;
pub mod ctl;
#[cfg(feature = "demo")]
pub mod demo;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod seed;

use std::path::PathBuf;
use std::process::ExitCode;

use datasync::daemon::config::{self, Config, ConfigSource};
use datasync::daemon::logging::{self, LogReload};
use datasync::daemon::{self as lib, RunOptions};
use tokio_util::sync::CancellationToken;

use args::{Cli, Command};

/// A runtime failure, or the daemon answered an error.
pub const EXIT_FAILURE: u8 = 1;
/// Invalid configuration (any command) or command line.
pub const EXIT_CONFIG: u8 = 2;
/// `ctl` could not reach the daemon.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Load the configuration or explain why not (exit code 2).
fn load_config(path: Option<PathBuf>) -> Result<(Config, ConfigSource), ExitCode> {
    let source = ConfigSource::from_arg(path);
    match config::load(&source) {
        Ok(c) => Ok((c, source)),
        Err(e) => {
            eprintln!("datasync: invalid configuration:");
            for p in &e.problems {
                eprintln!("  {p}");
            }
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn init_logs(config: &Config) -> Option<LogReload> {
    logging::init(&config.log.level, config.log.format)
}

fn runtime() -> tokio::runtime::Runtime {
    // Building a runtime fails only when the OS refuses threads or an epoll fd: nothing
    // sensible can run then.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed");
            eprintln!("datasync: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Execute `cli`.
pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => {
            let (config, source) = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let log_reload = init_logs(&config);
            let opts = RunOptions {
                config_source: Some(source),
                log_reload,
                signals: true,
                ..RunOptions::default()
            };
            let result = runtime().block_on(lib::run_with(config, CancellationToken::new(), opts));
            finish(result.map_err(Into::into))
        }
        Command::Ctl {
            socket,
            json,
            request,
        } => runtime().block_on(ctl::ctl(&socket, json, request)),
        Command::Reconcile {
            config,
            mode,
            dry_run,
            json,
        } => {
            let (config, _) = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logs(&config);
            finish(runtime().block_on(reconcile::reconcile(
                &config,
                mode.map(Into::into),
                dry_run,
                json,
            )))
        }
        Command::CheckConfig { config } => match load_config(config) {
            Ok((config, _)) => {
                print!("{}", config.to_toml_redacted());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Seed {
            config,
            count,
            side,
        } => {
            let (config, _) = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logs(&config);
            finish(runtime().block_on(seed::seed(&config, count, side)))
        }
        #[cfg(feature = "demo")]
        Command::Demo { docs, once } => {
            logging::init("warn", config::LogFormat::Pretty);
            match runtime().block_on(demo::demo(docs, once)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_FAILURE),
                Err(e) => finish(Err(e)),
            }
        }
    }
}
