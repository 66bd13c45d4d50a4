//! The MongoDB adapter against a server: the in-process emulator by default, or a real
//! replica set when `DATASYNC_TEST_MONGODB_URI` is set (each test then works in its own
//! fresh database). Checks what the engine relies on: scan order over mixed `_id`
//! types, per-write outcomes of conditional batches, change-stream events, progress,
//! resume and its failure modes, and the state store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Binary, Bson, DateTime, Document};
use datasync::core::{
    ChangeKind, ChangeStream, CollectionStore, Key, ResumeToken, Side, StateStore, StoreErrorKind,
    StreamItem, Tombstone, Write, WriteOutcome,
};
use datasync::mongo::state::TTL_INDEX;
use datasync::mongo::{connect, MongoSides, MongoState, MongoStore, SideConfig};
use futures::TryStreamExt;
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::Client;

/// Where a test's data lives.
struct Backend {
    /// Connection string of the server.
    uri: String,
    /// The emulator, when no real server was given.
    emulator: Option<Emulator>,
    /// A database name unique to this test.
    db: String,
    /// Client for direct reads and writes.
    client: Client,
}

impl Backend {
    async fn start(test: &str) -> Backend {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (uri, emulator) = match std::env::var("DATASYNC_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => (uri, None),
            _ => {
                let emu = Emulator::start(EmulatorConfig::default())
                    .await
                    .expect("emulator starts");
                (emu.uri(), Some(emu))
            }
        };
        let db = format!(
            "dsync_{}_{}_{}",
            &test[..test.len().min(20)],
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&uri, "datasync-test").await.expect("client");
        Backend {
            uri,
            emulator,
            db,
            client,
        }
    }

    fn store(&self, coll: &str) -> MongoStore {
        MongoStore::new(self.client.clone(), &self.db, coll, "updatedAt")
    }

    fn coll(&self, coll: &str) -> mongodb::Collection<Document> {
        self.client.database(&self.db).collection(coll)
    }

    async fn finish(self) {
        if self.emulator.is_none() {
            let _ = self.client.database(&self.db).drop().await;
        }
        if let Some(emu) = self.emulator {
            emu.shutdown().await;
        }
    }
}

fn at(ms: i64) -> DateTime {
    DateTime::from_millis(1_700_000_000_000 + ms)
}

fn k(v: impl Into<Bson>) -> Key {
    Key(v.into())
}

fn upsert(id: i32, v: i32, t: i64, or_equal: bool) -> Write {
    Write::UpsertIfNewer {
        key: k(id),
        doc: doc! {"_id": id, "v": v, "updatedAt": at(t)},
        updated_at: at(t),
        or_equal,
    }
}

/// Every document of `coll`, by `_id` (as i32).
async fn docs_by_id(b: &Backend, coll: &str) -> HashMap<i32, Document> {
    let docs: Vec<Document> = b
        .coll(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.into_iter()
        .map(|d| (d.get_i32("_id").unwrap(), d))
        .collect()
}

/// Next event of `stream`, skipping `Progress`, within 5 s.
async fn next_event(stream: &mut Box<dyn ChangeStream>) -> datasync::core::ChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await.expect("stream item") {
                StreamItem::Event(e) => return e,
                StreamItem::Progress(_) => continue,
            }
        }
    })
    .await
    .expect("an event within 5 s")
}

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
    let coll = b.coll("items");
    coll.insert_many((1..=6).map(|i| doc! {"_id": i, "updatedAt": at(i64::from(i) * 10)}))
        .await
        .unwrap();
    let store = b.store("items");
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
    let left: Vec<i32> = {
        let mut v: Vec<i32> = docs_by_id(&b, "items").await.into_keys().collect();
        v.sort();
        v
    };
    assert_eq!(left, [2, 6]);
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

#[tokio::test]
async fn stream_yields_each_change_with_server_time() {
    let b = Backend::start("stream_events").await;
    let store = b.store("items").with_side(Side::Cloud);
    let coll = b.coll("items");
    let mut stream = store.open_stream(None).await.unwrap();
    let before = DateTime::now().timestamp_millis();
    let mut tokens = Vec::new();
    // One write at a time, each event read before the next write, so the update's
    // post-image (looked up when the event is read) is the updated document.
    for step in 0..4 {
        let want = match step {
            0 => {
                coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
                ChangeKind::Upsert(doc! {"_id": 1, "v": 1})
            }
            1 => {
                coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
                    .await
                    .unwrap();
                ChangeKind::Upsert(doc! {"_id": 1, "v": 2})
            }
            2 => {
                coll.replace_one(doc! {"_id": 1}, doc! {"_id": 1, "v": 3})
                    .await
                    .unwrap();
                ChangeKind::Upsert(doc! {"_id": 1, "v": 3})
            }
            _ => {
                coll.delete_one(doc! {"_id": 1}).await.unwrap();
                ChangeKind::Delete
            }
        };
        let e = next_event(&mut stream).await;
        assert_eq!(e.side, Side::Cloud);
        assert_eq!(e.key.0, Bson::Int32(1));
        assert_eq!(e.kind, want);
        let t = e.server_time.timestamp_millis();
        assert!(t >= before - 2_000 && t <= DateTime::now().timestamp_millis() + 2_000);
        assert!(!tokens.contains(&e.token));
        tokens.push(e.token);
    }
    b.finish().await;
}

#[tokio::test]
async fn update_of_an_already_deleted_document_is_skipped() {
    let b = Backend::start("stream_gone").await;
    let coll = b.coll("items");
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    let mut stream = b.store("items").open_stream(None).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    // The update's lookup finds nothing (unless the server looked it up in time).
    let mut e = next_event(&mut stream).await;
    if let ChangeKind::Upsert(d) = &e.kind {
        assert_eq!(d.get_i32("v"), Ok(2));
        e = next_event(&mut stream).await;
    }
    assert_eq!(
        (e.key.0.clone(), e.kind),
        (Bson::Int32(1), ChangeKind::Delete)
    );
    assert_eq!(next_event(&mut stream).await.key.0, Bson::Int32(2));
    b.finish().await;
}

#[tokio::test]
async fn idle_stream_reports_progress_about_once_a_second() {
    let b = Backend::start("stream_progress").await;
    let mut stream = b.store("items").open_stream(None).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut progress = 0;
    while start.elapsed() < Duration::from_millis(3_300) {
        match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
            Ok(Ok(StreamItem::Progress(token))) => {
                assert!(!token.0.is_empty());
                progress += 1;
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }
    assert!(
        (2..=4).contains(&progress),
        "{progress} progress items in ~3 s"
    );
    b.finish().await;
}

#[tokio::test]
async fn resuming_from_a_token_redelivers_nothing_already_passed() {
    let b = Backend::start("stream_resume").await;
    let store = b.store("items");
    let coll = b.coll("items");
    let mut stream = store.open_stream(None).await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let first = next_event(&mut stream).await;
    let second = next_event(&mut stream).await;
    drop(stream);

    let mut resumed = store.open_stream(Some(first.token.clone())).await.unwrap();
    let e = next_event(&mut resumed).await;
    assert_eq!((e.key.0, e.token), (Bson::Int32(2), second.token.clone()));

    // From the last token: nothing but progress until a new write.
    let mut resumed = store.open_stream(Some(second.token)).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(3), resumed.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(item, StreamItem::Progress(_)), "{item:?}");
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    assert_eq!(next_event(&mut resumed).await.key.0, Bson::Int32(3));
    b.finish().await;
}

#[tokio::test]
async fn progress_token_resumes_after_everything_seen() {
    let b = Backend::start("stream_ptoken").await;
    let store = b.store("items");
    let coll = b.coll("items");
    let mut stream = store.open_stream(None).await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    next_event(&mut stream).await;
    let token: ResumeToken = loop {
        if let StreamItem::Progress(t) = stream.next().await.unwrap() {
            break t;
        }
    };
    drop(stream);
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let mut resumed = store.open_stream(Some(token)).await.unwrap();
    assert_eq!(next_event(&mut resumed).await.key.0, Bson::Int32(2));
    b.finish().await;
}

#[tokio::test]
async fn resuming_after_history_is_forgotten_is_history_lost() {
    let b = Backend::start("stream_lost").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's forget_history");
        return;
    };
    let store = b.store("items");
    let mut stream = store.open_stream(None).await.unwrap();
    b.coll("items").insert_one(doc! {"_id": 1}).await.unwrap();
    let token = next_event(&mut stream).await.token;
    drop(stream);
    b.coll("items").insert_one(doc! {"_id": 2}).await.unwrap();
    emu.handle().forget_history();
    let err = match store.open_stream(Some(token)).await {
        Err(e) => e,
        Ok(mut s) => s.next().await.expect_err("history is gone"),
    };
    assert_eq!(err.kind, StoreErrorKind::HistoryLost, "{err}");
    b.finish().await;
}

#[tokio::test]
async fn dropping_the_collection_invalidates_the_stream() {
    let b = Backend::start("stream_drop").await;
    let coll = b.coll("items");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut stream = b.store("items").open_stream(None).await.unwrap();
    coll.drop().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Ok(StreamItem::Progress(_)) => continue,
                Ok(StreamItem::Event(e)) => panic!("unexpected event {e:?}"),
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(err.kind, StoreErrorKind::Invalidated, "{err}");
    assert_eq!(
        stream.next().await.unwrap_err().kind,
        StoreErrorKind::Invalidated
    );
    b.finish().await;
}

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
async fn sides_on_one_deployment_share_a_client_and_work() {
    let b = Backend::start("sides").await;
    let side = |coll: &str| SideConfig {
        uri: b.uri.clone(),
        database: b.db.clone(),
        collection: coll.into(),
    };
    let sides = MongoSides {
        local: side("local_data"),
        cloud: side("cloud_data"),
        state_database: format!("{}_state", b.db),
        updated_at_field: "updatedAt".into(),
        tombstone_ttl: Duration::from_secs(60),
        app_name: "datasync-test".into(),
    };
    let connected = sides.connect().await.unwrap();
    let stores = &connected.stores;
    assert_eq!(
        stores.cloud.apply(&[upsert(1, 1, 1, false)]).await.unwrap(),
        [WriteOutcome::Applied]
    );
    assert_eq!(stores.local.count().await.unwrap(), 0);
    assert_eq!(stores.cloud.count().await.unwrap(), 1);
    let mut stream = stores.cloud.open_stream(None).await.unwrap();
    stores.cloud.apply(&[upsert(2, 1, 1, false)]).await.unwrap();
    assert_eq!(next_event(&mut stream).await.side, Side::Cloud);
    stores
        .state
        .save_checkpoint(Side::Cloud, &ResumeToken(doc! {"_data": "00"}))
        .await
        .unwrap();
    if b.emulator.is_none() {
        let _ = b.client.database(&sides.state_database).drop().await;
    }
    b.finish().await;
}

#[tokio::test]
async fn authentication_error_never_shows_the_password() {
    let b = Backend::start("redact").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: a real server's credentials are not ours to misuse");
        return;
    };
    let uri = format!(
        "mongodb://intruder:Sup3rSecret@{}/?replicaSet=rs0&serverSelectionTimeoutMS=2000",
        emu.addr()
    );
    let client = connect(&uri, "datasync-test").await.unwrap();
    let store = MongoStore::new(client, &b.db, "items", "updatedAt");
    let err = store
        .count()
        .await
        .expect_err("authentication cannot succeed");
    assert!(!err.message.contains("Sup3rSecret"), "{}", err.message);
    b.finish().await;
}
