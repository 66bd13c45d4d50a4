//! End to end through the real binary (issue 20): the future-timestamp guard. A document
//! whose `updatedAt` is further ahead of the server's clock than `sync.max_future_ms` is
//! not propagated; `status` counts it and the log names its `_id` once; it arrives once
//! the clock reaches it. Runs against the emulator, or `DATASYNC_TEST_MONGODB_URI`.

#[path = "e2e/harness.rs"]
#[allow(dead_code)] // the harness serves several suites; this one uses part of it
mod harness;

use std::time::Duration;

use bson::{doc, DateTime};
use serde_json::json;

use harness::{eventually, get, wait_for, Mongo, Pair, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_dated_document_is_held_back_then_released_when_the_clock_reaches_it() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "guard");
    let s = Settings {
        max_future_ms: 2_000,
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    let ahead = DateTime::from_millis(DateTime::now().timestamp_millis() + 6_000);
    p.local
        .insert_one(doc! {"_id": "ahead", "v": 1, "updatedAt": ahead})
        .await
        .unwrap();
    p.local
        .insert_one(doc! {"_id": "now", "v": 1, "updatedAt": DateTime::now()})
        .await
        .unwrap();
    wait_for(&p.cloud, "now", "a document of the present", |x| {
        x.is_some()
    })
    .await;
    let held = eventually(Duration::from_secs(3), || async {
        daemon.status().await["quarantined"] == json!(1)
    })
    .await;
    assert!(held.is_some(), "status: {}", daemon.status().await);
    assert_eq!(get(&p.cloud, "ahead").await, None, "copied while far ahead");
    let log = daemon.log_text();
    assert_eq!(
        log.matches("too far in the future").count(),
        1,
        "logged once with its _id: {log}"
    );
    assert!(log.contains("ahead"), "{log}");
    // Within 2 s of its time (about 4 s from now) it is released and copied.
    let arrived = eventually(Duration::from_secs(12), || async {
        get(&p.cloud, "ahead").await.is_some()
    })
    .await;
    assert!(
        arrived.is_some(),
        "never released; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(daemon.status().await["quarantined"], json!(0));
    daemon.terminate().await;
    p.drop_databases().await;
}
