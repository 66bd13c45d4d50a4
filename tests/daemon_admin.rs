//! The admin socket over a real Unix socket, with the daemon shell (`run_shell`) around
//! a stand-in engine: socket set-up and clean-up, the documented reply shapes, error
//! replies that keep the connection usable, limits, cron ticks and `datasync ctl`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datasync::core::{
    DirectionReport, EngineError, EngineStatus, Mode, PairStatus, ReconcileReport, StreamState,
    StreamStatus,
};
use datasync::daemon::admin::{client, AdminError, AdminServer, Limits};
use datasync::daemon::config::{raw::RawConfig, Config};
use datasync::daemon::control::Controller;
use datasync::daemon::{run_shell, Controls, DaemonError, RunOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Engine stand-in recording what the shell asked of it.
#[derive(Default)]
struct FakeEngine {
    /// Paused flag.
    paused: Mutex<bool>,
    /// Reconciles requested: (mode, dry_run).
    reconciles: Mutex<Vec<(Option<Mode>, bool)>>,
    /// Debounce windows set live.
    debounces: Mutex<Vec<Duration>>,
    /// Single-pair reconciles requested: (pair, mode, dry_run).
    pair_reconciles: Mutex<Vec<(String, Option<Mode>, bool)>>,
}

/// The stand-in's collection pairs.
const PAIRS: [&str; 2] = ["orders", "app.customers"];

fn pair_status(name: &str, queue: u64, l2c: u64, c2l: u64, conflicts: u64) -> PairStatus {
    PairStatus {
        name: name.into(),
        mode: Mode::BothWays,
        state: "running".into(),
        lag_ms: Some(12),
        queue_depth: queue,
        applied_local_to_cloud: l2c,
        applied_cloud_to_local: c2l,
        conflicts,
        skipped: 1,
        quarantined: 2,
        last_reconcile: None,
    }
}

#[async_trait]
impl Controller for FakeEngine {
    fn status(&self) -> EngineStatus {
        let stream = |lag| StreamStatus {
            state: StreamState::Running,
            lag_ms: lag,
            last_error: None,
        };
        EngineStatus {
            mode: Mode::BothWays,
            paused: *self.paused.lock().unwrap(),
            queue_depth: 3,
            local: stream(Some(12)),
            cloud: stream(None),
            applied_local_to_cloud: 5,
            applied_cloud_to_local: 7,
            conflicts: 1,
            conflicts_local_to_cloud: 0,
            conflicts_cloud_to_local: 1,
            skipped: 2,
            quarantined: 4,
            last_reconcile: None,
            pairs: vec![
                pair_status(PAIRS[0], 2, 4, 3, 1),
                pair_status(PAIRS[1], 1, 1, 4, 0),
            ],
        }
    }
    fn pause(&self) {
        *self.paused.lock().unwrap() = true;
    }
    fn resume(&self) {
        *self.paused.lock().unwrap() = false;
    }
    fn set_debounce(&self, d: Duration) {
        self.debounces.lock().unwrap().push(d);
    }
    async fn reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Result<ReconcileReport, EngineError> {
        self.reconciles.lock().unwrap().push((mode, dry_run));
        if mode == Some(Mode::OverwriteLocal) {
            return Err(EngineError::Config("refused by the stand-in".into()));
        }
        Ok(ReconcileReport {
            mode: mode.unwrap_or(Mode::BothWays),
            dry_run,
            local_to_cloud: DirectionReport {
                inserted: 4,
                updated: 3,
                deleted: 2,
                unchanged: 1,
                kept: 5,
            },
            cloud_to_local: DirectionReport::default(),
            conflicts: 6,
            skipped: 0,
            quarantined: 0,
            duration_ms: 9,
        })
    }
    async fn reconcile_pair(
        &self,
        name: &str,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Option<Result<ReconcileReport, EngineError>> {
        if !PAIRS.contains(&name) {
            return None;
        }
        self.pair_reconciles
            .lock()
            .unwrap()
            .push((name.to_string(), mode, dry_run));
        Some(Ok(ReconcileReport {
            mode: mode.unwrap_or(Mode::BothWays),
            dry_run,
            local_to_cloud: DirectionReport::default(),
            cloud_to_local: DirectionReport {
                inserted: 1,
                ..DirectionReport::default()
            },
            conflicts: 0,
            skipped: 0,
            quarantined: 0,
            duration_ms: 2,
        }))
    }
}

/// A running shell around a [`FakeEngine`].
struct Shell {
    /// Socket path.
    socket: PathBuf,
    /// The stand-in.
    engine: Arc<FakeEngine>,
    /// Stops the shell.
    stop: CancellationToken,
    /// The shell task.
    task: JoinHandle<Result<(), DaemonError>>,
    /// Keeps the temp dir alive.
    _dir: tempfile::TempDir,
}

fn config(socket: &Path, schedule: &str) -> Config {
    let mut raw = RawConfig::default();
    raw.admin.socket = socket.display().to_string();
    raw.reconcile.schedule = schedule.into();
    Config::validate(&raw).unwrap()
}

async fn start(schedule: &str, limits: Limits) -> Shell {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/datasync/admin.sock");
    let engine = Arc::new(FakeEngine::default());
    let stop = CancellationToken::new();
    let opts = RunOptions {
        admin_limits: limits,
        ..RunOptions::default()
    };
    let task = tokio::spawn(run_shell(
        config(&socket, schedule),
        engine.clone(),
        |token: CancellationToken| async move {
            token.cancelled().await;
            Ok(())
        },
        stop.clone(),
        opts,
        Controls::new(false).unwrap(),
    ));
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(socket.exists(), "socket not created");
    Shell {
        socket,
        engine,
        stop,
        task,
        _dir: dir,
    }
}

impl Shell {
    async fn stop(self) -> PathBuf {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.socket
    }
}

/// One client connection.
struct Conn {
    /// Reply side.
    read: BufReader<OwnedReadHalf>,
    /// Request side.
    write: OwnedWriteHalf,
}

impl Conn {
    async fn open(socket: &Path) -> Conn {
        let (r, w) = UnixStream::connect(socket).await.unwrap().into_split();
        Conn {
            read: BufReader::new(r),
            write: w,
        }
    }
    async fn send_raw(&mut self, bytes: &[u8]) -> Value {
        self.write.write_all(bytes).await.unwrap();
        self.reply().await
    }
    async fn send(&mut self, line: &str) -> Value {
        self.send_raw(format!("{line}\n").as_bytes()).await
    }
    async fn reply(&mut self) -> Value {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.read.read_line(&mut s))
            .await
            .expect("reply in time")
            .unwrap();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad reply {s:?}: {e}"))
    }
}

fn error_of(v: &Value) -> &str {
    assert_eq!(v["ok"], json!(false), "{v}");
    v["error"].as_str().expect("error string")
}

#[tokio::test]
async fn socket_is_created_0600_in_a_new_directory_and_removed_on_shutdown() {
    let shell = start("", Limits::default()).await;
    let mode = std::fs::metadata(&shell.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let path = shell.stop().await;
    assert!(!path.exists(), "socket left behind");
}

#[tokio::test]
async fn status_reply_has_the_documented_shape() {
    let shell = start("*/5 * * * *", Limits::default()).await;
    let v = Conn::open(&shell.socket)
        .await
        .send(r#"{"cmd":"status"}"#)
        .await;
    assert_eq!(v["ok"], json!(true));
    assert_eq!(v["mode"], json!("both-ways"));
    assert_eq!(v["paused"], json!(false));
    assert!(v["uptime_s"].is_u64());
    assert_eq!(v["queue_depth"], json!(3));
    assert_eq!(v["streams"]["local"]["state"], json!("running"));
    assert_eq!(v["streams"]["local"]["lag_ms"], json!(12));
    assert_eq!(v["streams"]["cloud"]["lag_ms"], Value::Null);
    assert_eq!(
        v["applied"],
        json!({"local_to_cloud": 5, "cloud_to_local": 7})
    );
    assert_eq!(v["conflicts"], json!(1));
    assert_eq!(
        v["conflicts_by_direction"],
        json!({"local_to_cloud": 0, "cloud_to_local": 1})
    );
    assert_eq!(v["skipped"], json!(2));
    assert_eq!(v["quarantined"], json!(4));
    assert_eq!(v["last_reconcile"], Value::Null);
    let next = v["next_reconcile_at"].as_str().expect("next_reconcile_at");
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    let ahead = next.signed_duration_since(chrono::Utc::now());
    assert!(ahead <= chrono::Duration::minutes(5), "{next}");
    shell.stop().await;
}

#[tokio::test]
async fn unscheduled_daemon_reports_no_next_reconcile() {
    let shell = start("", Limits::default()).await;
    let v = Conn::open(&shell.socket)
        .await
        .send(r#"{"cmd":"status"}"#)
        .await;
    assert_eq!(v["next_reconcile_at"], Value::Null);
    shell.stop().await;
}

#[tokio::test]
async fn pause_and_resume_reach_the_engine() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    assert_eq!(c.send(r#"{"cmd":"pause"}"#).await, json!({"ok": true}));
    assert_eq!(c.send(r#"{"cmd":"status"}"#).await["paused"], json!(true));
    assert_eq!(c.send(r#"{"cmd":"resume"}"#).await, json!({"ok": true}));
    assert_eq!(c.send(r#"{"cmd":"status"}"#).await["paused"], json!(false));
    shell.stop().await;
}

#[tokio::test]
async fn sync_runs_a_reconcile_in_the_requested_mode_and_replies_with_its_report() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let v = c
        .send(r#"{"cmd":"sync","mode":"cloud-to-local","dry_run":true}"#)
        .await;
    assert_eq!(v["ok"], json!(true));
    let r = &v["report"];
    assert_eq!(r["mode"], json!("cloud-to-local"));
    assert_eq!(
        r["local_to_cloud"],
        json!({"inserted": 4, "updated": 3, "deleted": 2, "unchanged": 1, "kept": 5})
    );
    assert_eq!(
        r["cloud_to_local"],
        json!({"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0, "kept": 0})
    );
    assert_eq!(r["conflicts"], json!(6));
    assert_eq!(r["skipped"], json!(0));
    assert_eq!(r["duration_ms"], json!(9));
    let v = c.send(r#"{"cmd":"sync"}"#).await;
    assert_eq!(v["report"]["mode"], json!("both-ways"));
    let failed = c.send(r#"{"cmd":"sync","mode":"overwrite-local"}"#).await;
    assert!(error_of(&failed).contains("refused by the stand-in"));
    assert_eq!(
        *shell.engine.reconciles.lock().unwrap(),
        vec![
            (Some(Mode::CloudToLocal), true),
            (None, false),
            (Some(Mode::OverwriteLocal), false)
        ]
    );
    shell.stop().await;
}

#[tokio::test]
async fn bad_requests_get_specific_errors_and_the_connection_stays_usable() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let cases = [
        ("status", "invalid JSON"),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"mode":"both-ways"}"#, "missing field \"cmd\""),
        (r#"{"cmd":42}"#, "must be a string"),
        (r#"{"cmd":"fly"}"#, "unknown cmd \"fly\""),
        (
            r#"{"cmd":"sync","mode":"sideways"}"#,
            "unknown mode 'sideways'",
        ),
        (r#"{"cmd":"sync","dry_run":"yes"}"#, "dry_run"),
        (
            r#"{"cmd":"sync","pair":7}"#,
            "field \"pair\" must be a non-empty string",
        ),
        (r#"{"cmd":"sync","pair":""}"#, "field \"pair\""),
        (
            r#"{"cmd":"status","pair":"orders"}"#,
            "unknown field \"pair\"",
        ),
        (
            r#"{"cmd":"status","verbose":true}"#,
            "unknown field \"verbose\"",
        ),
        ("", "invalid JSON"),
    ];
    for (line, needle) in cases {
        let v = c.send(line).await;
        assert!(error_of(&v).contains(needle), "{line:?} → {v}");
    }
    assert_eq!(c.send(r#"{"cmd":"status"}"#).await["ok"], json!(true));
    shell.stop().await;
}

#[tokio::test]
async fn over_long_line_is_refused_and_the_connection_stays_usable() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let mut huge = format!(r#"{{"cmd":"status","pad":"{}"}}"#, "x".repeat(70 * 1024)).into_bytes();
    huge.push(b'\n');
    let v = c.send_raw(&huge).await;
    assert!(error_of(&v).contains("longer than 65536 bytes"), "{v}");
    assert_eq!(c.send(r#"{"cmd":"pause"}"#).await, json!({"ok": true}));
    shell.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_and_the_connection_stays_usable() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let v = c.send_raw(b"{\"cmd\":\"st\xffatus\"}\n").await;
    assert!(error_of(&v).contains("UTF-8"), "{v}");
    assert_eq!(c.send(r#"{"cmd":"status"}"#).await["ok"], json!(true));
    shell.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_told_to_retry() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let shell = start("", limits).await;
    let mut first = Conn::open(&shell.socket).await;
    assert_eq!(first.send(r#"{"cmd":"status"}"#).await["ok"], json!(true));
    let mut second = Conn::open(&shell.socket).await;
    let v = second.reply().await;
    assert!(error_of(&v).contains("too many admin connections"), "{v}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = Conn::open(&shell.socket).await;
    assert_eq!(third.send(r#"{"cmd":"status"}"#).await["ok"], json!(true));
    shell.stop().await;
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let shell = start("", limits).await;
    let mut c = Conn::open(&shell.socket).await;
    let mut s = String::new();
    let n = tokio::time::timeout(Duration::from_secs(2), c.read.read_line(&mut s))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0, "expected EOF, got {s:?}");
    shell.stop().await;
}

#[tokio::test]
async fn cron_schedule_triggers_a_reconcile_in_the_configured_mode() {
    let shell = start("* * * * * *", Limits::default()).await;
    let mut ran = false;
    for _ in 0..40 {
        if !shell.engine.reconciles.lock().unwrap().is_empty() {
            ran = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ran, "no scheduled reconcile within 4 s");
    assert_eq!(shell.engine.reconciles.lock().unwrap()[0], (None, false));
    shell.stop().await;
}

#[tokio::test]
async fn stale_socket_is_replaced_but_a_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert!(matches!(
        AdminServer::bind(&path),
        Err(AdminError::InUse(_))
    ));
    drop(live); // the file stays behind, nobody listens: stale
    assert!(path.exists());
    let server = AdminServer::bind(&path).unwrap();
    assert_eq!(server.path(), path);
    drop(server);
    assert!(!path.exists(), "socket removed when the server is dropped");
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "precious").unwrap();
    assert!(matches!(
        AdminServer::bind(&path),
        Err(AdminError::NotASocket(_))
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

fn ctl(socket: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_datasync"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_prints_replies_and_exits_non_zero_on_errors() {
    let shell = start("", Limits::default()).await;
    let socket = shell.socket.clone();
    let (status_json, status_text, sync_ok, sync_err) = tokio::task::spawn_blocking(move || {
        (
            ctl(&socket, &["--json", "status"]),
            ctl(&socket, &["status"]),
            ctl(&socket, &["sync", "--mode", "cloud-to-local", "--dry-run"]),
            ctl(&socket, &["sync", "--mode", "overwrite-local"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(status_json.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&status_json.stdout).unwrap();
    assert_eq!(v["queue_depth"], json!(3));
    assert_eq!(status_text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&status_text.stdout);
    assert!(
        text.contains("both-ways") && text.contains("queue 3"),
        "{text}"
    );
    assert!(
        text.contains("conflicts 1 (local → cloud 0, cloud → local 1)"),
        "{text}"
    );
    assert_eq!(sync_ok.status.code(), Some(0));
    let text = String::from_utf8_lossy(&sync_ok.stdout);
    assert!(
        text.contains("cloud-to-local") && text.contains("dry run"),
        "{text}"
    );
    assert_eq!(sync_err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&sync_err.stderr).contains("refused by the stand-in"));
    let socket = shell.stop().await;
    let gone = tokio::task::spawn_blocking(move || ctl(&socket, &["status"]))
        .await
        .unwrap();
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_are_refused_by_their_peer_uid() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("skipped: switching to another uid needs root");
        return;
    }
    let shell = start("", Limits::default()).await;
    // Open the file permissions so only the peer-uid check stands in the way.
    let mut dir = shell.socket.parent();
    while let Some(d) =
        dir.filter(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir())
    {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = d.parent();
    }
    std::fs::set_permissions(&shell.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let socket = shell.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_datasync"))
            .args(["ctl", "--json", "--socket"])
            .arg(&socket)
            .arg("pause")
            .output()
            .expect("setpriv (util-linux) is needed for this test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("permission denied"), "{stdout}");
    assert!(
        !*shell.engine.paused.lock().unwrap(),
        "refused request reached the engine"
    );
    shell.stop().await;
}

#[tokio::test]
async fn reload_applies_debounce_and_schedule_from_the_rewritten_file() {
    use datasync::daemon::config::{self as cfg, ConfigSource};
    use datasync::daemon::control::Control;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let file = dir.path().join("datasync.toml");
    let text = |schedule: &str, debounce: u64| {
        format!(
            "[admin]\nsocket = \"{}\"\n[reconcile]\nschedule = \"{schedule}\"\n[sync]\ndebounce_ms = {debounce}\n",
            socket.display()
        )
    };
    std::fs::write(&file, text("", 50)).unwrap();
    let source = ConfigSource::Explicit(file.clone());
    let config = cfg::load(&source).unwrap();
    let engine = Arc::new(FakeEngine::default());
    let stop = CancellationToken::new();
    let controls = Controls::new(false).unwrap();
    let inject = controls.sender();
    let opts = RunOptions {
        config_source: Some(source),
        ..RunOptions::default()
    };
    let task = tokio::spawn(run_shell(
        config,
        engine.clone(),
        |token: CancellationToken| async move {
            token.cancelled().await;
            Ok(())
        },
        stop.clone(),
        opts,
        controls,
    ));
    let mut status = Value::Null;
    for _ in 0..200 {
        if let Ok(v) =
            client::request_line(&socket, r#"{"cmd":"status"}"#, Duration::from_secs(1)).await
        {
            status = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status["next_reconcile_at"], Value::Null, "{status}");

    std::fs::write(&file, text("*/5 * * * *", 120)).unwrap();
    inject.send(Control::Reload).await.unwrap();
    let mut next = Value::Null;
    for _ in 0..200 {
        let v = client::request_line(&socket, r#"{"cmd":"status"}"#, Duration::from_secs(1))
            .await
            .unwrap();
        next = v["next_reconcile_at"].clone();
        if next.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(next.is_string(), "schedule not applied: {next}");
    assert_eq!(
        *engine.debounces.lock().unwrap(),
        vec![Duration::from_millis(120)]
    );

    // An invalid file is refused and the running settings stay.
    std::fs::write(&file, text("not cron", 7)).unwrap();
    inject.send(Control::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.debounces.lock().unwrap().len(), 1);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn status_json_keeps_the_totals_and_adds_each_pair() {
    let shell = start("", Limits::default()).await;
    let v = Conn::open(&shell.socket)
        .await
        .send(r#"{"cmd":"status"}"#)
        .await;
    assert_eq!(v["queue_depth"], json!(3));
    assert_eq!(
        v["applied"],
        json!({"local_to_cloud": 5, "cloud_to_local": 7})
    );
    let pairs = v["pairs"].as_array().expect("pairs array");
    assert_eq!(pairs.len(), 2, "{v}");
    assert_eq!(pairs[0]["name"], json!("orders"));
    assert_eq!(pairs[0]["state"], json!("running"));
    assert_eq!(pairs[0]["mode"], json!("both-ways"));
    assert_eq!(pairs[0]["lag_ms"], json!(12));
    assert_eq!(pairs[0]["queue_depth"], json!(2));
    assert_eq!(
        pairs[0]["applied"],
        json!({"local_to_cloud": 4, "cloud_to_local": 3})
    );
    assert_eq!(pairs[0]["conflicts"], json!(1));
    assert_eq!(pairs[1]["name"], json!("app.customers"));
    shell.stop().await;
}

#[tokio::test]
async fn sync_with_a_pair_reconciles_only_that_pair() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let v = c
        .send(r#"{"cmd":"sync","pair":"app.customers","mode":"cloud-to-local","dry_run":true}"#)
        .await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["report"]["cloud_to_local"]["inserted"], json!(1));
    assert_eq!(
        *shell.engine.pair_reconciles.lock().unwrap(),
        vec![("app.customers".to_string(), Some(Mode::CloudToLocal), true)]
    );
    assert!(shell.engine.reconciles.lock().unwrap().is_empty());
    shell.stop().await;
}

#[tokio::test]
async fn sync_of_an_unknown_pair_is_an_error_naming_the_pairs() {
    let shell = start("", Limits::default()).await;
    let mut c = Conn::open(&shell.socket).await;
    let v = c.send(r#"{"cmd":"sync","pair":"invoices"}"#).await;
    let err = error_of(&v);
    assert!(
        err.contains("unknown pair \"invoices\"")
            && err.contains("\"orders\"")
            && err.contains("\"app.customers\""),
        "{err}"
    );
    assert!(shell.engine.pair_reconciles.lock().unwrap().is_empty());
    assert!(shell.engine.reconciles.lock().unwrap().is_empty());
    assert_eq!(c.send(r#"{"cmd":"status"}"#).await["ok"], json!(true));
    shell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_prints_a_line_per_pair_and_ctl_sync_takes_a_pair() {
    let shell = start("", Limits::default()).await;
    let socket = shell.socket.clone();
    let (status_json, status_text, sync_ok, sync_unknown) =
        tokio::task::spawn_blocking(move || {
            (
                ctl(&socket, &["--json", "status"]),
                ctl(&socket, &["status"]),
                ctl(&socket, &["sync", "--pair", "orders", "--dry-run"]),
                ctl(&socket, &["sync", "--pair", "invoices"]),
            )
        })
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&status_json.stdout).unwrap();
    assert_eq!(v["queue_depth"], json!(3));
    assert_eq!(v["pairs"][1]["name"], json!("app.customers"));
    let text = String::from_utf8_lossy(&status_text.stdout);
    assert!(text.contains("pairs (2)"), "{text}");
    assert!(
        text.contains(
            "  orders  running  lag 12 ms  queue 2  applied local → cloud 4  cloud → local 3  conflicts 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  app.customers  running  lag 12 ms  queue 1  applied local → cloud 1  cloud → local 4  conflicts 0"
        ),
        "{text}"
    );
    assert_eq!(sync_ok.status.code(), Some(0), "{sync_ok:?}");
    assert!(String::from_utf8_lossy(&sync_ok.stdout).contains("dry run"));
    assert_eq!(
        *shell.engine.pair_reconciles.lock().unwrap(),
        vec![("orders".to_string(), None, true)]
    );
    assert_eq!(sync_unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&sync_unknown.stderr);
    assert!(
        err.contains("unknown pair \"invoices\"") && err.contains("orders"),
        "{err}"
    );
    shell.stop().await;
}
