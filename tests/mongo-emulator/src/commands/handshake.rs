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
    if let Ok(app) = ctx
        .body
        .get_document("client")
        .and_then(|c| c.get_document("application"))
        .and_then(|a| a.get_str("name"))
    {
        crate::state::lock(&shared.app_names).insert(ctx.connection_id, app.to_string());
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

/// `getParameter`: `featureCompatibilityVersion`, and `enableTestCommands` (on: the
/// emulator has the test command `configureFailPoint`).
pub fn get_parameter(ctx: &Ctx<'_>) -> Document {
    let mut d = Document::new();
    let all = ctx.body.get_str("getParameter") == Ok("*");
    if all || ctx.body.contains_key("featureCompatibilityVersion") {
        d.insert("featureCompatibilityVersion", doc! { "version": "7.0" });
    }
    if all || ctx.body.contains_key("enableTestCommands") {
        d.insert("enableTestCommands", true);
    }
    d
}

/// `getCmdLineOpts`: the options of a mongod started as this replica set member with
/// test commands enabled (test harnesses read it to learn about auth, TLS and test
/// commands).
pub fn cmd_line_opts(ctx: &Ctx<'_>) -> Document {
    let shared = ctx.shared;
    let (host, port) = shared
        .advertised
        .rsplit_once(':')
        .unwrap_or((shared.advertised.as_str(), "27017"));
    let port: i32 = port.parse().unwrap_or(27017);
    doc! {
        "argv": ["mongod", "--replSet", shared.replica_set.clone(), "--bind_ip", host,
                 "--port", port.to_string(), "--setParameter", "enableTestCommands=1"],
        "parsed": {
            "net": {"bindIp": host, "port": port},
            "replication": {"replSet": shared.replica_set.clone()},
            "setParameter": {"enableTestCommands": "1"},
        },
    }
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
