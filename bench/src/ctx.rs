//! What every figure needs: the server (emulator or a real replica set), a client on
//! it, where the release `datasync` binary is, and the run's size (quick or full).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::Client;

/// Shared state of one harness run.
pub struct Ctx {
    /// Connection string of the server under test.
    pub uri: String,
    /// A plain client on it (writers, watchers, the raw baselines).
    pub client: Client,
    /// The release `datasync` binary.
    pub datasync: PathBuf,
    /// This harness binary (re-executed for the child comparison programs).
    pub me: PathBuf,
    /// Short runs for CI.
    pub quick: bool,
    /// Database-name prefix unique to this run, so a real server is never reused dirty.
    pub prefix: String,
    /// The in-process emulator, when no URI was given.
    pub emulator: Option<Emulator>,
    /// Modelled round trip of figures 3 and 4 (emulator only; zero: none).
    pub rtt: Duration,
}

impl Ctx {
    /// Starts the emulator unless `uri` is given, and finds the binaries.
    pub async fn new(
        uri: Option<String>,
        quick: bool,
        bin_dir: Option<&Path>,
        rtt: Duration,
    ) -> anyhow::Result<Ctx> {
        let me = std::env::current_exe().context("cannot locate the harness binary")?;
        let dir = match bin_dir {
            Some(d) => d.to_path_buf(),
            None => me.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let datasync = dir.join("datasync");
        if !datasync.is_file() {
            bail!(
                "{} not found: run `cargo build --release --bins` first (or pass --bin-dir)",
                datasync.display()
            );
        }
        let (uri, emulator) = match uri {
            Some(u) => (u, None),
            None => {
                let emu = Emulator::start(EmulatorConfig::default()).await?;
                (emu.uri(), Some(emu))
            }
        };
        let client = Client::with_uri_str(&uri).await?;
        Ok(Ctx {
            uri,
            client,
            datasync,
            me,
            quick,
            prefix: format!("dsb{}", std::process::id()),
            rtt: if emulator.is_some() {
                rtt
            } else {
                Duration::ZERO
            },
            emulator,
        })
    }

    /// Turns the modelled round trip on (every reply delayed by [`Ctx::rtt`]) or off.
    /// On around the measured programs only, never while loading data.
    pub fn model_rtt(&self, on: bool) {
        if let Some(emu) = &self.emulator {
            let d = if on { self.rtt } else { Duration::ZERO };
            emu.handle().set_reply_delay(d);
        }
    }

    /// " (modelled round trip N ms)" when one is set, for the figure lines.
    pub fn rtt_note(&self) -> String {
        if self.rtt.is_zero() {
            String::new()
        } else {
            format!(" (modelled round trip {} ms)", self.rtt.as_millis())
        }
    }

    /// A database name unique to this run.
    pub fn db(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    /// Drops a database of this run (frees the emulator's memory between figures).
    pub async fn drop_db(&self, name: &str) {
        let _ = self.client.database(name).drop().await;
    }

    /// Whether the server is the in-process emulator.
    pub fn server_name(&self) -> &'static str {
        if self.emulator.is_some() {
            "in-process emulator"
        } else {
            "replica set (--uri)"
        }
    }
}
