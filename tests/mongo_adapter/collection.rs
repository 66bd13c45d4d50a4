//! Scans, fetches, counts and write batches of `MongoStore`.

use super::*;

#[tokio::test]
async fn scan_pages_through_mixed_id_types_in_server_order() {
    let b = Backend::start("scan_mixed").await;
    let oid = ObjectId::parse_str("65a000000000000000000001").unwrap();
    let bin = Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![1, 2],
    };
    // In MongoDB's order: numbers (by value across types), strings, objects, binary,
    // ObjectId, bool, date.
    let expected: Vec<Bson> = vec![
        Bson::Int32(-3),
        Bson::Double(1.5),
        Bson::Int64(2),
        Bson::Int32(10),
        Bson::String("a".into()),
        Bson::String("b".into()),
        Bson::Document(doc! {"x": 1}),
        Bson::Binary(bin),
        Bson::ObjectId(oid),
        Bson::Boolean(false),
        Bson::DateTime(at(0)),
    ];
    let mut shuffled = expected.clone();
    shuffled.reverse();
    shuffled.swap(0, 5);
    let docs: Vec<Document> = shuffled
        .iter()
        .enumerate()
        .map(|(i, id)| doc! {"_id": id.clone(), "updatedAt": at(i as i64), "big": "x"})
        .collect();
    b.coll("items").insert_many(docs).await.unwrap();

    let store = b.store("items");
    let mut seen = Vec::new();
    let mut after: Option<Key> = None;
    loop {
        let page = store.scan(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        for e in &page {
            assert!(matches!(e.updated_at, Some(Bson::DateTime(_))), "{e:?}");
        }
        after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|e| e.key.0));
    }
    assert_eq!(seen, expected);
    b.finish().await;
}

#[tokio::test]
async fn scan_reports_missing_updated_at_as_none() {
    let b = Backend::start("scan_missing").await;
    b.coll("items")
        .insert_many([doc! {"_id": 1}, doc! {"_id": 2, "updatedAt": "text"}])
        .await
        .unwrap();
    let page = b.store("items").scan(None, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].updated_at, None);
    assert_eq!(page[1].updated_at, Some(Bson::String("text".into())));
    b.finish().await;
}

#[tokio::test]
async fn conditional_upserts_apply_only_when_newer() {
    let b = Backend::start("apply_upserts").await;
    b.coll("items")
        .insert_many([
            doc! {"_id": 1, "v": 0, "updatedAt": at(10)},
            doc! {"_id": 3, "v": 0, "updatedAt": at(30)},
            doc! {"_id": 4, "v": 0, "updatedAt": at(40)},
            doc! {"_id": 5, "v": 0, "updatedAt": at(50)},
            doc! {"_id": 6, "v": 0},
        ])
        .await
        .unwrap();
    let writes = [
        upsert(1, 1, 20, false), // newer: applied
        upsert(2, 1, 5, false),  // missing: inserted
        upsert(3, 1, 5, false),  // older: target newer (duplicate key), not applied
        upsert(4, 1, 40, false), // equal, not tie winner: not applied
        upsert(5, 1, 50, true),  // equal, tie winner: applied
        upsert(6, 1, 60, false), // target without updatedAt: left alone
        Write::Replace {
            key: k(7),
            doc: doc! {"_id": 7, "v": 1},
        },
    ];
    let outcomes = b.store("items").apply(&writes).await.unwrap();
    use WriteOutcome::*;
    assert_eq!(
        outcomes,
        [Applied, Applied, NotApplied, NotApplied, Applied, NotApplied, Applied]
    );
    let docs = docs_by_id(&b, "items").await;
    let v = |id: i32| docs[&id].get_i32("v").unwrap();
    assert_eq!(
        (v(1), v(2), v(3), v(4), v(5), v(6), v(7)),
        (1, 1, 0, 0, 1, 0, 1)
    );
    assert_eq!(docs[&1].get_datetime("updatedAt").unwrap(), &at(20));
    b.finish().await;
}

#[tokio::test]
async fn racing_conditional_upserts_never_fail_and_newest_wins() {
    let b = Backend::start("apply_race").await;
    let store = b.store("items");
    let mut tasks = Vec::new();
    // Out of order, so older writes meet a newer document (duplicate key on upsert).
    for t in [3, 8, 1, 6, 2, 7, 4, 5] {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.apply(&[upsert(1, t, i64::from(t), false)]).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        match outcome[0] {
            WriteOutcome::Applied => applied += 1,
            WriteOutcome::NotApplied => {}
            ref other => panic!("{other:?}"),
        }
    }
    assert!((1..8).contains(&applied), "{applied} applied");
    let docs = docs_by_id(&b, "items").await;
    assert_eq!(docs[&1].get_i32("v").unwrap(), 8);
    b.finish().await;
}

#[tokio::test]
async fn too_large_document_fails_alone_and_the_rest_applies() {
    let b = Backend::start("apply_large").await;
    let big = "x".repeat(17 * 1024 * 1024);
    let writes = [
        upsert(1, 1, 1, false),
        Write::Replace {
            key: k(2),
            doc: doc! {"_id": 2, "big": big},
        },
        upsert(3, 1, 1, false),
    ];
    let outcomes = b.store("items").apply(&writes).await.unwrap();
    assert_eq!(outcomes[0], WriteOutcome::Applied);
    assert!(
        matches!(outcomes[1], WriteOutcome::Failed(_)),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], WriteOutcome::Applied);
    let docs = docs_by_id(&b, "items").await;
    assert!(docs.contains_key(&1) && docs.contains_key(&3) && !docs.contains_key(&2));
    b.finish().await;
}

#[tokio::test]
async fn server_rejected_statement_fails_alone() {
    let b = Backend::start("apply_rejected").await;
    b.coll("items")
        .insert_one(doc! {"_id": 1, "v": 0})
        .await
        .unwrap();
    // Replacing an existing document with a top-level `$` field is refused by the
    // server for that statement only.
    let writes = [
        Write::Replace {
            key: k(1),
            doc: doc! {"_id": 1, "$bad": 1},
        },
        Write::Replace {
            key: k(2),
            doc: doc! {"_id": 2, "v": 1},
        },
    ];
    let outcomes = b.store("items").apply(&writes).await.unwrap();
    assert!(
        matches!(outcomes[0], WriteOutcome::Failed(_)),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], WriteOutcome::Applied);
    let docs = docs_by_id(&b, "items").await;
    assert_eq!(docs[&1], doc! {"_id": 1, "v": 0});
    b.finish().await;
}

#[tokio::test]
async fn deletes_report_which_keys_were_removed() {
    let b = Backend::start("apply_deletes").await;
    deletes_report_which_keys_were_removed_by(&b, b.store("items"), "items").await;
    // The daemon's way: deletes in transactions (all removed: committed at once;
    // otherwise undone and sent again the exact way).
    let own = std::sync::Arc::new(OwnSessions::new(&b.client, &b.db));
    let store = b.store("items_own").with_own_sessions(own);
    deletes_report_which_keys_were_removed_by(&b, store, "items_own").await;
    b.finish().await;
}

async fn deletes_report_which_keys_were_removed_by(b: &Backend, store: MongoStore, name: &str) {
    let coll = b.coll(name);
    coll.insert_many((1..=6).map(|i| doc! {"_id": i, "updatedAt": at(i64::from(i) * 10)}))
        .await
        .unwrap();
    let del = |id: i32, t: i64| Write::DeleteIfNotNewer {
        key: k(id),
        deleted_at: at(t),
    };
    use WriteOutcome::*;
    // Mixed: some deleted, some not → per-key answers from a follow-up read.
    let outcomes = store
        .apply(&[
            del(1, 15),
            del(2, 5),
            del(4, 35),
            Write::Delete { key: k(3) },
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [Applied, NotApplied, NotApplied, Applied]);
    // All applied (delete time equal to updatedAt counts as not newer).
    assert_eq!(
        store.apply(&[del(4, 40), del(5, 60)]).await.unwrap(),
        [Applied, Applied]
    );
    // None applied (key 1 is already gone).
    assert_eq!(
        store.apply(&[del(6, 1), del(1, 99)]).await.unwrap(),
        [NotApplied, NotApplied]
    );
    // Mixed with a key that was already absent: that one is not reported as deleted
    // (the engine would wait for an echo that never comes and take a later genuine
    // delete for it).
    coll.insert_one(doc! {"_id": 7, "updatedAt": at(70)})
        .await
        .unwrap();
    assert_eq!(
        store.apply(&[del(1, 99), del(7, 99)]).await.unwrap(),
        [NotApplied, Applied]
    );
    let left: Vec<i32> = {
        let mut v: Vec<i32> = docs_by_id(b, name).await.into_keys().collect();
        v.sort();
        v
    };
    assert_eq!(left, [2, 6]);
}

/// The daemon's deletes come back on the stream marked as its own, a client's are not,
/// and a restarted daemon (the session ids read back from the state database) still
/// recognises the ones its previous run made.
#[tokio::test]
async fn own_deletes_come_back_marked_and_are_recognised_after_a_restart() {
    let b = Backend::start("own_deletes").await;
    let coll = b.coll("items");
    coll.insert_many((1..=4).map(|i| doc! {"_id": i, "updatedAt": at(10)}))
        .await
        .unwrap();
    let own = std::sync::Arc::new(OwnSessions::new(&b.client, &b.db));
    own.load().await.unwrap();
    let store = b.store("items").with_own_sessions(own);
    let mut stream = store.open_stream(None).await.unwrap();
    let del = |id: i32| Write::DeleteIfNotNewer {
        key: k(id),
        deleted_at: at(10),
    };
    assert_eq!(
        store.apply(&[del(1), del(2)]).await.unwrap(),
        [WriteOutcome::Applied, WriteOutcome::Applied]
    );
    coll.delete_one(doc! {"_id": 3}).await.unwrap();
    let marks: Vec<(Key, bool)> = [
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ]
    .into_iter()
    .map(|e| (e.key, e.own))
    .collect();
    assert_eq!(marks, [(k(1), true), (k(2), true), (k(3), false)]);
    // A restart: a fresh set, loaded from the state database, replaying from the start.
    let again = std::sync::Arc::new(OwnSessions::new(&b.client, &b.db));
    again.load().await.unwrap();
    let restarted = b.store("items").with_own_sessions(again);
    let mut replay = restarted.open_stream(None).await.unwrap();
    restarted.apply(&[del(4)]).await.unwrap();
    assert!(
        next_event(&mut replay).await.own,
        "own delete after the restart"
    );
    // A second daemon (its own set) takes the first one's deletes for a client's.
    let other = std::sync::Arc::new(OwnSessions::new(&b.client, &format!("{}_other", b.db)));
    let watcher = b.store("items").with_own_sessions(other);
    let mut from_other = watcher.open_stream(None).await.unwrap();
    coll.insert_one(doc! {"_id": 5, "updatedAt": at(10)})
        .await
        .unwrap();
    store.apply(&[del(5)]).await.unwrap();
    let seen: Vec<bool> = [
        next_event(&mut from_other).await,
        next_event(&mut from_other).await,
    ]
    .into_iter()
    .map(|e| e.own)
    .collect();
    assert_eq!(seen, [false, false]);
    b.finish().await;
}

#[tokio::test]
async fn fetch_returns_existing_documents_and_count_estimates() {
    let b = Backend::start("fetch").await;
    b.coll("items")
        .insert_many((1..=5).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    let store = b.store("items");
    let mut got: Vec<i32> = store
        .fetch(&[k(2), k(4), k(99)])
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i32("v").unwrap())
        .collect();
    got.sort();
    assert_eq!(got, [2, 4]);
    assert_eq!(store.count().await.unwrap(), 5);
    b.finish().await;
}
