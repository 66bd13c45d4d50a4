//! Read commands: `find` (filter, sort, projection, skip, limit, batchSize,
//! singleBatch), `count` and `distinct`.

use std::cmp::Ordering;

use bson::{doc, Bson, Document};

use super::crud::select;
use super::cursors::{batch_size, cursor_reply};
use super::{collection_name, opt_bool, opt_doc, opt_i64, Ctx};
use crate::error::{CmdResult, CommandError};
use crate::query;
use crate::state::Inner;
use crate::store::lookup_path;

/// Documents of `db.coll` matching `filter`, in natural (`_id`) order.
pub fn matching_docs(
    inner: &Inner,
    db: &str,
    coll: &str,
    filter: &Document,
) -> CmdResult<Vec<Document>> {
    Ok(select(inner, db, coll, filter, false)?
        .into_iter()
        .cloned()
        .collect())
}

fn non_negative(body: &Document, field: &str) -> CmdResult<Option<i64>> {
    match opt_i64(body, field)? {
        Some(n) if n < 0 => Err(CommandError::bad_value(format!(
            "BSON field '{field}' value must be >= 0, actual value '{n}'"
        ))),
        v => Ok(v),
    }
}

/// `find`.
pub fn find(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "find")?;
    let filter = opt_doc(ctx.body, "filter")?.unwrap_or_default();
    let sort = opt_doc(ctx.body, "sort")?;
    let projection = opt_doc(ctx.body, "projection")?;
    let skip = non_negative(ctx.body, "skip")?.unwrap_or(0) as usize;
    let mut single_batch = opt_bool(ctx.body, "singleBatch", false)?;
    let limit = match opt_i64(ctx.body, "limit")? {
        Some(n) if n < 0 => {
            single_batch = true;
            Some(n.unsigned_abs() as usize)
        }
        Some(0) | None => None,
        Some(n) => Some(n as usize),
    };
    let batch = batch_size(ctx.body, "batchSize")?;
    let mut docs = {
        let inner = ctx.shared.inner();
        matching_docs(&inner, &ctx.db, &coll, &filter)?
    };
    if let Some(s) = sort.as_ref().filter(|s| !s.is_empty()) {
        query::sort_documents(&mut docs, s)?;
    }
    let mut docs: Vec<Document> = docs.into_iter().skip(skip).collect();
    if let Some(l) = limit {
        docs.truncate(l);
    }
    if let Some(p) = projection.as_ref().filter(|p| !p.is_empty()) {
        docs = docs
            .iter()
            .map(|d| query::project(d, p))
            .collect::<Result<_, _>>()?;
    }
    let batch = match (batch, limit) {
        (Some(b), _) => Some(b),
        (None, Some(l)) if single_batch => Some(l),
        _ => None,
    };
    Ok(cursor_reply(
        ctx.shared,
        format!("{}.{coll}", ctx.db),
        docs,
        batch,
        single_batch,
    ))
}

/// `count`.
pub fn count(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "count")?;
    let filter = opt_doc(ctx.body, "query")?.unwrap_or_default();
    let skip = non_negative(ctx.body, "skip")?.unwrap_or(0) as usize;
    let limit = opt_i64(ctx.body, "limit")?
        .map(|l| l.unsigned_abs() as usize)
        .filter(|l| *l > 0);
    let n = {
        let inner = ctx.shared.inner();
        if filter.is_empty() {
            inner
                .store
                .coll(&ctx.db, &coll)
                .map(|c| c.docs.len())
                .unwrap_or(0)
        } else {
            matching_docs(&inner, &ctx.db, &coll, &filter)?.len()
        }
    };
    let mut n = n.saturating_sub(skip);
    if let Some(l) = limit {
        n = n.min(l);
    }
    Ok(doc! { "n": n as i32 })
}

/// `distinct`.
pub fn distinct(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "distinct")?;
    let key = ctx
        .body
        .get_str("key")
        .map_err(|_| CommandError::type_mismatch("distinct.key", "string"))?
        .to_string();
    let filter = opt_doc(ctx.body, "query")?.unwrap_or_default();
    let docs = {
        let inner = ctx.shared.inner();
        matching_docs(&inner, &ctx.db, &coll, &filter)?
    };
    let mut values: Vec<Bson> = Vec::new();
    let mut push = |v: &Bson| {
        if !values
            .iter()
            .any(|x| query::compare(x, v) == Ordering::Equal)
        {
            values.push(v.clone());
        }
    };
    for d in &docs {
        match lookup_path(d, &key) {
            Some(Bson::Array(a)) => a.iter().for_each(&mut push),
            Some(v) => push(v),
            None => {}
        }
    }
    values.sort_by(query::compare);
    Ok(doc! { "values": values })
}
