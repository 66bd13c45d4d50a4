//! `MongoSides`, redaction and error classification against a server.

use super::*;

#[tokio::test]
async fn sides_on_one_deployment_share_a_client_and_work() {
    let b = Backend::start("sides").await;
    let sides = sides(&b, vec![pair(&b, "p", "local_data", "cloud_data", None)]);
    let connected = sides.connect().await.unwrap();
    let stores = &connected.pairs[0];
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
    assert_eq!(err.kind, StoreErrorKind::Fatal, "{err}");
    assert!(!err.message.contains("Sup3rSecret"), "{}", err.message);
    b.finish().await;
}

#[tokio::test]
async fn stream_survives_a_dropped_connection_and_a_resumable_error() {
    let b = Backend::start("stream_faults").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's fault injection");
        return;
    };
    let coll = b.coll("items");
    let mut stream = b.store("items").open_stream(None).await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key.0, Bson::Int32(1));

    emu.handle().close_all_connections();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key.0, Bson::Int32(2));

    // 91 ShutdownInProgress carries ResumableChangeStreamError: the driver resumes.
    emu.handle().fail_command("getMore", 91, 1);
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key.0, Bson::Int32(3));
    b.finish().await;
}

#[tokio::test]
async fn server_errors_are_classified_for_the_engine() {
    let b = Backend::start("error_kinds").await;
    let Some(emu) = b.emulator.as_ref() else {
        eprintln!("skipped: needs the emulator's fault injection");
        return;
    };
    let store = b.store("items");
    emu.handle().fail_command("update", 189, 1);
    let err = store.apply(&[upsert(1, 1, 1, false)]).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Transient, "{err}");
    // Retrying the same batch succeeds.
    assert_eq!(
        store.apply(&[upsert(1, 1, 1, false)]).await.unwrap(),
        [WriteOutcome::Applied]
    );

    emu.handle().fail_command("aggregate", 286, 1);
    let err = match store.open_stream(None).await {
        Err(e) => e,
        Ok(_) => panic!("the injected failure must surface"),
    };
    assert_eq!(err.kind, StoreErrorKind::HistoryLost, "{err}");

    emu.handle().fail_command("find", 13, 1);
    let err = store.scan(None, 10).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Fatal, "{err}");
    b.finish().await;
}
