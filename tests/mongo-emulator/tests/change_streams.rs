//! Change streams through the official driver: event shapes, fullDocument options,
//! resume options, history loss (286), malformed tokens (260), invalidation, later
//! pipeline stages, and postBatchResumeToken behaviour.

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::StreamExt;
use mongodb::bson;
use mongodb::change_stream::event::{OperationType, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::{change_stream::ChangeStream, Collection};

use common::next_event as next;

#[tokio::test]
async fn insert_update_replace_delete_events_have_mongodb_shape() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "a": 1, "b": 2})
        .await
        .unwrap();
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 5}, "$unset": {"b": ""}},
    )
    .await
    .unwrap();
    coll.replace_one(doc! {"_id": 1}, doc! {"z": 9})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();

    let ins = next(&mut stream).await;
    assert_eq!(ins.operation_type, OperationType::Insert);
    assert_eq!(ins.full_document.unwrap(), doc! {"_id": 1, "a": 1, "b": 2});
    assert_eq!(ins.document_key.unwrap(), doc! {"_id": 1});
    let ns = ins.ns.unwrap();
    assert_eq!((ns.db.as_str(), ns.coll.as_deref()), ("d", Some("c")));
    assert!(ins.wall_time.is_some());

    let upd = next(&mut stream).await;
    assert_eq!(upd.operation_type, OperationType::Update);
    assert!(
        upd.full_document.is_none(),
        "default fullDocument omits it on update"
    );
    let desc = upd.update_description.unwrap();
    assert_eq!(desc.updated_fields, doc! {"a": 5});
    assert_eq!(desc.removed_fields, vec!["b".to_string()]);
    assert!(upd.cluster_time.unwrap() > ins.cluster_time.unwrap());

    let rep = next(&mut stream).await;
    assert_eq!(rep.operation_type, OperationType::Replace);
    assert_eq!(rep.full_document.unwrap(), doc! {"_id": 1, "z": 9});

    let del = next(&mut stream).await;
    assert_eq!(del.operation_type, OperationType::Delete);
    assert_eq!(del.document_key.unwrap(), doc! {"_id": 1});
    let times: Vec<Timestamp> = vec![
        ins.cluster_time.unwrap(),
        upd.cluster_time.unwrap(),
        rep.cluster_time.unwrap(),
        del.cluster_time.unwrap(),
    ];
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "clusterTime strictly increasing"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn raw_event_update_description_has_all_three_fields() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    let _ins = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let upd = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let desc = upd.get_document("updateDescription").unwrap();
    assert!(desc.get_array("removedFields").unwrap().is_empty());
    assert!(desc.get_array("truncatedArrays").unwrap().is_empty());
    assert!(upd.get_document("_id").unwrap().get_str("_data").is_ok());
    emu.shutdown().await;
}

#[tokio::test]
async fn no_op_set_produces_no_event_and_n_modified_zero() {
    let (emu, _client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    let res = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    assert_eq!((res.matched_count, res.modified_count), (1, 0));
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let ev = next(&mut stream).await;
    assert_eq!(
        ev.operation_type,
        OperationType::Insert,
        "the no-op update made no event"
    );
    assert_eq!(ev.document_key.unwrap(), doc! {"_id": 2});
    emu.shutdown().await;
}

#[tokio::test]
async fn replacement_without_id_always_counts_as_modified() {
    let (emu, _client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    let same_with_id = coll
        .replace_one(doc! {"_id": 1}, doc! {"_id": 1, "a": 1})
        .await
        .unwrap();
    assert_eq!(same_with_id.modified_count, 0);
    let same_without_id = coll
        .replace_one(doc! {"_id": 1}, doc! {"a": 1})
        .await
        .unwrap();
    assert_eq!(same_without_id.modified_count, 1);
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Replace);
    emu.shutdown().await;
}

#[tokio::test]
async fn full_document_options() {
    let (emu, client, coll) = common::setup().await;
    // Pre- and post-images are recorded only where the collection asks for them.
    client
        .database("d")
        .run_command(doc! {"create": "c", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let mut lookup = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    let mut when = coll
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .await
        .unwrap();
    let mut before = coll
        .watch()
        .full_document(FullDocumentType::Required)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 3}})
        .await
        .unwrap();
    // updateLookup returns the current document at read time, post-images the state
    // right after each update.
    let l = next(&mut lookup).await;
    assert_eq!(l.full_document.unwrap(), doc! {"_id": 1, "a": 3});
    let w = next(&mut when).await;
    assert_eq!(w.full_document.unwrap(), doc! {"_id": 1, "a": 2});
    let b = next(&mut before).await;
    assert_eq!(b.full_document.unwrap(), doc! {"_id": 1, "a": 2});
    assert_eq!(
        b.full_document_before_change.unwrap(),
        doc! {"_id": 1, "a": 1}
    );
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let _ = next(&mut lookup).await;
    let gone = next(&mut lookup).await;
    assert_eq!(gone.operation_type, OperationType::Delete);
    emu.shutdown().await;
}

#[tokio::test]
async fn update_lookup_of_deleted_document_is_null() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.get("fullDocument"), Some(&Bson::Null));
    drop(client);
    emu.shutdown().await;
}

async fn token_after_two_inserts(coll: &Collection<Document>) -> (ResumeToken, ResumeToken) {
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let a = next(&mut stream).await.id;
    let b = next(&mut stream).await.id;
    (a, b)
}

#[tokio::test]
async fn resume_after_returns_only_later_events() {
    let (emu, _client, coll) = common::setup().await;
    let (first, _) = token_after_two_inserts(&coll).await;
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    let mut resumed = coll.watch().resume_after(first).await.unwrap();
    assert_eq!(
        next(&mut resumed).await.document_key.unwrap(),
        doc! {"_id": 2}
    );
    assert_eq!(
        next(&mut resumed).await.document_key.unwrap(),
        doc! {"_id": 3}
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn start_at_operation_time_includes_that_time() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let _ = next(&mut stream).await;
    let second = next(&mut stream).await;
    let mut from = coll
        .watch()
        .start_at_operation_time(second.cluster_time.unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut from).await.document_key.unwrap(), doc! {"_id": 2});
    emu.shutdown().await;
}

#[tokio::test]
async fn drop_emits_drop_then_invalidate_and_start_after_continues() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.drop().await.unwrap();
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Insert
    );
    assert_eq!(next(&mut stream).await.operation_type, OperationType::Drop);
    let inv = next(&mut stream).await;
    assert_eq!(inv.operation_type, OperationType::Invalidate);
    let after_invalidate = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
    assert!(
        after_invalidate.unwrap().is_none(),
        "the stream ends after invalidate"
    );
    // resumeAfter an invalidate is refused; startAfter continues after it.
    let err = coll.watch().resume_after(inv.id.clone()).await.unwrap_err();
    assert_eq!(common::code(&err), 260);
    let mut after = coll.watch().start_after(inv.id).await.unwrap();
    coll.insert_one(doc! {"_id": 7}).await.unwrap();
    assert_eq!(
        next(&mut after).await.document_key.unwrap(),
        doc! {"_id": 7}
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn forget_history_makes_old_tokens_fail_with_286() {
    let (emu, _client, coll) = common::setup().await;
    let (a, _) = token_after_two_inserts(&coll).await;
    emu.handle().forget_history();
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    let err = coll.watch().resume_after(a).await.unwrap_err();
    assert_eq!(common::code(&err), 286);
    // A stream opened after forgetting works.
    let mut fresh = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    assert_eq!(
        next(&mut fresh).await.document_key.unwrap(),
        doc! {"_id": 4}
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn history_limit_rolls_over_to_286() {
    let emu = common::start_with_history(3).await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    let (a, b) = token_after_two_inserts(&coll).await;
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    // Retained: 2, 3, 4. Token of 1 is lost; token of 2 still resumes.
    let err = coll.watch().resume_after(a).await.unwrap_err();
    assert_eq!(common::code(&err), 286);
    let mut ok = coll.watch().resume_after(b).await.unwrap();
    assert_eq!(next(&mut ok).await.document_key.unwrap(), doc! {"_id": 3});
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_token_is_260() {
    let (emu, client, _coll) = common::setup().await;
    let err = client
        .database("d")
        .run_command(doc! {
            "aggregate": "c",
            "pipeline": [{"$changeStream": {"resumeAfter": {"_data": "nonsense"}}}],
            "cursor": {},
        })
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 260);
    emu.shutdown().await;
}

#[tokio::test]
async fn empty_getmore_waits_and_advances_post_batch_resume_token() {
    let (emu, client, coll) = common::setup().await;
    let db = client.database("d");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let opened = db
        .run_command(doc! {"aggregate": "c", "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap();
    let cursor = opened.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    let pbrt0 = cursor
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 300i64})
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "waited for maxTimeMS"
    );
    let c = more.get_document("cursor").unwrap();
    assert!(c.get_array("nextBatch").unwrap().is_empty());
    let pbrt1 = c
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    assert!(pbrt1 >= pbrt0);
    // An event arriving while waiting returns promptly.
    let writer = coll.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.insert_one(doc! {"_id": 1}).await.unwrap();
    });
    let started = std::time::Instant::now();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 5000i64})
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let c = more.get_document("cursor").unwrap();
    let batch = c.get_array("nextBatch").unwrap();
    assert_eq!(batch.len(), 1);
    let ev_token = batch[0]
        .as_document()
        .unwrap()
        .get_document("_id")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    let pbrt2 = c
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    assert!(
        ev_token > pbrt1 && pbrt2 >= ev_token,
        "tokens sort in event order"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn match_stage_filters_events() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll
        .watch()
        .pipeline(vec![doc! {"$match": {"operationType": "delete"}}])
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Delete
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn project_that_changes_id_is_280() {
    let (emu, _client, coll) = common::setup().await;
    let mut stream = coll
        .watch()
        .pipeline(vec![doc! {"$project": {"_id": 0}}])
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(common::code(&err), 280);
    emu.shutdown().await;
}

#[tokio::test]
async fn database_and_cluster_streams_see_all_collections() {
    let (emu, client, coll) = common::setup().await;
    let db = client.database("d");
    let mut db_stream = db.watch().await.unwrap();
    let mut cluster_stream = client.watch().await.unwrap();
    let other = client.database("e").collection::<Document>("x");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    other.insert_one(doc! {"_id": 2}).await.unwrap();
    db.collection::<Document>("c2")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    assert_eq!(
        next(&mut db_stream).await.document_key.unwrap(),
        doc! {"_id": 1}
    );
    assert_eq!(
        next(&mut db_stream).await.document_key.unwrap(),
        doc! {"_id": 3}
    );
    let keys: Vec<Document> = vec![
        next(&mut cluster_stream).await.document_key.unwrap(),
        next(&mut cluster_stream).await.document_key.unwrap(),
        next(&mut cluster_stream).await.document_key.unwrap(),
    ];
    assert_eq!(
        keys,
        vec![doc! {"_id": 1}, doc! {"_id": 2}, doc! {"_id": 3}]
    );
    db.drop().await.unwrap();
    assert_eq!(
        next(&mut db_stream).await.operation_type,
        OperationType::Drop
    );
    assert_eq!(
        next(&mut db_stream).await.operation_type,
        OperationType::Drop
    );
    assert_eq!(
        next(&mut db_stream).await.operation_type,
        OperationType::DropDatabase
    );
    assert_eq!(
        next(&mut db_stream).await.operation_type,
        OperationType::Invalidate
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn rename_emits_rename_then_invalidate() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    client
        .database("admin")
        .run_command(doc! {"renameCollection": "d.c", "to": "d.renamed"})
        .await
        .unwrap();
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Rename);
    let to = ev.to.unwrap();
    assert_eq!(to.coll.as_deref(), Some("renamed"));
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Invalidate
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn live_stream_that_falls_behind_the_history_limit_gets_286() {
    let emu = common::start_with_history(2).await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    for i in 0..5 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let err = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(common::code(&err), 286);
    emu.shutdown().await;
}

#[tokio::test]
async fn stage_not_allowed_in_change_stream_is_refused() {
    let (emu, _client, coll) = common::setup().await;
    let err = coll
        .watch()
        .pipeline(vec![doc! {"$group": {"_id": null}}])
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 20);
    emu.shutdown().await;
}

#[tokio::test]
async fn token_from_another_server_instance_is_286() {
    let (emu, _client, coll) = common::setup().await;
    let (token, _) = token_after_two_inserts(&coll).await;
    emu.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (emu2, _client2, coll2) = common::setup().await;
    let err = coll2.watch().resume_after(token).await.unwrap_err();
    assert_eq!(common::code(&err), 286);
    // Tokens of the new server resume fine.
    let (first, _) = token_after_two_inserts(&coll2).await;
    let mut resumed = coll2.watch().resume_after(first).await.unwrap();
    assert_eq!(
        next(&mut resumed).await.document_key.unwrap(),
        doc! {"_id": 2}
    );
    emu2.shutdown().await;
}

#[tokio::test]
async fn images_are_opt_in_per_collection_with_coll_mod() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let mut when = coll
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .await
        .unwrap();
    let mut required = coll
        .watch()
        .full_document(FullDocumentType::Required)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    let w = next(&mut when).await;
    assert_eq!(w.full_document, None, "no post-image while disabled");
    assert_eq!(w.full_document_before_change, None);
    let err = tokio::time::timeout(Duration::from_secs(5), required.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(common::code(&err), 47, "required post-image missing: {err}");

    let db = client.database("d");
    db.run_command(doc! {"collMod": "c", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 3}})
        .await
        .unwrap();
    let w = next(&mut when).await;
    assert_eq!(w.full_document.unwrap(), doc! {"_id": 1, "a": 3});
    assert_eq!(
        w.full_document_before_change.unwrap(),
        doc! {"_id": 1, "a": 2}
    );
    let err = db
        .run_command(doc! {"collMod": "nope", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 26);
    emu.shutdown().await;
}

#[tokio::test]
async fn expanded_events_show_ddl_collection_uuid_and_disambiguated_paths() {
    let (emu, client, coll) = common::setup().await;
    let db = client.database("d");
    let mut plain = db.watch().await.unwrap().with_type::<Document>();
    let mut expanded = db
        .watch()
        .show_expanded_events(true)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": 1, "a": {"1": 1}, "l": [1, 2, 3]})
        .await
        .unwrap();
    db.run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"x": 1}, "name": "x_1"}]})
        .await
        .unwrap();
    db.run_command(doc! {"collMod": "c"}).await.unwrap();
    coll.update_one(
        doc! {"_id": 1},
        vec![doc! {"$set": {"a.1": 2, "l": [1, 2]}}],
    )
    .await
    .unwrap();
    let mut ops = Vec::new();
    for _ in 0..5 {
        let e = raw(&mut expanded).await;
        assert!(
            matches!(e.get("collectionUUID"), Some(Bson::Binary(_))),
            "{e}"
        );
        ops.push(e.get_str("operationType").unwrap().to_string());
        if ops.last().unwrap() == "update" {
            let desc = e.get_document("updateDescription").unwrap();
            assert_eq!(
                desc.get_document("disambiguatedPaths").unwrap(),
                &doc! {"a.1": ["a", "1"]}
            );
            assert_eq!(
                desc.get_array("truncatedArrays").unwrap(),
                &vec![Bson::Document(doc! {"field": "l", "newSize": 2})]
            );
        }
    }
    assert_eq!(
        ops,
        ["create", "insert", "createIndexes", "modify", "update"]
    );
    // Without the option: only the document events, without the new fields.
    let ins = raw(&mut plain).await;
    assert_eq!(ins.get_str("operationType").unwrap(), "insert");
    assert!(ins.get("collectionUUID").is_none());
    let upd = raw(&mut plain).await;
    assert!(upd
        .get_document("updateDescription")
        .unwrap()
        .get("disambiguatedPaths")
        .is_none());
    emu.shutdown().await;
}

/// The next raw event of `s`.
async fn raw(s: &mut ChangeStream<Document>) -> Document {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("event within 5s")
        .expect("stream open")
        .expect("event ok")
}
