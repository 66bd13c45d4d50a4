//! Shared helpers for the emulator's integration tests: start an emulator on port 0
//! and connect the official driver to it.
#![allow(dead_code)]

use std::time::Duration;

use bson::Document;
use futures::StreamExt;
use mongo_emulator::{Emulator, EmulatorConfig};
use mongodb::change_stream::{event::ChangeStreamEvent, ChangeStream};
use mongodb::Client;

/// A change stream of typed events.
pub type Stream = ChangeStream<ChangeStreamEvent<Document>>;

/// The stream's next event, within 5 s.
pub async fn next_event(stream: &mut Stream) -> ChangeStreamEvent<Document> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("event within 5s")
        .expect("stream open")
        .expect("event ok")
}

/// Start an emulator with the default config.
pub async fn start() -> Emulator {
    Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

/// Start an emulator retaining at most `limit` change events.
pub async fn start_with_history(limit: usize) -> Emulator {
    Emulator::start(EmulatorConfig {
        history_limit: limit,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

/// A client using the emulator's `?replicaSet=rs0` URI, with short timeouts.
pub async fn client(emu: &Emulator) -> Client {
    let uri = format!(
        "{}&serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500",
        emu.uri()
    );
    Client::with_uri_str(uri).await.expect("client")
}

/// An emulator, a client, and the collection `d.c`.
pub async fn setup() -> (Emulator, Client, mongodb::Collection<bson::Document>) {
    let emu = start().await;
    let client = client(&emu).await;
    let coll = client.database("d").collection("c");
    (emu, client, coll)
}

/// A client using `?directConnection=true`.
pub async fn direct_client(emu: &Emulator) -> Client {
    let uri = format!(
        "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=5000",
        emu.addr()
    );
    Client::with_uri_str(uri).await.expect("client")
}

/// The error code of a driver error (command error or first write error).
pub fn code(err: &mongodb::error::Error) -> i32 {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*err.kind {
        ErrorKind::Command(c) => c.code,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code)
            .unwrap_or(-1),
        ErrorKind::BulkWrite(_) => -2,
        other => panic!("not a server error: {other:?}"),
    }
}
