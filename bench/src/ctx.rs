//! What every figure needs: the server (emulator or a real replica set), a client on
//! it, where the release `datasync` binary is, and the run's size (quick or full).
//!
//! On the emulator there are two servers, as in the product's deployment: the edge's
//! local MongoDB and the cloud's. Figures 1 and 2 put both synced collections on the
//! first (one server; figure 2 measures its raw baseline, the bare relay and the daemon
//! each on a fresh one of the same kind, see [`Ctx::fresh_local`]);
//! figures 3 and 4 put the cloud collection on the second, whose replies can be
//! delayed to model the WAN round trip (`--rtt-ms`) without slowing the local side.

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
    /// Connection string of the cloud server of figures 3 and 4 (`uri` with `--uri`).
    pub cloud_uri: String,
    /// A plain client on it.
    pub cloud_client: Client,
    /// The in-process emulator standing for the cloud, when no URI was given.
    pub cloud_emulator: Option<Emulator>,
    /// Modelled WAN round trip of figure 4's official line, on the cloud side only
    /// (emulator only; zero: none).
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
        let (uri, emulator, cloud_uri, cloud_emulator) = match uri {
            Some(u) => (u.clone(), None, u, None),
            None => {
                let emu = Emulator::start(EmulatorConfig::default()).await?;
                let cloud = Emulator::start(EmulatorConfig::default()).await?;
                (emu.uri(), Some(emu), cloud.uri(), Some(cloud))
            }
        };
        let client = Client::with_uri_str(&uri).await?;
        let cloud_client = Client::with_uri_str(&cloud_uri).await?;
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
            cloud_uri,
            cloud_client,
            cloud_emulator,
        })
    }

    /// Replaces the local emulator by a fresh one (no-op with `--uri`): figures 1 and 2
    /// leave hundreds of thousands of change events in its history, which would slow
    /// loading and scanning the data of figures 3 and 4 and skew their ratios (and, in
    /// figure 2, slow each measured path down after the previous one).
    pub async fn fresh_local(&mut self) -> anyhow::Result<()> {
        let Some(old) = self.emulator.take() else {
            return Ok(());
        };
        old.shutdown().await;
        let emu = Emulator::start(EmulatorConfig::default()).await?;
        self.uri = emu.uri();
        self.client = Client::with_uri_str(&self.uri).await?;
        self.emulator = Some(emu);
        Ok(())
    }

    /// Turns the modelled WAN round trip on (every reply of the cloud server delayed by
    /// [`Ctx::rtt`]) or off. On around the measured programs only, never while loading.
    pub fn model_rtt(&self, on: bool) {
        if let Some(emu) = &self.cloud_emulator {
            let d = if on { self.rtt } else { Duration::ZERO };
            emu.handle().set_reply_delay(d);
        }
    }

    /// " (cloud round trip N ms)" when `on` and a round trip is modelled.
    pub fn rtt_note(&self, on: bool) -> String {
        if !on || self.rtt.is_zero() {
            String::new()
        } else {
            format!(
                ", cloud replies delayed {} ms (modelled WAN round trip; local undelayed)",
                self.rtt.as_millis()
            )
        }
    }

    /// A database name unique to this run.
    pub fn db(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    /// Drops a database of this run on both servers (frees the emulators' memory
    /// between figures).
    pub async fn drop_db(&self, name: &str) {
        let _ = self.client.database(name).drop().await;
        let _ = self.cloud_client.database(name).drop().await;
    }

    /// Which server(s) the run uses.
    pub fn server_name(&self) -> &'static str {
        if self.emulator.is_some() {
            "in-process emulators (figures 1-2: one server; 3-4: local and cloud apart)"
        } else {
            "replica set (--uri)"
        }
    }
}
