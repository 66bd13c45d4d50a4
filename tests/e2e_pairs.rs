//! End to end through the real binary (issue 18): one daemon syncing twenty pairs over
//! two change streams, a filtered pair whose document moves in and out of the filter
//! on each side, and a three-edge hub where each edge syncs only its tenant's slice of
//! one shared cloud collection. Runs against the emulator, or against
//! `DATASYNC_TEST_MONGODB_URI`.

#[path = "e2e/harness.rs"]
#[allow(dead_code)] // the harness serves several suites; this one uses part of it
mod harness;

use std::collections::BTreeSet;

use bson::{doc, DateTime, Document};
use mongodb::Collection;

use harness::{all, get, wait_for, Mongo, Pair, Settings};

fn now() -> DateTime {
    DateTime::now()
}

fn t(id: &str, tenant: &str, value: &str) -> Document {
    doc! {"_id": id, "tenantId": tenant, "value": value, "updatedAt": now()}
}

/// A `[[pairs]]` table.
fn pair_table(name: &str, local: &str, cloud: &str, extra: &str) -> String {
    format!("[[pairs]]\nname = \"{name}\"\nlocal = \"{local}\"\ncloud = \"{cloud}\"\n{extra}")
}

#[tokio::test]
async fn twenty_pairs_in_one_daemon_over_two_streams() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "twenty");
    let db = m.client.database(&p.db);
    let n = 20;
    let mut tables = String::new();
    for i in 0..n {
        tables += &pair_table(
            &format!("p{i}"),
            &format!("{}.l{i}", p.db),
            &format!("{}.c{i}", p.db),
            "",
        );
    }
    let coll = |name: String| db.collection::<Document>(&name);
    // A document per pair before the start (the first start reconciles them).
    for i in 0..n {
        coll(format!("l{i}"))
            .insert_one(t("before", "x", &format!("pair {i}")))
            .await
            .unwrap();
    }
    let opened_before = m.hooks().map(|h| h.counters().change_streams_opened);
    let opened_since = |before: &std::collections::BTreeMap<String, u64>| {
        let now = m.hooks().unwrap().counters().change_streams_opened;
        now.into_iter()
            .map(|(ns, n)| (ns.clone(), n - before.get(&ns).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    };
    let text = p.pairs_config(&m, &Settings::default(), &tables);
    let daemon = p.start_text(&text).await;
    for i in 0..n {
        coll(format!("l{i}"))
            .insert_one(t("from-local", "x", &format!("pair {i}")))
            .await
            .unwrap();
        coll(format!("c{i}"))
            .insert_one(t("from-cloud", "x", &format!("pair {i}")))
            .await
            .unwrap();
    }
    for i in 0..n {
        let (l, c) = (coll(format!("l{i}")), coll(format!("c{i}")));
        wait_for(&c, "before", "start-up copy", |x| x.is_some()).await;
        wait_for(&c, "from-local", "live copy to cloud", |x| x.is_some()).await;
        wait_for(&l, "from-cloud", "live copy to local", |x| x.is_some()).await;
    }
    daemon.idle().await;
    for i in 0..n {
        let (l, c) = (coll(format!("l{i}")), coll(format!("c{i}")));
        let (l, c) = (all(&l).await, all(&c).await);
        assert_eq!(l, c, "pair {i}");
        assert!(
            l.values()
                .all(|d| d.get_str("value") == Ok(&format!("pair {i}"))),
            "pair {i} holds another pair's documents: {l:?}"
        );
    }
    let status = daemon.status().await;
    let pairs = status["pairs"].as_array().expect("pairs in status");
    assert_eq!(pairs.len(), n, "{status}");
    assert!(pairs.iter().all(|p| p["state"] == "running"), "{status}");
    // `ctl sync --pair` reconciles one pair: nothing to do, everything unchanged.
    let one = daemon.ctl_json(&["sync", "--pair", "p7"]).await;
    assert_eq!(one["report"]["local_to_cloud"]["unchanged"], 3, "{one}");
    // Two change streams for twenty pairs, one per side (what the emulator counts).
    if let Some(before) = &opened_before {
        let opened = opened_since(before);
        let db_streams = format!("{}.$cmd.aggregate", p.db);
        assert_eq!(
            opened,
            vec![(db_streams, 2)],
            "change streams opened for {n} pairs"
        );
    }
    daemon.terminate().await;
    p.drop_databases().await;
}

/// Replace `id` on `c` by a version of `tenant` holding `value`.
async fn set(c: &Collection<Document>, id: &str, tenant: &str, value: &str) {
    c.replace_one(doc! {"_id": id}, t(id, tenant, value))
        .await
        .unwrap();
}

/// Waits until `c` holds `id` with `value` (`None`: until it does not hold `id`).
async fn holds(c: &Collection<Document>, id: &str, value: Option<&str>, what: &str) {
    wait_for(c, id, what, |x| match value {
        Some(v) => x.and_then(|x| x.get_str("value").ok()) == Some(v),
        None => x.is_none(),
    })
    .await;
}

#[tokio::test]
async fn a_document_moves_in_and_out_of_the_filter_on_each_side() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "filtered");
    let table = pair_table(
        "edge7",
        &format!("{}.local_data", p.db),
        &format!("{}.cloud_data", p.db),
        "filter = { tenantId = \"edge-7\" }\n",
    );
    // Cloud holds another tenant's document, and one whose `_id` local also uses.
    p.cloud
        .insert_one(t("other", "edge-8", "not ours"))
        .await
        .unwrap();
    p.cloud
        .insert_one(t("clash", "edge-8", "cloud's"))
        .await
        .unwrap();
    let text = p.pairs_config(&m, &Settings::default(), &table);
    let daemon = p.start_text(&text).await;
    let (local, cloud) = (p.local.clone(), p.cloud.clone());
    // In on local: arrives; out (tenant changes): leaves cloud; back in: arrives.
    local.insert_one(t("a", "edge-7", "v1")).await.unwrap();
    holds(&cloud, "a", Some("v1"), "in the filter: copied").await;
    set(&local, "a", "edge-9", "moved away").await;
    holds(
        &cloud,
        "a",
        None,
        "left the filter on local: removed from cloud",
    )
    .await;
    set(&local, "a", "edge-7", "v2").await;
    holds(&cloud, "a", Some("v2"), "back in the filter: copied again").await;
    // The same on cloud.
    set(&cloud, "a", "edge-8", "moved on cloud").await;
    holds(
        &local,
        "a",
        None,
        "left the filter on cloud: removed from local",
    )
    .await;
    set(&cloud, "a", "edge-7", "v3").await;
    holds(&local, "a", Some("v3"), "back in on cloud: copied to local").await;
    // A cloud document outside the filter starting to match arrives.
    set(&cloud, "other", "edge-7", "now ours").await;
    holds(
        &local,
        "other",
        Some("now ours"),
        "started matching on cloud",
    )
    .await;
    // Local's document whose `_id` cloud uses outside the filter is not copied over it.
    local
        .insert_one(t("clash", "edge-7", "local's"))
        .await
        .unwrap();
    daemon.idle().await;
    let report = daemon.ctl_json(&["sync"]).await;
    daemon.idle().await;
    let clash = get(&cloud, "clash").await.unwrap();
    assert_eq!(clash.get_str("value"), Ok("cloud's"), "{report}");
    assert_eq!(
        get(&local, "clash").await.unwrap().get_str("value"),
        Ok("local's")
    );
    let moved = get(&cloud, "a").await.unwrap();
    assert_eq!(moved.get_str("value"), Ok("v3"));
    daemon.terminate().await;
    p.drop_databases().await;
}

#[tokio::test]
async fn three_edges_around_one_cloud_each_sync_only_their_tenant() {
    let m = Mongo::start().await;
    let hub = Pair::new(&m, "hub3");
    let mut edges: Vec<Pair> = (1..=3)
        .map(|i| Pair::edge_of(&m, &format!("edge{i}"), &hub))
        .collect();
    // Before anything starts: cloud holds every tenant's documents.
    for i in 1..=3 {
        for j in 0..3 {
            hub.cloud
                .insert_one(t(&format!("c{i}-{j}"), &format!("edge-{i}"), "from cloud"))
                .await
                .unwrap();
        }
    }
    hub.cloud
        .insert_one(t("unowned", "nobody", "x"))
        .await
        .unwrap();
    let mut daemons = Vec::new();
    for (i, e) in edges.iter_mut().enumerate() {
        let table = pair_table(
            "tenant",
            &format!("{}.local_data", e.db),
            &format!("{}.cloud_data", hub.db),
            &format!("filter = '{{\"tenantId\": \"edge-{}\"}}'\n", i + 1),
        );
        let s = Settings {
            on_start: true,
            ..Settings::default()
        };
        let text = e.pairs_config(&m, &s, &table);
        daemons.push(e.start_text(&text).await);
    }
    // Each edge writes its own documents.
    for (i, e) in edges.iter().enumerate() {
        for j in 0..3 {
            e.local
                .insert_one(t(
                    &format!("e{}-{j}", i + 1),
                    &format!("edge-{}", i + 1),
                    "from edge",
                ))
                .await
                .unwrap();
        }
    }
    for i in 1..=3 {
        for j in 0..3 {
            wait_for(
                &hub.cloud,
                &format!("e{i}-{j}"),
                "edge write reaches cloud",
                |x| x.is_some(),
            )
            .await;
        }
    }
    // Cloud moves one document from edge 1 to edge 2.
    set(&hub.cloud, "c1-0", "edge-2", "moved to edge 2").await;
    holds(
        &edges[1].local,
        "c1-0",
        Some("moved to edge 2"),
        "arrives at its new edge",
    )
    .await;
    holds(&edges[0].local, "c1-0", None, "leaves its old edge").await;
    for d in &daemons {
        d.idle().await;
    }
    // Every edge holds exactly its tenant's slice; cloud holds everything.
    let cloud = all(&hub.cloud).await;
    for (i, e) in edges.iter().enumerate() {
        let tenant = format!("edge-{}", i + 1);
        let slice: BTreeSet<String> = cloud
            .iter()
            .filter(|(_, d)| d.get_str("tenantId") == Ok(&tenant))
            .map(|(k, _)| k.clone())
            .collect();
        let local: BTreeSet<String> = all(&e.local).await.into_keys().collect();
        assert_eq!(
            local,
            slice,
            "edge {} holds exactly its tenant's slice",
            i + 1
        );
        for id in &local {
            assert_eq!(get(&e.local, id).await, cloud.get(id).cloned(), "{id}");
        }
    }
    assert_eq!(cloud.len(), 9 + 9 + 1, "nothing lost on cloud: {cloud:?}");
    assert!(cloud.contains_key("unowned"));
    for d in daemons {
        d.terminate().await;
    }
    for e in &edges {
        e.drop_databases().await;
    }
    hub.drop_databases().await;
}
