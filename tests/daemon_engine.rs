//! The daemon shell around the real engine, over the core's in-memory stores: changes
//! flow, `status`/`sync`/`pause`/`resume` over the admin socket reflect the engine, and
//! stopping drains what is queued. (The same flows against MongoDB wire protocol are in
//! the end-to-end tests with the emulator.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime};
use datasync::core::memory::{MemoryState, MemoryStore};
use datasync::core::{Key, Side, Stores};
use datasync::daemon::admin::client;
use datasync::daemon::config::{raw::RawConfig, Config};
use datasync::daemon::{run_with_stores, DaemonError, RunOptions};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A daemon over memory stores.
struct Daemon {
    /// Local collection.
    local: MemoryStore,
    /// Cloud collection.
    cloud: MemoryStore,
    /// Admin socket.
    socket: PathBuf,
    /// Stops the daemon.
    stop: CancellationToken,
    /// The daemon task.
    task: JoinHandle<Result<(), DaemonError>>,
    /// Keeps the socket directory.
    _dir: tempfile::TempDir,
}

async fn start(debounce_ms: u64) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let mut raw = RawConfig::default();
    raw.admin.socket = socket.display().to_string();
    raw.reconcile.schedule = String::new();
    raw.reconcile.on_start = false;
    raw.sync.debounce_ms = debounce_ms;
    let config = Config::validate(&raw).unwrap();
    let local = MemoryStore::new(Side::Local, "updatedAt", 100_000);
    let cloud = MemoryStore::new(Side::Cloud, "updatedAt", 100_000);
    let stores = Stores {
        local: Arc::new(local.clone()),
        cloud: Arc::new(cloud.clone()),
        state: Arc::new(MemoryState::new()),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_with_stores(
        config,
        stores,
        stop.clone(),
        RunOptions::default(),
    ));
    let d = Daemon {
        local,
        cloud,
        socket,
        stop,
        task,
        _dir: dir,
    };
    // Wait until both streams run (the first start reconciles, then streams).
    let ok = eventually(Duration::from_secs(5), || async {
        let Ok(v) = d.ask(r#"{"cmd":"status"}"#).await else {
            return false;
        };
        v["streams"]["local"]["state"] == json!("running")
            && v["streams"]["cloud"]["state"] == json!("running")
    })
    .await;
    assert!(
        ok.is_some(),
        "streams not running: {:?}",
        d.ask(r#"{"cmd":"status"}"#).await
    );
    d
}

impl Daemon {
    async fn ask(&self, line: &str) -> Result<Value, client::ClientError> {
        client::request_line(&self.socket, line, Duration::from_secs(2)).await
    }
    async fn stop(self) -> (MemoryStore, MemoryStore, Duration, PathBuf) {
        let t = Instant::now();
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        (self.local, self.cloud, t.elapsed(), self.socket)
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

fn key(id: &str) -> Key {
    Key(Bson::String(id.into()))
}

fn put(store: &MemoryStore, id: &str, value: i32) {
    store.put(doc! {"_id": id, "value": value, "updatedAt": DateTime::now()});
}

fn has(store: &MemoryStore, id: &str, value: i32) -> bool {
    store
        .get(&key(id))
        .is_some_and(|d| d.get_i32("value") == Ok(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_insert_appears_on_cloud_within_a_second_and_back() {
    let d = start(50).await;
    put(&d.local, "a", 1);
    let t = eventually(Duration::from_secs(1), || async { has(&d.cloud, "a", 1) }).await;
    assert!(t.is_some(), "local insert not on cloud within 1 s");
    put(&d.cloud, "a", 2);
    let t = eventually(Duration::from_secs(1), || async { has(&d.local, "a", 2) }).await;
    assert!(t.is_some(), "cloud update not on local within 1 s");
    let status = d.ask(r#"{"cmd":"status"}"#).await.unwrap();
    assert_eq!(status["applied"]["local_to_cloud"], json!(1), "{status}");
    assert_eq!(status["applied"]["cloud_to_local"], json!(1), "{status}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_over_the_socket_has_the_documented_shape() {
    let d = start(50).await;
    let v = d.ask(r#"{"cmd":"status"}"#).await.unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "ok",
        "mode",
        "paused",
        "uptime_s",
        "queue_depth",
        "streams",
        "applied",
        "conflicts",
        "skipped",
        "last_reconcile",
        "next_reconcile_at",
    ] {
        assert!(keys.contains(&k), "missing {k} in {v}");
    }
    assert_eq!(v["mode"], json!("both-ways"));
    // The first start had no checkpoint, so it reconciled: the report is there.
    let last = &v["last_reconcile"];
    assert!(last["finished_at"].is_string(), "{v}");
    assert!(last["local_to_cloud"]["inserted"].is_u64(), "{v}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_daemon_applies_nothing_until_resumed_and_sync_reports_the_difference() {
    let d = start(20).await;
    assert_eq!(
        d.ask(r#"{"cmd":"pause"}"#).await.unwrap(),
        json!({"ok": true})
    );
    put(&d.local, "p1", 1);
    put(&d.local, "p2", 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.cloud.get(&key("p1")).is_none(), "applied while paused");
    let status = d.ask(r#"{"cmd":"status"}"#).await.unwrap();
    assert_eq!(status["paused"], json!(true));

    let v = d
        .ask(r#"{"cmd":"sync","mode":"local-to-cloud","dry_run":true}"#)
        .await
        .unwrap();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["report"]["mode"], json!("local-to-cloud"));
    assert_eq!(v["report"]["local_to_cloud"]["inserted"], json!(2), "{v}");
    assert!(d.cloud.get(&key("p1")).is_none(), "dry run wrote");

    assert_eq!(
        d.ask(r#"{"cmd":"resume"}"#).await.unwrap(),
        json!({"ok": true})
    );
    let t = eventually(Duration::from_secs(2), || async {
        has(&d.cloud, "p1", 1) && has(&d.cloud, "p2", 2)
    })
    .await;
    assert!(t.is_some(), "not applied after resume");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_copies_what_streams_missed_and_reports_it() {
    let d = start(20).await;
    d.ask(r#"{"cmd":"pause"}"#).await.unwrap();
    put(&d.cloud, "c1", 7);
    let v = d
        .ask(r#"{"cmd":"sync","mode":"cloud-to-local"}"#)
        .await
        .unwrap();
    assert_eq!(v["report"]["cloud_to_local"]["inserted"], json!(1), "{v}");
    assert!(has(&d.local, "c1", 7), "sync did not write");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_the_queue_and_removes_the_socket() {
    // A long debounce keeps the change queued; stopping must apply it anyway.
    let d = start(3_000).await;
    put(&d.local, "drain", 9);
    let queued = eventually(Duration::from_secs(2), || async {
        d.ask(r#"{"cmd":"status"}"#).await.unwrap()["queue_depth"] == json!(1)
    })
    .await;
    assert!(queued.is_some(), "change never queued");
    let (_local, cloud, took, socket) = d.stop().await;
    assert!(has(&cloud, "drain", 9), "queued change lost at shutdown");
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    assert!(!Path::new(&socket).exists(), "socket left behind");
}
