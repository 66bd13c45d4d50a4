//! Shared harness of the reliability suite: an in-process emulator, a temp config,
//! the real `datasync` binary (`run --config`) as a child process that can be killed
//! and restarted, JSON over its admin socket, its logs, and helpers to read both
//! collections and the daemon's memory use.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod load;
pub mod rng;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongo_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use mongodb::{Client, Collection};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Database of both synced collections.
pub const DB: &str = "reliability";
/// The local collection.
pub const LOCAL: &str = "local_data";
/// The cloud collection.
pub const CLOUD: &str = "cloud_data";

/// Knobs of [`Harness::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Userinfo inserted in both URIs (`user:password`), if any.
    pub userinfo: Option<String>,
    /// `reconcile.on_start`.
    pub on_start: bool,
    /// `sync.queue_capacity`.
    pub queue_capacity: u64,
    /// `sync.debounce_ms`.
    pub debounce_ms: u64,
    /// `log.level`.
    pub log_level: String,
    /// Extra TOML appended at the end of the file (e.g. a bad key).
    pub extra_toml: String,
    /// `0`: the one-pair shorthand; `n`: the synced collections as a `[[pairs]]`
    /// table (`main`) beside `n` more pairs (`extra_l{i}` ↔ `extra_c{i}` in the same
    /// database), so the daemon reads one database-level stream per side.
    pub extra_pairs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            userinfo: None,
            on_start: true,
            queue_capacity: 100_000,
            debounce_ms: 50,
            log_level: std::env::var("RELIABILITY_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            extra_toml: String::new(),
            extra_pairs: 0,
        }
    }
}

/// One test's world: emulator, temp dir with config/socket/logs, and a client.
pub struct Harness {
    /// The emulator (shut down with the harness's runtime).
    pub emulator: Emulator,
    /// Fault injection and counters.
    pub faults: EmulatorHandle,
    /// A client of the emulator for the test's own reads and writes.
    pub client: Client,
    /// Temp directory holding config, socket and logs.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The admin socket.
    pub socket: PathBuf,
    /// All daemon stderr output, appended across restarts.
    pub log: PathBuf,
    /// The URI written in the config (with userinfo when asked).
    pub daemon_uri: String,
}

/// The `datasync` binary built for this test run.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_datasync")
}

impl Harness {
    /// Start an emulator and write the config (no daemon yet).
    pub async fn start(opts: Options) -> Harness {
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .expect("emulator starts");
        let faults = emulator.handle();
        let client = Client::with_uri_str(emulator.uri())
            .await
            .expect("test client");
        let dir = tempfile::Builder::new()
            .prefix("datasync-rel-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("run").join("admin.sock");
        let config = dir.path().join("datasync.toml");
        let log = dir.path().join("daemon.log");
        let daemon_uri = match &opts.userinfo {
            Some(u) => emulator
                .uri()
                .replacen("mongodb://", &format!("mongodb://{u}@"), 1),
            None => emulator.uri(),
        };
        let (local_coll, cloud_coll, pairs) = if opts.extra_pairs == 0 {
            (
                format!("database = \"{DB}\"\ncollection = \"{LOCAL}\"\n"),
                format!("database = \"{DB}\"\ncollection = \"{CLOUD}\"\n"),
                String::new(),
            )
        } else {
            let mut pairs = format!(
                "[[pairs]]\nname = \"main\"\nlocal = \"{DB}.{LOCAL}\"\ncloud = \"{DB}.{CLOUD}\"\n"
            );
            for i in 0..opts.extra_pairs {
                pairs += &format!(
                    "[[pairs]]\nname = \"extra{i}\"\nlocal = \"{DB}.extra_l{i}\"\ncloud = \"{DB}.extra_c{i}\"\n"
                );
            }
            (String::new(), String::new(), pairs)
        };
        let toml = format!(
            r#"mode = "both-ways"
[local]
uri = "{uri}"
{local_coll}[cloud]
uri = "{uri}"
{cloud_coll}[sync]
debounce_ms = {debounce}
queue_capacity = {cap}
[reconcile]
schedule = ""
on_start = {on_start}
[state]
database = "reliability_state"
[admin]
socket = "{socket}"
[log]
level = "{level}"
format = "json"
{extra}
{pairs}"#,
            uri = daemon_uri,
            debounce = opts.debounce_ms,
            cap = opts.queue_capacity,
            on_start = opts.on_start,
            socket = socket.display(),
            level = opts.log_level,
            extra = opts.extra_toml,
        );
        std::fs::write(&config, toml).expect("write config");
        Harness {
            emulator,
            faults,
            client,
            dir,
            config,
            socket,
            log,
            daemon_uri,
        }
    }

    /// A synced collection.
    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.client.database(DB).collection(name)
    }

    /// Spawn `datasync run --config …` and wait until its admin socket answers.
    pub async fn spawn_daemon(&self) -> Daemon {
        let d = self.spawn_daemon_nowait();
        self.wait_admin(Duration::from_secs(30)).await;
        d
    }

    /// Spawn the daemon without waiting for it.
    pub fn spawn_daemon_nowait(&self) -> Daemon {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn datasync run");
        Daemon { child }
    }

    /// Wait until `status` answers on the admin socket and the engine has started (the
    /// socket also answers while MongoDB is still being reached, streams `starting`).
    pub async fn wait_admin(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(v) = try_admin(&self.socket, r#"{"cmd":"status"}"#).await {
                let started = ["local", "cloud"]
                    .iter()
                    .all(|side| v["streams"][side]["state"] != "starting");
                if v["ok"] == Value::Bool(true) && started {
                    return;
                }
            }
            assert!(
                start.elapsed() < limit,
                "daemon admin socket not answering after {limit:?}; log tail:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send one request line, read one reply line.
    pub async fn admin(&self, request: &str) -> Value {
        try_admin(&self.socket, request)
            .await
            .unwrap_or_else(|e| panic!("admin request {request} failed: {e}"))
    }

    /// `{"cmd":"status"}`.
    pub async fn status(&self) -> Value {
        self.admin(r#"{"cmd":"status"}"#).await
    }

    /// `datasync ctl --json sync` through the real CLI; returns the parsed reply.
    pub fn ctl_sync(&self) -> Value {
        let out = self.ctl(&["--json", "sync"]);
        assert!(out.status.success(), "ctl sync failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("ctl sync prints JSON")
    }

    /// Run `datasync ctl --socket S <args>`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run datasync ctl")
    }

    /// All daemon log output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.logs();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every document of `coll`, by the `_id`'s extended-JSON text.
    pub async fn dump(&self, coll: &str) -> BTreeMap<String, Document> {
        let docs: Vec<Document> = self
            .coll(coll)
            .find(doc! {})
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("cursor");
        let mut out = BTreeMap::new();
        for d in docs {
            let id = id_text(d.get("_id").unwrap_or(&Bson::Null));
            assert!(
                out.insert(id.clone(), d).is_none(),
                "duplicate _id {id} in {coll}"
            );
        }
        out
    }

    /// Wait until both collections are identical and unchanged for `stable`, and the
    /// daemon's queue is empty. Returns false on timeout.
    pub async fn wait_converged(&self, stable: Duration, limit: Duration) -> bool {
        self.wait_settled(true, stable, limit).await
    }

    /// Wait until the queue is empty and neither collection changed for `stable` (and,
    /// with `equal`, both are identical). Returns false on timeout.
    pub async fn wait_settled(&self, equal: bool, stable: Duration, limit: Duration) -> bool {
        let start = Instant::now();
        let mut since: Option<Instant> = None;
        type Both = (BTreeMap<String, Document>, BTreeMap<String, Document>);
        let mut last: Option<Both> = None;
        while start.elapsed() < limit {
            let l = self.dump(LOCAL).await;
            let c = self.dump(CLOUD).await;
            let depth = try_admin(&self.socket, r#"{"cmd":"status"}"#)
                .await
                .map(|v| v["queue_depth"].as_u64().unwrap_or(1))
                .unwrap_or(1);
            let now = (l, c);
            if (!equal || now.0 == now.1) && depth == 0 && last.as_ref() == Some(&now) {
                let s = *since.get_or_insert_with(Instant::now);
                if s.elapsed() >= stable {
                    return true;
                }
            } else {
                since = None;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

/// A canonical text for an `_id` (relaxed extended JSON, type-tagged).
pub fn id_text(id: &Bson) -> String {
    format!("{id:?}")
}

/// Connect, send `request`, read one reply line.
pub async fn try_admin(socket: &Path, request: &str) -> Result<Value, String> {
    let fut = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        let (r, mut w) = stream.into_split();
        w.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        w.write_all(b"\n").await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(r)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("bad reply {line:?}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| "admin request timed out".to_string())?
}

/// The running `datasync run` child process.
pub struct Daemon {
    /// The child.
    pub child: Child,
}

impl Daemon {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident set size (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for Harness {
    /// With `RELIABILITY_KEEP_LOGS=DIR`, a failing test leaves its daemon log in DIR.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Ok(dir) = std::env::var("RELIABILITY_KEEP_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default();
            let to = PathBuf::from(dir).join(name).with_extension("log");
            match std::fs::copy(&self.log, &to) {
                Ok(_) => eprintln!("daemon log kept in {}", to.display()),
                Err(e) => eprintln!("cannot keep the daemon log: {e}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// An environment variable parsed as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds since the Unix epoch (the emulator's clock too: same process).
pub fn now_ms() -> i64 {
    bson::DateTime::now().timestamp_millis()
}
