//! Handshake and basic command behaviour through the official driver, in both URI
//! forms, plus the legacy OP_QUERY handshake over a raw socket.

mod common;

use bson::{doc, Document};
use mongodb::bson;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn replica_set_uri_connects_and_pings() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let reply = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0);
    let coll = client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "a": "x"}).await.unwrap();
    assert_eq!(
        coll.find_one(doc! {"_id": 1})
            .await
            .unwrap()
            .unwrap()
            .get_str("a")
            .unwrap(),
        "x"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn direct_connection_uri_connects() {
    let emu = common::start().await;
    let client = common::direct_client(&emu).await;
    let coll = client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"a": 1}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn hello_reports_a_writable_primary_without_topology_version() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1, "helloOk": true})
        .await
        .unwrap();
    let host = emu.addr().to_string();
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert!(hello.get_bool("helloOk").unwrap());
    assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    assert_eq!(hello.get_str("me").unwrap(), host);
    assert_eq!(hello.get_str("primary").unwrap(), host);
    assert_eq!(hello.get_array("hosts").unwrap()[0].as_str().unwrap(), host);
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 21);
    assert_eq!(
        hello.get_i32("maxBsonObjectSize").unwrap(),
        16 * 1024 * 1024
    );
    assert_eq!(hello.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
    assert!(!hello.contains_key("topologyVersion"));
    assert!(hello.get_timestamp("operationTime").is_ok());
    let ct = hello.get_document("$clusterTime").unwrap();
    assert_eq!(
        ct.get_document("signature")
            .unwrap()
            .get_i64("keyId")
            .unwrap(),
        0
    );
    let legacy = client
        .database("admin")
        .run_command(doc! {"isMaster": 1})
        .await
        .unwrap();
    assert!(legacy.get_bool("ismaster").unwrap());
    emu.shutdown().await;
}

#[tokio::test]
async fn build_info_reports_7_0() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let info = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .unwrap();
    assert_eq!(info.get_str("version").unwrap(), "7.0.0");
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_command_is_59() {
    let emu = common::start().await;
    let client = common::client(&emu).await;
    let err = client
        .database("d")
        .run_command(doc! {"frobnicate": 1})
        .await
        .unwrap_err();
    assert_eq!(common::code(&err), 59);
    assert!(
        err.to_string().contains("no such command: 'frobnicate'"),
        "{err}"
    );
    emu.shutdown().await;
}

fn op_query(request_id: i32, collection: &str, query: &Document) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(collection.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    query.to_writer(&mut body).unwrap();
    let mut msg = Vec::new();
    msg.extend_from_slice(&((body.len() + 16) as i32).to_le_bytes());
    msg.extend_from_slice(&request_id.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2004i32.to_le_bytes());
    msg.extend_from_slice(&body);
    msg
}

async fn read_reply(sock: &mut tokio::net::TcpStream) -> (i32, i32, Document) {
    let mut header = [0u8; 16];
    sock.read_exact(&mut header).await.unwrap();
    let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let response_to = i32::from_le_bytes(header[8..12].try_into().unwrap());
    let op = i32::from_le_bytes(header[12..16].try_into().unwrap());
    let mut rest = vec![0u8; len - 16];
    sock.read_exact(&mut rest).await.unwrap();
    assert_eq!(op, 1, "OP_REPLY");
    let returned = i32::from_le_bytes(rest[16..20].try_into().unwrap());
    assert_eq!(returned, 1);
    (
        response_to,
        op,
        Document::from_reader(&mut &rest[20..]).unwrap(),
    )
}

#[tokio::test]
async fn legacy_op_query_handshake_gets_op_reply() {
    let emu = common::start().await;
    let mut sock = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    sock.write_all(&op_query(7, "admin.$cmd", &doc! {"isMaster": 1}))
        .await
        .unwrap();
    let (response_to, _, reply) = read_reply(&mut sock).await;
    assert_eq!(response_to, 7);
    assert!(reply.get_bool("ismaster").unwrap());
    assert_eq!(reply.get_str("setName").unwrap(), "rs0");
    // Anything but the handshake on OP_QUERY is an error reply, not a hang.
    sock.write_all(&op_query(8, "d.$cmd", &doc! {"find": "c"}))
        .await
        .unwrap();
    let (_, _, reply) = read_reply(&mut sock).await;
    assert_eq!(reply.get_f64("ok").unwrap(), 0.0);
    emu.shutdown().await;
}

fn op_msg(
    request_id: i32,
    flags: u32,
    body: &Document,
    sequence: Option<(&str, Vec<Document>)>,
) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&flags.to_le_bytes());
    payload.push(0);
    body.to_writer(&mut payload).unwrap();
    if let Some((ident, docs)) = sequence {
        let mut sec = Vec::new();
        sec.extend_from_slice(ident.as_bytes());
        sec.push(0);
        for d in docs {
            d.to_writer(&mut sec).unwrap();
        }
        payload.push(1);
        payload.extend_from_slice(&((sec.len() + 4) as i32).to_le_bytes());
        payload.extend_from_slice(&sec);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&((payload.len() + 16) as i32).to_le_bytes());
    msg.extend_from_slice(&request_id.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2013i32.to_le_bytes());
    msg.extend_from_slice(&payload);
    msg
}

#[tokio::test]
async fn more_to_come_write_gets_no_reply_and_kind1_sequences_are_documents() {
    let emu = common::start().await;
    let mut sock = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let insert = doc! {"insert": "c", "$db": "d", "writeConcern": {"w": 0}};
    let docs = vec![doc! {"_id": 1}, doc! {"_id": 2}];
    sock.write_all(&op_msg(10, 1 << 1, &insert, Some(("documents", docs))))
        .await
        .unwrap();
    sock.write_all(&op_msg(11, 0, &doc! {"count": "c", "$db": "d"}, None))
        .await
        .unwrap();
    let mut header = [0u8; 16];
    sock.read_exact(&mut header).await.unwrap();
    let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let response_to = i32::from_le_bytes(header[8..12].try_into().unwrap());
    assert_eq!(response_to, 11, "the moreToCome insert was not answered");
    let mut rest = vec![0u8; len - 16];
    sock.read_exact(&mut rest).await.unwrap();
    let reply = Document::from_reader(&mut &rest[5..]).unwrap();
    assert_eq!(reply.get_i32("n").unwrap(), 2);
    emu.shutdown().await;
}
