//! `update` and `findAndModify`: matching, applying update specs through the query
//! module, MongoDB's no-op rules (operator updates that change nothing, byte-identical
//! replacements that carry `_id`), and upserts (a conditional upsert whose `_id`
//! already exists fails with 11000, which sync engines rely on).

use bson::{doc, Bson, Document};

use super::crud::{matching_ids, prepare_for_storage};
use super::{collection_name, opt_bool, opt_doc, Ctx};
use crate::error::{CmdResult, CommandError};
use crate::query::positional;
use crate::query::{self, UpdateSpec};
use crate::state::{bson_size, Inner};
use crate::store::Key;

/// What one update statement did.
#[derive(Debug, Default)]
struct Outcome {
    /// Documents matched (or 1 for an upsert insert).
    n: i32,
    /// Documents changed.
    modified: i32,
    /// `_id` of the upserted document.
    upserted: Option<Bson>,
}

/// `update`.
pub fn update(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "update")?;
    let stmts = ctx.take_docs("updates")?;
    // `sort` on an update statement is MongoDB 8.0; 7.0's parser refuses it.
    if stmts.iter().any(|s| s.contains_key("sort")) {
        return Err(CommandError::new(
            40415,
            "BSON field 'update.updates.sort' is an unknown field.",
        ));
    }
    let ordered = opt_bool(ctx.body, "ordered", true)?;
    let ns = format!("{}.{coll}", ctx.db);
    let (mut n, mut modified, mut changed, mut attempted) = (0i32, 0i32, 0u64, 0u64);
    let mut upserted = Vec::new();
    let mut errors = Vec::new();
    {
        let mut inner = ctx.inner();
        for (i, stmt) in stmts.into_iter().enumerate() {
            attempted += 1;
            match update_statement(&mut inner, &ctx.db, &coll, stmt) {
                Ok(o) => {
                    n += o.n;
                    modified += o.modified;
                    changed += o.modified as u64;
                    if let Some(id) = o.upserted {
                        changed += 1;
                        upserted.push(Bson::Document(doc! { "index": i as i32, "_id": id }));
                    }
                }
                Err(e) => {
                    errors.push(Bson::Document(e.to_write_error(i)));
                    if ordered {
                        break;
                    }
                }
            }
        }
    }
    ctx.shared.faults.count_writes(&ns, attempted, changed);
    if changed > 0 {
        ctx.shared.notify_changes();
    }
    let mut reply = doc! { "n": n };
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    reply.insert("nModified", modified);
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// The statement's filter `q` (required, a document).
fn statement_filter(stmt: &Document) -> CmdResult<&Document> {
    match stmt.get("q") {
        Some(Bson::Document(d)) => Ok(d),
        None | Some(Bson::Null) => Err(CommandError::new(
            40414,
            "BSON field 'update.updates.q' is missing but a required field",
        )),
        Some(_) => Err(CommandError::type_mismatch("q", "object")),
    }
}

fn update_statement(
    inner: &mut Inner,
    db: &str,
    coll: &str,
    mut stmt: Document,
) -> CmdResult<Outcome> {
    statement_filter(&stmt)?;
    // Moved out, not cloned: a replacement becomes the stored document as it is.
    let u = stmt.remove("u").ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'update.updates.u' is missing but a required field",
        )
    })?;
    let spec = UpdateSpec::parse_owned(u)?;
    let stmt = &stmt;
    let q = statement_filter(stmt)?;
    let upsert = opt_bool(stmt, "upsert", false)?;
    let multi = opt_bool(stmt, "multi", false)?;
    let filters = array_filters(stmt)?;
    if multi && matches!(spec, UpdateSpec::Replacement(_)) {
        return Err(CommandError::failed_to_parse(
            "multi update is not supported for replacement-style update",
        ));
    }
    let ids = matching_ids(inner, db, coll, q, !multi)?;
    let mut out = Outcome::default();
    if ids.is_empty() {
        if upsert {
            let doc = upsert_document(q, spec, &filters)?;
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            inner.insert(db, coll, doc)?;
            out.n = 1;
            out.upserted = Some(id);
        }
        return Ok(out);
    }
    for id in ids {
        out.n += 1;
        if apply_to_existing(inner, db, coll, &id, &spec, &filters)?.is_some() {
            out.modified += 1;
        }
    }
    Ok(out)
}

/// The statement's `arrayFilters` (checked: one identifier per filter).
fn array_filters(stmt: &Document) -> CmdResult<Vec<Document>> {
    let filters = match stmt.get("arrayFilters") {
        None | Some(Bson::Null) => return Ok(Vec::new()),
        Some(Bson::Array(a)) => a
            .iter()
            .map(|f| match f {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(CommandError::type_mismatch("arrayFilters", "object")),
            })
            .collect::<CmdResult<Vec<_>>>()?,
        Some(_) => return Err(CommandError::type_mismatch("arrayFilters", "array")),
    };
    positional::filter_ids(&filters)?;
    Ok(filters)
}

/// `spec` with its `$[]`/`$[id]` paths made concrete for `doc`; `None` when it has none.
fn concrete(
    spec: &UpdateSpec,
    doc: &Document,
    filters: &[Document],
) -> CmdResult<Option<UpdateSpec>> {
    match spec {
        UpdateSpec::Operators(u) if !filters.is_empty() || positional::uses_positional(u) => Ok(
            Some(UpdateSpec::Operators(positional::expand(u, doc, filters)?)),
        ),
        _ => Ok(None),
    }
}

/// Apply `spec` to the stored document `id`. Returns `(before, after)` when the document
/// changed, `None` for a no-op.
fn apply_to_existing(
    inner: &mut Inner,
    db: &str,
    coll: &str,
    id: &Bson,
    spec: &UpdateSpec,
    filters: &[Document],
) -> CmdResult<Option<(Document, Document)>> {
    let before = inner
        .store
        .coll(db, coll)
        .and_then(|c| c.docs.get(&Key(id.clone())))
        .cloned()
        .ok_or_else(|| CommandError::new(1, "document vanished during update"))?;
    let expanded = concrete(spec, &before, filters)?;
    if matches!(&expanded, Some(UpdateSpec::Operators(u)) if u.is_empty()) {
        return Ok(None);
    }
    let spec = expanded.as_ref().unwrap_or(spec);
    let after = query::apply_update(&before, spec, false)?;
    if after.get("_id") != before.get("_id") {
        return Err(CommandError::new(
            66,
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        ));
    }
    if is_noop(&before, &after, spec) {
        return Ok(None);
    }
    if bson_size(&after) > crate::state::MAX_BSON_SIZE {
        return Err(CommandError::new(
            10334,
            format!(
                "Resulting document after update is larger than {}",
                crate::state::MAX_BSON_SIZE
            ),
        ));
    }
    let replacement = matches!(spec, UpdateSpec::Replacement(_));
    inner.overwrite(db, coll, &before, after.clone(), replacement)?;
    Ok(Some((before, after)))
}

/// MongoDB's no-op rule: identical bytes, and for replacements only when the
/// replacement itself carries `_id` (SERVER-36405).
fn is_noop(before: &Document, after: &Document, spec: &UpdateSpec) -> bool {
    if let UpdateSpec::Replacement(r) = spec {
        if !r.contains_key("_id") {
            return false;
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    before.to_writer(&mut a).is_ok() && after.to_writer(&mut b).is_ok() && a == b
}

/// The document an upsert inserts: the filter's equality fields plus the update.
fn upsert_document(q: &Document, spec: UpdateSpec, filters: &[Document]) -> CmdResult<Document> {
    let seed = query::upsert_seed(q)?;
    let spec = match concrete(&spec, &seed, filters)? {
        Some(UpdateSpec::Operators(u)) if u.is_empty() => return prepare_for_storage(seed, true),
        Some(expanded) => expanded,
        None => spec,
    };
    let doc = query::apply_update_owned(&seed, spec, true)?;
    if let (Some(a), Some(b)) = (seed.get("_id"), doc.get("_id")) {
        if a != b {
            return Err(CommandError::new(
                66,
                "Performing an update on the path '_id' would modify the immutable field '_id'",
            ));
        }
    }
    prepare_for_storage(doc, true)
}

/// `findAndModify`.
pub fn find_and_modify(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let name = if ctx.body.contains_key("findAndModify") {
        "findAndModify"
    } else {
        "findandmodify"
    };
    let coll = collection_name(ctx, name)?;
    let ns = format!("{}.{coll}", ctx.db);
    let q = opt_doc(ctx.body, "query")?.unwrap_or_default();
    let sort = opt_doc(ctx.body, "sort")?;
    let fields = opt_doc(ctx.body, "fields")?;
    let remove = opt_bool(ctx.body, "remove", false)?;
    let return_new = opt_bool(ctx.body, "new", false)?;
    let upsert = opt_bool(ctx.body, "upsert", false)?;
    let update = ctx.body.get("update");
    if remove && update.is_some() {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both an update and remove=true",
        ));
    }
    if remove && upsert {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both upsert=true and remove=true",
        ));
    }
    if remove && return_new {
        return Err(CommandError::failed_to_parse("Cannot specify both new=true and remove=true; 'remove' always returns the deleted document"));
    }
    let spec = match update {
        Some(u) => Some(UpdateSpec::parse(u)?),
        None if remove => None,
        None => {
            return Err(CommandError::failed_to_parse(
                "Either an update or remove=true must be specified",
            ))
        }
    };
    let filters = array_filters(ctx.body)?;
    let (value, last_error, changed) = {
        let mut inner = ctx.inner();
        let target = first_match(&inner, &ctx.db, &coll, &q, sort.as_ref())?;
        match (spec, target) {
            (None, Some(id)) => {
                let before = inner.delete(&ctx.db, &coll, &id);
                (
                    before.map(Bson::Document).unwrap_or(Bson::Null),
                    doc! { "n": 1 },
                    1u64,
                )
            }
            (None, None) => (Bson::Null, doc! { "n": 0 }, 0),
            (Some(spec), Some(id)) => {
                let before = inner
                    .store
                    .coll(&ctx.db, &coll)
                    .and_then(|c| c.docs.get(&Key(id.clone())))
                    .cloned()
                    .unwrap_or_default();
                let changed = apply_to_existing(&mut inner, &ctx.db, &coll, &id, &spec, &filters)?;
                let after = changed
                    .as_ref()
                    .map(|(_, a)| a.clone())
                    .unwrap_or_else(|| before.clone());
                let value = if return_new { after } else { before };
                (
                    Bson::Document(value),
                    doc! { "n": 1, "updatedExisting": true },
                    changed.is_some() as u64,
                )
            }
            (Some(spec), None) if upsert => {
                let doc = upsert_document(&q, spec, &filters)?;
                let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
                inner.insert(&ctx.db, &coll, doc.clone())?;
                let value = if return_new {
                    Bson::Document(doc)
                } else {
                    Bson::Null
                };
                (
                    value,
                    doc! { "n": 1, "updatedExisting": false, "upserted": id },
                    1,
                )
            }
            (Some(_), None) => (Bson::Null, doc! { "n": 0, "updatedExisting": false }, 0),
        }
    };
    ctx.shared.faults.count_writes(&ns, 1, changed);
    if changed > 0 {
        ctx.shared.notify_changes();
    }
    let value = match (value, fields) {
        (Bson::Document(d), Some(f)) if !f.is_empty() => Bson::Document(query::project(&d, &f)?),
        (v, _) => v,
    };
    Ok(doc! { "lastErrorObject": last_error, "value": value })
}

fn first_match(
    inner: &Inner,
    db: &str,
    coll: &str,
    q: &Document,
    sort: Option<&Document>,
) -> CmdResult<Option<Bson>> {
    match sort {
        Some(s) if !s.is_empty() => {
            query::validate_filter(q)?;
            let Some(c) = inner.store.coll(db, coll) else {
                return Ok(None);
            };
            let mut docs = Vec::new();
            for d in c.docs.values() {
                if query::matches(d, q)? {
                    docs.push(d.clone());
                }
            }
            query::sort_documents(&mut docs, s)?;
            Ok(docs.first().and_then(|d| d.get("_id").cloned()))
        }
        _ => Ok(matching_ids(inner, db, coll, q, true)?.into_iter().next()),
    }
}
