//! `insert` and `delete`, plus the pieces every write shares: validating a document
//! for storage (`_id` first and generated, no top-level `$` names, 16 MiB) and
//! collecting the `_id`s a filter selects.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};

use super::{collection_name, doc_array, opt_bool, opt_doc, opt_i64, Ctx};
use crate::error::{CmdResult, CommandError};
use crate::query;
use crate::state::{check_size, Inner};
use crate::store::Key;

/// `insert`.
pub fn insert(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "insert")?;
    let docs = doc_array(ctx.body, "documents")?;
    let ordered = opt_bool(ctx.body, "ordered", true)?;
    let ns = format!("{}.{coll}", ctx.db);
    let mut n = 0i32;
    let mut attempted = 0u64;
    let mut errors = Vec::new();
    {
        let mut inner = ctx.shared.inner();
        for (i, d) in docs.into_iter().enumerate() {
            attempted += 1;
            match prepare_for_storage(d.clone(), true).and_then(|d| inner.insert(&ctx.db, &coll, d))
            {
                Ok(()) => n += 1,
                Err(e) => {
                    errors.push(Bson::Document(e.to_write_error(i)));
                    if ordered {
                        break;
                    }
                }
            }
        }
    }
    ctx.shared.faults.count_writes(&ns, attempted, n as u64);
    if n > 0 {
        ctx.shared.notify_changes();
    }
    let mut reply = doc! { "n": n };
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// `delete`.
pub fn delete(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "delete")?;
    let stmts = doc_array(ctx.body, "deletes")?;
    let ordered = opt_bool(ctx.body, "ordered", true)?;
    let ns = format!("{}.{coll}", ctx.db);
    let mut n = 0i32;
    let mut attempted = 0u64;
    let mut errors = Vec::new();
    {
        let mut inner = ctx.shared.inner();
        for (i, stmt) in stmts.iter().enumerate() {
            attempted += 1;
            match delete_one_statement(&mut inner, &ctx.db, &coll, stmt) {
                Ok(k) => n += k,
                Err(e) => {
                    errors.push(Bson::Document(e.to_write_error(i)));
                    if ordered {
                        break;
                    }
                }
            }
        }
    }
    ctx.shared.faults.count_writes(&ns, attempted, n as u64);
    if n > 0 {
        ctx.shared.notify_changes();
    }
    let mut reply = doc! { "n": n };
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

fn delete_one_statement(
    inner: &mut Inner,
    db: &str,
    coll: &str,
    stmt: &Document,
) -> CmdResult<i32> {
    let q = opt_doc(stmt, "q")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'delete.deletes.q' is missing but a required field",
        )
    })?;
    let limit = opt_i64(stmt, "limit")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'delete.deletes.limit' is missing but a required field",
        )
    })?;
    if limit != 0 && limit != 1 {
        return Err(CommandError::failed_to_parse(format!(
            "The limit field in delete objects must be 0 or 1. Got {limit}"
        )));
    }
    let ids = matching_ids(inner, db, coll, &q, limit == 1)?;
    let mut n = 0;
    for id in ids {
        if inner.delete(db, coll, &id).is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// `_id`s of the documents matching `filter`, in natural (`_id`) order.
pub fn matching_ids(
    inner: &Inner,
    db: &str,
    coll: &str,
    filter: &Document,
    just_one: bool,
) -> CmdResult<Vec<Bson>> {
    Ok(select(inner, db, coll, filter, just_one)?
        .into_iter()
        .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
        .collect())
}

/// The documents matching `filter`, in natural (`_id`) order. A filter that pins `_id`
/// (`{_id: v}`, `{_id: {$eq: v}}`, `{_id: {$in: [...]}}`, plus other conditions) looks
/// those documents up instead of scanning, so conditional upserts stay O(log n).
pub fn select<'a>(
    inner: &'a Inner,
    db: &str,
    coll: &str,
    filter: &Document,
    just_one: bool,
) -> CmdResult<Vec<&'a Document>> {
    query::validate_filter(filter)?;
    let mut out = Vec::new();
    let Some(c) = inner.store.coll(db, coll) else {
        return Ok(out);
    };
    if let Some(mut ids) = pinned_ids(filter) {
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Some(d) = c.docs.get(&id) {
                if query::matches(d, filter)? {
                    out.push(d);
                    if just_one {
                        break;
                    }
                }
            }
        }
        return Ok(out);
    }
    for d in c.docs.values() {
        if filter.is_empty() || query::matches(d, filter)? {
            out.push(d);
            if just_one {
                break;
            }
        }
    }
    Ok(out)
}

/// `_id` values a filter restricts matches to, when it does so simply.
fn pinned_ids(filter: &Document) -> Option<Vec<Key>> {
    let plain = |v: &Bson| {
        !matches!(
            v,
            Bson::Document(_)
                | Bson::Array(_)
                | Bson::RegularExpression(_)
                | Bson::JavaScriptCode(_)
        )
    };
    match filter.get("_id")? {
        v if plain(v) => Some(vec![Key(v.clone())]),
        Bson::Document(op) if op.len() == 1 => match op.iter().next()? {
            (k, v) if k == "$eq" && plain(v) => Some(vec![Key(v.clone())]),
            (k, Bson::Array(vs)) if k == "$in" && vs.iter().all(plain) => {
                Some(vs.iter().cloned().map(Key).collect())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Make a document storable: no top-level `$` field names, a valid `_id` placed first
/// (generated when `generate_id` and missing), at most 16 MiB.
pub fn prepare_for_storage(doc: Document, generate_id: bool) -> CmdResult<Document> {
    for k in doc.keys() {
        if k.starts_with('$') {
            return Err(CommandError::bad_value(format!(
                "Document can't have $ prefixed field names: {k}"
            )));
        }
    }
    let mut out = Document::new();
    match doc.get("_id") {
        Some(Bson::Array(_)) => return Err(CommandError::bad_value("can't use an array for _id")),
        Some(Bson::RegularExpression(_)) => {
            return Err(CommandError::bad_value("can't use a regex for _id"))
        }
        Some(Bson::Undefined) => {
            return Err(CommandError::bad_value("can't use a undefined for _id"))
        }
        Some(id) => {
            out.insert("_id", id.clone());
        }
        None if generate_id => {
            out.insert("_id", ObjectId::new());
        }
        None => {}
    }
    for (k, v) in doc {
        if k != "_id" {
            out.insert(k, v);
        }
    }
    check_size(&out)?;
    Ok(out)
}
