//! Harness for the end-to-end behaviour suite: a MongoDB to test against (the in-process
//! emulator, or the replica set in `DATASYNC_TEST_MONGODB_URI`), a collection pair with
//! its own databases and temp dir, the real `datasync run` binary started (and restarted)
//! on it, the admin socket, and change-stream observers that count what reaches each
//! collection — the server-side write count that also works on a real replica set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures::StreamExt;
use mongo_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use mongodb::Collection;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_datasync");

/// Poll interval of [`eventually`].
pub const POLL: Duration = Duration::from_millis(20);

/// Default bound of [`eventually`] for a change to arrive.
pub const ARRIVE: Duration = Duration::from_secs(5);

/// A MongoDB to test against.
pub struct Mongo {
    /// Connection string.
    pub uri: String,
    /// The emulator when no real deployment was given (kept alive for the test).
    emulator: Option<Emulator>,
    /// A driver client for the test's own reads and writes.
    pub client: mongodb::Client,
}

impl Mongo {
    /// The emulator in-process on an ephemeral port, or the real deployment named by
    /// `DATASYNC_TEST_MONGODB_URI`.
    pub async fn start() -> Mongo {
        let (uri, emulator) = match std::env::var("DATASYNC_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => (uri, None),
            _ => {
                let e = Emulator::start(EmulatorConfig::default()).await.unwrap();
                (e.uri(), Some(e))
            }
        };
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        Mongo {
            uri,
            emulator,
            client,
        }
    }

    /// Emulator-only hooks (counters, forget_history); `None` on a real server.
    pub fn hooks(&self) -> Option<EmulatorHandle> {
        self.emulator.as_ref().map(|e| e.handle())
    }
}

/// Settings that vary between tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `mode`.
    pub mode: &'static str,
    /// `sync.tie_break`.
    pub tie_break: &'static str,
    /// `reconcile.on_start`.
    pub on_start: bool,
    /// `sync.debounce_ms`.
    pub debounce_ms: u64,
    /// `sync.max_future_ms`.
    pub max_future_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: "both-ways",
            tie_break: "cloud",
            on_start: false,
            debounce_ms: 20,
            max_future_ms: 300_000,
        }
    }
}

/// A local/cloud collection pair with unique databases, a temp dir and a config file.
pub struct Pair {
    /// Database of both collections (dropped by [`Pair::drop_databases`]).
    pub db: String,
    /// Database of the cloud collection: `db`, or a hub's (see [`Pair::edge_of`]).
    cloud_db: String,
    /// The local collection.
    pub local: Collection<Document>,
    /// The cloud collection.
    pub cloud: Collection<Document>,
    /// The temp dir: config, socket, logs.
    dir: tempfile::TempDir,
    /// The driver client.
    client: mongodb::Client,
    /// Daemon starts so far (names the log files).
    starts: u32,
}

/// A unique, short database name (MongoDB limits names to 63 bytes).
fn unique_db(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("es_{name}_{}_{nanos}", std::process::id())
}

impl Pair {
    /// A fresh pair named after the test.
    pub fn new(m: &Mongo, name: &str) -> Pair {
        let db = unique_db(name);
        let database = m.client.database(&db);
        Pair {
            local: database.collection("local_data"),
            cloud: database.collection("cloud_data"),
            cloud_db: db.clone(),
            db,
            dir: tempfile::tempdir().unwrap(),
            client: m.client.clone(),
            starts: 0,
        }
    }

    /// Another edge around `hub`'s cloud collection: its own local collection and state,
    /// the hub's cloud collection (many clients around one central cloud).
    #[allow(dead_code)] // used by e2e_hub only
    pub fn edge_of(m: &Mongo, name: &str, hub: &Pair) -> Pair {
        let mut p = Pair::new(m, name);
        p.cloud = hub.cloud.clone();
        p.cloud_db = hub.cloud_db.clone();
        p
    }

    /// The admin socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn config_text(&self, m: &Mongo, s: &Settings) -> String {
        format!(
            r#"mode = "{mode}"
[local]
uri = "{uri}"
database = "{db}"
[cloud]
uri = "{uri}"
database = "{cloud_db}"
[sync]
debounce_ms = {debounce}
tie_break = "{tie}"
max_future_ms = {max_future}
[reconcile]
schedule = ""
on_start = {on_start}
[state]
database = "{db}_state"
[admin]
socket = "{socket}"
[log]
level = "info,datasync=debug"
"#,
            mode = s.mode,
            uri = m.uri,
            db = self.db,
            cloud_db = self.cloud_db,
            debounce = s.debounce_ms,
            tie = s.tie_break,
            max_future = s.max_future_ms,
            on_start = s.on_start,
            socket = self.socket().display(),
        )
    }

    /// Start `datasync run` on this pair and wait until every watched stream runs.
    pub async fn start(&mut self, m: &Mongo, s: &Settings) -> Daemon {
        let text = self.config_text(m, s);
        self.start_text(&text).await
    }

    /// The config of [`Pair::start`] without the `[local]`/`[cloud]` collections and
    /// with `pairs` (`[[pairs]]` tables) appended: a daemon of several pairs.
    #[allow(dead_code)] // used by e2e_pairs only
    pub fn pairs_config(&self, m: &Mongo, s: &Settings, pairs: &str) -> String {
        let text = self.config_text(m, s);
        let text = text
            .replacen(&format!("database = \"{}\"\n", self.db), "", 1)
            .replacen(&format!("database = \"{}\"\n", self.cloud_db), "", 1);
        format!("{text}{pairs}")
    }

    /// Start `datasync run` with the config `text` and wait until every watched stream
    /// runs.
    pub async fn start_text(&mut self, text: &str) -> Daemon {
        self.starts += 1;
        let config = self.dir.path().join("datasync.toml");
        std::fs::write(&config, text).unwrap();
        let log = self.dir.path().join(format!("stderr-{}.log", self.starts));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            socket: self.socket(),
            log,
        };
        let up = eventually(Duration::from_secs(15), || async {
            let Ok(v) = d.ask(&json!({"cmd": "status"})).await else {
                return false;
            };
            ["local", "cloud"].iter().all(|side| {
                let st = &v["streams"][side]["state"];
                st == "running" || st == "disabled"
            })
        })
        .await;
        assert!(up.is_some(), "daemon not streaming; log:\n{}", d.log_text());
        d
    }

    /// Drop both databases (the pair's and its state database).
    pub async fn drop_databases(&self) {
        for db in [self.db.clone(), format!("{}_state", self.db)] {
            let _ = self.client.database(&db).drop().await;
        }
    }
}

/// A running `datasync run` process.
pub struct Daemon {
    /// The process (killed on drop).
    child: Child,
    /// Admin socket.
    pub socket: PathBuf,
    /// This run's stderr.
    log: PathBuf,
}

impl Daemon {
    /// One admin request, one reply.
    pub async fn ask(&self, request: &Value) -> Result<Value, String> {
        datasync::daemon::admin::client::request_line(
            &self.socket,
            &request.to_string(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// `status`, panicking on an error.
    pub async fn status(&self) -> Value {
        self.ask(&json!({"cmd": "status"})).await.unwrap()
    }

    /// This run's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `datasync ctl --socket … ARGS`.
    pub async fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .unwrap()
    }

    /// `datasync ctl --json ARGS`, asserting exit 0, parsed.
    pub async fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Wait until nothing is queued and both streams report no lag, twice 100 ms apart
    /// (echoes of the last writes may still be on their way to the reader).
    pub async fn idle(&self) {
        for _ in 0..2 {
            self.idle_once().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.idle_once().await;
    }

    async fn idle_once(&self) {
        let ok = eventually(ARRIVE, || async {
            let Ok(v) = self.ask(&json!({"cmd": "status"})).await else {
                return false;
            };
            v["queue_depth"] == json!(0)
                && ["local", "cloud"].iter().all(|s| {
                    let lag = &v["streams"][s]["lag_ms"];
                    lag.is_null() || *lag == json!(0)
                })
        })
        .await;
        assert!(ok.is_some(), "daemon never idle; log:\n{}", self.log_text());
    }

    /// SIGTERM, wait for exit 0; returns this run's log.
    pub async fn terminate(mut self) -> String {
        let pid = self.child.id().expect("daemon running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(12), self.child.wait())
            .await
            .expect("daemon exited within 12 s")
            .unwrap();
        let log = self.log_text();
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        log
    }
}

/// Poll `f` every [`POLL`] until it holds or `limit` passes; the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The document `id` without `_id`-independent noise, or `None`.
pub async fn get(c: &Collection<Document>, id: &str) -> Option<Document> {
    c.find_one(doc! {"_id": id}).await.unwrap()
}

/// Every document of `c`, by `_id`.
pub async fn all(c: &Collection<Document>) -> BTreeMap<String, Document> {
    let mut cur = c.find(doc! {}).await.unwrap();
    let mut out = BTreeMap::new();
    while let Some(d) = cur.next().await {
        let d = d.unwrap();
        out.insert(d.get_str("_id").unwrap().to_string(), d);
    }
    out
}

/// Wait until `id` on `c` satisfies `pred` (absent is `None`); panics after [`ARRIVE`].
pub async fn wait_for<P>(c: &Collection<Document>, id: &str, what: &str, pred: P) -> Duration
where
    P: Fn(Option<&Document>) -> bool,
{
    let t = eventually(ARRIVE, || async { pred(get(c, id).await.as_ref()) }).await;
    match t {
        Some(t) => t,
        None => panic!("{what}: {id} on {} is {:?}", c.name(), get(c, id).await),
    }
}

/// Counts change events on one collection from a change stream opened now: the number
/// of documents the server changed there (inserts, updates, replaces, deletes), the
/// real-server equivalent of the emulator's `documents_changed`.
pub struct Observer {
    /// Events seen so far.
    count: Arc<AtomicU64>,
    /// The watching task.
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Open a change stream on `c` (returns once the server has opened it).
    pub async fn watch(c: &Collection<Document>) -> Observer {
        let mut stream = c.watch().await.unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let seen = count.clone();
        let task = tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                if ev.is_ok() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Observer { count, task }
    }

    /// Events seen so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Wait for at least `n` events, then `settle` more, and return the final count.
    pub async fn settled(&self, n: u64, settle: Duration) -> u64 {
        eventually(ARRIVE, || async { self.count() >= n }).await;
        tokio::time::sleep(settle).await;
        self.count()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Print why a test (or part of it) does not run here; the line shows with `--nocapture`
/// and in the failure output, so a skip is never a silent pass.
pub fn skipped(test: &str, why: &str) {
    eprintln!("{test}: skipped: {why}");
    println!("{test}: skipped: {why}");
}
