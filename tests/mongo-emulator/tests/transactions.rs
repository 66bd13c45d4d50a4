//! Multi-document transactions through the official driver: commit applies every
//! write at once and its change events carry the session's `lsid` and the
//! `txnNumber` under one cluster time; abort discards; isolation from other clients;
//! write conflicts (112 + TransientTransactionError); writes outside transactions
//! carry no `lsid`; resuming inside a transaction's events; the documented errors.

mod common;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::bson;
use mongodb::change_stream::event::OperationType;
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use mongodb::ClientSession;

use common::{next_event as next, Stream};

/// An emulator, a client, `d.c`, a stream on it, and a session in a transaction.
async fn in_txn() -> (
    mongo_emulator::Emulator,
    mongodb::Collection<Document>,
    Stream,
    ClientSession,
) {
    let (emu, client, coll) = common::setup().await;
    let stream = coll.watch().await.unwrap();
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    (emu, coll, stream, s)
}

/// The `id` (UUID) of a session id document.
fn session_uuid(lsid: &Document) -> Bson {
    lsid.get("id").cloned().expect("lsid has an id")
}

/// Every document of `coll`, outside any transaction.
async fn all(coll: &mongodb::Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .await
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
        .await
}

/// The `_id`s of `coll`, outside any transaction.
async fn ids(coll: &mongodb::Collection<Document>) -> Vec<Bson> {
    let docs = all(coll).await;
    docs.iter().map(|d| d.get("_id").unwrap().clone()).collect()
}

async fn ids_in(coll: &mongodb::Collection<Document>, s: &mut ClientSession) -> Vec<Bson> {
    let mut cursor = coll.find(doc! {}).session(&mut *s).await.unwrap();
    let mut out = Vec::new();
    while let Some(d) = cursor.next(&mut *s).await {
        out.push(d.unwrap().get("_id").unwrap().clone());
    }
    out
}

/// Insert `{_id: id}` in the session's transaction.
async fn try_insert_in(
    coll: &mongodb::Collection<Document>,
    s: &mut ClientSession,
    id: i32,
) -> mongodb::error::Result<mongodb::results::InsertOneResult> {
    coll.insert_one(doc! {"_id": id}).session(s).await
}

/// Insert `{_id: id}` in the session's transaction, which succeeds.
async fn insert_in(coll: &mongodb::Collection<Document>, s: &mut ClientSession, id: i32) {
    try_insert_in(coll, s, id).await.unwrap();
}

#[tokio::test]
async fn commit_applies_writes_at_once_with_lsid_and_txn_number_in_events() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 0, "n": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 1).await;
    let upd = coll
        .update_one(doc! {"_id": 0}, doc! {"$set": {"n": 1}})
        .session(&mut s)
        .await
        .unwrap();
    assert_eq!((upd.matched_count, upd.modified_count), (1, 1));
    let up = coll
        .update_one(doc! {"_id": 2}, doc! {"$set": {"n": 2}})
        .upsert(true)
        .session(&mut s)
        .await
        .unwrap();
    assert_eq!(up.upserted_id, Some(Bson::Int32(2)));
    coll.delete_one(doc! {"_id": 1})
        .session(&mut s)
        .await
        .unwrap();
    // Nothing is visible outside before the commit.
    assert_eq!(ids(&coll).await, vec![Bson::Int32(0)]);
    assert_eq!(
        coll.find_one(doc! {"_id": 0}).await.unwrap().unwrap(),
        doc! {"_id": 0, "n": 0}
    );
    s.commit_transaction().await.unwrap();
    assert_eq!(ids(&coll).await, vec![Bson::Int32(0), Bson::Int32(2)]);
    assert_eq!(
        coll.find_one(doc! {"_id": 0}).await.unwrap().unwrap(),
        doc! {"_id": 0, "n": 1}
    );

    let want = session_uuid(s.id());
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(next(&mut stream).await);
    }
    let kinds: Vec<OperationType> = events.iter().map(|e| e.operation_type.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OperationType::Insert,
            OperationType::Update,
            OperationType::Insert,
            OperationType::Delete,
        ]
    );
    let txn_number = events[0]
        .txn_number
        .expect("txnNumber on a transaction's event");
    for e in &events {
        let lsid = e.lsid.as_ref().expect("lsid on a transaction's event");
        assert_eq!(session_uuid(lsid), want);
        assert_eq!(e.txn_number, Some(txn_number));
        assert_eq!(e.cluster_time, events[0].cluster_time);
    }
    let tokens: Vec<String> = events
        .iter()
        .map(|e| {
            let d = bson::to_document(&e.id).unwrap();
            d.get_str("_data").unwrap().to_string()
        })
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn abort_discards_writes_and_events() {
    let (emu, coll, mut stream, mut s) = in_txn().await;
    insert_in(&coll, &mut s, 1).await;
    insert_in(&coll, &mut s, 2).await;
    s.abort_transaction().await.unwrap();
    assert!(ids(&coll).await.is_empty());
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.document_key, Some(doc! {"_id": 3}));
    assert!(first.lsid.is_none());
    // A new transaction on the session after an abort works.
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 4).await;
    s.commit_transaction().await.unwrap();
    assert_eq!(ids(&coll).await, vec![Bson::Int32(3), Bson::Int32(4)]);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_transaction_sees_its_own_writes_and_its_snapshot_only() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    let other = client.database("d").collection::<Document>("other");
    other.insert_one(doc! {"_id": 1, "w": 1}).await.unwrap();
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 2).await;
    assert_eq!(
        ids_in(&coll, &mut s).await,
        vec![Bson::Int32(1), Bson::Int32(2)]
    );
    let n = coll.count_documents(doc! {}).session(&mut s).await.unwrap();
    assert_eq!(n, 2);
    // Another client's writes after the snapshot are not seen inside.
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    other
        .update_one(doc! {"_id": 1}, doc! {"$set": {"w": 2}})
        .await
        .unwrap();
    assert_eq!(
        ids_in(&coll, &mut s).await,
        vec![Bson::Int32(1), Bson::Int32(2)]
    );
    let seen = other
        .find_one(doc! {"_id": 1})
        .session(&mut s)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, doc! {"_id": 1, "w": 1});
    // findAndModify inside, and the outside still sees the old document.
    let before = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"v": 1}})
        .session(&mut s)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, doc! {"_id": 1, "v": 1});
    let inside = coll
        .find_one(doc! {"_id": 1})
        .session(&mut s)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inside, doc! {"_id": 1, "v": 2});
    let outside = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(outside, doc! {"_id": 1, "v": 1});
    assert_eq!(ids(&coll).await, vec![Bson::Int32(1), Bson::Int32(3)]);
    s.commit_transaction().await.unwrap();
    assert_eq!(
        ids(&coll).await,
        vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]
    );
    emu.shutdown().await;
}

/// `$set: {v}` on `{_id: id}` in the session's transaction.
async fn set_v(
    coll: &mongodb::Collection<Document>,
    s: &mut ClientSession,
    id: i32,
    v: i32,
) -> mongodb::error::Result<mongodb::results::UpdateResult> {
    coll.update_one(doc! {"_id": id}, doc! {"$set": {"v": v}})
        .session(s)
        .await
}

/// `err` has the code `code` and the TransientTransactionError label.
fn assert_transient(err: &mongodb::error::Error, code: i32) {
    assert_eq!(common::code(err), code, "{err:?}");
    assert!(err.contains_label(TRANSIENT_TRANSACTION_ERROR), "{err:?}");
}

#[tokio::test]
async fn a_collection_created_in_a_transaction_exists_only_once_committed() {
    let (emu, client, _coll) = common::setup().await;
    let db = client.database("fresh");
    let names = || async { db.list_collection_names().await.unwrap() };
    for commit in [false, true] {
        let mut s = client.start_session().await.unwrap();
        s.start_transaction().await.unwrap();
        insert_in(&db.collection("n"), &mut s, 1).await;
        insert_in(&db.collection("n"), &mut s, 2).await;
        assert!(names().await.is_empty());
        assert_eq!(
            ids_in(&db.collection("n"), &mut s).await,
            vec![Bson::Int32(1), Bson::Int32(2)]
        );
        if commit {
            s.commit_transaction().await.unwrap();
            assert_eq!(names().await, vec!["n".to_string()]);
            assert_eq!(ids(&db.collection("n")).await.len(), 2);
        } else {
            s.abort_transaction().await.unwrap();
            assert!(names().await.is_empty());
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn create_and_create_indexes_inside_a_transaction() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let db = client.database("d");
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    db.run_command(doc! {"create": "made"})
        .session(&mut s)
        .await
        .unwrap();
    let made = db.collection::<Document>("made");
    made.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! {"u": 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .session(&mut s)
    .await
    .unwrap();
    made.insert_one(doc! {"_id": 1, "u": 1})
        .session(&mut s)
        .await
        .unwrap();
    assert!(!db
        .list_collection_names()
        .await
        .unwrap()
        .contains(&"made".to_string()));
    s.commit_transaction().await.unwrap();
    let names: Vec<String> = made
        .list_indexes()
        .await
        .unwrap()
        .map(|i| i.unwrap().keys.keys().next().unwrap().to_string())
        .collect()
        .await;
    assert_eq!(names, vec!["_id", "u"]);
    let err = made.insert_one(doc! {"_id": 2, "u": 1}).await.unwrap_err();
    assert_eq!(common::code(&err), 11000);

    // createIndexes on an existing collection inside a transaction: 263.
    s.start_transaction().await.unwrap();
    let err = coll
        .create_index(mongodb::IndexModel::builder().keys(doc! {"x": 1}).build())
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 263, "{err:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn write_conflicts_fail_with_112_and_the_transient_label() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_many([doc! {"_id": 1, "v": 0}, doc! {"_id": 2, "v": 0}])
        .await
        .unwrap();

    // Changed by someone else after the transaction's snapshot.
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    coll.find_one(doc! {"_id": 1})
        .session(&mut s)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 9}})
        .await
        .unwrap();
    let err = set_v(&coll, &mut s, 1, 1).await.unwrap_err();
    assert_transient(&err, 112);
    // The transaction was aborted: its commit fails with NoSuchTransaction.
    assert_transient(&s.commit_transaction().await.unwrap_err(), 251);

    // Two transactions writing one document: the second writer fails.
    let mut a = client.start_session().await.unwrap();
    let mut b = client.start_session().await.unwrap();
    a.start_transaction().await.unwrap();
    b.start_transaction().await.unwrap();
    set_v(&coll, &mut a, 2, 1).await.unwrap();
    assert_transient(&set_v(&coll, &mut b, 2, 2).await.unwrap_err(), 112);
    let _ = b.abort_transaction().await;
    a.commit_transaction().await.unwrap();
    let doc2 = coll.find_one(doc! {"_id": 2}).await.unwrap().unwrap();
    assert_eq!(doc2, doc! {"_id": 2, "v": 1});
    assert_eq!(
        coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap(),
        doc! {"_id": 1, "v": 9}
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn writes_outside_transactions_carry_no_lsid() {
    let emu = common::start().await;
    let retrying = common::client(&emu).await;
    let plain = mongodb::Client::with_uri_str(format!(
        "{}&retryWrites=false&serverSelectionTimeoutMS=5000",
        emu.uri()
    ))
    .await
    .unwrap();
    let coll = retrying.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    // Retryable writes (lsid + txnNumber, no autocommit), with and without an
    // explicit session, and a plain write without txnNumber.
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut s = retrying.start_session().await.unwrap();
    insert_in(&coll, &mut s, 2).await;
    coll.update_one(doc! {"_id": 2}, doc! {"$set": {"x": 1}})
        .session(&mut s)
        .await
        .unwrap();
    plain
        .database("d")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    for _ in 0..4 {
        let e = next(&mut stream).await;
        assert!(e.lsid.is_none(), "{e:?}");
        assert!(e.txn_number.is_none(), "{e:?}");
    }
    // The same session's transaction afterwards does carry them.
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 4).await;
    s.commit_transaction().await.unwrap();
    let e = next(&mut stream).await;
    assert_eq!(session_uuid(e.lsid.as_ref().unwrap()), session_uuid(s.id()));
    assert!(e.txn_number.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_stream_resumed_inside_a_transaction_continues_with_its_next_event() {
    let (emu, coll, mut stream, mut s) = in_txn().await;
    for i in 1..=3 {
        insert_in(&coll, &mut s, i).await;
    }
    s.commit_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    let _first = next(&mut stream).await;
    let second = next(&mut stream).await;
    assert_eq!(second.document_key, Some(doc! {"_id": 2}));

    let mut resumed = coll.watch().resume_after(second.id.clone()).await.unwrap();
    let third = next(&mut resumed).await;
    assert_eq!(third.document_key, Some(doc! {"_id": 3}));
    assert_eq!(third.cluster_time, second.cluster_time);
    assert!(third.lsid.is_some());
    let fourth = next(&mut resumed).await;
    assert_eq!(fourth.document_key, Some(doc! {"_id": 4}));
    assert!(fourth.lsid.is_none());

    // startAfter works the same; startAtOperationTime of the commit sees all three.
    let mut after = coll.watch().start_after(second.id.clone()).await.unwrap();
    assert_eq!(next(&mut after).await.document_key, Some(doc! {"_id": 3}));
    let mut at = coll
        .watch()
        .start_at_operation_time(second.cluster_time.unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut at).await.document_key, Some(doc! {"_id": 1}));

    // Batches of one event stop inside the transaction: each batch's resume token is
    // its event's, and the next batch continues with the next event.
    let mut small = coll
        .watch()
        .start_at_operation_time(second.cluster_time.unwrap())
        .batch_size(1)
        .await
        .unwrap();
    for i in 1..=4 {
        let e = next(&mut small).await;
        assert_eq!(e.document_key, Some(doc! {"_id": i}));
        assert_eq!(small.resume_token(), Some(e.id.clone()));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn commit_again_after_success_is_ok_and_errors_are_documented_ones() {
    let (emu, client, coll) = common::setup().await;
    let db = client.database("d");
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 1).await;
    s.commit_transaction().await.unwrap();
    // The driver sends commitTransaction again; the server answers ok.
    s.commit_transaction().await.unwrap();
    assert_eq!(ids(&coll).await, vec![Bson::Int32(1)]);

    // A command not allowed in a transaction: 263, and the transaction is aborted.
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 2).await;
    let err = db
        .run_command(doc! {"count": "c"})
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 263, "{err:?}");
    let err = s.commit_transaction().await.unwrap_err();
    assert_eq!(common::code(&err), 251, "{err:?}");
    assert_eq!(ids(&coll).await, vec![Bson::Int32(1)]);

    // $changeStream / $out inside a transaction: 263.
    s.start_transaction().await.unwrap();
    let err = coll
        .aggregate([doc! {"$out": "copy"}])
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 263, "{err:?}");
    let _ = s.abort_transaction().await;

    // A duplicate key inside a transaction is a write error and aborts it.
    s.start_transaction().await.unwrap();
    let err = try_insert_in(&coll, &mut s, 1).await.unwrap_err();
    assert_eq!(common::code(&err), 11000, "{err:?}");
    assert!(!err.contains_label(TRANSIENT_TRANSACTION_ERROR));
    let err = s.commit_transaction().await.unwrap_err();
    assert_eq!(common::code(&err), 251, "{err:?}");

    // Commands naming a transaction the server does not have (sent by hand on the
    // session, which is not in a transaction for the driver).
    let admin = client.database("admin");
    let err = admin
        .run_command(doc! {"commitTransaction": 1, "txnNumber": 999_i64, "autocommit": false})
        .session(&mut s)
        .await
        .unwrap_err();
    assert_transient(&err, 251);
    let err = db
        .run_command(doc! {"find": "c", "txnNumber": 1000_i64, "autocommit": false})
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 251, "{err:?}");
    // Starting a transaction on a number lower than the session's: TransactionTooOld.
    let err = db
        .run_command(
            doc! {"find": "c", "txnNumber": 1_i64, "autocommit": false, "startTransaction": true},
        )
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 225, "{err:?}");
    // Starting the session's active number again: 117 (only mongos may).
    let start =
        doc! {"find": "c", "txnNumber": 5000_i64, "autocommit": false, "startTransaction": true};
    db.run_command(start.clone()).session(&mut s).await.unwrap();
    let err = db.run_command(start).session(&mut s).await.unwrap_err();
    assert_eq!(common::code(&err), 117, "{err:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn oplog_shows_a_committed_transaction_as_one_apply_ops_entry() {
    let (emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 1).await;
    coll.delete_one(doc! {"_id": 0})
        .session(&mut s)
        .await
        .unwrap();
    s.commit_transaction().await.unwrap();
    let entries = all(&client.database("local").collection("oplog.rs")).await;
    let last = entries.last().unwrap();
    assert_eq!(last.get_str("op").unwrap(), "c");
    assert_eq!(
        session_uuid(last.get_document("lsid").unwrap()),
        session_uuid(s.id())
    );
    assert!(last.get_i64("txnNumber").is_ok());
    let ops = last
        .get_document("o")
        .unwrap()
        .get_array("applyOps")
        .unwrap();
    let kinds: Vec<&str> = ops
        .iter()
        .map(|o| o.as_document().unwrap().get_str("op").unwrap())
        .collect();
    assert_eq!(kinds, vec!["i", "d"]);
    // Read from either end one entry at a time, the transaction stays one entry.
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let newest = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap();
    assert_eq!(newest.as_ref(), Some(last));
    let oldest = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap();
    assert_eq!(oldest.as_ref(), entries.first());
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_errors_get_the_labels_mongodb_gives_inside_transactions() {
    let (emu, client, coll) = common::setup().await;
    let admin = client.database("admin");
    let fail = |data: Document| doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": data};
    let mut s = client.start_session().await.unwrap();

    // A retryable code on a write inside a transaction: transient, not a retryable write.
    admin
        .run_command(fail(doc! {"failCommands": ["insert"], "errorCode": 10107}))
        .await
        .unwrap();
    s.start_transaction().await.unwrap();
    let err = try_insert_in(&coll, &mut s, 1).await.unwrap_err();
    assert_transient(&err, 10107);
    assert!(!err.contains_label("RetryableWriteError"), "{err:?}");
    let _ = s.abort_transaction().await;

    // A write concern error on commit is a retryable one: the driver retries the commit,
    // which succeeds again.
    admin
        .run_command(fail(doc! {"failCommands": ["commitTransaction"],
        "writeConcernError": {"code": 91, "errmsg": "Replication is being shut down"}}))
        .await
        .unwrap();
    s.start_transaction().await.unwrap();
    insert_in(&coll, &mut s, 2).await;
    s.commit_transaction().await.unwrap();
    assert_eq!(ids(&coll).await, vec![Bson::Int32(2)]);
    emu.shutdown().await;
}
