//! Cursor replies and the cursor commands: first batches (101 documents by default,
//! 16 MiB at most), `getMore` (change streams wait up to `maxTimeMS` for events and
//! always carry a postBatchResumeToken), and `killCursors`.

use std::collections::VecDeque;
use std::time::Duration;

use bson::{doc, Bson, Document, RawArrayBuf, RawDocumentBuf};
use tokio::time::Instant;

use super::{collection_name, opt_i64, Ctx, Reply};
use crate::error::{CmdResult, CommandError};
use crate::state::{bson_size, lock, Cursor, Shared, MAX_BSON_SIZE};

/// Default first batch size.
const DEFAULT_FIRST_BATCH: usize = 101;

/// Take a batch of at most `max` documents and 16 MiB (at least one document).
pub fn take_batch(docs: &mut VecDeque<Document>, max: usize) -> Vec<Document> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < max {
        let Some(next) = docs.front() else { break };
        let size = bson_size(next);
        if !out.is_empty() && bytes + size > MAX_BSON_SIZE {
            break;
        }
        bytes += size;
        out.push(docs.pop_front().expect("front exists"));
    }
    out
}

/// A batch size from a command (`batchSize` < 0 → 2 BadValue).
pub fn batch_size(body: &Document, field: &str) -> CmdResult<Option<usize>> {
    match opt_i64(body, field)? {
        Some(n) if n < 0 => Err(CommandError::bad_value(format!(
            "BSON field '{field}' value must be >= 0, actual value '{n}'"
        ))),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// `{cursor: {firstBatch, id, ns}}`, registering a cursor for what is left over.
pub fn cursor_reply(
    shared: &Shared,
    ns: String,
    docs: Vec<Document>,
    batch: Option<usize>,
    single_batch: bool,
) -> Document {
    let mut docs: VecDeque<Document> = docs.into();
    let first = take_batch(&mut docs, batch.unwrap_or(DEFAULT_FIRST_BATCH));
    let id = if docs.is_empty() || single_batch {
        0i64
    } else {
        shared.add_cursor(Cursor::Docs {
            ns: ns.clone(),
            docs,
        })
    };
    doc! { "cursor": { "firstBatch": first, "id": id, "ns": ns } }
}

/// What one poll of a cursor gave.
enum Polled {
    /// Documents of a find/aggregate cursor.
    Docs(Vec<Document>),
    /// Encoded change events and the postBatchResumeToken.
    Events(Vec<RawDocumentBuf>, Document),
}

/// `getMore`. A change stream's batch is answered encoded (see [`Reply::Raw`]).
pub async fn get_more(ctx: &Ctx<'_>) -> CmdResult<Reply> {
    let id = match ctx.body.get("getMore") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => *n as i64,
        _ => return Err(CommandError::type_mismatch("getMore.getMore", "long")),
    };
    let coll = cursor_collection(ctx, "collection")?;
    let batch = batch_size(ctx.body, "batchSize")?.filter(|n| *n > 0);
    let max_time = opt_i64(ctx.body, "maxTimeMS")?.unwrap_or(1000).max(0) as u64;
    let shared = ctx.shared;
    let cursor = shared
        .cursor(id)
        .ok_or_else(|| CommandError::new(43, format!("cursor id {id} not found")))?;
    let ns = lock(&cursor).ns().to_string();
    let requested = format!("{}.{coll}", ctx.db);
    if ns != requested {
        return Err(CommandError::new(
            13,
            format!("Requested getMore on namespace '{requested}', but cursor belongs to a different namespace {ns}"),
        ));
    }
    let deadline = Instant::now() + Duration::from_millis(max_time);
    loop {
        let mut changes = shared.subscribe_changes();
        let polled = {
            let inner = shared.inner();
            let mut c = lock(&cursor);
            match &mut *c {
                Cursor::Docs { docs, .. } => {
                    let out = take_batch(docs, batch.unwrap_or(usize::MAX));
                    let done = docs.is_empty();
                    Ok((Polled::Docs(out), done))
                }
                Cursor::Stream(s) => s.poll(&inner, batch.unwrap_or(usize::MAX)).map(|b| {
                    (
                        Polled::Events(b.events, b.post_batch_resume_token),
                        s.closed,
                    )
                }),
            }
        };
        let (polled, done) = match polled {
            Ok(x) => x,
            Err(e) => {
                shared.remove_cursor(id);
                return Err(e);
            }
        };
        let waits = matches!(&polled, Polled::Events(events, _) if events.is_empty());
        if !waits || done || Instant::now() >= deadline {
            let reply_id = if done {
                shared.remove_cursor(id);
                0i64
            } else {
                id
            };
            return Ok(match polled {
                Polled::Docs(docs) => {
                    Reply::Doc(doc! { "cursor": { "nextBatch": docs, "id": reply_id, "ns": ns } })
                }
                Polled::Events(events, pbrt) => {
                    let mut next = RawArrayBuf::new();
                    for e in events {
                        next.push(e);
                    }
                    let mut cursor = RawDocumentBuf::new();
                    cursor.append("nextBatch", next);
                    cursor.append("id", reply_id);
                    cursor.append("ns", ns);
                    let pbrt = RawDocumentBuf::from_document(&pbrt)
                        .map_err(|e| CommandError::new(1, format!("resume token: {e}")))?;
                    cursor.append("postBatchResumeToken", pbrt);
                    let mut reply = RawDocumentBuf::new();
                    reply.append("cursor", cursor);
                    Reply::Raw(reply)
                }
            });
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The collection a cursor command names in `field`: database and cluster change
/// streams live on `$cmd.aggregate`.
fn cursor_collection(ctx: &Ctx<'_>, field: &str) -> CmdResult<String> {
    match ctx.body.get(field) {
        Some(Bson::String(s)) if s == "$cmd.aggregate" => Ok(s.clone()),
        _ => collection_name(ctx, field),
    }
}

/// `killCursors`.
pub fn kill_cursors(ctx: &Ctx<'_>) -> CmdResult<Document> {
    cursor_collection(ctx, "killCursors")?;
    let ids = match ctx.body.get("cursors") {
        Some(Bson::Array(a)) => a.clone(),
        _ => return Err(CommandError::type_mismatch("killCursors.cursors", "array")),
    };
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    for v in ids {
        let id = match v {
            Bson::Int64(n) => n,
            Bson::Int32(n) => n as i64,
            _ => return Err(CommandError::type_mismatch("killCursors.cursors.0", "long")),
        };
        if ctx.shared.remove_cursor(id) {
            killed.push(Bson::Int64(id));
        } else {
            not_found.push(Bson::Int64(id));
        }
    }
    Ok(doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
    })
}
