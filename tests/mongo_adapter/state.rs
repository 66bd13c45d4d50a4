//! `MongoState`: checkpoints, tombstones, the TTL index.

use super::*;

#[tokio::test]
async fn checkpoints_round_trip_per_side() {
    let b = Backend::start("state_ckpt").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    let other_pair = MongoState::new(b.client.clone(), &b.db, "a.x__b.z");
    assert_eq!(state.load_checkpoint(Side::Local).await.unwrap(), None);
    let t1 = ResumeToken(doc! {"_data": "01"});
    let t2 = ResumeToken(doc! {"_data": "02"});
    state.save_checkpoint(Side::Local, &t1).await.unwrap();
    state.save_checkpoint(Side::Cloud, &t2).await.unwrap();
    assert_eq!(state.load_checkpoint(Side::Local).await.unwrap(), Some(t1));
    state.save_checkpoint(Side::Local, &t2).await.unwrap();
    assert_eq!(
        state.load_checkpoint(Side::Local).await.unwrap(),
        Some(t2.clone())
    );
    assert_eq!(other_pair.load_checkpoint(Side::Local).await.unwrap(), None);
    state.clear_checkpoint(Side::Local).await.unwrap();
    assert_eq!(state.load_checkpoint(Side::Local).await.unwrap(), None);
    assert_eq!(state.load_checkpoint(Side::Cloud).await.unwrap(), Some(t2));
    b.finish().await;
}

/// Checkpoint documents written by versions that kept a delete ledger with the token
/// still load, and the next save drops the ledger's fields.
#[tokio::test]
async fn a_checkpoint_saved_by_an_older_version_loads_and_is_rewritten_clean() {
    let b = Backend::start("state_old_ckpt").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    let checkpoints = b.client.database(&b.db).collection::<Document>(CHECKPOINTS);
    checkpoints
        .insert_one(doc! {
            "_id": "local:a.x__b.y", "side": "local", "pair": "a.x__b.y",
            "token": {"_data": "01"}, "savedAt": at(0),
            "pendingDeletes": [{"key": "a", "deletedAt": at(5)}],
            "pendingDeletesComplete": true,
        })
        .await
        .unwrap();
    assert_eq!(
        state.load_checkpoint(Side::Local).await.unwrap(),
        Some(ResumeToken(doc! {"_data": "01"}))
    );
    let t2 = ResumeToken(doc! {"_data": "02"});
    state.save_checkpoint(Side::Local, &t2).await.unwrap();
    let saved = checkpoints
        .find_one(doc! {"side": "local"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.get_document("token").unwrap(), &t2.0);
    assert!(
        !saved.contains_key("pendingDeletes") && !saved.contains_key("pendingDeletesComplete"),
        "{saved}"
    );
    b.finish().await;
}

#[tokio::test]
async fn later_tombstone_wins_and_tombstones_expire() {
    let b = Backend::start("state_tomb").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    let ts = |key: &str, t: i64, origin: Side| Tombstone {
        key: k(key),
        deleted_at: at(t),
        origin,
    };
    state
        .record_tombstones(&[ts("a", 10, Side::Local), ts("b", 10, Side::Local)])
        .await
        .unwrap();
    // Older for "a" (ignored), newer for "b" (wins with its origin), new key "c".
    state
        .record_tombstones(&[
            ts("a", 5, Side::Cloud),
            ts("b", 20, Side::Cloud),
            ts("c", 30, Side::Cloud),
        ])
        .await
        .unwrap();
    let mut got: Vec<(String, i64, Side)> = state
        .tombstones(&[k("a"), k("b"), k("c"), k("zz")])
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            let key = t.key.0.as_str().unwrap().to_string();
            (
                key,
                t.deleted_at.timestamp_millis() - at(0).timestamp_millis(),
                t.origin,
            )
        })
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("a".to_string(), 10, Side::Local),
            ("b".to_string(), 20, Side::Cloud),
            ("c".to_string(), 30, Side::Cloud)
        ]
    );
    state.remove_tombstones(&[k("c")]).await.unwrap();
    assert!(state.tombstones(&[k("c")]).await.unwrap().is_empty());
    assert_eq!(state.expire_tombstones(at(15)).await.unwrap(), 1);
    let left = state.tombstones(&[k("a"), k("b")]).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.0, Bson::String("b".into()));
    b.finish().await;
}

/// A tombstone written by an older version (with its `quiet` flag) reads back.
#[tokio::test]
async fn a_tombstone_written_by_an_older_version_reads_back() {
    let b = Backend::start("state_old_tomb").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    b.client
        .database(&b.db)
        .collection::<Document>("tombstones_a.x__b.y")
        .insert_one(doc! {"_id": "a", "deletedAt": at(10), "origin": "cloud", "quiet": true})
        .await
        .unwrap();
    let got = state.tombstones(&[k("a")]).await.unwrap();
    assert_eq!(
        got,
        [Tombstone {
            key: k("a"),
            deleted_at: at(10),
            origin: Side::Cloud
        }]
    );
    b.finish().await;
}

/// `expireAfterSeconds` of the tombstone TTL index of `state`.
async fn ttl_of(b: &Backend, state: &MongoState) -> i64 {
    let indexes: Vec<Document> = b
        .client
        .database(&b.db)
        .run_command(doc! {"listIndexes": state.tombstone_collection().name()})
        .await
        .unwrap()
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect();
    let ttl = indexes
        .iter()
        .find(|i| i.get_str("name") == Ok(TTL_INDEX))
        .unwrap_or_else(|| panic!("no TTL index in {indexes:?}"));
    assert_eq!(ttl.get_document("key").unwrap(), &doc! {"deletedAt": 1});
    match ttl.get("expireAfterSeconds") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        other => panic!("expireAfterSeconds = {other:?}"),
    }
}

#[tokio::test]
async fn tombstone_ttl_index_is_created_and_updated() {
    let b = Backend::start("state_ttl").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    state
        .ensure_indexes(Duration::from_secs(86_400))
        .await
        .unwrap();
    state
        .ensure_indexes(Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(ttl_of(&b, &state).await, 86_400);
    state
        .ensure_indexes(Duration::from_secs(3_600))
        .await
        .unwrap();
    assert_eq!(ttl_of(&b, &state).await, 3_600);
    b.finish().await;
}

#[tokio::test]
async fn sync_records_upsert_overwrite_read_and_remove_per_pair() {
    let b = Backend::start("state_synced").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    let other_pair = MongoState::new(b.client.clone(), &b.db, "a.x__b.z");
    let ms = |v: Vec<(Key, DateTime)>| {
        let mut v: Vec<(String, i64)> = v
            .into_iter()
            .map(|(k, d)| {
                let key = k.0.as_str().unwrap().to_string();
                (key, d.timestamp_millis() - at(0).timestamp_millis())
            })
            .collect();
        v.sort();
        v
    };
    assert!(state.synced_versions(&[k("a")]).await.unwrap().is_empty());
    state
        .record_synced(&[(k("a"), at(10)), (k("b"), at(10))])
        .await
        .unwrap();
    // Overwrites (also with an older version: the last agreement is what counts).
    state
        .record_synced(&[(k("a"), at(5)), (k("c"), at(30))])
        .await
        .unwrap();
    let all = [k("a"), k("b"), k("c"), k("zz")];
    assert_eq!(
        ms(state.synced_versions(&all).await.unwrap()),
        vec![("a".into(), 5), ("b".into(), 10), ("c".into(), 30)]
    );
    assert!(other_pair.synced_versions(&all).await.unwrap().is_empty());
    let stored = state
        .synced_records()
        .find_one(doc! {"_id": "c"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, doc! {"_id": "c", "updatedAt": at(30)});
    state
        .remove_synced(&[k("a"), k("c"), k("zz")])
        .await
        .unwrap();
    assert_eq!(
        ms(state.synced_versions(&all).await.unwrap()),
        vec![("b".into(), 10)]
    );
    b.finish().await;
}

#[tokio::test]
async fn sync_records_scan_in_id_order_and_create_keeps_the_given_version() {
    let b = Backend::start("state_synced_scan").await;
    let state = MongoState::new(b.client.clone(), &b.db, "a.x__b.y");
    // Mixed key types: numbers sort before strings, as in the document scans.
    let keys = [
        Key(Bson::String("b".into())),
        Key(Bson::Int32(2)),
        Key(Bson::String("a".into())),
        Key(Bson::Int64(1)),
        Key(Bson::Double(1.5)),
    ];
    let versions: Vec<(Key, DateTime)> = keys.iter().map(|k| (k.clone(), at(1))).collect();
    state.create_synced(&versions).await.unwrap();
    // Creating an existing record (a retry, or a record written meanwhile) still ends
    // with the version given.
    state
        .create_synced(&[(k("a"), at(7)), (k("c"), at(8))])
        .await
        .unwrap();
    state
        .synced_records()
        .insert_one(doc! {"_id": "d", "updatedAt": "not a date"})
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<Key> = None;
    loop {
        let page = state.scan_synced(after.as_ref(), 2).await.unwrap();
        seen.extend(page.iter().cloned());
        if page.len() < 2 {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    let expect = vec![
        (Key(Bson::Int64(1)), Some(at(1))),
        (Key(Bson::Double(1.5)), Some(at(1))),
        (Key(Bson::Int32(2)), Some(at(1))),
        (k("a"), Some(at(7))),
        (k("b"), Some(at(1))),
        (k("c"), Some(at(8))),
        (k("d"), None),
    ];
    assert_eq!(seen, expect);
    b.finish().await;
}
