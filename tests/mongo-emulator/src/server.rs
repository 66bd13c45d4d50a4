//! Accept loop and per-connection tasks: read a request, run the command, apply the
//! reply delay, write the reply (none for moreToCome). Connections end on EOF, on a
//! protocol error, on shutdown, or when a close-all fault fires.

use std::sync::Arc;

use std::any::Any;
use std::panic::AssertUnwindSafe;

use bson::{doc, Document};
use futures::FutureExt;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{self, Reply};
use crate::state::Shared;
use crate::wire::{self, Framing, Request};

/// Accept connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    tracker.spawn(connection(sock, shared.clone(), shutdown.clone()));
                }
                // Out of descriptors and the like: back off briefly, keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
        }
    }
}

async fn connection(sock: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let connection_id = shared.connection_id();
    let _forget = ForgetApp(shared.clone(), connection_id);
    let mut close = shared.faults.close_signal();
    close.borrow_and_update();
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut reply_id: i32 = 1;
    let mut buf = Vec::new();
    loop {
        let req = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = close.changed() => return,
            r = wire::read_request(&mut rd, &mut buf) => r,
        };
        let mut req = match req {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let reply = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = close.changed() => return,
            r = AssertUnwindSafe(handle(&shared, &mut req, connection_id)).catch_unwind() => {
                r.unwrap_or_else(|panic| Reply::Doc(internal_error(&panic)))
            }
        };
        let delay = shared.faults.delay();
        if !delay.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = close.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if matches!(reply, Reply::Close) {
            return;
        }
        if req.more_to_come {
            continue;
        }
        let bytes = wire::encode_reply(&req, reply_id, &reply.to_bytes());
        reply_id = reply_id.wrapping_add(1);
        if wire::write_reply(&mut wr, &bytes).await.is_err() {
            return;
        }
    }
}

/// Drops a closed connection's handshake application name.
struct ForgetApp(Arc<Shared>, i64);

impl Drop for ForgetApp {
    fn drop(&mut self) {
        crate::state::lock(&self.0.app_names).remove(&self.1);
    }
}

async fn handle(shared: &Arc<Shared>, req: &mut Request, connection_id: i64) -> Reply {
    let name = req.body.keys().next().cloned().unwrap_or_default();
    let db = match req.framing {
        Framing::Query => {
            let full = req.full_collection_name.clone().unwrap_or_default();
            let is_handshake = matches!(name.as_str(), "isMaster" | "ismaster" | "hello");
            if !is_handshake || !full.ends_with(".$cmd") {
                return Reply::Doc(doc! {
                    "ok": 0.0,
                    "errmsg": "Unsupported OP_QUERY command: the emulator only accepts the legacy handshake on OP_QUERY",
                    "code": 352,
                    "codeName": "UnsupportedOpQueryCommand",
                });
            }
            full.trim_end_matches(".$cmd").to_string()
        }
        Framing::Msg => match req.body.get_str("$db") {
            Ok(db) => db.to_string(),
            Err(_) => {
                return Reply::Doc(doc! {
                    "ok": 0.0,
                    "errmsg": "OP_MSG requests require a $db argument",
                    "code": 40571,
                    "codeName": "Location40571",
                })
            }
        },
    };
    commands::run(shared, &mut req.body, db, connection_id).await
}

/// A handler panicked (a bug): answer with InternalError instead of dropping the
/// connection, so clients see an error rather than a network failure.
fn internal_error(panic: &Box<dyn Any + Send>) -> Document {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    doc! {
        "ok": 0.0,
        "errmsg": format!("emulator internal error: {what}"),
        "code": 1,
        "codeName": "InternalError",
    }
}
