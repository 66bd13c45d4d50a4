//! The engine over the adapter with several pairs: one shared stream per side carries
//! every pair's changes to the right pair, and a filtered pair copies only its slice
//! and never touches the target's documents outside it.

use datasync::core::{Engine, EngineConfig};
use tokio_util::sync::CancellationToken;

use super::*;

/// Waits up to 20 s for `check` to hold.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn engine_syncs_several_pairs_over_one_stream_per_side_with_a_filter() {
    let b = Backend::start("pairs_engine").await;
    let tenant_a = Some(doc! {"tenant": "a"});
    let sides = sides(
        &b,
        vec![
            pair(&b, "all", "l_all", "c_all", None),
            pair(&b, "tenant", "l_ten", "c_ten", tenant_a.clone()),
        ],
    );
    // A cloud document outside the tenant's filter, with a key the local side will use.
    b.coll("c_ten")
        .insert_one(doc! {"_id": 2, "tenant": "b", "updatedAt": at(1)})
        .await
        .unwrap();
    let connected = sides.connect().await.unwrap();
    let specs = connected
        .pairs
        .iter()
        .zip(&sides.pairs)
        .map(|(stores, p)| datasync::core::PairSpec {
            name: p.name.clone(),
            config: EngineConfig {
                filtered: p.filter.is_some(),
                ..EngineConfig::default()
            },
            stores: stores.clone(),
        })
        .collect();
    let engine = Engine::with_pairs(specs, connected.streams.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { engine.run(stop, true, Duration::from_secs(5)).await }
    });
    let now = DateTime::now();
    b.coll("l_all")
        .insert_one(doc! {"_id": 1, "v": 1, "updatedAt": now})
        .await
        .unwrap();
    b.coll("l_ten")
        .insert_many([
            doc! {"_id": 1, "tenant": "a", "updatedAt": now},
            doc! {"_id": 2, "tenant": "a", "updatedAt": now},
            doc! {"_id": 3, "tenant": "b", "updatedAt": now},
        ])
        .await
        .unwrap();
    eventually("pair 0 copies its document", || async {
        docs_by_id(&b, "c_all").await.contains_key(&1)
    })
    .await;
    eventually("pair 1 copies tenant a's document", || async {
        docs_by_id(&b, "c_ten").await.contains_key(&1)
    })
    .await;
    // Give the engine time to (wrongly) do more, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cloud = docs_by_id(&b, "c_ten").await;
    assert_eq!(
        cloud[&2].get_str("tenant"),
        Ok("b"),
        "the cloud document outside the filter is untouched: {cloud:?}"
    );
    assert!(!cloud.contains_key(&3), "tenant b's document is not copied");
    assert!(!docs_by_id(&b, "c_all").await.contains_key(&2));
    if let Some(emu) = b.emulator.as_ref() {
        let opened = emu.handle().counters().change_streams_opened;
        assert_eq!(
            opened.into_iter().collect::<Vec<_>>(),
            [(format!("{}.$cmd.aggregate", b.db), 2)],
            "one stream per side for both pairs"
        );
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    if b.emulator.is_none() {
        let _ = b.client.database(&sides.state_database).drop().await;
    }
    b.finish().await;
}
