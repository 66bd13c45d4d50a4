//! End to end through the real binary, in the original system's topology (issue 16):
//! one-way daemons never delete or rewrite the other side's own documents (another
//! client's, in a hub) at start-up, on live writes or on `ctl sync`, and a daemon
//! switched to both-ways afterwards copies them across; three both-ways edges around one
//! cloud collection, with concurrent writes on all four collections, converge with
//! nothing lost or resurrected. Runs against the emulator, or against
//! `DATASYNC_TEST_MONGODB_URI`.

#[path = "e2e/harness.rs"]
#[allow(dead_code)] // the harness serves several suites; this one uses part of it
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bson::{doc, DateTime, Document};
use mongodb::Collection;
use serde_json::Value;

use harness::{all, eventually, get, wait_for, Mongo, Pair, Settings};

fn d(id: &str, value: &str, at: DateTime) -> Document {
    doc! {"_id": id, "value": value, "updatedAt": at}
}

fn now() -> DateTime {
    DateTime::now()
}

/// The report's counts into the target: (inserted, updated, deleted, kept).
fn into(report: &Value, dir: &str) -> (u64, u64, u64, u64) {
    let n = |k: &str| report[dir][k].as_u64().unwrap();
    (n("inserted"), n("updated"), n("deleted"), n("kept"))
}

/// `mode` between `src` and `dst` (the pair's collections in that order), then both-ways.
async fn one_way_keeps_the_targets_own(mode: &'static str, name: &str) {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, name);
    let (src, dst, dir): (&Collection<Document>, &Collection<Document>, &str) =
        if mode == "local-to-cloud" {
            (&p.local, &p.cloud, "local_to_cloud")
        } else {
            (&p.cloud, &p.local, "cloud_to_local")
        };
    let (src, dst) = (src.clone(), dst.clone());
    // Before the daemon starts: the target holds a document of its own, the source one.
    dst.insert_one(d("own1", "target's own, from before", now()))
        .await
        .unwrap();
    src.insert_one(d("s1", "source", now())).await.unwrap();
    let s = Settings {
        mode,
        on_start: true,
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    wait_for(&dst, "s1", "start-up copy", |x| x.is_some()).await;
    // Live: the target's clients write their own documents; the source inserts,
    // updates and deletes.
    dst.insert_one(d("own2", "target's own, live", now()))
        .await
        .unwrap();
    src.insert_one(d("s2", "source", now())).await.unwrap();
    src.insert_one(d("s3", "source, deleted later", now()))
        .await
        .unwrap();
    wait_for(&dst, "s3", "live copy", |x| x.is_some()).await;
    src.replace_one(doc! {"_id": "s2"}, d("s2", "source edit", now()))
        .await
        .unwrap();
    src.delete_one(doc! {"_id": "s3"}).await.unwrap();
    wait_for(&dst, "s3", "live delete of a synced document", |x| {
        x.is_none()
    })
    .await;
    wait_for(&dst, "s2", "live update", |x| {
        x.and_then(|x| x.get_str("value").ok()) == Some("source edit")
    })
    .await;
    daemon.idle().await;
    let start_up = daemon.status().await;
    let dry = daemon.ctl_json(&["sync", "--dry-run"]).await;
    assert_eq!(into(&dry["report"], dir).3, 2, "dry run: {dry}");
    let real = daemon.ctl_json(&["sync"]).await;
    assert_eq!(
        into(&real["report"], dir),
        (0, 0, 0, 2),
        "ctl sync in {mode}: {real}\nstatus before: {start_up}"
    );
    let target: BTreeSet<String> = all(&dst).await.into_keys().collect();
    let want: BTreeSet<String> = ["own1", "own2", "s1", "s2"].map(String::from).into();
    assert_eq!(
        target, want,
        "{mode}: target after start-up, live and ctl sync"
    );
    let source: BTreeSet<String> = all(&src).await.into_keys().collect();
    let want: BTreeSet<String> = ["s1", "s2"].map(String::from).into();
    assert_eq!(source, want, "{mode}: the source was written");
    daemon.terminate().await;

    // Switched to both-ways, the target's own documents are copied to the source.
    let s = Settings {
        mode: "both-ways",
        on_start: true,
        ..Settings::default()
    };
    let daemon = p.start(&m, &s).await;
    for id in ["own1", "own2"] {
        wait_for(&src, id, "copy after switching to both-ways", |x| {
            x.is_some()
        })
        .await;
    }
    daemon.idle().await;
    assert_eq!(
        all(&p.local).await,
        all(&p.cloud).await,
        "{mode} → both-ways"
    );
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_to_cloud_keeps_clouds_own_documents_and_both_ways_later_copies_them() {
    one_way_keeps_the_targets_own("local-to-cloud", "hl2c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_to_local_keeps_locals_own_documents_and_both_ways_later_copies_them() {
    one_way_keeps_the_targets_own("cloud-to-local", "hc2l").await;
}

/// What one writer did: its own keys still expected and those it deleted, and every
/// version it wrote of the shared keys.
#[derive(Default)]
struct Wrote {
    kept: BTreeSet<String>,
    deleted: BTreeSet<String>,
    shared: Vec<Document>,
}

/// A client writing `c`: own keys (a third deleted again) and the shared keys.
async fn writer(c: Collection<Document>, name: String, rounds: usize) -> Wrote {
    let mut w = Wrote::default();
    for r in 0..rounds {
        let id = format!("{name}-{r}");
        c.insert_one(d(&id, &name, now())).await.unwrap();
        w.kept.insert(id);
        let shared = format!("shared-{}", r % 4);
        let v = d(&shared, &format!("{name}@{r}"), now());
        c.replace_one(doc! {"_id": &shared}, v.clone())
            .upsert(true)
            .await
            .unwrap();
        w.shared.push(v);
        if r % 3 == 2 {
            let gone = format!("{name}-{}", r - 1);
            c.delete_one(doc! {"_id": &gone}).await.unwrap();
            w.kept.remove(&gone);
            w.deleted.insert(gone);
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edges_around_one_cloud_converge_with_nothing_lost_or_resurrected() {
    let m = Mongo::start().await;
    let mut edges = vec![Pair::new(&m, "hub0")];
    for i in 1..3 {
        let e = Pair::edge_of(&m, &format!("hub{i}"), &edges[0]);
        edges.push(e);
    }
    let mut daemons = Vec::new();
    for e in &mut edges {
        daemons.push(e.start(&m, &Settings::default()).await);
    }
    let cloud = edges[0].cloud.clone();
    let mut colls: Vec<(String, Collection<Document>)> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("edge{i}"), e.local.clone()))
        .collect();
    colls.push(("cloud".to_string(), cloud.clone()));
    let rounds = 24;
    let tasks: Vec<_> = colls
        .iter()
        .map(|(name, c)| tokio::spawn(writer(c.clone(), name.clone(), rounds)))
        .collect();
    let mut wrote = Vec::new();
    for t in tasks {
        wrote.push(t.await.unwrap());
    }
    // All four collections become identical and stay so.
    let snapshot = || async {
        let mut out = Vec::new();
        for (_, c) in &colls {
            out.push(all(c).await);
        }
        out
    };
    let same = eventually(Duration::from_secs(30), || async {
        let s = snapshot().await;
        s.iter().all(|x| *x == s[0])
    })
    .await;
    assert!(same.is_some(), "the four collections did not converge");
    for d in &daemons {
        d.idle().await;
    }
    let s = snapshot().await;
    assert!(s.iter().all(|x| *x == s[0]), "diverged after idle");
    let docs: &BTreeMap<String, Document> = &s[0];
    // Nothing lost, nothing resurrected.
    for w in &wrote {
        for id in &w.kept {
            assert!(docs.contains_key(id), "{id} lost");
        }
        for id in &w.deleted {
            assert!(!docs.contains_key(id), "{id} resurrected");
        }
    }
    // Each shared key holds the newest version written (ties: one of the newest).
    for k in 0..4 {
        let id = format!("shared-{k}");
        let newest = wrote
            .iter()
            .flat_map(|w| &w.shared)
            .filter(|v| v.get_str("_id").ok() == Some(id.as_str()))
            .map(|v| v.get_datetime("updatedAt").unwrap())
            .max()
            .unwrap();
        let got = docs.get(&id).unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(
            got.get_datetime("updatedAt").unwrap(),
            newest,
            "{id}: {got}"
        );
        let written = wrote.iter().flat_map(|w| &w.shared).any(|v| v == got);
        assert!(written, "{id}: {got} was never written");
    }
    assert_eq!(get(&cloud, "nothing").await, None);
    for d in daemons {
        d.terminate().await;
    }
    for e in &edges {
        e.drop_databases().await;
    }
}
