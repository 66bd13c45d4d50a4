//! Cursor behaviour: first batch of 101, getMore batches, exhausted cursors,
//! killCursors and CursorNotFound.

mod common;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::bson;

#[tokio::test]
async fn default_first_batch_is_101_and_get_more_returns_the_rest() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..250).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db.run_command(doc! {"find": "c"}).await.unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(cursor.get_array("firstBatch").unwrap().len(), 101);
    assert_eq!(cursor.get_str("ns").unwrap(), "d.c");
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 100})
        .await
        .unwrap();
    let c = more.get_document("cursor").unwrap();
    assert_eq!(c.get_array("nextBatch").unwrap().len(), 100);
    assert_eq!(c.get_i64("id").unwrap(), id);
    let last = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    let c = last.get_document("cursor").unwrap();
    assert_eq!(c.get_array("nextBatch").unwrap().len(), 49);
    assert_eq!(c.get_i64("id").unwrap(), 0);
    let err = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 43);
    // The driver iterates everything with small batches.
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    emu.shutdown().await;
}

#[tokio::test]
async fn kill_cursors_reports_killed_and_not_found() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    db.collection::<Document>("c")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 1})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    let killed = db
        .run_command(doc! {"killCursors": "c", "cursors": [id, 12345i64]})
        .await
        .unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![bson::Bson::Int64(id)]
    );
    assert_eq!(
        killed.get_array("cursorsNotFound").unwrap(),
        &vec![bson::Bson::Int64(12345)]
    );
    let err = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 43);
    emu.shutdown().await;
}

#[tokio::test]
async fn single_batch_and_negative_limit_close_the_cursor() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    db.collection::<Document>("c")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 2, "singleBatch": true})
        .await
        .unwrap();
    let c = reply.get_document("cursor").unwrap();
    assert_eq!(
        (
            c.get_array("firstBatch").unwrap().len(),
            c.get_i64("id").unwrap()
        ),
        (2, 0)
    );
    let reply = db
        .run_command(doc! {"find": "c", "limit": -3})
        .await
        .unwrap();
    let c = reply.get_document("cursor").unwrap();
    assert_eq!(
        (
            c.get_array("firstBatch").unwrap().len(),
            c.get_i64("id").unwrap()
        ),
        (3, 0)
    );
    emu.shutdown().await;
}
