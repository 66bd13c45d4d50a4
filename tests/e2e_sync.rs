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
    daemon.idle().await;
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
    // Both sides' events are queued (read with their own post-images) before any apply.
    let queued = eventually(ARRIVE, || async {
        daemon.status().await["queue_depth"].as_u64() == Some(4)
    })
    .await;
    assert!(queued.is_some(), "conflicting events never queued");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_local_inserts_reach_cloud_and_nothing_is_written_back_to_local() {
    const N: u64 = 25;
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "echo");
    let daemon = p.start(&m, &Settings::default()).await;
    let local_ns = format!("{}.local_data", p.db);
    let cloud_ns = format!("{}.cloud_data", p.db);
    let hooks = m.hooks();
    let before = hooks.as_ref().map(|h| h.counters());
    let local_changes = Observer::watch(&p.local).await;
    let cloud_changes = Observer::watch(&p.cloud).await;
    let t = at(0);
    p.local
        .insert_many((0..N).map(|i| d(&format!("n{i:02}"), "v", t)))
        .await
        .unwrap();
    let arrived = eventually(ARRIVE, || async {
        p.cloud.count_documents(doc! {}).await.unwrap() == N
    })
    .await
    .expect("inserts did not all reach cloud");
    daemon.idle().await;
    let settle = Duration::from_millis(300);
    let local_events = local_changes.settled(N, settle).await;
    let cloud_events = cloud_changes.settled(N, Duration::ZERO).await;
    println!(
        "no echo: {N} local inserts on cloud after {arrived:?}; change events local {local_events}, cloud {cloud_events}"
    );
    assert_eq!(local_events, N, "the daemon changed documents on local");
    assert_eq!(cloud_events, N, "cloud changed more than once per insert");
    match (hooks, before) {
        (Some(h), Some(before)) => {
            let after = h.counters();
            let delta = |map: &std::collections::BTreeMap<String, u64>,
                         b: &std::collections::BTreeMap<String, u64>,
                         ns: &str| {
                map.get(ns).copied().unwrap_or(0) - b.get(ns).copied().unwrap_or(0)
            };
            let changed_local = delta(
                &after.documents_changed,
                &before.documents_changed,
                &local_ns,
            );
            let changed_cloud = delta(
                &after.documents_changed,
                &before.documents_changed,
                &cloud_ns,
            );
            let stmts_local = delta(&after.write_statements, &before.write_statements, &local_ns);
            let stmts_cloud = delta(&after.write_statements, &before.write_statements, &cloud_ns);
            println!(
                "no echo (emulator counters): local documents_changed {changed_local} (client {N}), write_statements {stmts_local} \
                 (daemon {}); cloud documents_changed {changed_cloud}, write_statements {stmts_cloud}",
                stmts_local - N
            );
            assert_eq!(changed_local, N, "daemon wrote back to local");
            assert!(
                stmts_local - N <= N,
                "more than one no-op per echo: {stmts_local}"
            );
            assert_eq!(changed_cloud, N);
        }
        _ => skipped(
            "no_echo write_statements",
            "needs emulator hooks (counters); change events counted instead",
        ),
    }
    daemon.terminate().await;
    p.drop_databases().await;
}

/// Status of the stream of `side`.
fn stream_state(st: &Value, side: &str) -> String {
    st["streams"][side]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_to_cloud_mode_copies_local_writes_and_never_writes_local() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "l2c");
    let s = Settings {
        mode: "local-to-cloud",
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    let st = daemon.status().await;
    assert_eq!(st["mode"], json!("local-to-cloud"));
    assert_eq!(stream_state(&st, "cloud"), "disabled");
    p.local.insert_one(d("k", "local", at(0))).await.unwrap();
    wait_for(&p.cloud, "k", "local insert", |x| value(x) == Some("local")).await;
    let local_changes = Observer::watch(&p.local).await;
    p.cloud.insert_one(d("c", "cloud", at(0))).await.unwrap();
    p.cloud
        .replace_one(doc! {"_id": "k"}, d("k", "cloud-newer", at(1_000)))
        .await
        .unwrap();
    // A later local write still flows, so the daemon is alive while we look.
    p.local.insert_one(d("k2", "local", at(0))).await.unwrap();
    wait_for(&p.cloud, "k2", "second local insert", |x| x.is_some()).await;
    daemon.idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&p.local, "c").await, None, "cloud insert reached local");
    assert_eq!(value(get(&p.local, "k").await.as_ref()), Some("local"));
    assert_eq!(
        local_changes.count(),
        1,
        "only the client's own insert of k2"
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_to_local_mode_copies_cloud_writes_and_never_writes_cloud() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "c2l");
    let s = Settings {
        mode: "cloud-to-local",
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    let st = daemon.status().await;
    assert_eq!(stream_state(&st, "local"), "disabled");
    p.cloud.insert_one(d("k", "cloud", at(0))).await.unwrap();
    p.cloud.insert_one(d("k3", "cloud", at(0))).await.unwrap();
    wait_for(&p.local, "k", "cloud insert", |x| value(x) == Some("cloud")).await;
    wait_for(&p.local, "k3", "cloud insert", |x| x.is_some()).await;
    let cloud_changes = Observer::watch(&p.cloud).await;
    p.local.insert_one(d("l", "local", at(0))).await.unwrap();
    p.local
        .replace_one(doc! {"_id": "k"}, d("k", "local-newer", at(1_000)))
        .await
        .unwrap();
    p.cloud.delete_one(doc! {"_id": "k3"}).await.unwrap();
    wait_for(&p.local, "k3", "cloud delete", |x| x.is_none()).await;
    daemon.idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&p.cloud, "l").await, None, "local insert reached cloud");
    assert_eq!(value(get(&p.cloud, "k").await.as_ref()), Some("cloud"));
    assert_eq!(
        cloud_changes.count(),
        1,
        "only the client's own delete of k3"
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_local_reverts_local_edits_and_ctl_sync_removes_local_only_documents() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "ovl");
    let s = Settings {
        mode: "overwrite-local",
        ..Settings::default()
    };
    let truth = d("k", "cloud", at(-10_000));
    p.cloud.insert_one(truth.clone()).await.unwrap();
    let daemon = p.start(&m, &s).await;
    wait_for(&p.local, "k", "start-up copy", |x| x == Some(&truth)).await;
    // A newer local edit still loses: cloud is authoritative.
    p.local
        .replace_one(doc! {"_id": "k"}, d("k", "local-edit", at(5_000)))
        .await
        .unwrap();
    let t = wait_for(&p.local, "k", "local edit reverted", |x| x == Some(&truth)).await;
    println!("overwrite-local: local edit reverted after {t:?}");
    // While paused, a local-only document stays until `ctl sync` removes it.
    assert_eq!(daemon.ctl(&["pause"]).await.status.code(), Some(0));
    p.local
        .insert_one(d("stray", "local", at(0)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(get(&p.local, "stray").await.is_some());
    let v = daemon.ctl_json(&["sync"]).await;
    assert_eq!(v["report"]["mode"], json!("overwrite-local"), "{v}");
    assert_eq!(v["report"]["cloud_to_local"]["deleted"], json!(1), "{v}");
    assert_eq!(v["report"]["cloud_to_local"]["unchanged"], json!(1), "{v}");
    assert_eq!(get(&p.local, "stray").await, None);
    assert_eq!(daemon.ctl(&["resume"]).await.status.code(), Some(0));
    daemon.idle().await;
    assert_eq!(all(&p.local).await, all(&p.cloud).await);
    assert!(
        get(&p.cloud, "stray").await.is_none(),
        "local-only doc reached cloud"
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ways_mode_carries_writes_and_deletes_from_either_side() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "both");
    let daemon = p.start(&m, &Settings::default()).await;
    let st = daemon.status().await;
    assert_eq!(st["mode"], json!("both-ways"));
    assert_eq!(stream_state(&st, "local"), "running");
    assert_eq!(stream_state(&st, "cloud"), "running");
    p.cloud.insert_one(d("c", "cloud", at(0))).await.unwrap();
    p.local.insert_one(d("l", "local", at(0))).await.unwrap();
    wait_for(&p.local, "c", "cloud insert", |x| value(x) == Some("cloud")).await;
    wait_for(&p.cloud, "l", "local insert", |x| value(x) == Some("local")).await;
    p.cloud.delete_one(doc! {"_id": "l"}).await.unwrap();
    wait_for(&p.local, "l", "cloud delete", |x| x.is_none()).await;
    daemon.idle().await;
    assert_eq!(all(&p.local).await, all(&p.cloud).await);
    assert_eq!(all(&p.local).await.len(), 1);
    daemon.terminate().await;
    p.drop_databases().await;
}

/// `{inserted, updated, deleted, unchanged}` of one direction.
/// A direction's counts: inserted, updated, deleted, unchanged, kept.
fn counts(r: &Value, dir: &str) -> [u64; 5] {
    ["inserted", "updated", "deleted", "unchanged", "kept"].map(|k| r[dir][k].as_u64().unwrap())
}

/// Prepare the diff with the daemon paused: 2 same, 3 local-only, 2 cloud-only, 1
/// differing (cloud newer), 1 cloud-only whose local delete is tombstoned. Then
/// `ctl sync --mode M --dry-run`, `ctl sync --mode M` (same counts), check the data, and
/// a second dry run that finds nothing to write.
async fn ctl_sync_case(mode: &str, name: &str, l2c: [u64; 5], c2l: [u64; 5], ids: [&[&str]; 2]) {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, name);
    let daemon = p.start(&m, &Settings::default()).await;
    let old = at(-60_000);
    for id in ["same1", "same2", "diff", "tomb"] {
        p.local.insert_one(d(id, "base", old)).await.unwrap();
    }
    for id in ["same1", "same2", "diff", "tomb"] {
        wait_for(&p.cloud, id, "initial copy", |x| x.is_some()).await;
    }
    p.local.delete_one(doc! {"_id": "tomb"}).await.unwrap();
    wait_for(&p.cloud, "tomb", "delete", |x| x.is_none()).await;
    daemon.idle().await;
    assert_eq!(daemon.ctl(&["pause"]).await.status.code(), Some(0));
    for id in ["l1", "l2", "l3"] {
        p.local.insert_one(d(id, "local", at(0))).await.unwrap();
    }
    for id in ["c1", "c2"] {
        p.cloud.insert_one(d(id, "cloud", at(0))).await.unwrap();
    }
    p.cloud
        .replace_one(doc! {"_id": "diff"}, d("diff", "cloud-newer", at(0)))
        .await
        .unwrap();
    // The deleted version comes back on cloud (older than the delete).
    p.cloud.insert_one(d("tomb", "base", old)).await.unwrap();

    let dry = daemon
        .ctl_json(&["sync", "--mode", mode, "--dry-run"])
        .await;
    let r = &dry["report"];
    println!("ctl sync --mode {mode} --dry-run: {r}");
    assert_eq!(r["mode"], json!(mode), "{r}");
    assert_eq!(counts(r, "local_to_cloud"), l2c, "{r}");
    assert_eq!(counts(r, "cloud_to_local"), c2l, "{r}");
    assert_eq!(r["conflicts"], json!(1), "{r}");
    assert_eq!(
        p.local.count_documents(doc! {}).await.unwrap(),
        6,
        "dry run wrote"
    );
    assert_eq!(
        p.cloud.count_documents(doc! {}).await.unwrap(),
        6,
        "dry run wrote"
    );

    let real = daemon.ctl_json(&["sync", "--mode", mode]).await;
    let r = &real["report"];
    assert_eq!(counts(r, "local_to_cloud"), l2c, "{r}");
    assert_eq!(counts(r, "cloud_to_local"), c2l, "{r}");
    let keys = |m: std::collections::BTreeMap<String, Document>| m.into_keys().collect::<Vec<_>>();
    let (local, cloud) = (keys(all(&p.local).await), keys(all(&p.cloud).await));
    assert_eq!(local, ids[0], "local after sync --mode {mode}");
    assert_eq!(cloud, ids[1], "cloud after sync --mode {mode}");

    if mode == "both-ways" || mode == "overwrite-local" {
        assert_eq!(all(&p.local).await, all(&p.cloud).await, "contents differ");
    }
    let again = daemon
        .ctl_json(&["sync", "--mode", mode, "--dry-run"])
        .await;
    let r = &again["report"];
    for dir in ["local_to_cloud", "cloud_to_local"] {
        assert_eq!(
            counts(r, dir)[..3],
            [0, 0, 0],
            "second sync would write: {r}"
        );
    }
    p.drop_databases().await;
}

const BOTH_IDS: &[&str] = &["c1", "c2", "diff", "l1", "l2", "l3", "same1", "same2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sync_both_ways_reports_exact_counts_and_keeps_the_tombstoned_delete() {
    ctl_sync_case(
        "both-ways",
        "sbw",
        [3, 0, 1, 2, 0],
        [2, 1, 0, 2, 0],
        [BOTH_IDS, BOTH_IDS],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sync_local_to_cloud_copies_local_and_keeps_clouds_own_with_exact_counts() {
    let local: &[&str] = &["diff", "l1", "l2", "l3", "same1", "same2"];
    // Cloud keeps its newer `diff` (last writer wins in one direction too) and its own
    // c1, c2 (issue 16); `tomb` goes: local's tombstone covers it.
    ctl_sync_case(
        "local-to-cloud",
        "sl2c",
        [3, 0, 1, 2, 2],
        [0; 5],
        [local, BOTH_IDS],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sync_cloud_to_local_copies_cloud_and_keeps_locals_own_with_exact_counts() {
    let cloud: &[&str] = &["c1", "c2", "diff", "same1", "same2", "tomb"];
    let local: &[&str] = &[
        "c1", "c2", "diff", "l1", "l2", "l3", "same1", "same2", "tomb",
    ];
    // Local keeps its own l1–l3 (issue 16).
    ctl_sync_case(
        "cloud-to-local",
        "sc2l",
        [0; 5],
        [3, 1, 0, 2, 3],
        [local, cloud],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sync_overwrite_local_makes_local_identical_with_exact_counts() {
    let cloud: &[&str] = &["c1", "c2", "diff", "same1", "same2", "tomb"];
    ctl_sync_case(
        "overwrite-local",
        "sovl",
        [0; 5],
        [3, 1, 3, 2, 0],
        [cloud, cloud],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_reapplying_or_losing_writes() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "rst");
    let s = Settings::default();
    let daemon = p.start(&m, &s).await;
    let old = at(-60_000);
    for id in ["a", "gone"] {
        p.local.insert_one(d(id, "v1", old)).await.unwrap();
    }
    p.cloud.insert_one(d("b", "v1", old)).await.unwrap();
    for id in ["a", "gone"] {
        wait_for(&p.cloud, id, "first run", |x| x.is_some()).await;
    }
    wait_for(&p.local, "b", "first run", |x| x.is_some()).await;
    daemon.idle().await;
    daemon.terminate().await;

    let local_changes = Observer::watch(&p.local).await;
    let cloud_changes = Observer::watch(&p.cloud).await;
    // While it is down: 2 writes on each side, one of them a delete.
    p.local.insert_one(d("x", "offline", at(0))).await.unwrap();
    p.local
        .replace_one(doc! {"_id": "a"}, d("a", "v2", at(0)))
        .await
        .unwrap();
    p.cloud.insert_one(d("y", "offline", at(0))).await.unwrap();
    p.cloud.delete_one(doc! {"_id": "gone"}).await.unwrap();

    let daemon = p.start(&m, &s).await;
    wait_for(&p.cloud, "x", "offline local insert", |x| x.is_some()).await;
    wait_for(&p.cloud, "a", "offline local update", |x| {
        value(x) == Some("v2")
    })
    .await;
    wait_for(&p.local, "y", "offline cloud insert", |x| x.is_some()).await;
    wait_for(&p.local, "gone", "offline cloud delete", |x| x.is_none()).await;
    daemon.idle().await;
    let settle = Duration::from_millis(300);
    // Each side: the 2 client writes plus the 2 the daemon carried over, nothing more.
    let (l, c) = (
        local_changes.settled(4, settle).await,
        cloud_changes.count(),
    );
    println!(
        "restart: documents changed after the restart: local {l}, cloud {c} (4 each expected)"
    );
    assert_eq!((l, c), (4, 4), "re-applied or missed writes");
    let st = daemon.status().await;
    assert_eq!(
        st["last_reconcile"],
        Value::Null,
        "resumed via a reconcile, not the stream: {st}"
    );
    assert_eq!(all(&p.local).await, all(&p.cloud).await);
    let log = daemon.terminate().await;
    // The engine's own reasons for a full reconcile (the headroom alarm may mention
    // one: a fresh emulator keeps seconds of history).
    for reason in ["full reconcile before streaming", "full reconcile follows"] {
        assert!(!log.contains(reason), "{log}");
    }
    p.drop_databases().await;
}

/// Stop, write on both sides (and delete `doomed` on local), forget the history, start:
/// the daemon must reconcile and carry the offline writes. `None` on a real server.
async fn lost_history_run(test: &str, name: &str) -> Option<(Mongo, Pair, harness::Daemon)> {
    let m = Mongo::start().await;
    let Some(hooks) = m.hooks() else {
        skipped(
            test,
            "needs emulator hooks (forget_history); a real server's oplog cannot be truncated from a test",
        );
        return None;
    };
    let mut p = Pair::new(&m, name);
    let s = Settings::default();
    let daemon = p.start(&m, &s).await;
    let old = at(-60_000);
    for id in ["keep", "doomed"] {
        p.local.insert_one(d(id, "v1", old)).await.unwrap();
        wait_for(&p.cloud, id, "first run", |x| x.is_some()).await;
    }
    daemon.idle().await;
    daemon.terminate().await;

    p.local
        .insert_one(d("new_l", "offline", at(0)))
        .await
        .unwrap();
    p.cloud
        .insert_one(d("new_c", "offline", at(0)))
        .await
        .unwrap();
    p.cloud
        .replace_one(doc! {"_id": "keep"}, d("keep", "v2", at(0)))
        .await
        .unwrap();
    p.local.delete_one(doc! {"_id": "doomed"}).await.unwrap();
    hooks.forget_history();

    let daemon = p.start(&m, &s).await;
    wait_for(&p.cloud, "new_l", "offline local insert", |x| x.is_some()).await;
    wait_for(&p.local, "new_c", "offline cloud insert", |x| x.is_some()).await;
    wait_for(&p.local, "keep", "offline cloud update", |x| {
        value(x) == Some("v2")
    })
    .await;
    daemon.idle().await;
    Some((m, p, daemon))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_history_triggers_a_reconcile_that_brings_the_offline_writes() {
    let test = "lost_history_triggers_a_reconcile_that_brings_the_offline_writes";
    let Some((_m, p, daemon)) = lost_history_run(test, "lost").await else {
        return;
    };
    let st = daemon.status().await;
    assert!(
        st["last_reconcile"]["finished_at"].is_string(),
        "no reconcile: {st}"
    );
    // Which reconcile shows depends on timing (each side's reader may run one), so the
    // data above is the proof; status must still say why.
    for side in ["local", "cloud"] {
        let err = st["streams"][side]["last_error"]
            .as_str()
            .unwrap_or_default();
        assert!(
            err.contains("286"),
            "{side} stream does not report the lost history: {st}"
        );
    }
    let log = daemon.terminate().await;
    assert!(
        log.contains("history lost") || log.contains("resume point lost"),
        "history loss not logged:\n{log}"
    );
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_made_while_down_is_not_resurrected_when_history_is_lost() {
    let test = "delete_made_while_down_is_not_resurrected_when_history_is_lost";
    let Some((_m, p, daemon)) = lost_history_run(test, "lostdel").await else {
        return;
    };
    assert_eq!(
        get(&p.local, "doomed").await,
        None,
        "deleted-while-down document resurrected"
    );
    assert_eq!(
        get(&p.cloud, "doomed").await,
        None,
        "delete made while down not carried over"
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

/// One line out, one line back, on an open admin connection.
async fn exchange(
    conn: &mut (impl tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin),
    line: &str,
) -> Value {
    conn.write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_line(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    serde_json::from_str(&reply).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_error_replies_and_the_connection_stays_usable() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "adm");
    let daemon = p.start(&m, &Settings::default()).await;
    let stream = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let mut conn = BufReader::new(stream);
    let v = exchange(&mut conn, r#"{"cmd":"sync","mode":"sideways"}"#).await;
    assert_eq!(v["ok"], json!(false), "{v}");
    assert!(v["error"].as_str().unwrap().contains("sideways"), "{v}");
    let v = exchange(&mut conn, "not json").await;
    assert_eq!(v["ok"], json!(false), "{v}");
    assert!(v["error"].as_str().unwrap().contains("invalid JSON"), "{v}");
    let v = exchange(&mut conn, r#"{"cmd":"status"}"#).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["paused"], json!(false), "{v}");
    daemon.terminate().await;
    p.drop_databases().await;
}
