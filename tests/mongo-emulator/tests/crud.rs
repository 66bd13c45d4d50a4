//! CRUD, query operators, indexes and error codes through the official driver.

mod common;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::bson;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

async fn setup() -> (
    mongo_emulator::Emulator,
    mongodb::Client,
    mongodb::Collection<Document>,
) {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    (emu, client, coll)
}

#[tokio::test]
async fn insert_generates_id_first_and_find_filters() {
    let (emu, _c, coll) = setup().await;
    let res = coll.insert_one(doc! {"a": 1, "_id_not": 0}).await.unwrap();
    assert!(matches!(res.inserted_id, Bson::ObjectId(_)));
    coll.insert_many(vec![
        doc! {"name": "x", "_id": 2, "n": 5, "tags": ["a", "b"], "sub": {"k": 1}},
        doc! {"_id": 3, "n": "5", "tags": ["c"], "sub": {"k": 2}},
        doc! {"_id": 4, "n": 7.5, "nil": null},
    ])
    .await
    .unwrap();
    let stored = coll.find_one(doc! {"_id": 2}).await.unwrap().unwrap();
    assert_eq!(stored.keys().next().unwrap(), "_id", "_id is moved first");
    let ids = |docs: Vec<Document>| {
        docs.iter()
            .map(|d| d.get("_id").cloned().unwrap())
            .collect::<Vec<_>>()
    };
    let q = |f: Document| {
        let coll = coll.clone();
        async move {
            ids(coll
                .find(f)
                .sort(doc! {"_id": 1})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap())
        }
    };
    assert_eq!(
        q(doc! {"n": {"$gt": 4}}).await,
        vec![Bson::Int32(2), Bson::Int32(4)],
        "range stays in type bracket"
    );
    assert_eq!(
        q(doc! {"tags": "c"}).await,
        vec![Bson::Int32(3)],
        "array element match"
    );
    assert_eq!(
        q(doc! {"sub.k": {"$in": [2, 9]}}).await,
        vec![Bson::Int32(3)]
    );
    assert_eq!(
        q(doc! {"nil": null, "_id": {"$gte": 3}}).await,
        vec![Bson::Int32(3), Bson::Int32(4)],
        "null matches missing"
    );
    assert_eq!(
        q(doc! {"$or": [{"_id": 2}, {"n": {"$exists": false}}]})
            .await
            .len(),
        2
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn find_sort_skip_limit_projection() {
    let (emu, _c, coll) = setup().await;
    let docs: Vec<Document> = (0..10)
        .map(|i| doc! {"_id": i, "v": 10 - i, "x": "keep", "y": "drop"})
        .collect();
    coll.insert_many(docs).await.unwrap();
    let out: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! {"v": 1})
        .skip(2)
        .limit(3)
        .projection(doc! {"y": 0})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": 7, "v": 3, "x": "keep"},
            doc! {"_id": 6, "v": 4, "x": "keep"},
            doc! {"_id": 5, "v": 5, "x": "keep"},
        ]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn update_operators_upsert_and_counts() {
    let (emu, _c, coll) = setup().await;
    coll.insert_many(vec![
        doc! {"_id": 1, "n": 1, "list": [1]},
        doc! {"_id": 2, "n": 1},
    ])
    .await
    .unwrap();
    let r = coll
        .update_one(
            doc! {"_id": 1},
            doc! {"$inc": {"n": 2}, "$push": {"list": 2}, "$set": {"s": "x"}},
        )
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    assert_eq!(
        coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap(),
        doc! {"_id": 1, "n": 3, "list": [1, 2], "s": "x"}
    );
    let r = coll
        .update_many(doc! {}, doc! {"$set": {"all": true}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (2, 2));
    let r = coll
        .update_one(
            doc! {"_id": 9, "k": "v"},
            doc! {"$set": {"a": 1}, "$setOnInsert": {"new": true}},
        )
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.upserted_id, Some(Bson::Int32(9)));
    assert_eq!(
        coll.find_one(doc! {"_id": 9}).await.unwrap().unwrap(),
        doc! {"_id": 9, "k": "v", "a": 1, "new": true}
    );
    let r = coll
        .update_one(
            doc! {"_id": 1},
            vec![doc! {"$set": {"p": {"$add": ["$n", 1]}}}],
        )
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1, "pipeline update");
    assert_eq!(
        coll.find_one(doc! {"_id": 1})
            .await
            .unwrap()
            .unwrap()
            .get_i32("p")
            .unwrap(),
        4
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn conditional_upsert_on_existing_id_is_11000() {
    let (emu, _c, coll) = setup().await;
    coll.insert_one(doc! {"_id": "a", "updatedAt": 10})
        .await
        .unwrap();
    let err = coll
        .replace_one(
            doc! {"_id": "a", "updatedAt": {"$lt": 5}},
            doc! {"_id": "a", "updatedAt": 5},
        )
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 11000);
    assert_eq!(
        coll.find_one(doc! {"_id": "a"})
            .await
            .unwrap()
            .unwrap()
            .get_i32("updatedAt")
            .unwrap(),
        10
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn duplicate_key_error_has_mongodb_shape() {
    let (emu, client, _coll) = setup().await;
    let reply = client
        .database("d")
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1}, {"_id": 1}, {"_id": 2}], "ordered": false})
        .await
        .unwrap();
    assert_eq!(
        reply.get_i32("n").unwrap(),
        2,
        "unordered batch runs every statement"
    );
    let errs = reply.get_array("writeErrors").unwrap();
    assert_eq!(errs.len(), 1);
    let e = errs[0].as_document().unwrap();
    assert_eq!(e.get_i32("index").unwrap(), 1);
    assert_eq!(e.get_i32("code").unwrap(), 11000);
    assert_eq!(
        e.get_str("errmsg").unwrap(),
        "E11000 duplicate key error collection: d.c index: _id_ dup key: { _id: 1 }"
    );
    assert_eq!(e.get_document("keyPattern").unwrap(), &doc! {"_id": 1});
    assert_eq!(e.get_document("keyValue").unwrap(), &doc! {"_id": 1});
    let ordered = client
        .database("d")
        .run_command(doc! {"insert": "c", "documents": [{"_id": 5}, {"_id": 1}, {"_id": 6}]})
        .await
        .unwrap();
    assert_eq!(
        ordered.get_i32("n").unwrap(),
        1,
        "ordered batch stops at the first failure"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn error_codes_for_bad_requests() {
    let (emu, client, coll) = setup().await;
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let err = coll.find_one(doc! {"a": {"$frob": 1}}).await.unwrap_err();
    assert_eq!(common::code(&err), 2, "unknown operator");
    let err = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"_id": 2}})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 66, "immutable _id");
    let err = coll
        .replace_one(doc! {"_id": 1}, doc! {"_id": 2, "a": 1})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 66, "replacement cannot change _id");
    let err = client
        .database("d")
        .run_command(
            doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$set": {"a": 1}, "b": 2}}]},
        )
        .await
        .unwrap();
    assert!(
        err.contains_key("writeErrors"),
        "mixed operator/replacement update is refused"
    );
    let err = client
        .database("d")
        .run_command(doc! {"insert": "c", "documents": [{"$bad": 1}]})
        .await
        .unwrap();
    assert_eq!(
        err.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        2
    );
    let err = client
        .database("d")
        .run_command(doc! {"listIndexes": "missing"})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 26);
    client
        .database("d")
        .create_collection("made")
        .await
        .unwrap();
    let err = client
        .database("d")
        .create_collection("made")
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 48);
    client
        .database("d")
        .collection::<Document>("never")
        .drop()
        .await
        .unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn document_over_16_mib_is_10334() {
    let (emu, _c, coll) = setup().await;
    let big = "x".repeat(16 * 1024 * 1024 + 10);
    let err = coll
        .insert_one(doc! {"_id": 1, "s": big})
        .await
        .unwrap_err();
    // The driver may refuse first; when it sends, the server answers 10334.
    if let mongodb::error::ErrorKind::Write(_) | mongodb::error::ErrorKind::Command(_) = &*err.kind
    {
        assert_eq!(common::code(&err), 10334);
    }
    coll.insert_one(doc! {"_id": 2, "s": "x".repeat(8 * 1024 * 1024)})
        .await
        .unwrap();
    let err = coll
        .update_one(
            doc! {"_id": 2},
            doc! {"$set": {"t": "y".repeat(9 * 1024 * 1024)}},
        )
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 10334);
    emu.shutdown().await;
}

#[tokio::test]
async fn delete_one_and_many() {
    let (emu, _c, coll) = setup().await;
    coll.insert_many((0..5).map(|i| doc! {"_id": i, "even": i % 2 == 0}))
        .await
        .unwrap();
    assert_eq!(
        coll.delete_one(doc! {"even": true})
            .await
            .unwrap()
            .deleted_count,
        1
    );
    assert_eq!(
        coll.delete_many(doc! {"even": true})
            .await
            .unwrap()
            .deleted_count,
        2
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(coll.estimated_document_count().await.unwrap(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn find_one_and_modify_variants() {
    let (emu, _c, coll) = setup().await;
    coll.insert_many(vec![doc! {"_id": 1, "v": 1}, doc! {"_id": 2, "v": 2}])
        .await
        .unwrap();
    let before = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$set": {"v": 10}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, doc! {"_id": 1, "v": 1});
    let after = coll
        .find_one_and_update(doc! {"_id": 2}, doc! {"$inc": {"v": 1}})
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, doc! {"_id": 2, "v": 3});
    let removed = coll
        .find_one_and_delete(doc! {})
        .sort(doc! {"v": -1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.get_i32("_id").unwrap(), 1);
    let upserted = coll
        .find_one_and_replace(doc! {"_id": 5}, doc! {"w": 1})
        .upsert(true)
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upserted, doc! {"_id": 5, "w": 1});
    emu.shutdown().await;
}

#[tokio::test]
async fn unique_secondary_index_is_enforced_and_listed() {
    let (emu, _c, coll) = setup().await;
    coll.insert_one(doc! {"_id": 1, "email": "a@x"})
        .await
        .unwrap();
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"email": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build(),
    )
    .await
    .unwrap();
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"ttl": 1})
            .options(
                IndexOptions::builder()
                    .expire_after(std::time::Duration::from_secs(60))
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    let names = coll.list_index_names().await.unwrap();
    assert_eq!(names, vec!["_id_", "email_1", "ttl_1"]);
    let err = coll
        .insert_one(doc! {"_id": 2, "email": "a@x"})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 11000);
    let mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) = &*err.kind
    else {
        panic!("write error expected: {err}");
    };
    assert!(
        w.message
            .ends_with("index: email_1 dup key: { email: \"a@x\" }"),
        "{}",
        w.message
    );
    coll.drop_index("email_1").await.unwrap();
    coll.insert_one(doc! {"_id": 2, "email": "a@x"})
        .await
        .unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn list_databases_and_collections() {
    let (emu, client, coll) = setup().await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    client
        .database("d")
        .collection::<Document>("other")
        .insert_one(doc! {})
        .await
        .unwrap();
    let dbs = client.list_database_names().await.unwrap();
    assert!(dbs.contains(&"d".to_string()));
    let mut colls = client.database("d").list_collection_names().await.unwrap();
    colls.sort();
    assert_eq!(colls, vec!["c", "other"]);
    let filtered = client
        .database("d")
        .list_collection_names()
        .filter(doc! {"name": "c"})
        .await
        .unwrap();
    assert_eq!(filtered, vec!["c"]);
    client.database("d").drop().await.unwrap();
    assert!(!client
        .list_database_names()
        .await
        .unwrap()
        .contains(&"d".to_string()));
    emu.shutdown().await;
}

#[tokio::test]
async fn retried_write_is_answered_from_cache() {
    let (emu, client, _coll) = setup().await;
    let db = client.database("d");
    let lsid = doc! {"id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7u8; 16] }};
    let cmd = doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}, "upsert": true}], "lsid": lsid.clone(), "txnNumber": 1i64};
    let first = db.run_command(cmd.clone()).await.unwrap();
    let again = db.run_command(cmd).await.unwrap();
    assert_eq!(
        first.get_array("upserted").unwrap(),
        again.get_array("upserted").unwrap()
    );
    let doc = db
        .collection::<Document>("c")
        .find_one(doc! {"_id": 1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.get_i32("n").unwrap(), 1, "applied once");
    emu.shutdown().await;
}

#[tokio::test]
async fn conditional_upserts_by_id_do_not_scan_the_collection() {
    let (emu, client, coll) = setup().await;
    const N: i32 = 3000;
    coll.insert_many((0..N).map(|i| doc! {"_id": i, "updatedAt": 10}))
        .await
        .unwrap();
    let updates: Vec<Document> = (0..N)
        .map(|i| {
            doc! {
                "q": {"_id": i, "updatedAt": {"$lt": 20}},
                "u": {"_id": i, "updatedAt": 20},
                "upsert": true,
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let reply = client
        .database("d")
        .run_command(doc! {"update": "c", "updates": updates, "ordered": false})
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply.get_i32("nModified").unwrap(), N);
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    emu.shutdown().await;
}
