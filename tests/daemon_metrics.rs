//! The metrics endpoint and the oplog headroom, through the daemon shell: a real HTTP
//! client scrapes `/metrics` and a Prometheus text parser reads it; `/readyz` fails under
//! pause, stream loss and a stale checkpoint while `/healthz` stays up; a low headroom is
//! warned about once and shown in `status`; against the emulator, which hides its oplog,
//! that is reported once and the daemon carries on, and failing streams fail `/readyz`;
//! with MongoDB unreachable the endpoint still answers and shows no secret. The engine's
//! own statistics (conflicts per direction, batch sizes, per-event lag) are checked
//! against the emulator after syncing documents and provoking a conflict each way.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bson::Timestamp;
use datasync::core::{
    DirectionReport, EngineError, EngineStats, EngineStatus, HistogramSnapshot, Mode, PairStatus,
    ReconcileReport, Side, StreamState, StreamStatus,
};
use datasync::daemon::admin::client;
use datasync::daemon::config::{raw::RawConfig, Config};
use datasync::daemon::control::Controller;
use datasync::daemon::metrics::{HistoryProbe, Metrics, SideWindow};
use datasync::daemon::{run_shell, run_with, Controls, DaemonError, RunOptions};
use datasync::mongo::oplog::WindowError;
use mongo_emulator::{Emulator, EmulatorConfig};
use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Engine stand-in whose status the test changes.
struct FakeEngine {
    /// What `status` returns.
    status: Mutex<EngineStatus>,
}

impl FakeEngine {
    fn new() -> Arc<FakeEngine> {
        let stream = |lag| StreamStatus {
            state: StreamState::Running,
            lag_ms: lag,
            last_error: None,
        };
        Arc::new(FakeEngine {
            status: Mutex::new(EngineStatus {
                mode: Mode::BothWays,
                paused: false,
                queue_depth: 3,
                local: stream(Some(1500)),
                cloud: stream(Some(0)),
                applied_local_to_cloud: 5,
                applied_cloud_to_local: 7,
                conflicts: 3,
                conflicts_local_to_cloud: 1,
                conflicts_cloud_to_local: 2,
                skipped: 1,
                quarantined: 3,
                last_reconcile: Some((
                    bson::DateTime::now(),
                    ReconcileReport {
                        mode: Mode::BothWays,
                        dry_run: false,
                        local_to_cloud: DirectionReport {
                            inserted: 4,
                            updated: 3,
                            deleted: 2,
                            unchanged: 10,
                            kept: 6,
                        },
                        cloud_to_local: DirectionReport::default(),
                        conflicts: 1,
                        skipped: 0,
                        quarantined: 0,
                        duration_ms: 250,
                    },
                )),
                pairs: Vec::new(),
            }),
        })
    }
    fn edit(&self, f: impl FnOnce(&mut EngineStatus)) {
        f(&mut self.status.lock().unwrap());
    }
}

#[async_trait]
impl Controller for FakeEngine {
    fn status(&self) -> EngineStatus {
        self.status.lock().unwrap().clone()
    }
    fn stats(&self) -> Option<EngineStats> {
        let hist = |bounds: &[f64], buckets: &[u64], count, sum| HistogramSnapshot {
            bounds: bounds.to_vec(),
            buckets: buckets.to_vec(),
            count,
            sum,
        };
        Some(EngineStats {
            conflicts_local_to_cloud: 1,
            conflicts_cloud_to_local: 2,
            // Batches of 1, 4 and 5 keys, and one of 7000.
            batch_size: hist(&[1.0, 2.0, 5.0, 5000.0], &[1, 1, 3, 3], 4, 7010.0),
            // 0.2 s and 3 s.
            lag_local_to_cloud: hist(&[0.1, 1.0, 5.0], &[0, 1, 2], 2, 3.2),
            lag_cloud_to_local: hist(&[0.1, 1.0, 5.0], &[0, 0, 0], 0, 0.0),
        })
    }
    fn pause(&self) {
        self.edit(|s| s.paused = true);
    }
    fn resume(&self) {
        self.edit(|s| s.paused = false);
    }
    fn set_debounce(&self, _: Duration) {}
    async fn reconcile(&self, _: Option<Mode>, _: bool) -> Result<ReconcileReport, EngineError> {
        Err(EngineError::Config("refused by the stand-in".into()))
    }
    async fn reconcile_pair(
        &self,
        _: &str,
        _: Option<Mode>,
        _: bool,
    ) -> Option<Result<ReconcileReport, EngineError>> {
        None
    }
}

/// Probe stand-in: checkpoint `checkpoint_ago` seconds old, oldest entry `kept` seconds
/// before the checkpoint.
struct FakeProbe {
    /// (checkpoint age, history kept behind it), seconds.
    ages: Mutex<(u32, u32)>,
}

#[async_trait]
impl HistoryProbe for FakeProbe {
    async fn checkpoint_time(&self, _: Side) -> Result<Option<Timestamp>, String> {
        let (ago, _) = *self.ages.lock().unwrap();
        Ok(Some(Timestamp {
            time: now_s() - ago,
            increment: 1,
        }))
    }
    async fn oldest_entry(&self, _: Side) -> Result<Timestamp, WindowError> {
        let (ago, kept) = *self.ages.lock().unwrap();
        Ok(Timestamp {
            time: now_s() - ago - kept,
            increment: 1,
        })
    }
}

fn now_s() -> u32 {
    chrono::Utc::now().timestamp() as u32
}

/// A running shell with its metrics endpoint.
struct Shell {
    /// The stand-in engine.
    engine: Arc<FakeEngine>,
    /// The stand-in probe.
    probe: Arc<FakeProbe>,
    /// Where the endpoint listens.
    addr: SocketAddr,
    /// Admin socket.
    socket: PathBuf,
    /// Stops the shell.
    stop: CancellationToken,
    /// The shell.
    task: JoinHandle<Result<(), DaemonError>>,
    /// Keeps the socket directory.
    _dir: tempfile::TempDir,
}

fn config(socket: &Path, edit: impl FnOnce(&mut RawConfig)) -> Config {
    let mut raw = RawConfig::default();
    raw.admin.socket = socket.display().to_string();
    raw.reconcile.schedule = String::new();
    raw.metrics.listen = "127.0.0.1:0".into();
    raw.alarms.oplog_check_interval_s = 1;
    edit(&mut raw);
    Config::validate(&raw).unwrap()
}

async fn start(ages: (u32, u32)) -> Shell {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let engine = FakeEngine::new();
    let probe = Arc::new(FakeProbe {
        ages: Mutex::new(ages),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = CancellationToken::new();
    let opts = RunOptions {
        history_probe: Some(probe.clone()),
        metrics_bound: Some(tx),
        ..RunOptions::default()
    };
    let task = tokio::spawn(run_shell(
        config(&socket, |_| {}),
        engine.clone(),
        |token: CancellationToken| async move {
            token.cancelled().await;
            Ok(())
        },
        stop.clone(),
        opts,
        Controls::new(false).unwrap(),
    ));
    let addr = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    Shell {
        engine,
        probe,
        addr,
        socket,
        stop,
        task,
        _dir: dir,
    }
}

impl Shell {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
    async fn status(&self) -> Value {
        admin(&self.socket, r#"{"cmd":"status"}"#).await
    }
}

async fn admin(socket: &Path, line: &str) -> Value {
    client::request_line(socket, line, Duration::from_secs(2))
        .await
        .unwrap()
}

/// GET with a real HTTP client: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).await.unwrap()
}

/// [`get`], or the transport error.
async fn try_get(addr: SocketAddr, path: &str) -> Result<(u16, String), ureq::Error> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut r = agent.get(&url).call()?;
        let code = r.status().as_u16();
        Ok((code, r.body_mut().read_to_string()?))
    })
    .await
    .unwrap()
}

/// Parsed samples by `name{sorted labels}`.
fn scrape(text: &str) -> HashMap<String, f64> {
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let v = match s.value {
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => v,
            PromValue::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            PromValue::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

/// The buckets (upper bound, cumulative count) of histogram `name` with `labels`.
fn buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let found = parsed
        .samples
        .into_iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| s.value) {
        Some(PromValue::Histogram(h)) => h.iter().map(|c| (c.less_than, c.count)).collect(),
        other => panic!("no histogram {name} {labels:?}: {other:?}\n{text}"),
    }
}

async fn wait_ready(addr: SocketAddr, want: u16) -> String {
    wait_ready_for(addr, want, Duration::from_secs(5)).await
}

async fn wait_ready_for(addr: SocketAddr, want: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (code, body) = get(addr, "/readyz").await;
        if code == want || Instant::now() > deadline {
            assert_eq!(code, want, "readyz: {body}");
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_parses_and_reflects_the_engine_status() {
    let shell = start((3, 7200)).await;
    wait_ready(shell.addr, 200).await;
    let t0 = Instant::now();
    let (code, text) = get(shell.addr, "/metrics").await;
    let latency = t0.elapsed();
    assert_eq!(code, 200);
    eprintln!("scrape latency {latency:?}, {} bytes", text.len());
    let m = scrape(&text);
    let v = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{text}"))
    };
    assert_eq!(v("datasync_applied_total{direction=local_to_cloud}"), 5.0);
    assert_eq!(v("datasync_applied_total{direction=cloud_to_local}"), 7.0);
    assert_eq!(v("datasync_conflicts_total{direction=local_to_cloud}"), 1.0);
    assert_eq!(v("datasync_conflicts_total{direction=cloud_to_local}"), 2.0);
    assert_eq!(v("datasync_skipped_documents_total{}"), 1.0);
    assert_eq!(v("datasync_queue_depth{}"), 3.0);
    assert_eq!(v("datasync_quarantined_documents{}"), 3.0);
    assert_eq!(v("datasync_paused{}"), 0.0);
    assert_eq!(v("datasync_stream_state{side=local,state=running}"), 1.0);
    assert_eq!(v("datasync_stream_state{side=local,state=down}"), 0.0);
    assert_eq!(v("datasync_stream_lag_seconds{side=local}"), 1.5);
    assert_eq!(v("datasync_reconciles_total{dry_run=false,result=ok}"), 1.0);
    assert_eq!(
        v("datasync_reconcile_documents_total{direction=local_to_cloud,outcome=inserted}"),
        4.0
    );
    assert_eq!(
        v("datasync_reconcile_documents_total{direction=local_to_cloud,outcome=kept}"),
        6.0
    );
    assert_eq!(v("datasync_reconcile_conflicts_total{}"), 1.0);
    assert_eq!(
        v("datasync_reconcile_duration_seconds_count{dry_run=false,result=ok}"),
        1.0
    );
    assert!(m.contains_key("datasync_stream_lag_sampled_seconds_count{side=local}"));
    // The engine's cumulative histograms, encoded as they are: cumulative buckets up to
    // +Inf, which equals the count.
    assert_eq!(v("datasync_batch_size_count{}"), 4.0);
    assert_eq!(v("datasync_batch_size_sum{}"), 7010.0);
    assert_eq!(
        buckets(&text, "datasync_batch_size", &[]),
        [
            (1.0, 1.0),
            (2.0, 1.0),
            (5.0, 3.0),
            (5000.0, 3.0),
            (f64::INFINITY, 4.0)
        ]
    );
    let l2c = [("direction", "local_to_cloud")];
    assert_eq!(
        v("datasync_event_lag_seconds_count{direction=local_to_cloud}"),
        2.0
    );
    assert_eq!(
        v("datasync_event_lag_seconds_sum{direction=local_to_cloud}"),
        3.2
    );
    assert_eq!(
        buckets(&text, "datasync_event_lag_seconds", &l2c),
        [(0.1, 0.0), (1.0, 1.0), (5.0, 2.0), (f64::INFINITY, 2.0)]
    );
    assert_eq!(
        v("datasync_event_lag_seconds_count{direction=cloud_to_local}"),
        0.0
    );
    let headroom = v("datasync_oplog_headroom_seconds{side=cloud}");
    assert!((7190.0..=7210.0).contains(&headroom), "headroom {headroom}");
    assert_eq!(v("datasync_oplog_headroom_low{side=cloud}"), 0.0);
    assert!(v("datasync_checkpoint_age_seconds{side=local}") < 60.0);

    // Totals advance by their difference; the same reconcile is not counted twice.
    shell.engine.edit(|s| s.applied_local_to_cloud = 12);
    let m = scrape(&get(shell.addr, "/metrics").await.1);
    assert_eq!(m["datasync_applied_total{direction=local_to_cloud}"], 12.0);
    assert_eq!(m["datasync_reconciles_total{dry_run=false,result=ok}"], 1.0);
    // Nothing secret: the default URIs carry no password, but no label names one at all.
    assert!(!text.contains("mongodb://"));

    // A failed `ctl sync` is counted as an error.
    let r = admin(&shell.socket, r#"{"cmd":"sync"}"#).await;
    assert_eq!(r["ok"], false);
    let m = scrape(&get(shell.addr, "/metrics").await.1);
    assert_eq!(
        m["datasync_reconciles_total{dry_run=false,result=error}"],
        1.0
    );
    let (code, _) = get(shell.addr, "/nope").await;
    assert_eq!(code, 404);
    shell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_is_json_and_queries_only_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shell = start((3, 7200)).await;
    wait_ready(shell.addr, 200).await;
    let exported = scrape(&get(shell.addr, "/metrics").await.1);
    let names: std::collections::HashSet<&str> = exported
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut queried = 0;
    for p in panels {
        assert!(
            p["title"].is_string() && p["description"].is_string(),
            "{p}"
        );
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("datasync_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // The parser folds a histogram's `_bucket` lines into its own name.
                let base = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    names.contains(base),
                    "panel {} queries {name}, not exported; exported: {names:?}",
                    p["title"]
                );
                queried += 1;
                rest = &rest[i + name.len()..];
            }
        }
    }
    assert!(queried >= 15);
    shell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_under_pause_stream_loss_and_stale_checkpoint_while_healthz_stays_up() {
    let shell = start((2, 7200)).await;
    wait_ready(shell.addr, 200).await;

    admin(&shell.socket, r#"{"cmd":"pause"}"#).await;
    let body = wait_ready(shell.addr, 503).await;
    assert!(body.contains("paused"), "{body}");
    assert_eq!(get(shell.addr, "/healthz").await, (200, "ok\n".into()));
    admin(&shell.socket, r#"{"cmd":"resume"}"#).await;
    wait_ready(shell.addr, 200).await;

    shell.engine.edit(|s| s.local.state = StreamState::Down);
    let body = wait_ready(shell.addr, 503).await;
    assert!(body.contains("local stream is down"), "{body}");
    assert_eq!(get(shell.addr, "/healthz").await.0, 200);
    shell.engine.edit(|s| s.local.state = StreamState::Running);
    wait_ready(shell.addr, 200).await;

    // Default bound: 300 s.
    *shell.probe.ages.lock().unwrap() = (900, 7200);
    let body = wait_ready(shell.addr, 503).await;
    assert!(
        body.contains("checkpoint is") && body.contains("bound 300 s"),
        "{body}"
    );
    assert_eq!(get(shell.addr, "/healthz").await.0, 200);
    shell.stop().await;
}

/// Log lines written by the daemon during a test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let me = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || me.clone())
            .finish()
    }
}

#[tokio::test]
async fn low_headroom_is_warned_once_and_shown_in_status_and_metrics() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    // 30 min of history behind the checkpoint, alarm at the default 1 h.
    let shell = start((1, 1800)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s = shell.status().await;
        if s["oplog"]["local"]["headroom_s"].is_i64() || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let local = &status["oplog"]["local"];
    let h = local["headroom_s"].as_i64().unwrap();
    assert!((1790..=1810).contains(&h), "{status}");
    assert_eq!(local["low"], true);
    assert_eq!(status["oplog"]["headroom_min_s"], 3600);
    let m = scrape(&get(shell.addr, "/metrics").await.1);
    assert_eq!(m["datasync_oplog_headroom_low{side=local}"], 1.0);
    // Measured again (every second) without warning again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = logs.text();
    let warns = text
        .matches("oplog headroom under alarms.oplog_headroom_min")
        .count();
    assert_eq!(warns, 2, "one warning per side:\n{text}");
    assert!(
        text.contains("side=local") && text.contains("side=cloud"),
        "{text}"
    );

    // Back above the alarm: said once, flag cleared.
    *shell.probe.ages.lock().unwrap() = (1, 7200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(shell.status().await["oplog"]["local"]["low"], false);
    assert_eq!(
        logs.text()
            .matches("oplog headroom back above the alarm")
            .count(),
        2
    );
    shell.stop().await;
}

/// `run_with` (connecting to MongoDB itself) with its metrics endpoint.
async fn run_daemon(
    config: Config,
) -> (
    SocketAddr,
    CancellationToken,
    JoinHandle<Result<(), DaemonError>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = CancellationToken::new();
    let opts = RunOptions {
        metrics_bound: Some(tx),
        ..RunOptions::default()
    };
    let task = tokio::spawn(run_with(config, stop.clone(), opts));
    let addr = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    (addr, stop, task)
}

/// Against the emulator with a history of 20 events, read from `local.oplog.rs` as
/// `db.getReplicationInfo()` does: once writes roll the history, the time left behind
/// the checkpoint is seconds, under the default 1 h alarm: warned once per side, shown
/// in `status` and the metrics, and sync carries on.
#[tokio::test]
async fn small_history_on_the_emulator_warns_of_low_headroom_once_per_side() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let emulator = Emulator::start(EmulatorConfig {
        history_limit: 20,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let uri = emulator.uri();
    let config = config(&socket, |raw| {
        raw.local.uri = uri.clone();
        raw.cloud.uri = uri.clone();
        raw.state.database = "headroom_state".into();
    });
    let (addr, stop, task) = run_daemon(config).await;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let local = client
        .database("datasync")
        .collection::<bson::Document>("local_data");
    for i in 0..30 {
        local
            .insert_one(bson::doc! {"_id": i, "updatedAt": bson::DateTime::now()})
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = admin(&socket, r#"{"cmd":"status"}"#).await;
        let ready = ["local", "cloud"]
            .iter()
            .all(|side| s["oplog"][side]["low"] == true);
        if ready || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let local_window = &status["oplog"]["local"];
    let h = local_window["headroom_s"].as_i64().expect("headroom read");
    assert!((0..3600).contains(&h), "{status}");
    assert_eq!(local_window["low"], true, "{status}");
    assert!(local_window["unavailable"].is_null(), "{status}");
    wait_ready(addr, 200).await;
    let m = scrape(&get(addr, "/metrics").await.1);
    assert_eq!(m["datasync_oplog_headroom_readable{side=local}"], 1.0);
    assert_eq!(m["datasync_oplog_headroom_low{side=local}"], 1.0);
    // Measured again every second without warning again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = logs.text();
    assert_eq!(
        text.matches("oplog headroom under alarms.oplog_headroom_min")
            .count(),
        2,
        "{text}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// `oldest_entry` reads the first `local.oplog.rs` entry; a refusal (here a fail point
/// answering 13 Unauthorized to this client's `find`) is `Unavailable`, and said so.
#[tokio::test]
async fn oplog_window_follows_the_history_and_a_refusal_is_unavailable() {
    let emulator = Emulator::start(EmulatorConfig {
        history_limit: 5,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let uri = format!("{}&appName=probe", emulator.uri());
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let coll = client.database("d").collection::<bson::Document>("c");
    let first = datasync::mongo::oplog::oldest_entry(&client, &uri)
        .await
        .expect("readable");
    for i in 0..10 {
        coll.insert_one(bson::doc! {"_id": i}).await.unwrap();
    }
    let later = datasync::mongo::oplog::oldest_entry(&client, &uri)
        .await
        .expect("readable");
    assert!(
        (later.time, later.increment) > (first.time, first.increment),
        "the oldest entry moves as the history is trimmed: {first:?} → {later:?}"
    );
    client
        .database("admin")
        .run_command(bson::doc! {
            "configureFailPoint": "failCommand", "mode": "alwaysOn",
            "data": {"failCommands": ["find"], "errorCode": 13, "appName": "probe"},
        })
        .await
        .unwrap();
    let refused = datasync::mongo::oplog::oldest_entry(&client, &uri).await;
    match refused {
        Err(e) => {
            assert!(e.is_unavailable(), "{e}");
            assert!(e.to_string().contains("code 13"), "{e}");
        }
        Ok(ts) => panic!("read {ts:?} through the fail point"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_answers_while_mongodb_is_unreachable_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let uri = "mongodb://ops:s3cr3t-pw@127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=200";
    let config = config(&socket, |raw| {
        raw.local.uri = uri.into();
        raw.cloud.uri = uri.into();
    });
    let (addr, stop, task) = run_daemon(config).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    let body = wait_ready(addr, 503).await;
    assert!(body.contains("local stream is starting"), "{body}");
    let text = get(addr, "/metrics").await.1;
    let m = scrape(&text);
    assert_eq!(m["datasync_stream_state{side=local,state=starting}"], 1.0);
    // Wait for a failed attempt, so the last error is known, then look for the password.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for path in ["/metrics", "/readyz", "/healthz"] {
        let body = get(addr, path).await.1;
        assert!(
            !body.contains("s3cr3t"),
            "{path} shows the password:\n{body}"
        );
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded_and_the_endpoint_recovers() {
    use tokio::io::AsyncReadExt;
    let shell = start((2, 7200)).await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(tokio::net::TcpStream::connect(shell.addr).await.unwrap());
    }
    // Let the server take all 32 before the next one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(shell.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("the 33rd connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = matches!(try_get(shell.addr, "/healthz").await, Ok((200, _)));
        if ok || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(shell.addr, "/healthz").await.0, 200);
    shell.stop().await;
}

/// The real daemon against an emulator, in `mode`, with its streams running.
struct Live {
    /// Where the metrics endpoint listens.
    addr: SocketAddr,
    /// Admin socket.
    socket: PathBuf,
    /// Stops the daemon.
    stop: CancellationToken,
    /// The daemon.
    task: JoinHandle<Result<(), DaemonError>>,
    /// The local collection, as a client sees it.
    local: mongodb::Collection<bson::Document>,
    /// The cloud collection.
    cloud: mongodb::Collection<bson::Document>,
    /// Keeps the server up.
    _emulator: Emulator,
    /// Keeps the socket directory.
    _dir: tempfile::TempDir,
}

async fn start_live(mode: &str) -> Live {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let uri = emulator.uri();
    let config = config(&socket, |raw| {
        raw.mode = mode.into();
        raw.local.uri = uri.clone();
        raw.cloud.uri = uri.clone();
        raw.state.database = "stats_state".into();
    });
    let (addr, stop, task) = run_daemon(config).await;
    let db = mongodb::Client::with_uri_str(&uri)
        .await
        .unwrap()
        .database("datasync");
    let status = status_until(&socket, |s| {
        ["local", "cloud"].iter().all(|side| {
            let state = &s["streams"][side]["state"];
            state == "running" || state == "disabled"
        })
    })
    .await;
    assert_eq!(status["streams"]["local"]["state"], "running", "{status}");
    Live {
        addr,
        socket,
        stop,
        task,
        local: db.collection("local_data"),
        cloud: db.collection("cloud_data"),
        _emulator: emulator,
        _dir: dir,
    }
}

impl Live {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// `status` once `done` holds, or after 20 s.
async fn status_until(socket: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = admin(socket, r#"{"cmd":"status"}"#).await;
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scrape once `done` holds, or after 20 s: the samples and the text.
async fn scrape_until(
    addr: SocketAddr,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> (HashMap<String, f64>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(addr, "/metrics").await.1;
        let m = scrape(&text);
        if done(&m) || Instant::now() > deadline {
            return (m, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `coll` holds `n` documents matching `filter`.
async fn wait_count(coll: &mongodb::Collection<bson::Document>, filter: bson::Document, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = coll.count_documents(filter.clone()).await.unwrap();
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {got} documents match {filter}, want {n}",
            coll.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(f64::NAN)
}

/// Both ways: 5 documents written on local and 3 on cloud are synced, then clients
/// write versions older than the ones the other side holds, two on local and one on
/// cloud. Each is one conflict in its own direction; every change read is a key of an applied batch and,
/// unless it is the engine's own write coming back, one observation of the per-event
/// lag of its direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_per_direction_batch_sizes_and_event_lag_follow_the_sync() {
    let live = start_live("both-ways").await;
    let now = bson::DateTime::now();
    for i in 0..5 {
        let d = bson::doc! {"_id": format!("l{i}"), "updatedAt": now, "v": 1};
        live.local.insert_one(d).await.unwrap();
    }
    for i in 0..3 {
        let d = bson::doc! {"_id": format!("c{i}"), "updatedAt": now, "v": 1};
        live.cloud.insert_one(d).await.unwrap();
    }
    wait_count(&live.cloud, bson::doc! {}, 8).await;
    wait_count(&live.local, bson::doc! {}, 8).await;

    // Clients with a slow clock: a version a minute older than the synced one.
    let stale = bson::DateTime::from_millis(now.timestamp_millis() - 60_000);
    let old = |id: &str| {
        (
            bson::doc! {"_id": id},
            bson::doc! {"updatedAt": stale, "v": 2},
        )
    };
    for id in ["l0", "l1"] {
        let (q, d) = old(id);
        live.local.replace_one(q, d).await.unwrap();
    }
    let (q, d) = old("c0");
    live.cloud.replace_one(q, d).await.unwrap();
    let status = status_until(&live.socket, |s| s["conflicts"] == 3).await;
    assert_eq!(
        status["conflicts_by_direction"],
        serde_json::json!({"local_to_cloud": 2, "cloud_to_local": 1}),
        "{status}"
    );
    // The newer versions were written back over the stale ones.
    wait_count(&live.local, bson::doc! {"v": 2}, 0).await;
    wait_count(&live.cloud, bson::doc! {"v": 2}, 0).await;

    let lag_l2c = "datasync_event_lag_seconds_count{direction=local_to_cloud}";
    let lag_c2l = "datasync_event_lag_seconds_count{direction=cloud_to_local}";
    let (m, text) = scrape_until(live.addr, |m| {
        sample(m, "datasync_conflicts_total{direction=cloud_to_local}") == 1.0
            && sample(m, lag_l2c) >= 7.0
            && sample(m, lag_c2l) >= 4.0
    })
    .await;
    assert_eq!(
        sample(&m, "datasync_conflicts_total{direction=local_to_cloud}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&m, "datasync_conflicts_total{direction=cloud_to_local}"),
        1.0
    );
    // 5 inserts and 2 stale versions read from local; 3 inserts and one from cloud.
    let (l2c, c2l) = (sample(&m, lag_l2c), sample(&m, lag_c2l));
    assert!(l2c >= 7.0 && c2l >= 4.0, "{text}");
    // Every lag observation is a key of an applied batch; the changes came in at least
    // two rounds (the inserts, then the stale versions).
    let batch_sum = sample(&m, "datasync_batch_size_sum{}");
    let batches = sample(&m, "datasync_batch_size_count{}");
    assert!(batch_sum >= l2c + c2l, "{text}");
    assert!((2.0..=batch_sum).contains(&batches), "{text}");
    // Everything here was applied within seconds of its write.
    let lag_sum = sample(
        &m,
        "datasync_event_lag_seconds_sum{direction=local_to_cloud}",
    );
    assert!((0.0..10.0 * l2c).contains(&lag_sum), "{text}");
    let within_a_minute = buckets(
        &text,
        "datasync_event_lag_seconds",
        &[("direction", "cloud_to_local")],
    )
    .into_iter()
    .find(|(le, _)| *le == 60.0)
    .map(|(_, n)| n);
    assert_eq!(within_a_minute, Some(c2l), "{text}");
    live.stop().await;
}

/// One way (local → cloud, decided from state): with no echoes, the batch sizes add up
/// to exactly the documents applied and each applied change is one lag observation. A
/// local change older than cloud's version is a local → cloud conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_batch_sizes_add_up_to_the_documents_applied() {
    let live = start_live("local-to-cloud").await;
    let now = bson::DateTime::now();
    for i in 0..7 {
        let d = bson::doc! {"_id": i, "updatedAt": now, "v": 1};
        live.local.insert_one(d).await.unwrap();
    }
    wait_count(&live.cloud, bson::doc! {}, 7).await;
    let applied = "datasync_applied_total{direction=local_to_cloud}";
    let (m, text) = scrape_until(live.addr, |m| {
        sample(m, "datasync_batch_size_sum{}") >= 7.0 && sample(m, applied) >= 7.0
    })
    .await;
    assert_eq!(sample(&m, applied), 7.0, "{text}");
    assert_eq!(sample(&m, "datasync_batch_size_sum{}"), 7.0, "{text}");
    let batches = sample(&m, "datasync_batch_size_count{}");
    assert!((1.0..=7.0).contains(&batches), "{text}");
    let lag_l2c = "datasync_event_lag_seconds_count{direction=local_to_cloud}";
    assert_eq!(sample(&m, lag_l2c), 7.0, "{text}");
    assert_eq!(
        sample(
            &m,
            "datasync_event_lag_seconds_count{direction=cloud_to_local}"
        ),
        0.0
    );

    // Cloud (not watched) holds a newer version; the local change loses to it.
    let later = bson::DateTime::from_millis(now.timestamp_millis() + 60_000);
    let q = bson::doc! {"_id": 0};
    let newer = bson::doc! {"updatedAt": later, "v": "cloud"};
    live.cloud.replace_one(q.clone(), newer).await.unwrap();
    let d = bson::doc! {"updatedAt": bson::DateTime::now(), "v": 2};
    live.local.replace_one(q, d).await.unwrap();
    let conflicts = "datasync_conflicts_total{direction=local_to_cloud}";
    let (m, text) = scrape_until(live.addr, |m| {
        sample(m, conflicts) >= 1.0 && sample(m, lag_l2c) >= 8.0
    })
    .await;
    assert_eq!(sample(&m, conflicts), 1.0, "{text}");
    assert_eq!(
        sample(&m, "datasync_conflicts_total{direction=cloud_to_local}"),
        0.0
    );
    assert_eq!(sample(&m, applied), 7.0, "{text}");
    assert_eq!(sample(&m, "datasync_batch_size_sum{}"), 8.0, "{text}");
    assert_eq!(sample(&m, lag_l2c), 8.0, "{text}");
    wait_count(&live.cloud, bson::doc! {"v": "cloud"}, 1).await;
    live.stop().await;
}

fn pair_status(name: &str, l2c: u64, c2l: u64, conflicts: u64, queue: u64) -> PairStatus {
    PairStatus {
        name: name.into(),
        mode: Mode::BothWays,
        state: "running".into(),
        lag_ms: Some(10),
        queue_depth: queue,
        applied_local_to_cloud: l2c,
        applied_cloud_to_local: c2l,
        conflicts,
        skipped: 0,
        quarantined: 0,
        last_reconcile: None,
    }
}

#[test]
fn per_pair_series_carry_a_pair_label_beside_the_unlabelled_totals() {
    let metrics = Metrics::new();
    let mut status = FakeEngine::new().status();
    status.pairs = vec![
        pair_status("orders", 4, 1, 2, 3),
        pair_status("app.customers", 1, 6, 1, 0),
    ];
    let windows = [SideWindow::default(), SideWindow::default()];
    metrics.refresh(&status, &windows, 0, 1);
    // The totals advance; per-pair counters follow each pair's running total.
    status.pairs[0] = pair_status("orders", 9, 1, 2, 5);
    metrics.refresh(&status, &windows, 0, 2);
    let m = scrape(&metrics.encode());
    let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(v("datasync_applied_total{direction=local_to_cloud}"), 5.0);
    assert_eq!(v("datasync_queue_depth{}"), 3.0);
    assert_eq!(
        v("datasync_pair_applied_total{direction=local_to_cloud,pair=orders}"),
        9.0
    );
    assert_eq!(
        v("datasync_pair_applied_total{direction=cloud_to_local,pair=orders}"),
        1.0
    );
    assert_eq!(
        v("datasync_pair_applied_total{direction=cloud_to_local,pair=app.customers}"),
        6.0
    );
    assert_eq!(v("datasync_pair_conflicts_total{pair=orders}"), 2.0);
    assert_eq!(v("datasync_pair_conflicts_total{pair=app.customers}"), 1.0);
    assert_eq!(v("datasync_pair_queue_depth{pair=orders}"), 5.0);
    assert_eq!(v("datasync_pair_queue_depth{pair=app.customers}"), 0.0);
}
