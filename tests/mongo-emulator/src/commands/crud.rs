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
    let docs = ctx.take_docs("documents")?;
    let ordered = opt_bool(ctx.body, "ordered", true)?;
    let ns = format!("{}.{coll}", ctx.db);
    let mut n = 0i32;
    let mut attempted = 0u64;
    let mut errors = Vec::new();
    {
        let mut inner = ctx.inner();
        for (i, d) in docs.into_iter().enumerate() {
            attempted += 1;
            match prepare_for_storage(d, true).and_then(|d| inner.insert(&ctx.db, &coll, d)) {
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
        let mut inner = ctx.inner();
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
    // Parsed once (this also validates it, so an invalid filter on an empty collection
    // still errors, like MongoDB), not once per document.
    let matcher = query::Filter::new(filter)?;
    let mut out = Vec::new();
    let Some(c) = inner.store.coll(db, coll) else {
        return Ok(out);
    };
    if let Some(mut ids) = pinned_ids(filter) {
        ids.sort();
        ids.dedup();
        // A filter on `_id` alone: the lookup by key is the match (the map's key equality
        // is the matcher's `_id` equality, see `pinned_lookup_is_the_match`), so a large
        // `$in` is not re-tested against every document it found.
        let implied = filter.len() == 1;
        for id in ids {
            if let Some(d) = c.docs.get(&id) {
                if implied || matcher.matches(d)? {
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
        if filter.is_empty() || matcher.matches(d)? {
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
    if let Some(Bson::Document(id)) = doc.get("_id") {
        if let Some(k) = id.keys().find(|k| k.starts_with('$')) {
            return Err(CommandError::new(
                52,
                format!(
                    "_id fields may not contain '$'-prefixed fields: {k} is not valid for storage."
                ),
            ));
        }
    }
    let id_first = doc.keys().next().is_some_and(|k| k == "_id");
    let mut out = Document::new();
    match doc.get("_id") {
        Some(Bson::Array(_)) => return Err(CommandError::bad_value("can't use an array for _id")),
        Some(Bson::RegularExpression(_)) => {
            return Err(CommandError::bad_value("can't use a regex for _id"))
        }
        Some(Bson::Undefined) => {
            return Err(CommandError::bad_value("can't use a undefined for _id"))
        }
        // Already in storage order (the usual case): kept as it is, not rebuilt.
        Some(_) if id_first => {
            check_size(&doc)?;
            return Ok(doc);
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

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{Binary, DateTime, Decimal128, Timestamp};

    use super::*;

    /// `_id` values of every type a document may have, with numbers equal across types.
    fn ids() -> Vec<Bson> {
        let oid = ObjectId::from_bytes([7; 12]);
        vec![
            Bson::MinKey,
            Bson::MaxKey,
            Bson::Null,
            Bson::Int32(1),
            Bson::Int64(1),
            Bson::Double(1.0),
            Bson::Double(1.5),
            Bson::Double(-0.0),
            Bson::Int32(0),
            Bson::Double(f64::NAN),
            Bson::Decimal128("1".parse::<Decimal128>().unwrap()),
            Bson::Int64(i64::MAX),
            Bson::Double(9.223372036854776e18),
            Bson::String("1".into()),
            Bson::String("a".into()),
            Bson::String("A".into()),
            Bson::String(String::new()),
            Bson::Symbol("a".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::Document(doc! {"a": 1.0}),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1],
            }),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: vec![1],
            }),
            Bson::ObjectId(oid),
            Bson::Boolean(true),
            Bson::Boolean(false),
            Bson::DateTime(DateTime::from_millis(1)),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 1,
            }),
        ]
    }

    /// The fast path of `select` (an `_id`-only filter is answered by map lookups without
    /// running the matcher) is exact: for every stored `_id` and every queried value a
    /// pinned filter accepts, the key lookup finds the document iff the matcher matches it.
    #[test]
    fn pinned_lookup_is_the_match() {
        for stored in ids() {
            let d = doc! {"_id": stored.clone(), "x": 1};
            for q in ids() {
                for filter in [
                    doc! {"_id": q.clone()},
                    doc! {"_id": {"$eq": q.clone()}},
                    doc! {"_id": {"$in": [q.clone()]}},
                    doc! {"_id": {"$in": [Bson::String("zz".into()), q.clone(), Bson::Int32(42)]}},
                ] {
                    let Some(pinned) = pinned_ids(&filter) else {
                        continue;
                    };
                    let found = pinned.iter().any(|k| *k == Key(stored.clone()));
                    let matched = query::matches(&d, &filter).unwrap();
                    assert_eq!(found, matched, "stored {stored:?}, filter {filter}");
                }
            }
        }
    }
}
