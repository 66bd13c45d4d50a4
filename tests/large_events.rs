//! Change events over 16 MiB through the real binary (issue 19). On MongoDB a change
//! event larger than the server can serialise fails the stream with BSONObjectTooLarge,
//! and resuming from before it fails the same way, so a daemon that only resumes stalls
//! on that one document forever. Expectations are MongoDB's, from the manual:
//! - https://www.mongodb.com/docs/manual/reference/operator/aggregation/changeStreamSplitLargeEvent/
//!   ("If a change stream has large events that exceed 16 MB, a BSONObjectTooLarge
//!   exception is returned"; reduce the event first: "Use a $project stage to include
//!   only the fields necessary"; fragments otherwise);
//! - https://www.mongodb.com/docs/manual/reference/change-events/update/ (an update
//!   event carries `updateDescription.updatedFields`, as large as the update, and with
//!   `fullDocument: "updateLookup"` the whole current document as well).
//!
//! Runs against the emulator, or against `DATASYNC_TEST_MONGODB_URI`.

#[path = "e2e/harness.rs"]
#[allow(dead_code)] // this suite uses part of the shared harness
mod harness;

use std::time::Duration;

use bson::{doc, DateTime, Document};
use futures::StreamExt;
use mongodb::options::FullDocumentType;
use mongodb::Collection;

use harness::{eventually, get, skipped, Mongo, Pair, Settings};

/// The manual's example of a document "with just under 16 MB of data".
const PAYLOAD: usize = 16 * 1024 * 1024 - 1024;

/// How long a ~16 MiB document may take to cross (debug builds move them slowly).
const LARGE_ARRIVES: Duration = Duration::from_secs(60);

/// A near-16 MiB document: `payload` is `fill` repeated.
fn large(id: &str, value: &str, fill: char) -> Document {
    doc! {
        "_id": id,
        "value": value,
        "updatedAt": DateTime::now(),
        "payload": fill.to_string().repeat(PAYLOAD),
    }
}

/// Waits until `id` on `c` has `value` and a full payload of `fill`.
async fn arrives(c: &Collection<Document>, id: &str, value: &str, fill: char) {
    let ok = eventually(LARGE_ARRIVES, || async {
        get(c, id).await.is_some_and(|d| {
            d.get_str("value") == Ok(value)
                && d.get_str("payload")
                    .is_ok_and(|p| p.len() == PAYLOAD && p.starts_with(fill) && p.ends_with(fill))
        })
    })
    .await;
    let now = get(c, id)
        .await
        .map(|d| d.get_str("value").map(str::to_string));
    assert!(
        ok.is_some(),
        "{id} = {value} did not reach {}: it has {now:?}",
        c.name()
    );
}

/// Reads `stream` until it fails or `limit` passes; the error code if it failed.
async fn failure_code(stream: &mut mongodb::change_stream::ChangeStream<Document>) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Err(e) = item {
            return match *e.kind {
                mongodb::error::ErrorKind::Command(ref c) => Some(c.code),
                _ => None,
            };
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_16mib_documents_updated_repeatedly_keep_the_stream_flowing() {
    let m = Mongo::start().await;
    let mut p = Pair::new(&m, "large");
    let daemon = p.start(&m, &Settings::default()).await;
    // What a naive stream makes of the same writes: post-images of large updates.
    let mut naive = p
        .local
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();

    p.local.insert_one(large("big", "v0", 'a')).await.unwrap();
    arrives(&p.cloud, "big", "v0", 'a').await;
    // Each update rewrites the whole payload: `updatedFields` alone is ~16 MB.
    for (i, fill) in ['b', 'c', 'd'].into_iter().enumerate() {
        let value = format!("v{}", i + 1);
        let new = large("big", &value, fill);
        p.local
            .update_one(
                doc! {"_id": "big"},
                doc! {"$set": {"value": &value, "updatedAt": DateTime::now(),
                "payload": new.get_str("payload").unwrap()}},
            )
            .await
            .unwrap();
        arrives(&p.cloud, "big", &value, fill).await;
    }
    // The other direction, and a small document after them: the streams still flow.
    p.cloud
        .update_one(
            doc! {"_id": "big"},
            doc! {"$set": {"value": "cloud", "updatedAt": DateTime::now(),
            "payload": "e".repeat(PAYLOAD)}},
        )
        .await
        .unwrap();
    arrives(&p.local, "big", "cloud", 'e').await;
    p.local
        .insert_one(doc! {"_id": "small", "value": "after", "updatedAt": DateTime::now()})
        .await
        .unwrap();
    let small = eventually(LARGE_ARRIVES, || async {
        get(&p.cloud, "small").await.is_some()
    })
    .await;
    assert!(small.is_some(), "log:\n{}", daemon.log_text());

    // The workload is over the limit for a stream that asks for everything: the
    // daemon did not pass by luck.
    assert_eq!(failure_code(&mut naive).await, Some(10334));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_server_cannot_return_is_read_past_and_fetched_by_key() {
    let m = Mongo::start().await;
    let Some(hooks) = m.hooks() else {
        skipped(
            "an_event_the_server_cannot_return_is_read_past_and_fetched_by_key",
            "needs the emulator's fault injection (a real server splits what it cannot return)",
        );
        return;
    };
    let mut p = Pair::new(&m, "toolarge");
    let daemon = p.start(&m, &Settings::default()).await;
    // As a server without $changeStreamSplitLargeEvent answers an event it cannot
    // return: the next getMores of the streams fail with BSONObjectTooLarge.
    hooks.fail_command("getMore", 10334, 2);
    p.local
        .insert_one(large("l", "from-local", 'l'))
        .await
        .unwrap();
    p.cloud
        .insert_one(large("c", "from-cloud", 'c'))
        .await
        .unwrap();
    arrives(&p.cloud, "l", "from-local", 'l').await;
    arrives(&p.local, "c", "from-cloud", 'c').await;
    let log = daemon.log_text();
    assert!(
        log.contains("fetching documents by key"),
        "the fallback ran; log:\n{log}"
    );
    // Once caught up the stream asks for post-images again, and keeps flowing.
    let back = eventually(LARGE_ARRIVES, || async {
        daemon.log_text().contains("back to post-images")
    })
    .await;
    assert!(back.is_some(), "log:\n{}", daemon.log_text());
    p.local
        .update_one(
            doc! {"_id": "l"},
            doc! {"$set": {"value": "again", "updatedAt": DateTime::now()}},
        )
        .await
        .unwrap();
    arrives(&p.cloud, "l", "again", 'l').await;
}
