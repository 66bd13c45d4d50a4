//! End to end through the real binary: `datasync run` against the in-process MongoDB
//! emulator (or the replica set in `DATASYNC_TEST_MONGODB_URI`), driven with the mongodb
//! driver and `datasync ctl`: changes arrive within a second, `ctl` replies, pause and
//! resume, SIGHUP reload, SIGTERM drain with exit 0, and `datasync demo --once`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::Collection;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_datasync");

/// A MongoDB to test against: the emulator, or a real one.
struct Mongo {
    /// Connection string.
    uri: String,
    /// The emulator when no real deployment was given.
    _emulator: Option<Emulator>,
}

async fn mongo() -> Mongo {
    match std::env::var("DATASYNC_TEST_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => Mongo {
            uri,
            _emulator: None,
        },
        _ => {
            let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
            Mongo {
                uri: emulator.uri(),
                _emulator: Some(emulator),
            }
        }
    }
}

/// A `datasync run` child process with its own database names.
struct Daemon {
    /// The process (killed on drop).
    child: Child,
    /// Admin socket.
    socket: PathBuf,
    /// Config file (rewritten by the SIGHUP test).
    config: PathBuf,
    /// stderr of the daemon.
    log: PathBuf,
    /// Local collection.
    local: Collection<Document>,
    /// Cloud collection.
    cloud: Collection<Document>,
    /// Temp dir with socket, config and log.
    _dir: tempfile::TempDir,
}

fn config_text(uri: &str, db: &str, socket: &Path, debounce_ms: u64) -> String {
    format!(
        r#"
[local]
uri = "{uri}"
database = "{db}"
[cloud]
uri = "{uri}"
database = "{db}"
[sync]
debounce_ms = {debounce_ms}
[reconcile]
schedule = ""
[state]
database = "{db}_state"
[admin]
socket = "{}"
[log]
level = "info,datasync=debug"
"#,
        socket.display()
    )
}

async fn start(m: &Mongo, name: &str) -> Daemon {
    start_with(m, name, 20).await
}

async fn start_with(m: &Mongo, name: &str, debounce_ms: u64) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("datasync.toml");
    let log = dir.path().join("stderr.log");
    let db = format!("e2e_{name}_{}", std::process::id());
    std::fs::write(&config, config_text(&m.uri, &db, &socket, debounce_ms)).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = mongodb::Client::with_uri_str(&m.uri).await.unwrap();
    let d = Daemon {
        child,
        socket,
        config,
        log,
        local: client.database(&db).collection("local_data"),
        cloud: client.database(&db).collection("cloud_data"),
        _dir: dir,
    };
    let running = eventually(Duration::from_secs(15), || async {
        let Ok(v) = d.ask(&json!({"cmd": "status"})).await else {
            return false;
        };
        v["streams"]["local"]["state"] == "running" && v["streams"]["cloud"]["state"] == "running"
    })
    .await;
    assert!(
        running.is_some(),
        "daemon not streaming; log:\n{}",
        d.log_text()
    );
    d
}

impl Daemon {
    async fn ask(&self, request: &Value) -> Result<Value, String> {
        datasync::daemon::admin::client::request_line(
            &self.socket,
            &request.to_string(),
            Duration::from_secs(2),
        )
        .await
        .map_err(|e| e.to_string())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("daemon running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    async fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .unwrap()
    }

    /// SIGTERM and wait for the exit code.
    async fn terminate(mut self) -> (Option<i32>, Duration, Daemon) {
        let t = Instant::now();
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(12), self.child.wait())
            .await
            .expect("daemon exited within 12 s")
            .unwrap();
        (status.code(), t.elapsed(), self)
    }
}

async fn eventually<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn value_of(c: &Collection<Document>, id: &str) -> Option<i32> {
    let d = c.find_one(doc! {"_id": id}).await.ok()??;
    d.get_i32("value").ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_insert_appears_on_cloud_within_a_second_and_cloud_update_comes_back() {
    let m = mongo().await;
    let d = start(&m, "flow").await;
    d.local
        .insert_one(doc! {"_id": "x", "value": 1, "updatedAt": DateTime::now()})
        .await
        .unwrap();
    let t = eventually(Duration::from_secs(1), || async {
        value_of(&d.cloud, "x").await == Some(1)
    })
    .await;
    assert!(
        t.is_some(),
        "insert not on cloud within 1 s; log:\n{}",
        d.log_text()
    );
    d.cloud
        .update_one(
            doc! {"_id": "x"},
            doc! {"$set": {"value": 2, "updatedAt": DateTime::now()}},
        )
        .await
        .unwrap();
    let t = eventually(Duration::from_secs(1), || async {
        value_of(&d.local, "x").await == Some(2)
    })
    .await;
    assert!(t.is_some(), "update not on local within 1 s");
    d.local.delete_one(doc! {"_id": "x"}).await.unwrap();
    let t = eventually(Duration::from_secs(1), || async {
        matches!(d.cloud.find_one(doc! {"_id": "x"}).await, Ok(None))
    })
    .await;
    assert!(t.is_some(), "delete not on cloud within 1 s");
    let (code, _, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_sync_pause_and_resume_against_the_running_daemon() {
    let m = mongo().await;
    let d = start(&m, "ctl").await;

    let out = d.ctl(&["--json", "status"]).await;
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], json!(true));
    assert_eq!(v["mode"], json!("both-ways"));
    assert!(v["applied"]["local_to_cloud"].is_u64(), "{v}");
    assert!(v["last_reconcile"]["finished_at"].is_string(), "{v}");
    assert_eq!(v["next_reconcile_at"], Value::Null);

    assert_eq!(d.ctl(&["pause"]).await.status.code(), Some(0));
    d.local
        .insert_many(
            (0..3).map(|i| doc! {"_id": format!("p{i}"), "value": i, "updatedAt": DateTime::now()}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        d.cloud.count_documents(doc! {}).await.unwrap(),
        0,
        "applied while paused"
    );

    let out = d
        .ctl(&["--json", "sync", "--mode", "local-to-cloud", "--dry-run"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["mode"], json!("local-to-cloud"));
    assert_eq!(v["report"]["local_to_cloud"]["inserted"], json!(3), "{v}");
    assert_eq!(
        d.cloud.count_documents(doc! {}).await.unwrap(),
        0,
        "dry run wrote"
    );

    assert_eq!(d.ctl(&["resume"]).await.status.code(), Some(0));
    let t = eventually(Duration::from_secs(2), || async {
        d.cloud.count_documents(doc! {}).await.unwrap_or(0) == 3
    })
    .await;
    assert!(t.is_some(), "not applied after resume");

    let out = d.ctl(&["sync", "--mode", "sideways"]).await;
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown mode");
    let (code, _, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_debounce_and_log_level_and_says_what_needs_a_restart() {
    let m = mongo().await;
    let d = start(&m, "hup").await;
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("debounce_ms = 20", "debounce_ms = 40\nmax_batch = 10")
        .replace("level = \"info,datasync=debug\"", "level = \"warn\"");
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    let logged = eventually(Duration::from_secs(3), || async {
        let log = d.log_text();
        log.contains("debounce changed") && log.contains("sync.max_batch")
    })
    .await;
    assert!(logged.is_some(), "reload not logged:\n{}", d.log_text());
    // The new level (warn) hides the dispatcher's debug line for this request.
    let before = d.log_text().matches("admin request").count();
    assert_eq!(
        d.ask(&json!({"cmd": "status"})).await.unwrap()["ok"],
        json!(true)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        d.log_text().matches("admin request").count(),
        before,
        "log level not applied"
    );
    let (code, _, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_saves_and_exits_0_removing_the_socket() {
    let m = mongo().await;
    // A long debounce keeps the change in the queue until the stop request.
    let d = start_with(&m, "term", 5_000).await;
    d.local
        .insert_one(doc! {"_id": "last", "value": 5, "updatedAt": DateTime::now()})
        .await
        .unwrap();
    let queued = eventually(Duration::from_secs(3), || async {
        d.ask(&json!({"cmd": "status"}))
            .await
            .is_ok_and(|v| v["queue_depth"] == json!(1))
    })
    .await;
    assert!(queued.is_some(), "change never queued");
    assert_eq!(
        value_of(&d.cloud, "last").await,
        None,
        "applied before the debounce"
    );
    let (code, took, d) = d.terminate().await;
    assert_eq!(code, Some(0), "log:\n{}", d.log_text());
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(!d.socket.exists(), "socket left behind");
    assert!(
        d.log_text().contains("datasync stopped"),
        "{}",
        d.log_text()
    );
    // Queued at the stop request: applied by the drain, not lost.
    assert_eq!(
        value_of(&d.cloud, "last").await,
        Some(5),
        "{}",
        d.log_text()
    );
}

#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_once_runs_the_script_and_exits_0() {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(BIN)
            .args(["demo", "--docs", "200", "--once"])
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("demo finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "admin socket:",
        "insert on local",
        "update on cloud",
        "delete on local",
        "conflict",
        "tie",
        "every step arrived",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{stdout}");
    }
}

/// A config file for one-shot commands (no daemon) in `dir`.
fn oneshot_config(m: &Mongo, dir: &Path, name: &str) -> (PathBuf, String) {
    let db = format!("e2e_{name}_{}", std::process::id());
    let path = dir.join("oneshot.toml");
    std::fs::write(
        &path,
        config_text(&m.uri, &db, &dir.join("unused.sock"), 20),
    )
    .unwrap();
    (path, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_then_reconcile_copies_everything_and_reports_counts() {
    let m = mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = oneshot_config(&m, dir.path(), "oneshot");
    let run = |args: Vec<&str>| {
        let config = config.clone();
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            Command::new(BIN)
                .args(&args)
                .arg("--config")
                .arg(&config)
                .env_remove("RUST_LOG")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec!["seed", "--count", "300", "--side", "local"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = mongodb::Client::with_uri_str(&m.uri).await.unwrap();
    let local: Collection<Document> = client.database(&db).collection("local_data");
    let cloud: Collection<Document> = client.database(&db).collection("cloud_data");
    assert_eq!(local.count_documents(doc! {}).await.unwrap(), 300);
    let one = local.find_one(doc! {}).await.unwrap().unwrap();
    assert!(
        one.get_str("name").is_ok() && one.get_datetime("updatedAt").is_ok(),
        "{one}"
    );

    let out = run(vec!["reconcile", "--dry-run", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], json!(true));
    assert_eq!(report["local_to_cloud"]["inserted"], json!(300), "{report}");
    assert_eq!(
        cloud.count_documents(doc! {}).await.unwrap(),
        0,
        "dry run wrote"
    );

    let out = run(vec!["reconcile", "--mode", "local-to-cloud"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("local-to-cloud") && text.contains("300"),
        "{text}"
    );
    assert_eq!(cloud.count_documents(doc! {}).await.unwrap(), 300);

    let out = run(vec!["reconcile", "--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["local_to_cloud"]["inserted"], json!(0), "{report}");
    assert_eq!(
        report["local_to_cloud"]["unchanged"],
        json!(300),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_watchdog_and_stopping_notifications() {
    let m = mongo().await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("datasync.toml");
    let db = format!("e2e_notify_{}", std::process::id());
    std::fs::write(&config, config_text(&m.uri, &db, &socket, 20)).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = child.id().unwrap().to_string();
    let mut terminated = false;
    while Instant::now() < deadline {
        let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), notify.recv(&mut buf)).await
        else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        let watchdogs = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        if !terminated && seen.iter().any(|m| m.contains("READY=1")) && watchdogs >= 2 {
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            terminated = true;
        }
        if msg.contains("STOPPING=1") {
            break;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(12), child.wait())
        .await
        .expect("exited")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_mongodb_is_retried_and_sigterm_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("datasync.toml");
    let log = dir.path().join("stderr.log");
    // Port 1 on loopback: nothing listens, connections are refused at once.
    // With a password: it must not leak through the connection errors shown below.
    let uri = "mongodb://ops:s3cr3t-pw@127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=200";
    std::fs::write(
        &config,
        config_text(uri, "e2e_unreachable", &dir.path().join("admin.sock"), 20),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let retried = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot reach MongoDB yet")
    })
    .await;
    assert!(
        retried.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon exited on a transient error"
    );
    // The admin socket answers while connecting: status says what it waits for, and
    // commands that need MongoDB get a clear error instead of a refused connection.
    let socket = dir.path().join("admin.sock");
    let ctl = |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["local", "cloud"] {
        assert_eq!(status["streams"][side]["state"], "starting", "{status}");
        let err = status["streams"][side]["last_error"].as_str().unwrap_or("");
        assert!(err.contains("cannot reach MongoDB yet"), "{status}");
    }
    // The configured pair is listed too, as starting.
    let pairs = status["pairs"].as_array().expect("pairs array");
    assert_eq!(pairs.len(), 1, "{status}");
    assert_eq!(pairs[0]["state"], "starting", "{status}");
    assert_eq!(pairs[0]["mode"], status["mode"], "{status}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t-pw"));
    let out = ctl(&["sync"]);
    assert!(!out.status.success(), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not connected to MongoDB yet"), "{text}");
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exited promptly")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!socket.exists(), "the admin socket is removed on exit");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("s3cr3t-pw"));
}
