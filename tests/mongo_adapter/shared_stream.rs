//! The one change stream per side that several pairs share (`stream_source` over 2+
//! collections): events tagged with their pair, other namespaces ignored, resume,
//! lean fetches from the event's own collection, own deletes, the end of a watched
//! collection, and one server-side cursor however many pairs there are.

use std::sync::Arc;

use datasync::core::{ChangeEvent, StreamSource};
use datasync::mongo::source::stream_source;

use super::*;

/// Stores of `db.coll` for each of `namespaces`, on the cloud side.
fn stores(b: &Backend, namespaces: &[(&str, &str)]) -> Vec<Arc<MongoStore>> {
    namespaces
        .iter()
        .map(|(db, coll)| {
            Arc::new(
                MongoStore::new(b.client.clone(), db, coll, "updatedAt").with_side(Side::Cloud),
            )
        })
        .collect()
}

/// Writes `{_id: id, v}` into `coll` of the test's database.
async fn put(b: &Backend, coll: &str, id: i32, v: i32) {
    b.coll(coll)
        .insert_one(doc! {"_id": id, "v": v})
        .await
        .unwrap();
}

/// The shared source of collections `a` and `b` (pairs 0 and 1), and a stream from now.
async fn open_a_and_b(b: &Backend) -> (Arc<dyn StreamSource>, Box<dyn ChangeStream>) {
    let db = b.db.clone();
    let source = stream_source(stores(b, &[(&db, "a"), (&db, "b")])).unwrap();
    let stream = source.open_stream(None).await.unwrap();
    (source, stream)
}

/// The change streams opened on the emulator so far, by the namespace they report.
fn streams_opened(b: &Backend) -> Option<Vec<(String, u64)>> {
    let emu = b.emulator.as_ref()?;
    Some(
        emu.handle()
            .counters()
            .change_streams_opened
            .into_iter()
            .collect(),
    )
}

/// The change of `e` as `(pair, _id, Some(v) for an upsert / None for a delete)`.
fn seen(e: &ChangeEvent) -> (usize, Bson, Option<i32>) {
    let v = match &e.kind {
        ChangeKind::Upsert(d) => Some(d.get_i32("v").unwrap()),
        ChangeKind::Delete => None,
    };
    (e.pair, e.key.0.clone(), v)
}

/// Insert, update and delete `_id` 1 in `coll`.
async fn insert_update_delete(coll: &mongodb::Collection<Document>) {
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
}

/// Reads `n` events, one at a time.
async fn events(stream: &mut Box<dyn ChangeStream>, n: usize) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_event(stream).await);
    }
    out
}

/// What each collection's insert, update and delete of `_id` 1 look like as pair `p`'s.
/// The update's post-image is looked up when read, so it may show the deleted document
/// as gone (the update is then skipped) — each collection is written and read alone.
async fn expect_insert_update_delete(
    stream: &mut Box<dyn ChangeStream>,
    coll: &mongodb::Collection<Document>,
    pair: usize,
) {
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    assert_eq!(
        seen(&next_event(stream).await),
        (pair, Bson::Int32(1), Some(1))
    );
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    assert_eq!(
        seen(&next_event(stream).await),
        (pair, Bson::Int32(1), Some(2))
    );
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let e = next_event(stream).await;
    assert_eq!(seen(&e), (pair, Bson::Int32(1), None));
    assert_eq!(e.side, Side::Cloud);
}

#[tokio::test]
async fn one_database_stream_tags_each_change_with_its_pair_and_ignores_other_collections() {
    let b = Backend::start("shared_db").await;
    let db = b.db.clone();
    let source = stream_source(stores(&b, &[(&db, "a"), (&db, "b"), (&db, "c")])).unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    for (pair, coll) in ["a", "b", "c"].into_iter().enumerate().rev() {
        // A collection of the same database that no pair syncs is never reported.
        insert_update_delete(&b.coll("unsynced")).await;
        expect_insert_update_delete(&mut stream, &b.coll(coll), pair).await;
    }
    if let Some(opened) = streams_opened(&b) {
        assert_eq!(
            opened,
            [(format!("{db}.$cmd.aggregate"), 1)],
            "one database stream"
        );
    }
    b.finish().await;
}

#[tokio::test]
async fn collections_in_two_databases_share_one_cluster_stream() {
    let b = Backend::start("shared_cluster").await;
    let other_db = format!("{}_b", b.db);
    let db = b.db.clone();
    // The same collection name in both databases: told apart by the database.
    let source = stream_source(stores(&b, &[(&db, "a"), (&other_db, "a")])).unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    let other = b.client.database(&other_db).collection::<Document>("a");
    insert_update_delete(&b.coll("unsynced")).await;
    insert_update_delete(&b.client.database(&other_db).collection("unsynced")).await;
    expect_insert_update_delete(&mut stream, &other, 1).await;
    expect_insert_update_delete(&mut stream, &b.coll("a"), 0).await;
    if let Some(opened) = streams_opened(&b) {
        assert_eq!(
            opened,
            [("admin.$cmd.aggregate".to_string(), 1)],
            "one cluster stream"
        );
    }
    if b.emulator.is_none() {
        let _ = b.client.database(&other_db).drop().await;
    }
    b.finish().await;
}

#[tokio::test]
async fn shared_stream_resumes_from_a_token_without_losing_or_repeating_events() {
    let b = Backend::start("shared_resume").await;
    let (source, mut stream) = open_a_and_b(&b).await;
    for (i, coll) in ["a", "b", "a", "b"].into_iter().enumerate() {
        put(&b, coll, i as i32, i as i32).await;
    }
    let first = events(&mut stream, 4).await;
    assert_eq!(
        first.iter().map(|e| e.pair).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    drop(stream);
    // Written while no stream is open.
    put(&b, "b", 10, 10).await;
    put(&b, "a", 11, 11).await;
    let mut resumed = source
        .open_stream(Some(first[1].token.clone()))
        .await
        .unwrap();
    let rest = events(&mut resumed, 4).await;
    assert_eq!(
        rest.iter().map(seen).collect::<Vec<_>>(),
        [
            (0, Bson::Int32(2), Some(2)),
            (1, Bson::Int32(3), Some(3)),
            (1, Bson::Int32(10), Some(10)),
            (0, Bson::Int32(11), Some(11)),
        ]
    );
    assert_eq!(rest[..2], first[2..], "the same events, tokens and all");
    // From the last event's token: nothing more until the next write, then that one.
    let mut again = source
        .open_stream(Some(rest[3].token.clone()))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(3), again.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(item, StreamItem::Progress(_)), "{item:?}");
    put(&b, "b", 12, 12).await;
    assert_eq!(
        seen(&next_event(&mut again).await),
        (1, Bson::Int32(12), Some(12))
    );
    b.finish().await;
}

#[tokio::test]
async fn shared_stream_progress_token_resumes_after_everything_seen() {
    let b = Backend::start("shared_ptoken").await;
    let (source, mut stream) = open_a_and_b(&b).await;
    put(&b, "b", 1, 1).await;
    next_event(&mut stream).await;
    let token = next_progress(&mut stream).await;
    drop(stream);
    put(&b, "a", 2, 2).await;
    let mut resumed = source.open_stream(Some(token)).await.unwrap();
    assert_eq!(
        seen(&next_event(&mut resumed).await),
        (0, Bson::Int32(2), Some(2))
    );
    b.finish().await;
}

/// After the server failed a batch with BSONObjectTooLarge the stream reads on without
/// documents and fetches each one by `_id`: from the collection of the event's pair,
/// even when another pair's collection has a document with the same `_id`.
#[tokio::test]
async fn lean_fallback_fetches_each_document_from_its_own_collection() {
    let b = Backend::start("shared_lean").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's fault injection");
        return;
    };
    let (_source, mut stream) = open_a_and_b(&b).await;
    assert!(matches!(
        stream.next().await.unwrap(),
        StreamItem::Progress(_)
    ));
    put(&b, "a", 1, 1).await;
    put(&b, "b", 1, 2).await;
    emu.handle().fail_command("getMore", 10334, 1);
    let got: Vec<_> = events(&mut stream, 2).await.iter().map(seen).collect();
    assert_eq!(
        got,
        [(0, Bson::Int32(1), Some(1)), (1, Bson::Int32(1), Some(2))]
    );
    b.finish().await;
}

#[tokio::test]
async fn own_deletes_on_a_shared_stream_are_marked_with_their_pair() {
    let b = Backend::start("shared_own").await;
    let own = Arc::new(OwnSessions::new(&b.client, &b.db));
    own.load().await.unwrap();
    let stores: Vec<Arc<MongoStore>> = ["a", "b"]
        .into_iter()
        .map(|c| {
            Arc::new(
                b.store(c)
                    .with_side(Side::Cloud)
                    .with_own_sessions(own.clone()),
            )
        })
        .collect();
    let source = stream_source(stores.clone()).unwrap();
    b.coll("b")
        .insert_many([
            doc! {"_id": 1, "updatedAt": at(1)},
            doc! {"_id": 2, "updatedAt": at(1)},
        ])
        .await
        .unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    let del = Write::DeleteIfNotNewer {
        key: k(1),
        deleted_at: at(5),
    };
    assert_eq!(
        stores[1].apply(&[del]).await.unwrap(),
        [WriteOutcome::Applied]
    );
    b.coll("b").delete_one(doc! {"_id": 2}).await.unwrap();
    let marks: Vec<_> = events(&mut stream, 2)
        .await
        .into_iter()
        .map(|e| (e.pair, e.key, e.own))
        .collect();
    assert_eq!(marks, [(1, k(1), true), (1, k(2), false)]);
    b.finish().await;
}

/// A database-level stream is not invalidated by the drop of one collection (MongoDB
/// sends it a `drop` event): the shared stream ends itself as the collection's own
/// stream would, so the engine reconciles; a collection no pair syncs can go freely.
#[tokio::test]
async fn dropping_one_shared_collection_ends_the_stream_and_an_unsynced_one_does_not() {
    let b = Backend::start("shared_drop").await;
    let db = b.db.clone();
    for c in ["a", "b", "unsynced"] {
        put(&b, c, 0, 0).await;
    }
    let source = stream_source(stores(&b, &[(&db, "a"), (&db, "b")])).unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    b.coll("unsynced").drop().await.unwrap();
    put(&b, "a", 1, 1).await;
    assert_eq!(
        seen(&next_event(&mut stream).await),
        (0, Bson::Int32(1), Some(1))
    );
    b.coll("b").drop().await.unwrap();
    let err = next_error(&mut stream).await;
    assert_eq!(err.kind, StoreErrorKind::Invalidated, "{err}");
    assert_eq!(
        stream.next().await.unwrap_err().kind,
        StoreErrorKind::Invalidated
    );
    b.finish().await;
}

#[tokio::test]
async fn one_pair_keeps_its_collection_stream() {
    let b = Backend::start("shared_one").await;
    let db = b.db.clone();
    let source: Arc<dyn StreamSource> = stream_source(stores(&b, &[(&db, "a")])).unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    expect_insert_update_delete(&mut stream, &b.coll("a"), 0).await;
    if let Some(opened) = streams_opened(&b) {
        assert_eq!(opened, [(format!("{db}.a"), 1)]);
    }
    b.finish().await;
}

/// Many pairs cost one stream per side: `MongoSides::connect` with three pairs.
#[tokio::test]
async fn connected_sides_open_one_stream_per_side_for_several_pairs() {
    let b = Backend::start("shared_sides").await;
    let pairs = (0..3).map(|i| {
        let (local, cloud) = (format!("local_{i}"), format!("cloud_{i}"));
        pair(&b, &format!("p{i}"), &local, &cloud, None)
    });
    let sides = sides(&b, pairs.collect());
    let connected = sides.connect().await.unwrap();
    let mut local = connected.streams.local.open_stream(None).await.unwrap();
    let mut cloud = connected.streams.cloud.open_stream(None).await.unwrap();
    put(&b, "cloud_2", 1, 1).await;
    put(&b, "local_1", 2, 2).await;
    let c = next_event(&mut cloud).await;
    assert_eq!(
        (c.side, seen(&c)),
        (Side::Cloud, (2, Bson::Int32(1), Some(1)))
    );
    let l = next_event(&mut local).await;
    assert_eq!(
        (l.side, seen(&l)),
        (Side::Local, (1, Bson::Int32(2), Some(2)))
    );
    if let Some(opened) = streams_opened(&b) {
        assert_eq!(
            opened,
            [(format!("{}.$cmd.aggregate", b.db), 2)],
            "two streams for three pairs"
        );
    }
    if b.emulator.is_none() {
        let _ = b.client.database(&sides.state_database).drop().await;
    }
    b.finish().await;
}

#[tokio::test]
async fn shared_stream_resuming_after_history_is_forgotten_is_history_lost() {
    let b = Backend::start("shared_lost").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's forget_history");
        return;
    };
    let (source, mut stream) = open_a_and_b(&b).await;
    put(&b, "b", 1, 1).await;
    let token = next_event(&mut stream).await.token;
    drop(stream);
    put(&b, "a", 2, 2).await;
    emu.handle().forget_history();
    let err = match source.open_stream(Some(token)).await {
        Err(e) => e,
        Ok(mut s) => s.next().await.expect_err("history is gone"),
    };
    assert_eq!(err.kind, StoreErrorKind::HistoryLost, "{err}");
    b.finish().await;
}

/// On a cluster-level stream neither a rename onto a watched collection nor the drop
/// of a watched database invalidates the server's stream; the shared stream ends itself.
#[tokio::test]
async fn rename_onto_a_shared_collection_or_its_database_drop_ends_the_cluster_stream() {
    let b = Backend::start("shared_ddl").await;
    let other_db = format!("{}_b", b.db);
    let db = b.db.clone();
    let source = stream_source(stores(&b, &[(&db, "a"), (&other_db, "a")])).unwrap();
    for c in ["a", "unsynced"] {
        put(&b, c, 0, 0).await;
    }
    let mut stream = source.open_stream(None).await.unwrap();
    b.client
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{db}.unsynced"),
            "to": format!("{db}.a"),
            "dropTarget": true,
        })
        .await
        .unwrap();
    assert_eq!(
        next_error(&mut stream).await.kind,
        StoreErrorKind::Invalidated
    );
    let other = b.client.database(&other_db);
    other
        .collection::<Document>("a")
        .insert_one(doc! {"_id": 1, "v": 1})
        .await
        .unwrap();
    let mut stream = source.open_stream(None).await.unwrap();
    other.drop().await.unwrap();
    assert_eq!(
        next_error(&mut stream).await.kind,
        StoreErrorKind::Invalidated
    );
    b.finish().await;
}

/// A document at the 16 MiB limit arrives whole, with its pair, through the shared
/// stream's namespace stage. (The server splits only events over 16 MiB + 8 KiB, which
/// an insert's post-image cannot reach once `updateDescription` is projected away; the
/// reassembly of fragments is the collection stream's, tested in `stream::fragments`.)
#[tokio::test]
async fn a_document_at_the_size_limit_arrives_whole_with_its_pair() {
    let b = Backend::start("shared_split").await;
    let (_source, mut stream) = open_a_and_b(&b).await;
    // `{_id: 1, v: 1, big: "x"×n}` encodes to n + 31 bytes: 16 MiB exactly.
    let n = 16 * 1024 * 1024 - 31;
    let big = doc! {"_id": 1, "v": 1, "big": "x".repeat(n)};
    assert_eq!(bson::to_vec(&big).unwrap().len(), 16 * 1024 * 1024);
    b.coll("b").insert_one(big).await.unwrap();
    put(&b, "a", 2, 2).await;
    let e = next_event(&mut stream).await;
    assert_eq!(seen(&e), (1, Bson::Int32(1), Some(1)));
    let ChangeKind::Upsert(d) = &e.kind else {
        panic!("expected the inserted document")
    };
    assert_eq!(d.get_str("big").map(str::len), Ok(n));
    assert_eq!(
        seen(&next_event(&mut stream).await),
        (0, Bson::Int32(2), Some(2))
    );
    b.finish().await;
}

/// The driver resumes a shared stream by itself, keeping its namespace stage: after a
/// resumable error the next event is the next one of a watched collection.
#[tokio::test]
async fn shared_stream_resumes_past_a_resumable_error_with_its_namespaces() {
    let b = Backend::start("shared_faults").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's fault injection");
        return;
    };
    let (_source, mut stream) = open_a_and_b(&b).await;
    put(&b, "b", 1, 1).await;
    assert_eq!(seen(&next_event(&mut stream).await).0, 1);
    // 91 ShutdownInProgress carries ResumableChangeStreamError.
    emu.handle().fail_command("getMore", 91, 1);
    put(&b, "unsynced", 2, 2).await;
    put(&b, "a", 3, 3).await;
    assert_eq!(
        seen(&next_event(&mut stream).await),
        (0, Bson::Int32(3), Some(3))
    );
    let opened = streams_opened(&b).expect("the emulator counts streams");
    assert_eq!(
        opened,
        [(format!("{}.$cmd.aggregate", b.db), 2)],
        "the driver reopened it"
    );
    b.finish().await;
}
