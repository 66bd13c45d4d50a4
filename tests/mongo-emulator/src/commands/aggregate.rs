//! `aggregate`: ordinary pipelines run through the query module over the collection's
//! documents; a pipeline starting with `$changeStream` opens a change stream cursor.

use bson::{doc, Bson, Document};

use super::cursors::{batch_size, cursor_reply};
use super::find::matching_docs;
use super::{opt_doc, Ctx};
use crate::changestream::ChangeStream;
use crate::error::{CmdResult, CommandError};
use crate::query;
use crate::state::Cursor;

/// `aggregate`.
pub fn aggregate(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let target = ctx.body.get("aggregate").cloned().unwrap_or(Bson::Null);
    let pipeline: Vec<Document> = match ctx.body.get("pipeline") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|s| match s {
                Bson::Document(d) if d.len() == 1 => Ok(d.clone()),
                _ => Err(CommandError::new(
                    40323,
                    "A pipeline stage specification object must contain exactly one field.",
                )),
            })
            .collect::<CmdResult<_>>()?,
        _ => return Err(CommandError::type_mismatch("aggregate.pipeline", "array")),
    };
    let cursor_opts = opt_doc(ctx.body, "cursor")?;
    if cursor_opts.is_none() && !ctx.body.contains_key("explain") {
        return Err(CommandError::failed_to_parse(
            "The 'cursor' option is required, except for aggregate with the explain argument",
        ));
    }
    if ctx.body.contains_key("explain") {
        return Err(CommandError::bad_value(
            "explain is not supported by the MongoDB emulator",
        ));
    }
    let batch = batch_size(&cursor_opts.unwrap_or_default(), "batchSize")?;
    for (i, st) in pipeline.iter().enumerate() {
        if i > 0 && st.contains_key("$changeStream") {
            return Err(CommandError::new(
                40602,
                "$changeStream is only valid as the first stage in a pipeline",
            ));
        }
    }
    if let Some(Ok(opts)) = pipeline
        .first()
        .and_then(|s| s.get("$changeStream"))
        .map(|v| match v {
            Bson::Document(d) => Ok(d.clone()),
            _ => Err(()),
        })
    {
        return open_change_stream(ctx, &target, &opts, pipeline[1..].to_vec(), batch);
    }
    if pipeline
        .first()
        .is_some_and(|s| s.contains_key("$changeStream"))
    {
        return Err(CommandError::type_mismatch("$changeStream", "object"));
    }
    if pipeline
        .iter()
        .any(|s| s.contains_key("$changeStreamSplitLargeEvent"))
    {
        return Err(CommandError::new(
            20,
            "$changeStreamSplitLargeEvent is only valid in a $changeStream pipeline",
        ));
    }
    let coll = match &target {
        Bson::String(s) if !s.is_empty() => s.clone(),
        Bson::String(_) => {
            return Err(CommandError::new(
                73,
                format!("Invalid namespace specified '{}.'", ctx.db),
            ))
        }
        _ => {
            return Err(CommandError::bad_value(
                "aggregate: 1 is only supported with $changeStream by the MongoDB emulator",
            ))
        }
    };
    let mut pipeline = pipeline;
    let out_to = match pipeline.last().and_then(|s| s.get("$out")) {
        Some(target) => Some(out_target(ctx, target)?),
        None => None,
    };
    if out_to.is_some() {
        pipeline.pop();
    }
    let docs = {
        let inner = ctx.inner();
        matching_docs(&inner, &ctx.db, &coll, &Document::new())?
    };
    let out = query::run_pipeline(docs, &pipeline)?;
    if let Some((db, target)) = out_to {
        write_out(ctx, &db, &target, out)?;
        return Ok(
            doc! {"cursor": {"firstBatch": [], "id": 0i64, "ns": format!("{}.{coll}", ctx.db)}},
        );
    }
    Ok(cursor_reply(
        ctx.shared,
        format!("{}.{coll}", ctx.db),
        out,
        batch,
        false,
    ))
}

/// The namespace of a final `$out` (`"coll"` or `{db, coll}`); refused with a
/// linearizable read concern, as on MongoDB.
fn out_target(ctx: &Ctx<'_>, target: &Bson) -> CmdResult<(String, String)> {
    let level = ctx
        .body
        .get_document("readConcern")
        .and_then(|r| r.get_str("level"));
    if level == Ok("linearizable") {
        return Err(CommandError::new(
            72,
            "$out cannot be used with a 'linearizable' read concern level",
        ));
    }
    match target {
        Bson::String(c) if !c.is_empty() => Ok((ctx.db.clone(), c.clone())),
        Bson::Document(d) => match (d.get_str("db"), d.get_str("coll")) {
            (Ok(db), Ok(c)) => Ok((db.to_string(), c.to_string())),
            _ => Err(CommandError::failed_to_parse(
                "$out needs 'db' and 'coll' strings",
            )),
        },
        _ => Err(CommandError::failed_to_parse(
            "$out needs a collection name",
        )),
    }
}

/// `$out`: the target collection's documents become `docs` (replacing what it held).
fn write_out(ctx: &Ctx<'_>, db: &str, coll: &str, docs: Vec<Document>) -> CmdResult<()> {
    let mut prepared = Vec::with_capacity(docs.len());
    for d in docs {
        prepared.push(super::crud::prepare_for_storage(d, true)?);
    }
    {
        let mut inner = ctx.shared.inner();
        inner.drop_collection(db, coll);
        inner.create_collection(db, coll, Document::new());
        for d in prepared {
            inner.insert(db, coll, d)?;
        }
    }
    ctx.shared.notify_changes();
    Ok(())
}

fn open_change_stream(
    ctx: &Ctx<'_>,
    target: &Bson,
    opts: &Document,
    stages: Vec<Document>,
    batch: Option<usize>,
) -> CmdResult<Document> {
    // Change streams read majority-committed data; an explicit other level is refused.
    if let Ok(level) = ctx
        .body
        .get_document("readConcern")
        .and_then(|r| r.get_str("level"))
    {
        if level != "majority" {
            return Err(CommandError::new(
                72,
                format!("$changeStream only supports readConcern level 'majority', not '{level}'"),
            ));
        }
    }
    let (stream, first) = {
        let inner = ctx.shared.inner();
        let mut stream = ChangeStream::open(&inner, &ctx.db, target, opts, stages)?;
        let first = stream.poll(&inner, batch.unwrap_or(usize::MAX))?;
        (stream, first)
    };
    let ns = stream.ns.clone();
    ctx.shared.faults.count_change_stream(&ns);
    let id = if stream.closed {
        0i64
    } else {
        ctx.shared.add_cursor(Cursor::Stream(Box::new(stream)))
    };
    // The first batch is rarely non-empty: decoded, so the reply stays a document.
    let events = first
        .events
        .iter()
        .map(|e| Document::try_from(e.as_ref()).map(Bson::Document))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CommandError::new(1, format!("cannot decode a change event: {e}")))?;
    Ok(doc! {
        "cursor": {
            "firstBatch": events,
            "postBatchResumeToken": first.post_batch_resume_token,
            "id": id,
            "ns": ns,
        }
    })
}
