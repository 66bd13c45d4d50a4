//! Handshake and server-info commands: `hello`/`isMaster` as the writable primary of a
//! single-node replica set (no `topologyVersion`, so drivers poll), `buildInfo`, and
//! the small informational commands drivers and tools send.

use bson::{doc, DateTime, Document};

use super::Ctx;
use crate::state::MAX_BSON_SIZE;
use crate::wire::MAX_MESSAGE_SIZE;

/// `hello` / `isMaster` / `ismaster`.
pub fn hello(ctx: &Ctx<'_>, name: &str) -> Document {
    let shared = ctx.shared;
    let last = shared.inner().oplog.last_write();
    let host = shared.advertised.clone();
    let mut d = Document::new();
    if name == "hello" {
        d.insert("isWritablePrimary", true);
    } else {
        d.insert("ismaster", true);
    }
    if ctx.body.get_bool("helloOk").unwrap_or(false) {
        d.insert("helloOk", true);
    }
    let last_date = DateTime::from_millis(last.time as i64 * 1000);
    d.extend(doc! {
        "hosts": [host.clone()],
        "setName": shared.replica_set.clone(),
        "setVersion": 1,
        "secondary": false,
        "primary": host.clone(),
        "me": host,
        "electionId": shared.election_id,
        "lastWrite": {
            "opTime": { "ts": last, "t": 1i64 },
            "lastWriteDate": last_date,
            "majorityOpTime": { "ts": last, "t": 1i64 },
            "majorityWriteDate": last_date,
        },
        "maxBsonObjectSize": MAX_BSON_SIZE as i32,
        "maxMessageSizeBytes": MAX_MESSAGE_SIZE as i32,
        "maxWriteBatchSize": 100_000,
        "localTime": DateTime::now(),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": ctx.connection_id as i32,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "readOnly": false,
    });
    d
}

/// `buildInfo` (MongoDB 7.0.0).
pub fn build_info() -> Document {
    doc! {
        "version": "7.0.0",
        "gitVersion": "mongo-emulator",
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": MAX_BSON_SIZE as i32,
        "storageEngines": ["inMemory"],
        "modules": [],
    }
}

/// `getParameter`: only `featureCompatibilityVersion` is known.
pub fn get_parameter(ctx: &Ctx<'_>) -> Document {
    let mut d = Document::new();
    if ctx.body.contains_key("featureCompatibilityVersion")
        || ctx.body.get_str("getParameter") == Ok("*")
    {
        d.insert("featureCompatibilityVersion", doc! { "version": "7.0" });
    }
    d
}

/// `serverStatus`: a minimal document.
pub fn server_status(ctx: &Ctx<'_>) -> Document {
    doc! {
        "host": ctx.shared.advertised.clone(),
        "version": "7.0.0",
        "process": "mongod",
        "localTime": DateTime::now(),
        "repl": { "setName": ctx.shared.replica_set.clone(), "isWritablePrimary": true },
    }
}
