//! Change events over 16 MiB, as the MongoDB manual describes them
//! (https://www.mongodb.com/docs/manual/reference/operator/aggregation/changeStreamSplitLargeEvent/):
//! without `$changeStreamSplitLargeEvent` an event too large to serialise fails the
//! stream with BSONObjectTooLarge (10334), again on every resume from before it; with
//! the stage it arrives as fragments `{splitEvent: {fragment, of}}`, smallest fields
//! first, each with its own resume token. Stage placement errors as in the server's
//! own test (jstests/change_streams/split_large_event.js).

mod common;

use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongodb::bson;
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::FullDocumentType;
use mongodb::Collection;

/// The manual's example size: a document "with just under 16 MB of data".
const LARGE: usize = 16 * 1024 * 1024 - 1024;

/// A token from before the test's writes.
async fn start_token(coll: &Collection<Document>) -> ResumeToken {
    let s = coll.watch().await.unwrap();
    s.resume_token().expect("the open's postBatchResumeToken")
}

/// Inserts `{_id: 0, a: "a"×LARGE}` and sets `a` to `"b"×LARGE`: the update's
/// `updatedFields` alone is ~16 MB, so with a post-image the event is ~32 MB.
async fn large_update(coll: &Collection<Document>) {
    coll.insert_one(doc! {"_id": 0, "a": "a".repeat(LARGE)})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 0}, doc! {"$set": {"a": "b".repeat(LARGE)}})
        .await
        .unwrap();
}

/// A stream of raw event documents (fragments are not whole change events).
type Raw = mongodb::change_stream::ChangeStream<Document>;

async fn next_raw(s: &mut Raw) -> mongodb::error::Result<Document> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an answer within 10s")
        .expect("stream open")
}

/// A raw stream with `$changeStreamSplitLargeEvent` and post-images, resumed after `token`.
async fn split_lookup_stream(coll: &Collection<Document>, token: ResumeToken) -> Raw {
    coll.watch()
        .pipeline([doc! {"$changeStreamSplitLargeEvent": {}}])
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(token)
        .await
        .unwrap()
        .with_type::<Document>()
}

#[tokio::test]
async fn an_event_over_the_limit_fails_with_bson_object_too_large_and_again_on_resume() {
    let (_emu, _client, coll) = common::setup().await;
    let start = start_token(&coll).await;
    large_update(&coll).await;
    for _ in 0..2 {
        // One event per batch: the insert (~16 MB) is within the limit and arrives; the
        // batch holding the update fails as a whole.
        let mut s = coll
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .resume_after(start.clone())
            .batch_size(1)
            .await
            .unwrap()
            .with_type::<Document>();
        let ins = next_raw(&mut s).await.unwrap();
        assert_eq!(ins.get_str("operationType").unwrap(), "insert");
        let err = next_raw(&mut s).await.unwrap_err();
        assert_eq!(common::code(&err), 10334, "{err}");
        assert!(err.to_string().contains("16793600"), "{err}");
    }
}

#[tokio::test]
async fn the_same_update_without_a_post_image_is_within_the_limit() {
    let (_emu, _client, coll) = common::setup().await;
    let mut s = coll.watch().await.unwrap().with_type::<Document>();
    large_update(&coll).await;
    next_raw(&mut s).await.unwrap();
    let upd = next_raw(&mut s).await.unwrap();
    assert_eq!(upd.get_str("operationType").unwrap(), "update");
    assert!(upd.get("splitEvent").is_none());
}

#[tokio::test]
async fn the_split_stage_returns_fragments_that_rebuild_the_event() {
    let (_emu, _client, coll) = common::setup().await;
    let start = start_token(&coll).await;
    large_update(&coll).await;
    let mut s = split_lookup_stream(&coll, start).await;
    let ins = next_raw(&mut s).await.unwrap();
    assert!(
        ins.get("splitEvent").is_none(),
        "a small enough event is not split"
    );
    let first = next_raw(&mut s).await.unwrap();
    let second = next_raw(&mut s).await.unwrap();
    assert_eq!(
        first.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 1, "of": 2}
    );
    assert_eq!(
        second.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    // As in the manual's example: context first, the large fields last.
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(&keys[..2], ["_id", "splitEvent"]);
    for k in [
        "operationType",
        "clusterTime",
        "wallTime",
        "ns",
        "documentKey",
        "fullDocument",
    ] {
        assert!(keys.contains(&k), "{k} in the first fragment: {keys:?}");
    }
    assert_eq!(
        second.keys().map(String::as_str).collect::<Vec<_>>(),
        ["_id", "splitEvent", "updateDescription"]
    );
    let updated = second.get_document("updateDescription").unwrap();
    assert_eq!(
        updated
            .get_document("updatedFields")
            .unwrap()
            .get_str("a")
            .unwrap()
            .len(),
        LARGE
    );
    assert_ne!(first.get("_id"), second.get("_id"));

    // Resuming from the first fragment gives the second; from the last, the next event.
    let token =
        |d: &Document| -> ResumeToken { bson::from_bson(d.get("_id").unwrap().clone()).unwrap() };
    let mut s = split_lookup_stream(&coll, token(&first)).await;
    assert_eq!(next_raw(&mut s).await.unwrap(), second);
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut s = split_lookup_stream(&coll, token(&second)).await;
    let after = next_raw(&mut s).await.unwrap();
    assert_eq!(after.get_document("documentKey").unwrap(), &doc! {"_id": 1});

    // Resumed without the post-image the event is too small to split: the fragment
    // cannot be found again (the server's split_large_event.js expects the same).
    // (The event is already there: the aggregate's own first batch fails.)
    let err = coll
        .watch()
        .pipeline([doc! {"$changeStreamSplitLargeEvent": {}}])
        .resume_after(token(&first))
        .await
        .expect_err("the fragment is not produced again");
    assert_eq!(common::code(&err), 280);

    // Resuming from a fragment without the stage can never work: 280, not resumable.
    let err = coll
        .watch()
        .resume_after(token(&first))
        .await
        .expect_err("resume from a fragment without the stage fails");
    assert_eq!(common::code(&err), 280);
    assert!(err.contains_label("NonResumableChangeStreamError"));
}

#[tokio::test]
async fn the_split_stage_is_last_once_and_only_in_change_streams() {
    let (_emu, client, coll) = common::setup().await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let db = client.database("d");
    let run = |pipeline: Vec<Document>| {
        let db = db.clone();
        async move {
            let err = db
                .run_command(doc! {"aggregate": "c", "pipeline": pipeline, "cursor": {}})
                .await
                .expect_err("refused");
            common::code(&err)
        }
    };
    let split = doc! {"$changeStreamSplitLargeEvent": {}};
    assert_eq!(run(vec![split.clone()]).await, 20);
    assert_eq!(
        run(vec![
            doc! {"$changeStream": {}},
            split.clone(),
            split.clone()
        ])
        .await,
        7182802
    );
    assert_eq!(
        run(vec![
            doc! {"$changeStream": {}},
            split.clone(),
            doc! {"$project": {"x": 0}}
        ])
        .await,
        7182802
    );
    // An unknown stage is 40324 in a change stream as anywhere; a known one that a
    // change stream does not allow is 20.
    assert_eq!(
        run(vec![doc! {"$changeStream": {}}, doc! {"$nosuchstage": {}}]).await,
        40324
    );
    assert_eq!(
        run(vec![
            doc! {"$changeStream": {}},
            doc! {"$group": {"_id": 1}}
        ])
        .await,
        20
    );
}
