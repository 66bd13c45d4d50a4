//! Fault injection through the handle and the `emulatorFault` command, and the
//! counters; the driver must recover from each fault on its own.

mod common;

use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures::StreamExt;
use mongodb::bson;
use mongodb::change_stream::event::OperationType;

#[tokio::test]
async fn driver_recovers_after_all_connections_close() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    emu.handle().close_all_connections();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Retryable read/write: the driver reconnects and succeeds.
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn failed_get_more_with_91_resumes_the_stream_transparently() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.document_key.unwrap(), doc! {"_id": 1});
    let aggregates_before = emu.handle().counters().commands["aggregate"];
    emu.handle().fail_command("getMore", 91, 1);
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.operation_type, OperationType::Insert);
    assert_eq!(
        second.document_key.unwrap(),
        doc! {"_id": 2},
        "no event lost or repeated"
    );
    assert!(
        emu.handle().counters().commands["aggregate"] > aggregates_before,
        "the driver resumed"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn failed_insert_with_retryable_code_is_retried_once() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    emu.handle().fail_command("insert", 91, 1);
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let c = emu.handle().counters();
    assert_eq!(c.commands["insert"], 3, "original + failed + retry");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    // A non-retryable code surfaces as-is.
    emu.handle().fail_command("find", 2, 1);
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert_eq!(common::code(&err), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn reply_delay_slows_every_reply() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("admin");
    db.run_command(doc! {"ping": 1}).await.unwrap();
    emu.handle().set_reply_delay(Duration::from_millis(150));
    let t = Instant::now();
    db.run_command(doc! {"ping": 1}).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    emu.handle().set_reply_delay(Duration::ZERO);
    emu.shutdown().await;
}

#[tokio::test]
async fn counters_separate_statements_from_changes() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 404}).await.unwrap();
    let c = emu.handle().counters();
    assert_eq!(c.write_statements["d.c"], 4);
    assert_eq!(c.documents_changed["d.c"], 2);
    assert_eq!(c.commands["update"], 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn emulator_fault_command_controls_faults_from_other_processes() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let admin = client.database("admin");
    let coll = client.database("d").collection::<Document>("c");
    admin
        .run_command(
            doc! {"emulatorFault": "failCommand", "command": "delete", "code": 2, "times": 2},
        )
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            common::code(&coll.delete_one(doc! {}).await.unwrap_err()),
            2
        );
    }
    coll.delete_one(doc! {}).await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let counters = admin
        .run_command(doc! {"emulatorFault": "counters"})
        .await
        .unwrap();
    assert_eq!(
        counters
            .get_document("commands")
            .unwrap()
            .get_i64("delete")
            .unwrap(),
        3
    );
    assert_eq!(
        counters
            .get_document("documentsChanged")
            .unwrap()
            .get_i64("d.c")
            .unwrap(),
        1
    );
    // forgetHistory via the command: old tokens → 286.
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .id;
    admin
        .run_command(doc! {"emulatorFault": "forgetHistory"})
        .await
        .unwrap();
    assert_eq!(
        common::code(&coll.watch().resume_after(token).await.unwrap_err()),
        286
    );
    admin
        .run_command(doc! {"emulatorFault": "delay", "ms": 0})
        .await
        .unwrap();
    admin
        .run_command(doc! {"emulatorFault": "closeConnections"})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_errors_carry_mongodb_labels() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    emu.handle().fail_command("getMore", 91, 1);
    let err = db
        .run_command(doc! {"getMore": 1i64, "collection": "c"})
        .await
        .unwrap_err();
    assert!(err.contains_label("ResumableChangeStreamError"), "{err:?}");
    emu.handle().fail_command("update", 189, 1);
    let err = db
        .run_command(doc! {"update": "c", "updates": [{"q": {}, "u": {"$set": {"a": 1}}}]})
        .await
        .unwrap_err();
    assert!(err.contains_label("RetryableWriteError"), "{err:?}");
    emu.handle().fail_command("update", 11000, 1);
    let err = db
        .run_command(doc! {"update": "c", "updates": [{"q": {}, "u": {"$set": {"a": 1}}}]})
        .await
        .unwrap_err();
    assert!(!err.contains_label("RetryableWriteError"));
    emu.shutdown().await;
}

#[tokio::test]
async fn counters_count_change_streams_opened_by_scope() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    let _coll_stream = db.collection::<Document>("c").watch().await.unwrap();
    let _db_stream = db.watch().await.unwrap();
    let _cluster_stream = client.watch().await.unwrap();
    // Only `$changeStream` aggregates count.
    let _: Vec<Document> = db
        .collection::<Document>("c")
        .aggregate(vec![doc! {"$match": {}}])
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let opened = emu.handle().counters().change_streams_opened;
    let want: std::collections::BTreeMap<String, u64> = [
        ("d.c".to_string(), 1),
        ("d.$cmd.aggregate".to_string(), 1),
        ("admin.$cmd.aggregate".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(opened, want);
    let reply = client
        .database("admin")
        .run_command(doc! {"emulatorFault": "counters"})
        .await
        .unwrap();
    assert_eq!(
        reply
            .get_document("changeStreamsOpened")
            .unwrap()
            .get_i64("d.$cmd.aggregate"),
        Ok(1)
    );
    emu.shutdown().await;
}
