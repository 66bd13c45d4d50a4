//! The daemon under test: the real release `datasync` binary run as a subprocess with a
//! temporary config and admin socket; readiness and state read through `datasync ctl
//! --json status`; its peak RSS read from `/proc/PID/status` (VmHWM); stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::ctx::Ctx;
use crate::proc::{tail, Running};

/// Settings that differ between figures.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Database of both synced collections (`local_data`, `cloud_data`).
    pub db: String,
    /// `sync.debounce_ms`.
    pub debounce_ms: u64,
    /// `sync.max_batch`.
    pub max_batch: u64,
    /// `mode`.
    pub mode: &'static str,
    /// Cloud collection on the cloud server ([`Ctx::cloud_uri`]) rather than next to
    /// the local one.
    pub split: bool,
    /// `0`: the one-pair shorthand (`local_data` ↔ `cloud_data`); `n`: `[[pairs]]`
    /// `local_{i}` ↔ `cloud_{i}` for `i` in `0..n` (see [`pair_collections`]).
    pub pairs: usize,
}

/// The local and cloud collection of pair `i` of a `[[pairs]]` daemon.
pub fn pair_collections(i: usize) -> (String, String) {
    (format!("local_{i}"), format!("cloud_{i}"))
}

/// Quotes `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes the config file of `spec` into `dir`; returns its path and the socket path.
pub fn write_config(
    ctx: &Ctx,
    spec: &DaemonSpec,
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let socket = dir.join("admin.sock");
    let uri = toml_str(&ctx.uri);
    let cloud_uri = toml_str(if spec.split { &ctx.cloud_uri } else { &ctx.uri });
    let db = toml_str(&spec.db);
    let (local_coll, cloud_coll, pairs) = if spec.pairs == 0 {
        (
            "database = {db}\ncollection = \"local_data\"\n".replace("{db}", &db),
            "database = {db}\ncollection = \"cloud_data\"\n".replace("{db}", &db),
            String::new(),
        )
    } else {
        let mut pairs = String::new();
        for i in 0..spec.pairs {
            let (l, c) = pair_collections(i);
            pairs += &format!(
                "[[pairs]]\nname = \"p{i}\"\nlocal = {}\ncloud = {}\n",
                toml_str(&format!("{}.{l}", spec.db)),
                toml_str(&format!("{}.{c}", spec.db))
            );
        }
        (String::new(), String::new(), pairs)
    };
    let text = format!(
        r#"mode = "{mode}"
[local]
uri = {uri}
{local_coll}[cloud]
uri = {cloud_uri}
{cloud_coll}[sync]
updated_at_field = "updatedAt"
debounce_ms = {debounce}
max_batch = {max_batch}
queue_capacity = 100000
tie_break = "cloud"
[reconcile]
schedule = ""
on_start = false
[state]
database = {state}
tombstone_ttl_days = 30
[admin]
socket = {socket}
[log]
level = "{level}"
format = "pretty"
{pairs}"#,
        mode = spec.mode,
        debounce = spec.debounce_ms,
        max_batch = spec.max_batch,
        state = toml_str(&format!("{}_state", spec.db)),
        socket = toml_str(&socket.to_string_lossy()),
        level = std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let path = dir.join("datasync.toml");
    std::fs::write(&path, text)?;
    Ok((path, socket))
}

/// A running `datasync run`.
pub struct Daemon {
    /// The process (reaped by [`Daemon::stop`]).
    proc: Running,
    /// Holds the config, socket and log; removed on drop.
    dir: TempDir,
    /// Admin socket path.
    socket: PathBuf,
    /// The `datasync` binary (for `ctl`).
    bin: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until the change streams its mode reads are running.
    pub async fn start(ctx: &Ctx, spec: &DaemonSpec) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let (config, socket) = write_config(ctx, spec, dir.path())?;
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let child = Command::new(&ctx.datasync)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start datasync run")?;
        let mut d = Daemon {
            proc: Running::new(&child),
            dir,
            socket,
            bin: ctx.datasync.clone(),
        };
        d.wait_running(Duration::from_secs(60)).await?;
        Ok(d)
    }

    /// `datasync ctl --json status`, parsed.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .arg("status")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "ctl status: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    async fn wait_running(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            if let Ok(s) = self.status().await {
                let state = |side: &str| s["streams"][side]["state"].as_str().map(str::to_owned);
                // A stream the mode does not read is "disabled".
                let states = [state("local"), state("cloud")];
                let is = |s: &Option<String>, what: &str| s.as_deref() == Some(what);
                if states.iter().all(|s| is(s, "running") || is(s, "disabled"))
                    && states.iter().any(|s| is(s, "running"))
                {
                    return Ok(());
                }
                last = s.to_string();
            }
            if !self.proc.alive() {
                bail!("datasync run exited early: {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "datasync run not running after {limit:?} (last status {last}): {}",
            self.log_tail()
        )
    }

    /// The end of the daemon's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        tail(&log, 1500).to_string()
    }

    /// SIGTERM, reap, and return the daemon's peak RSS (`VmHWM` just before the signal)
    /// in KiB.
    pub async fn stop(mut self) -> anyhow::Result<u64> {
        if std::env::var_os("BENCH_DAEMON_LOG").is_some() {
            let _ = std::fs::copy(self.dir.path().join("daemon.log"), "/tmp/bench-daemon.log");
        }
        let (code, rss) = self.proc.terminate().await?;
        if code != 0 {
            bail!("datasync run exited with {code}: {}", self.log_tail());
        }
        Ok(rss)
    }
}
