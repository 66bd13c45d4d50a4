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

/// Whether a sort spec is exactly `{_id: 1}`.
fn is_id_ascending(sort: &Document) -> bool {
    sort.len() == 1
        && sort
            .get("_id")
            .and_then(|v| match v {
                Bson::Int32(n) => Some(*n as f64),
                Bson::Int64(n) => Some(*n as f64),
                Bson::Double(n) => Some(*n),
                _ => None,
            })
            .is_some_and(|d| d == 1.0)
}

/// The first `want` documents matching `filter` in `_id` order, starting the walk at the
/// filter's `_id` lower bound.
fn id_range_docs(
    inner: &Inner,
    db: &str,
    coll: &str,
    filter: &Document,
    want: usize,
) -> CmdResult<Vec<Document>> {
    query::validate_filter(filter)?;
    let Some(c) = inner.store.coll(db, coll) else {
        return Ok(Vec::new());
    };
    let start = match super::idrange::id_lower_bound(filter) {
        Some(b) => std::ops::Bound::Included(crate::store::Key(b)),
        None => std::ops::Bound::Unbounded,
    };
    let matcher = query::Filter::new(filter)?;
    let mut out = Vec::new();
    for (_, d) in c.docs.range((start, std::ops::Bound::Unbounded)) {
        if out.len() >= want {
            break;
        }
        if matcher.matches(d)? {
            out.push(d.clone());
        }
    }
    Ok(out)
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
    if ctx.db == "local" && coll == "oplog.rs" {
        return oplog_find(ctx, &filter, sort.as_ref(), projection.as_ref(), limit);
    }
    // Sorted by `_id` (or unsorted: natural order is `_id` order here) with a limit:
    // walk the ordered map from the filter's `_id` lower bound and stop at the limit.
    let id_ordered = sort
        .as_ref()
        .is_none_or(|s| s.is_empty() || is_id_ascending(s));
    let mut docs = {
        let inner = ctx.inner();
        match (id_ordered, limit) {
            (true, Some(l)) => id_range_docs(&inner, &ctx.db, &coll, &filter, skip + l)?,
            _ => matching_docs(&inner, &ctx.db, &coll, &filter)?,
        }
    };
    if let Some(s) = sort.as_ref().filter(|s| !s.is_empty() && !id_ordered) {
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

/// `find` on `local.oplog.rs`: the retained history (see `Oplog::entries`), filtered,
/// in natural order or reversed by `{$natural: -1}`, limited and projected; one batch.
fn oplog_find(
    ctx: &Ctx<'_>,
    filter: &Document,
    sort: Option<&Document>,
    projection: Option<&Document>,
    limit: Option<usize>,
) -> CmdResult<Document> {
    let natural = sort.and_then(|s| s.get("$natural")).map(|v| match v {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(f) => *f as i64,
        _ => 1,
    });
    let reverse = natural.is_some_and(|n| n < 0);
    // Entries are built one at a time under the lock and the walk stops at the limit:
    // the oldest entry (`getReplicationInfo`) costs one entry, not the whole history.
    let mut docs: Vec<Document> = Vec::new();
    {
        let inner = ctx.shared.inner();
        for d in inner.oplog.entries(reverse) {
            if limit.is_some_and(|l| docs.len() >= l) {
                break;
            }
            if query::matches(&d, filter)? {
                docs.push(d);
            }
        }
    }
    if let Some(p) = projection.filter(|p| !p.is_empty()) {
        docs = docs
            .iter()
            .map(|d| query::project(d, p))
            .collect::<Result<_, _>>()?;
    }
    Ok(cursor_reply(
        ctx.shared,
        "local.oplog.rs".to_string(),
        docs,
        None,
        true,
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
        let inner = ctx.inner();
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
        let inner = ctx.inner();
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

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::{doc, Binary, Bson, DateTime, Document, Regex, Timestamp};

    use super::*;
    use crate::state::Shared;

    /// Documents whose `_id`s cover every bracket, several values in most.
    fn store() -> Shared {
        let shared = Shared::new("rs0".into(), "127.0.0.1:1".into(), 1000);
        let mut ids: Vec<Bson> = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::String(String::new()),
            Bson::String("b".into()),
            Bson::Symbol("c".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1, 2],
            }),
            Bson::ObjectId(ObjectId::from_bytes([3; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::from_millis(5)),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 2,
            }),
            Bson::RegularExpression(Regex {
                pattern: "x".into(),
                options: String::new(),
            }),
            Bson::JavaScriptCode("f()".into()),
            Bson::MaxKey,
        ];
        for i in 0..40 {
            ids.push(if i % 3 == 0 {
                Bson::Double(i as f64 + 0.5)
            } else if i % 3 == 1 {
                Bson::Int64(i)
            } else {
                Bson::Int32(i as i32)
            });
            ids.push(Bson::String(format!("k{i:02}")));
        }
        {
            let mut inner = shared.inner();
            for id in ids {
                inner
                    .insert("db", "c", doc! {"_id": id, "n": 1})
                    .expect("distinct ids");
            }
        }
        shared
    }

    /// Filters a keyset scan sends (and variations), after each stored `_id`.
    fn filters(after: &Bson) -> Vec<Document> {
        let later: Vec<&str> = super::super::idrange::tests::LATER_THAN_NUMBERS.to_vec();
        vec![
            doc! {"_id": {"$gt": after.clone()}},
            doc! {"_id": {"$gte": after.clone()}},
            doc! {"$or": [{"_id": {"$gt": after.clone()}}, {"_id": {"$type": later.clone()}}]},
            doc! {"$or": [{"_id": {"$gt": after.clone()}}, {"_id": {"$type": ["bool", "maxKey"]}}]},
            doc! {"$and": [{"_id": {"$gte": after.clone()}}, {"n": 1}]},
            doc! {"_id": {"$type": later[1..].to_vec()}},
            doc! {"_id": {"$gt": after.clone()}, "n": {"$ne": 2}},
        ]
    }

    /// The range walk returns exactly the first documents the full match returns, for
    /// every filter shape and limit.
    #[test]
    fn id_range_walk_equals_full_match() {
        let shared = store();
        let inner = shared.inner();
        let all: Vec<Bson> = inner
            .store
            .coll("db", "c")
            .expect("created")
            .docs
            .keys()
            .map(|k| k.0.clone())
            .collect();
        for after in &all {
            for f in filters(after) {
                let full = matching_docs(&inner, "db", "c", &f).expect("valid filter");
                for want in [1, 3, 17, 1000] {
                    let fast = id_range_docs(&inner, "db", "c", &f, want).expect("valid filter");
                    let expect: Vec<Document> = full.iter().take(want).cloned().collect();
                    assert_eq!(fast, expect, "filter {f}, limit {want}");
                }
            }
        }
    }
}
