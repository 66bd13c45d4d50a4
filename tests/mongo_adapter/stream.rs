//! Change streams: events, progress, resume, history loss, invalidation.

use super::*;

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
    // The open's postBatchResumeToken comes at once, so a fresh stream can be
    // checkpointed before any event (otherwise a failure right after opening would force
    // a full reconcile).
    match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        Ok(Ok(StreamItem::Progress(token))) => assert!(!token.0.is_empty()),
        other => panic!("expected an immediate progress item, got {other:?}"),
    }
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
    let token = next_progress(&mut stream).await;
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
    let err = next_error(&mut stream).await;
    assert_eq!(err.kind, StoreErrorKind::Invalidated, "{err}");
    assert_eq!(
        stream.next().await.unwrap_err().kind,
        StoreErrorKind::Invalidated
    );
    b.finish().await;
}
