//! Bounded resources: with the daemon paused, N change events arrive on local (N
//! inserts, far more than `sync.queue_capacity`). The daemon's peak resident memory
//! (`VmHWM`) must stay under a stated bound, `BASE_MIB + queue_capacity × PER_KEY_BYTES`
//! (see [`bound_mib`]) — backpressure: the stream reader waits
//! when the queue is full instead of buffering everything — and after `resume` every
//! document arrives on cloud, none lost, none extra.

mod support;

use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use support::{env_u64, Harness, Options, CLOUD, LOCAL};

/// Daemon memory not proportional to the queue: runtime, driver buffers (one batch of
/// 1000 change events per stream), and the echo memory of up to 100,000 written keys
/// once the queue drains.
const BASE_MIB: u64 = 128;
/// Bytes per queued key: the queue entry and its checkpoint position (at most 1 KiB,
/// `ENTRY_BYTES` in src/core/queue.rs) plus this test's document (~90 bytes of BSON)
/// and resume token as bytes, with allocator overhead.
const PER_KEY_BYTES: u64 = 1536;

/// The stated bound on the daemon's peak RSS for `queue_capacity`, whatever the
/// number of events: `BASE_MIB + queue_capacity × PER_KEY_BYTES`.
fn bound_mib(queue_capacity: u64) -> u64 {
    BASE_MIB + (queue_capacity * PER_KEY_BYTES).div_ceil(1 << 20)
}

async fn resources_run(events: u64, queue_capacity: u64, bound_mib: u64) {
    let h = Harness::start(Options {
        queue_capacity,
        ..Options::default()
    })
    .await;
    let daemon = h.spawn_daemon().await;
    let reply = h.admin(r#"{"cmd":"pause"}"#).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let baseline = daemon.rss_kib();

    let started = Instant::now();
    let chunk = 1000u64;
    let mut peak_depth = 0u64;
    let mut i = 0u64;
    while i < events {
        let n = chunk.min(events - i);
        let docs: Vec<Document> = (i..i + n)
            .map(|k| {
                doc! {"_id": k as i64, "name": format!("event {k}"), "value": (k % 997) as i32, "updatedAt": DateTime::now()}
            })
            .collect();
        h.coll(LOCAL).insert_many(docs).await.expect("insert_many");
        i += n;
        if i.is_multiple_of(chunk * 20) {
            let s = h.status().await;
            peak_depth = peak_depth.max(s["queue_depth"].as_u64().unwrap_or(0));
        }
    }
    let inserted_in = started.elapsed();
    // Give the paused daemon time to read as far as the queue lets it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = h.status().await;
    assert_eq!(s["paused"], true);
    peak_depth = peak_depth.max(s["queue_depth"].as_u64().unwrap_or(0));
    let paused_peak = daemon.peak_rss_kib();
    assert_eq!(
        h.coll(CLOUD).count_documents(doc! {}).await.unwrap(),
        0,
        "a paused daemon applied writes; log:\n{}",
        h.log_tail(40)
    );
    assert!(
        peak_depth <= queue_capacity,
        "queue_depth {peak_depth} above queue_capacity {queue_capacity}"
    );

    let resumed = Instant::now();
    assert_eq!(h.admin(r#"{"cmd":"resume"}"#).await["ok"], true);
    let limit = Duration::from_secs(60 + events / 500);
    loop {
        let n = h.coll(CLOUD).count_documents(doc! {}).await.unwrap();
        if n >= events {
            break;
        }
        assert!(
            resumed.elapsed() < limit,
            "only {n}/{events} on cloud after {limit:?}:\n{}",
            h.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_in = resumed.elapsed();
    assert!(
        h.wait_converged(Duration::from_secs(1), Duration::from_secs(120))
            .await
    );
    let cloud = h.dump(CLOUD).await;
    assert_eq!(
        cloud.len() as u64,
        events,
        "extra or missing documents on cloud"
    );
    let local = h.dump(LOCAL).await;
    assert_eq!(local, cloud);
    let peak = daemon.peak_rss_kib();
    println!(
        "resources: {events} events while paused (queue_capacity {queue_capacity}, peak queue_depth {peak_depth}); \
         daemon RSS baseline {} MiB, peak while paused {} MiB, peak overall {} MiB (bound {bound_mib} MiB); \
         inserted in {:.1} s, drained after resume in {:.1} s; 0 lost",
        baseline / 1024,
        paused_peak / 1024,
        peak / 1024,
        inserted_in.as_secs_f64(),
        drained_in.as_secs_f64(),
    );
    assert!(
        peak / 1024 < bound_mib,
        "peak RSS {} MiB over the {bound_mib} MiB bound",
        peak / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_daemon_memory_is_bounded_and_nothing_is_lost() {
    resources_run(30_000, 5_000, bound_mib(5_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with scripts/reliability-long.sh"]
async fn paused_daemon_memory_is_bounded_and_nothing_is_lost_long() {
    let capacity = env_u64("RELIABILITY_QUEUE_CAPACITY", 100_000);
    resources_run(
        env_u64("RELIABILITY_EVENTS", 1_000_000),
        capacity,
        env_u64("RELIABILITY_RSS_BOUND_MIB", bound_mib(capacity)),
    )
    .await;
}

/// Regression: the emulator looked a document up by `_id` only when the filter was
/// exactly `{_id: v}`; the daemon's conditional writes (`{_id: v, updatedAt: {$lt: t}}`)
/// scanned the whole collection per statement, so applying N events cost O(N²) and a
/// paused-then-resumed daemon drained 30,000 events at ~60/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_by_id_do_not_scan_the_collection() {
    let h = Harness::start(Options::default()).await;
    let n = 50_000i64;
    for start in (0..n).step_by(5000) {
        let docs: Vec<Document> = (start..start + 5000)
            .map(|k| doc! {"_id": k, "updatedAt": DateTime::from_millis(1000)})
            .collect();
        h.coll(CLOUD).insert_many(docs).await.unwrap();
    }
    let t = DateTime::from_millis(2000);
    let started = Instant::now();
    for k in (0..n).step_by(50) {
        h.coll(CLOUD)
            .update_one(
                doc! {"_id": k, "updatedAt": {"$lt": t}},
                doc! {"$set": {"updatedAt": t}},
            )
            .await
            .unwrap();
    }
    let took = started.elapsed();
    println!("1000 conditional updates by _id over {n} documents: {took:?}");
    assert_eq!(
        h.coll(CLOUD)
            .count_documents(doc! {"updatedAt": t})
            .await
            .unwrap(),
        1000
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
