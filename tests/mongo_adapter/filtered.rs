//! Filtered pairs: a `MongoStore` with a filter is a view of the documents matching it
//! (scans, fetches, counts), its writes never change a document outside it, and a
//! checkpoint only resumes the filter it was saved under.

use super::*;

/// Documents 1 and 3 are tenant "a"'s; 2 is tenant "b"'s, 4 has no tenant.
async fn seed_tenants(b: &Backend, coll: &str) {
    b.coll(coll)
        .insert_many([
            doc! {"_id": 1, "tenant": "a", "v": 1, "updatedAt": at(10)},
            doc! {"_id": 2, "tenant": "b", "v": 1, "updatedAt": at(10)},
            doc! {"_id": 3, "tenant": "a", "v": 1, "updatedAt": at(10)},
            doc! {"_id": 4, "v": 1, "updatedAt": at(10)},
        ])
        .await
        .unwrap();
}

fn tenant_a(b: &Backend, coll: &str) -> MongoStore {
    b.store(coll).with_filter(doc! {"tenant": "a"})
}

fn ids(docs: impl IntoIterator<Item = Bson>) -> Vec<Bson> {
    docs.into_iter().collect()
}

#[tokio::test]
async fn filtered_scan_fetch_and_count_see_only_matching_documents() {
    let b = Backend::start("filtered_reads").await;
    seed_tenants(&b, "items").await;
    let store = tenant_a(&b, "items");
    let page = store.scan(None, 10).await.unwrap();
    assert_eq!(
        ids(page.into_iter().map(|e| e.key.0)),
        [Bson::Int32(1), Bson::Int32(3)]
    );
    let after_first = store.scan(Some(&k(1)), 10).await.unwrap();
    assert_eq!(
        ids(after_first.into_iter().map(|e| e.key.0)),
        [Bson::Int32(3)]
    );
    let mut fetched = store.fetch(&[k(1), k(2), k(3), k(4)]).await.unwrap();
    fetched.sort_by_key(|d| d.get_i32("_id").unwrap());
    assert_eq!(
        ids(fetched.into_iter().map(|d| d.get("_id").unwrap().clone())),
        [Bson::Int32(1), Bson::Int32(3)]
    );
    assert_eq!(store.count().await.unwrap(), 2);
    // The same collection unfiltered still sees everything.
    assert_eq!(b.store("items").scan(None, 10).await.unwrap().len(), 4);
    assert_eq!(b.store("items").count().await.unwrap(), 4);
    b.finish().await;
}

/// Upserts, replacements and deletes through a tenant-"a" view of `coll`: only tenant
/// "a"'s documents change.
async fn writes_leave_documents_outside_the_filter_alone(
    b: &Backend,
    store: MongoStore,
    coll: &str,
) {
    seed_tenants(b, coll).await;
    let newer = |id: i32| Write::UpsertIfNewer {
        key: k(id),
        doc: doc! {"_id": id, "tenant": "a", "v": 2, "updatedAt": at(20)},
        updated_at: at(20),
        or_equal: false,
    };
    let replace = |id: i32| Write::Replace {
        key: k(id),
        doc: doc! {"_id": id, "tenant": "a", "v": 3, "updatedAt": at(30)},
    };
    let before = docs_by_id(b, coll).await;
    assert_eq!(
        store
            .apply(&[newer(1), newer(2), newer(5), replace(4)])
            .await
            .unwrap(),
        [
            WriteOutcome::Applied,
            WriteOutcome::NotApplied,
            WriteOutcome::Applied,
            WriteOutcome::NotApplied,
        ],
        "an upsert onto an _id outside the filter fails its insert (duplicate key)"
    );
    let after = docs_by_id(b, coll).await;
    assert_eq!(after[&1].get_i32("v"), Ok(2));
    assert_eq!(after[&5].get_str("tenant"), Ok("a"));
    assert_eq!(after[&2], before[&2], "tenant b's document is untouched");
    assert_eq!(
        after[&4], before[&4],
        "the tenant-less document is untouched"
    );

    let delete_if = |id: i32| Write::DeleteIfNotNewer {
        key: k(id),
        deleted_at: at(40),
    };
    // A batch of several deletes, then single ones (each takes its own path).
    assert_eq!(
        store
            .apply(&[delete_if(2), Write::Delete { key: k(4) }, delete_if(3)])
            .await
            .unwrap(),
        [
            WriteOutcome::NotApplied,
            WriteOutcome::NotApplied,
            WriteOutcome::Applied,
        ]
    );
    assert_eq!(
        store.apply(&[delete_if(2)]).await.unwrap(),
        [WriteOutcome::NotApplied]
    );
    assert_eq!(
        store.apply(&[Write::Delete { key: k(4) }]).await.unwrap(),
        [WriteOutcome::NotApplied]
    );
    assert_eq!(
        store.apply(&[replace(1)]).await.unwrap(),
        [WriteOutcome::Applied]
    );
    let last = docs_by_id(b, coll).await;
    assert_eq!(last[&2], before[&2]);
    assert_eq!(last[&4], before[&4]);
    assert!(!last.contains_key(&3));
    assert_eq!(last[&1].get_i32("v"), Ok(3));
}

#[tokio::test]
async fn filtered_writes_never_touch_a_document_outside_the_filter() {
    let b = Backend::start("filtered_writes").await;
    let store = tenant_a(&b, "items");
    writes_leave_documents_outside_the_filter_alone(&b, store, "items").await;
    b.finish().await;
}

#[tokio::test]
async fn filtered_transactional_deletes_never_touch_a_document_outside_the_filter() {
    let b = Backend::start("filtered_own").await;
    let own = std::sync::Arc::new(OwnSessions::new(&b.client, &b.db));
    let store = tenant_a(&b, "items_own").with_own_sessions(own);
    writes_leave_documents_outside_the_filter_alone(&b, store, "items_own").await;
    b.finish().await;
}

/// The checkpoint document `id` as saved.
async fn saved_checkpoint(b: &Backend, id: &str) -> Document {
    b.client
        .database(&b.db)
        .collection::<Document>(CHECKPOINTS)
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .expect("a saved checkpoint")
}

#[tokio::test]
async fn a_checkpoint_resumes_only_under_the_filter_it_was_saved_with() {
    let b = Backend::start("filtered_ckpt").await;
    let state = |filter: Option<Document>| {
        MongoState::new(b.client.clone(), &b.db, "a.x__b.y").with_filter(filter)
    };
    let tenant = |t: &str| Some(doc! {"tenant": t});
    let token = ResumeToken(doc! {"_data": "01"});
    state(tenant("a"))
        .save_checkpoint(Side::Local, &token)
        .await
        .unwrap();
    let saved = saved_checkpoint(&b, "local:a.x__b.y").await;
    assert_eq!(saved.get_document("filter"), Ok(&doc! {"tenant": "a"}));
    assert_eq!(
        state(tenant("a"))
            .load_checkpoint(Side::Local)
            .await
            .unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        state(tenant("b"))
            .load_checkpoint(Side::Local)
            .await
            .unwrap(),
        None,
        "a changed filter reconciles the pair"
    );
    assert_eq!(
        state(None).load_checkpoint(Side::Local).await.unwrap(),
        None,
        "a removed filter reconciles the pair"
    );
    // Unfiltered: saved without a filter field, and loads as before.
    state(None)
        .save_checkpoint(Side::Cloud, &token)
        .await
        .unwrap();
    let unfiltered = saved_checkpoint(&b, "cloud:a.x__b.y").await;
    assert!(!unfiltered.contains_key("filter"), "{unfiltered}");
    assert_eq!(
        state(None).load_checkpoint(Side::Cloud).await.unwrap(),
        Some(token)
    );
    assert_eq!(
        state(tenant("a"))
            .load_checkpoint(Side::Cloud)
            .await
            .unwrap(),
        None,
        "a filter added to a pair reconciles it"
    );
    b.finish().await;
}

/// `MongoSides::connect` gives a filtered pair a filtered view and a state that saves
/// the filter with its checkpoints.
#[tokio::test]
async fn connect_builds_filtered_stores_and_state_for_a_filtered_pair() {
    let b = Backend::start("filtered_sides").await;
    seed_tenants(&b, "cloud_data").await;
    let sides = sides(
        &b,
        vec![pair(
            &b,
            "p",
            "local_data",
            "cloud_data",
            Some(doc! {"tenant": "a"}),
        )],
    );
    let connected = sides.connect().await.unwrap();
    let stores = &connected.pairs[0];
    assert_eq!(stores.cloud.count().await.unwrap(), 2);
    let token = ResumeToken(doc! {"_data": "00"});
    stores
        .state
        .save_checkpoint(Side::Cloud, &token)
        .await
        .unwrap();
    assert_eq!(
        stores.state.load_checkpoint(Side::Cloud).await.unwrap(),
        Some(token)
    );
    let unfiltered = MongoState::new(
        b.client.clone(),
        &sides.state_database,
        &sides.pairs[0].state_name(),
    );
    assert_eq!(unfiltered.load_checkpoint(Side::Cloud).await.unwrap(), None);
    if b.emulator.is_none() {
        let _ = b.client.database(&sides.state_database).drop().await;
    }
    b.finish().await;
}
