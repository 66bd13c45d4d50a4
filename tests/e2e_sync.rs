//! End-to-end sync behaviour through the real binary (issue 5): conflicts converge to the
//! newer `updatedAt` or the tie-break side, no echo writes (counted on the server), each
//! mode, `ctl sync --mode M` report counts, restart resumes from the checkpoint without
//! re-applying, lost history triggers a reconcile, bad admin requests get errors. Runs
//! against the emulator, or against `DATASYNC_TEST_MONGODB_URI` (emulator-only hooks say
//! `skipped:` there).

#[path = "e2e/harness.rs"]
mod harness;

use std::time::Duration;

use bson::{doc, DateTime, Document};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use harness::{all, eventually, get, skipped, wait_for, Mongo, Observer, Pair, Settings, ARRIVE};

/// A test document.
fn d(id: &str, value: &str, at: DateTime) -> Document {
    doc! {"_id": id, "value": value, "updatedAt": at}
}

/// Milliseconds from now (negative: in the past), at millisecond precision.
fn at(offset_ms: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + offset_ms)
}

fn value(doc: Option<&Document>) -> Option<&str> {
    doc.and_then(|d| d.get_str("value").ok())
}

/// Wait until `id` has the same content on both sides and it is `expected`.
async fn converged(p: &Pair, id: &str, expected: &Document) -> Duration {
    let t = eventually(ARRIVE, || async {
        let (l, c) = (get(&p.local, id).await, get(&p.cloud, id).await);
        l.as_ref() == Some(expected) && c.as_ref() == Some(expected)
    })
    .await;
    match t {
        Some(t) => t,
        None => panic!(
            "{id} did not converge to {expected}: local {:?}, cloud {:?}",
            get(&p.local, id).await,
            get(&p.cloud, id).await
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_updates_converge_to_the_newer_updated_at_on_both_sides() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "lww");
    let daemon = p.start(&m, &Settings::default()).await;
    let base = at(-60_000);
    for id in ["a", "b", "c", "e"] {
        p.local.insert_one(d(id, "base", base)).await.unwrap();
    }
    for id in ["a", "b", "c", "e"] {
        wait_for(&p.cloud, id, "initial copy", |x| value(x) == Some("base")).await;
    }
    // Queued together (paused), and written at the same moment (live).
    let (older, newer) = (at(-1_000), at(0));
    assert_eq!(daemon.ctl(&["pause"]).await.status.code(), Some(0));
    p.local
        .replace_one(doc! {"_id": "a"}, d("a", "local-newer", newer))
        .await
        .unwrap();
    p.cloud
        .replace_one(doc! {"_id": "a"}, d("a", "cloud-older", older))
        .await
        .unwrap();
    p.local
        .replace_one(doc! {"_id": "b"}, d("b", "local-older", older))
        .await
        .unwrap();
    p.cloud
        .replace_one(doc! {"_id": "b"}, d("b", "cloud-newer", newer))
        .await
        .unwrap();
    assert_eq!(daemon.ctl(&["resume"]).await.status.code(), Some(0));
    let (l, c) = tokio::join!(
        p.local
            .replace_one(doc! {"_id": "c"}, d("c", "local-newer", newer)),
        p.cloud
            .replace_one(doc! {"_id": "c"}, d("c", "cloud-older", older)),
    );
    l.unwrap();
    c.unwrap();
    let (l, c) = tokio::join!(
        p.local
            .replace_one(doc! {"_id": "e"}, d("e", "local-older", older)),
        p.cloud
            .replace_one(doc! {"_id": "e"}, d("e", "cloud-newer", newer)),
    );
    l.unwrap();
    c.unwrap();

    let mut lags = Vec::new();
    lags.push(converged(&p, "a", &d("a", "local-newer", newer)).await);
    lags.push(converged(&p, "b", &d("b", "cloud-newer", newer)).await);
    lags.push(converged(&p, "c", &d("c", "local-newer", newer)).await);
    lags.push(converged(&p, "e", &d("e", "cloud-newer", newer)).await);
    daemon.idle().await;
    // Stable: no ping-pong after convergence.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (id, v) in [
        ("a", "local-newer"),
        ("b", "cloud-newer"),
        ("c", "local-newer"),
        ("e", "cloud-newer"),
    ] {
        assert_eq!(get(&p.local, id).await, Some(d(id, v, newer)));
        assert_eq!(get(&p.cloud, id).await, Some(d(id, v, newer)));
    }
    let st = daemon.status().await;
    assert!(
        st["conflicts"].as_u64().unwrap() >= 1,
        "no conflict counted: {st}"
    );
    println!(
        "lww: converged after {lags:?}; status conflicts {}",
        st["conflicts"]
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

async fn tie_converges_to(tie_break: &'static str, name: &str) {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, name);
    let s = Settings {
        tie_break,
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    let base = at(-60_000);
    for id in ["q", "r"] {
        p.cloud.insert_one(d(id, "base", base)).await.unwrap();
        wait_for(&p.local, id, "initial copy", |x| value(x) == Some("base")).await;
    }
    let same = at(0);
    // Queued together while paused.
    assert_eq!(daemon.ctl(&["pause"]).await.status.code(), Some(0));
    p.local
        .replace_one(doc! {"_id": "q"}, d("q", "local", same))
        .await
        .unwrap();
    p.cloud
        .replace_one(doc! {"_id": "q"}, d("q", "cloud", same))
        .await
        .unwrap();
    assert_eq!(daemon.ctl(&["resume"]).await.status.code(), Some(0));
    // Written at the same moment while running.
    let (l, c) = tokio::join!(
        p.local
            .replace_one(doc! {"_id": "r"}, d("r", "local", same)),
        p.cloud
            .replace_one(doc! {"_id": "r"}, d("r", "cloud", same)),
    );
    l.unwrap();
    c.unwrap();
    for id in ["q", "r"] {
        converged(&p, id, &d(id, tie_break, same)).await;
    }
    daemon.idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["q", "r"] {
        assert_eq!(value(get(&p.local, id).await.as_ref()), Some(tie_break));
        assert_eq!(value(get(&p.cloud, id).await.as_ref()), Some(tie_break));
    }
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_updated_at_conflict_converges_to_cloud_by_default() {
    tie_converges_to("cloud", "tiec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_updated_at_conflict_converges_to_local_when_tie_break_is_local() {
    tie_converges_to("local", "tiel").await;
}
