//! The MongoDB adapter against a server: the in-process emulator by default, or a real
//! replica set when `DATASYNC_TEST_MONGODB_URI` is set (each test then works in its own
//! fresh database). Checks what the engine relies on: scan order over mixed `_id`
//! types, per-write outcomes of conditional batches, change-stream events, progress,
//! resume and its failure modes, and the state store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Binary, Bson, DateTime, Document};
use datasync::core::{
    ChangeKind, ChangeStream, CollectionStore, Key, ResumeToken, Side, StateStore, StoreErrorKind,
    StreamItem, Tombstone, Write, WriteOutcome,
};
use datasync::mongo::own::OwnSessions;
use datasync::mongo::state::{CHECKPOINTS, TTL_INDEX};
use datasync::mongo::{connect, MongoPair, MongoSides, MongoState, MongoStore, Namespace};
use futures::TryStreamExt;
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::Client;

#[path = "mongo_adapter/collection.rs"]
mod collection;
#[path = "mongo_adapter/filtered.rs"]
mod filtered;
#[path = "mongo_adapter/pairs_engine.rs"]
mod pairs_engine;
#[path = "mongo_adapter/shared_stream.rs"]
mod shared_stream;
#[path = "mongo_adapter/sides_errors.rs"]
mod sides_errors;
#[path = "mongo_adapter/state.rs"]
mod state;
#[path = "mongo_adapter/stream.rs"]
mod stream;

/// Where a test's data lives.
struct Backend {
    /// Connection string of the server.
    uri: String,
    /// The emulator, when no real server was given.
    emulator: Option<Emulator>,
    /// A database name unique to this test.
    db: String,
    /// Client for direct reads and writes.
    client: Client,
}

impl Backend {
    async fn start(test: &str) -> Backend {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (uri, emulator) = match std::env::var("DATASYNC_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => (uri, None),
            _ => {
                let emu = Emulator::start(EmulatorConfig::default())
                    .await
                    .expect("emulator starts");
                (emu.uri(), Some(emu))
            }
        };
        let db = format!(
            "dsync_{}_{}_{}",
            &test[..test.len().min(20)],
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&uri, "datasync-test").await.expect("client");
        Backend {
            uri,
            emulator,
            db,
            client,
        }
    }

    fn store(&self, coll: &str) -> MongoStore {
        MongoStore::new(self.client.clone(), &self.db, coll, "updatedAt")
    }

    fn coll(&self, coll: &str) -> mongodb::Collection<Document> {
        self.client.database(&self.db).collection(coll)
    }

    async fn finish(self) {
        if self.emulator.is_none() {
            let _ = self.client.database(&self.db).drop().await;
        }
        if let Some(emu) = self.emulator {
            emu.shutdown().await;
        }
    }
}

fn at(ms: i64) -> DateTime {
    DateTime::from_millis(1_700_000_000_000 + ms)
}

fn k(v: impl Into<Bson>) -> Key {
    Key(v.into())
}

fn upsert(id: i32, v: i32, t: i64, or_equal: bool) -> Write {
    Write::UpsertIfNewer {
        key: k(id),
        doc: doc! {"_id": id, "v": v, "updatedAt": at(t)},
        updated_at: at(t),
        or_equal,
    }
}

/// Every document of `coll`, by `_id` (as i32).
async fn docs_by_id(b: &Backend, coll: &str) -> HashMap<i32, Document> {
    let docs: Vec<Document> = b
        .coll(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.into_iter()
        .map(|d| (d.get_i32("_id").unwrap(), d))
        .collect()
}

/// Next event of `stream`, skipping `Progress`, within 5 s.
async fn next_event(stream: &mut Box<dyn ChangeStream>) -> datasync::core::ChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await.expect("stream item") {
                StreamItem::Event(e) => return e,
                StreamItem::Progress(_) => continue,
            }
        }
    })
    .await
    .expect("an event within 5 s")
}

/// The error that ends `stream` (skipping `Progress`), within 5 s; an event fails.
async fn next_error(stream: &mut Box<dyn ChangeStream>) -> datasync::core::StoreError {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Ok(StreamItem::Progress(_)) => continue,
                Ok(StreamItem::Event(e)) => panic!("unexpected event {e:?}"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stream ends within 5 s")
}

/// The collection `coll` of the test's database.
fn ns(b: &Backend, coll: &str) -> Namespace {
    Namespace {
        database: b.db.clone(),
        collection: coll.into(),
    }
}

/// Both sides on the test's server, syncing `pairs`, with state in `<db>_state`.
fn sides(b: &Backend, pairs: Vec<MongoPair>) -> MongoSides {
    MongoSides {
        local_uri: b.uri.clone(),
        cloud_uri: b.uri.clone(),
        pairs,
        state_database: format!("{}_state", b.db),
        tombstone_ttl: Duration::from_secs(60),
        app_name: "datasync-test".into(),
    }
}

/// The next `Progress` token of `stream`, skipping events.
async fn next_progress(stream: &mut Box<dyn ChangeStream>) -> ResumeToken {
    loop {
        if let StreamItem::Progress(t) = stream.next().await.unwrap() {
            return t;
        }
    }
}

/// A pair named `name` syncing `local` with `cloud` of the test's database.
fn pair(b: &Backend, name: &str, local: &str, cloud: &str, filter: Option<Document>) -> MongoPair {
    MongoPair {
        name: name.into(),
        local: ns(b, local),
        cloud: ns(b, cloud),
        updated_at_field: "updatedAt".into(),
        filter,
    }
}
