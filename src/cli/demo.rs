//! `datasync demo`: the one-command tour. Starts the in-process MongoDB emulator, seeds
//! local, runs the daemon against it with a temporary admin socket and two collection
//! pairs (`items`, everything; `orders`, filtered to one tenant), then makes live
//! writes on both sides and prints each one arriving on the other side, with its lag and
//! how conflicts were decided, and what the filter lets through.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bson::{doc, Bson, DateTime, Document};
use datasync::daemon::config::raw::{RawConfig, RawFilter, RawPair};
use datasync::daemon::config::Config;
use datasync::daemon::{self, RunOptions};
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::Collection;
use tokio_util::sync::CancellationToken;

/// How long one scripted step may take to arrive.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the demo keeps its socket.
fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("datasync-demo-{}", std::process::id()))
}

/// Both collections of a pair of the demo.
struct Sides {
    /// The local collection.
    local: Collection<Document>,
    /// The cloud collection.
    cloud: Collection<Document>,
}

/// The tenant whose orders the filtered pair syncs.
const TENANT: &str = "edge-7";

/// The demo's pairs: `items` (everything) and `orders` (one tenant's).
fn demo_pairs() -> Vec<RawPair> {
    let pair = |name: &str, local: &str, cloud: &str, filter: Option<RawFilter>| RawPair {
        name: Some(name.into()),
        local: local.into(),
        cloud: cloud.into(),
        mode: None,
        filter,
        updated_at_field: None,
    };
    vec![
        pair("items", "datasync.local_data", "datasync.cloud_data", None),
        pair(
            "orders",
            "datasync.local_orders",
            "datasync.cloud_orders",
            Some(RawFilter::Json(format!(r#"{{"tenantId": "{TENANT}"}}"#))),
        ),
    ]
}

/// Run the demo; `Ok(false)` when a step did not arrive in time.
pub async fn demo(docs: u64, once: bool) -> anyhow::Result<bool> {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .context("cannot start the embedded MongoDB emulator")?;
    let uri = emulator.uri();
    let dir = temp_dir();
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("admin.sock");

    let mut raw = RawConfig::default();
    raw.local.uri = uri.clone();
    raw.cloud.uri = uri.clone();
    raw.admin.socket = socket.display().to_string();
    raw.pairs = demo_pairs();
    // The embedded emulator's history starts with it: seconds of oplog headroom is
    // normal here, not worth the alarm a production deployment gets.
    raw.alarms.oplog_headroom_min = datasync::daemon::config::raw::RawDuration::Seconds(0);
    let config = Config::validate(&raw).map_err(|e| anyhow::anyhow!("{e}"))?;

    println!("embedded MongoDB emulator at {uri}");
    println!("admin socket: {}", socket.display());
    println!(
        "  from another terminal: datasync ctl --socket {} status",
        socket.display()
    );

    for p in &config.pairs {
        let filter = p
            .filter
            .as_ref()
            .map_or("everything".to_string(), |f| format!("filter {f}"));
        println!("pair {}: {} ↔ {} ({filter})", p.name, p.local, p.cloud);
    }
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let db = client.database("datasync");
    let sides = Sides {
        local: db.collection("local_data"),
        cloud: db.collection("cloud_data"),
    };
    let orders = Sides {
        local: db.collection("local_orders"),
        cloud: db.collection("cloud_orders"),
    };
    seed_local(&sides.local, docs).await?;
    println!(
        "seeded {docs} documents on local ({})",
        config.local.collection
    );

    let shutdown = CancellationToken::new();
    let opts = RunOptions {
        signals: true,
        ..RunOptions::default()
    };
    let started = Instant::now();
    let daemon = tokio::spawn(daemon::run_with(config, shutdown.clone(), opts));

    // The initial reconcile copies every seeded document: allow for big --docs.
    let deadline = Duration::from_secs(10) + Duration::from_millis(docs * 10);
    let initial = wait_for(deadline, &shutdown, || async {
        sides.cloud.count_documents(doc! {}).await.ok() == Some(docs)
    })
    .await;
    match initial {
        Some(_) => println!(
            "initial reconcile: {docs} documents on cloud after {} ms",
            started.elapsed().as_millis()
        ),
        None => println!("initial reconcile: cloud did not reach {docs} documents in time"),
    }
    let mut all_ok = initial.is_some();
    let streaming = wait_for(STEP_TIMEOUT, &shutdown, || async {
        streams_running(&socket).await
    })
    .await;
    match streaming {
        Some(_) => println!("change streams running on both sides"),
        None => println!("change streams did not start in time"),
    }
    all_ok &= streaming.is_some();
    all_ok &= script(&sides, &shutdown).await?;
    all_ok &= filtered_script(&orders, &shutdown).await?;

    println!();
    if once || shutdown.is_cancelled() {
        println!(
            "{}",
            if all_ok {
                "demo: every step arrived"
            } else {
                "demo: some steps did not arrive"
            }
        );
        shutdown.cancel();
    } else {
        println!(
            "still syncing; write to datasync.local_data / cloud_data (or local_orders / \
             cloud_orders, tenantId {TENANT:?}) at {uri}, Ctrl-C to stop"
        );
    }
    let result = daemon.await.context("daemon task failed")?;
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(all_ok)
}

/// Whether `status` shows both change streams running.
async fn streams_running(socket: &std::path::Path) -> bool {
    let request = datasync::daemon::admin::AdminRequest::Status;
    match datasync::daemon::admin::client::request(socket, &request, Duration::from_secs(1)).await {
        Ok(v) => ["local", "cloud"]
            .iter()
            .all(|side| v["streams"][side]["state"] == "running"),
        Err(_) => false,
    }
}

async fn seed_local(local: &Collection<Document>, docs: u64) -> anyhow::Result<()> {
    let mut i = 0;
    while i < docs {
        let n = 1000.min(docs - i);
        let batch: Vec<Document> = (i..i + n)
            .map(|k| crate::cli::seed::seed_doc("demo", k))
            .collect();
        local.insert_many(batch).await?;
        i += n;
    }
    Ok(())
}

/// Poll `check` every 2 ms until true; returns the time it took, `None` on timeout or
/// shutdown.
async fn wait_for<F, Fut>(
    timeout: Duration,
    stop: &CancellationToken,
    mut check: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout && !stop.is_cancelled() {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The document `id`: `Ok(None)` when absent, `Err` when the read failed (so a failed
/// read never counts as "deleted").
async fn get(coll: &Collection<Document>, id: &str) -> Result<Option<Document>, ()> {
    coll.find_one(doc! {"_id": id}).await.map_err(|_| ())
}

fn value_of(d: &Result<Option<Document>, ()>) -> Option<Bson> {
    d.as_ref()
        .ok()?
        .as_ref()
        .and_then(|d| d.get("value").cloned())
}

fn report(step: &str, took: Option<Duration>, how: &str) -> bool {
    match took {
        Some(t) => println!("  ✓ {step:<46} arrived in {:>4} ms  {how}", t.as_millis()),
        None => println!(
            "  ✗ {step:<46} did NOT arrive within {} s",
            STEP_TIMEOUT.as_secs()
        ),
    }
    took.is_some()
}

async fn script(s: &Sides, stop: &CancellationToken) -> anyhow::Result<bool> {
    println!("\nlive writes:");
    let mut ok = true;

    s.local
        .insert_one(doc! {"_id": "demo-1", "name": "inserted on local", "value": 1, "updatedAt": DateTime::now()})
        .await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.cloud, "demo-1").await, Ok(Some(_)))
    })
    .await;
    ok &= report("insert on local → appears on cloud", t, "");

    s.cloud
        .update_one(
            doc! {"_id": "demo-1"},
            doc! {"$set": {"value": 2, "updatedAt": DateTime::now()}},
        )
        .await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        value_of(&get(&s.local, "demo-1").await) == Some(Bson::Int32(2))
    })
    .await;
    ok &= report("update on cloud → appears on local", t, "");

    s.local.delete_one(doc! {"_id": "demo-1"}).await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.cloud, "demo-1").await, Ok(None))
    })
    .await;
    ok &= report("delete on local → gone from cloud", t, "");

    // Conflict: cloud writes the newer updatedAt first, local writes an older one after
    // it. Last-writer-wins goes by updatedAt, not by arrival: cloud's version wins.
    let base = DateTime::now().timestamp_millis();
    s.local
        .insert_one(
            doc! {"_id": "demo-2", "value": "original", "updatedAt": DateTime::from_millis(base)},
        )
        .await?;
    wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.cloud, "demo-2").await, Ok(Some(_)))
    })
    .await;
    s.cloud
        .update_one(doc! {"_id": "demo-2"}, doc! {"$set": {"value": "cloud edit (newer)", "updatedAt": DateTime::from_millis(base + 2000)}})
        .await?;
    s.local
        .update_one(doc! {"_id": "demo-2"}, doc! {"$set": {"value": "local edit (older)", "updatedAt": DateTime::from_millis(base + 1000)}})
        .await?;
    let want = Some(Bson::String("cloud edit (newer)".into()));
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        value_of(&get(&s.local, "demo-2").await) == want
            && value_of(&get(&s.cloud, "demo-2").await) == want
    })
    .await;
    ok &= report(
        "conflict: both sides edit demo-2",
        t,
        "→ newer updatedAt (cloud, +1 s) wins on both",
    );

    // Tie: both sides write the same updatedAt with different contents: the tie-break
    // side (cloud by default) wins everywhere.
    let tie = DateTime::from_millis(base + 5000);
    s.local
        .update_one(
            doc! {"_id": "demo-2"},
            doc! {"$set": {"value": "local tie", "updatedAt": tie}},
        )
        .await?;
    s.cloud
        .update_one(
            doc! {"_id": "demo-2"},
            doc! {"$set": {"value": "cloud tie", "updatedAt": tie}},
        )
        .await?;
    let want = Some(Bson::String("cloud tie".into()));
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        value_of(&get(&s.local, "demo-2").await) == want
            && value_of(&get(&s.cloud, "demo-2").await) == want
    })
    .await;
    ok &= report(
        "tie: same updatedAt, different contents",
        t,
        "→ tie-break side (cloud) wins on both",
    );
    Ok(ok)
}

/// The filtered pair: only tenant [`TENANT`]'s orders reach local, and an order moved
/// to another tenant leaves it.
async fn filtered_script(s: &Sides, stop: &CancellationToken) -> anyhow::Result<bool> {
    println!("\nfiltered pair `orders` (tenantId {TENANT:?} only):");
    let mut ok = true;
    let order = |id: &str, tenant: &str| {
        doc! {"_id": id, "tenantId": tenant, "value": 1, "updatedAt": DateTime::now()}
    };
    s.cloud.insert_one(order("order-1", TENANT)).await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.local, "order-1").await, Ok(Some(_)))
    })
    .await;
    ok &= report("order of edge-7 on cloud → appears on local", t, "");

    // Another tenant's order, then one of ours: once ours arrived, the other one has
    // had every chance to arrive too.
    s.cloud.insert_one(order("order-2", "edge-8")).await?;
    s.cloud.insert_one(order("order-3", TENANT)).await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.local, "order-3").await, Ok(Some(_)))
    })
    .await;
    let stayed = matches!(get(&s.local, "order-2").await, Ok(None));
    ok &= report(
        "order of edge-8 on cloud → stays on cloud",
        t.filter(|_| stayed),
        "(filtered out; edge-7's next order arrived)",
    );

    s.cloud
        .update_one(
            doc! {"_id": "order-1"},
            doc! {"$set": {"tenantId": "edge-8", "updatedAt": DateTime::now()}},
        )
        .await?;
    let t = wait_for(STEP_TIMEOUT, stop, || async {
        matches!(get(&s.local, "order-1").await, Ok(None))
    })
    .await;
    ok &= report("order-1 moved to edge-8 on cloud → leaves local", t, "");
    Ok(ok)
}
