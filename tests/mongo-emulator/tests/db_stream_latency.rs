//! A database-level change stream filtered to some namespaces (what a daemon watching
//! several collections with one stream opens) under steady concurrent writes, some to
//! other collections of the same database: every matching event arrives, promptly, and
//! no `getMore` waits out its `maxAwaitTimeMS` while matching events exist, also while
//! a client reads the oldest `local.oplog.rs` entry of a long history.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf};
use mongodb::bson;
use tokio::sync::Mutex;

/// Writes per second into the two watched collections together.
const RATE: u64 = 500;
/// How long the writers run.
const RUN: Duration = Duration::from_secs(2);
/// Well under the stream's `maxAwaitTimeMS` (500): no event may wait for a timeout.
const MAX_LAG: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_db_stream_delivers_every_event_without_waiting_out_max_await() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    assert_prompt_delivery(&client, false).await;
    emu.shutdown().await;
}

/// Regression (a shared db-level stream stalled ~1 s under load): `find` on
/// `local.oplog.rs` (what `db.getReplicationInfo()` and the daemon's oplog headroom
/// check run: the first entry in natural order) built every retained entry while it
/// held the lock every command needs, so with a long history each such read froze
/// writes and `getMore`s alike. The oldest entry is one entry to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_oldest_oplog_entry_of_a_long_history_does_not_stall_streams() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let old = client.database("old").collection::<Document>("x");
    for chunk in 0..HISTORY / 10_000 {
        old.insert_many((0..10_000).map(|i| doc! {"_id": chunk * 10_000 + i}))
            .await
            .unwrap();
    }
    assert_prompt_delivery(&client, true).await;
    emu.shutdown().await;
}

/// Events already in history before the stream opens (the oplog check's test).
const HISTORY: i64 = 200_000;

/// Writes into `d.a` / `d.b` (watched) and `d.c` (not) for [`RUN`] while one filtered
/// db-level stream reads; with `read_oplog`, a client also keeps reading the first
/// `local.oplog.rs` entry. Every watched event must arrive once, within [`MAX_LAG`].
async fn assert_prompt_delivery(client: &mongodb::Client, read_oplog: bool) {
    let db = client.database("d");
    let watched = ["a", "b"];
    let mut stream = db
        .watch()
        .pipeline(vec![
            doc! {"$match": {"$or": [
                {"ns.db": "d", "ns.coll": {"$in": watched.to_vec()}},
                {"operationType": "invalidate"},
            ]}},
            doc! {"$project": {"updateDescription": 0}},
        ])
        .full_document(mongodb::options::FullDocumentType::UpdateLookup)
        .max_await_time(Duration::from_millis(500))
        .batch_size(1000)
        .await
        .unwrap()
        .with_type::<RawDocumentBuf>();

    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let n = (RATE as f64 * RUN.as_secs_f64()) as i64;
    // The watched writer: one insert per 1/RATE s, round-robin, each in its own task
    // (concurrent commands, as a driver's pool sends them).
    let writer = {
        let db = db.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut tasks = tokio::task::JoinSet::new();
            for seq in 0..n {
                tick.tick().await;
                let coll = db.collection::<Document>(watched[seq as usize % 2]);
                let sent = sent.clone();
                tasks.spawn(async move {
                    sent.lock().await.insert(seq, Instant::now());
                    coll.insert_one(doc! {"_id": seq}).await.unwrap();
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        })
    };
    // Unwatched writes to the same database (the daemon's own writes elsewhere).
    let other = {
        let coll = db.collection::<Document>("c");
        tokio::spawn(async move {
            let start = Instant::now();
            let mut i = 0i64;
            while start.elapsed() < RUN {
                coll.insert_many((0..20).map(|k| doc! {"_id": i * 100 + k}))
                    .await
                    .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let oplog_reader = read_oplog.then(|| {
        let oplog = client.database("local").collection::<Document>("oplog.rs");
        tokio::spawn(async move {
            let start = Instant::now();
            let mut slowest = Duration::ZERO;
            while start.elapsed() < RUN {
                let t = Instant::now();
                let first = oplog
                    .find_one(doc! {})
                    .sort(doc! {"$natural": 1})
                    .projection(doc! {"ts": 1, "_id": 0})
                    .await
                    .unwrap()
                    .expect("an oplog entry");
                assert!(first.get_timestamp("ts").is_ok());
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slowest
        })
    });

    let mut lags: Vec<(i64, Duration)> = Vec::new();
    let deadline = Instant::now() + RUN + Duration::from_secs(10);
    while (lags.len() as i64) < n && Instant::now() < deadline {
        let Some(ev) = stream.next_if_any().await.unwrap() else {
            continue;
        };
        let at = Instant::now();
        let seq = ev
            .get_document("documentKey")
            .unwrap()
            .get_i64("_id")
            .unwrap();
        let ns = ev.get_document("ns").unwrap().get_str("coll").unwrap();
        assert!(watched.contains(&ns), "only watched namespaces: {ns}");
        let sent_at = sent.lock().await[&seq];
        lags.push((seq, at.saturating_duration_since(sent_at)));
    }
    writer.await.unwrap();
    other.await.unwrap();
    let slowest_oplog_read = match oplog_reader {
        Some(r) => r.await.unwrap(),
        None => Duration::ZERO,
    };
    assert_eq!(lags.len() as i64, n, "every matching event arrives");
    let mut seqs: Vec<i64> = lags.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as i64, n, "each exactly once");
    let mut worst = lags.clone();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    assert!(
        worst[0].1 < MAX_LAG,
        "an event waited {:?} (worst: {:?})",
        worst[0].1,
        &worst[..worst.len().min(10)]
    );
    assert!(
        slowest_oplog_read < MAX_LAG,
        "reading the oldest oplog entry took {slowest_oplog_read:?}"
    );
}
