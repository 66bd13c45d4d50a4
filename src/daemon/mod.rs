//! The daemon shell around the sync engine: configuration, the admin socket, cron
//! reconciles, signals, systemd notifications and the one-shot commands (`reconcile`,
//! `seed`, `demo`). [`run`] is the library entry point used by `datasync run` and tests.

pub mod admin;
pub mod config;
mod connecting;
pub mod control;
pub mod cron;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod run;
pub mod signals;
pub mod stores;

pub use run::{run, run_shell, run_with, run_with_stores, Controls, DaemonError, RunOptions};
