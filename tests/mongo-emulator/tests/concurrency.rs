//! Several writers and several change streams at once: every stream sees the same
//! events in the same order, with strictly increasing cluster times.

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::bson;

const WRITERS: i32 = 4;
const PER_WRITER: i32 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_seen_in_one_order_by_every_stream() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let db = client.database("d");
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut stream = db.watch().await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < (WRITERS * PER_WRITER) as usize {
                let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .expect("events keep coming")
                    .unwrap()
                    .unwrap();
                seen.push((
                    ev.cluster_time.unwrap(),
                    ev.document_key.unwrap().get("_id").cloned().unwrap(),
                ));
            }
            seen
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let coll = db.collection::<Document>(if w % 2 == 0 { "a" } else { "b" });
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                coll.insert_one(doc! {"_id": w * 1000 + i}).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut orders: Vec<Vec<(bson::Timestamp, Bson)>> = Vec::new();
    for r in readers {
        orders.push(r.await.unwrap());
    }
    assert!(
        orders[0].windows(2).all(|p| p[0].0 < p[1].0),
        "cluster times strictly increase"
    );
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[0], orders[2]);
    emu.shutdown().await;
}
