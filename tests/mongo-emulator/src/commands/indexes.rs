//! Index commands. The `_id_` index always exists; secondary indexes are kept as
//! metadata and listed, and unique ones are enforced (11000 naming the index).
//! TTL (`expireAfterSeconds`) is accepted and listed but documents never expire.

use bson::{doc, Bson, Document};

use super::cursors::{batch_size, cursor_reply};
use super::{collection_name, opt_doc, Ctx};
use crate::error::{CmdResult, CommandError};
use crate::oplog::EventKind;
use crate::store::{duplicate_key, Collection, Index};

/// `createIndexes`.
pub fn create_indexes(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "createIndexes")?;
    let ns = format!("{}.{coll}", ctx.db);
    let specs = match ctx.body.get("indexes") {
        Some(Bson::Array(a)) if !a.is_empty() => a.clone(),
        Some(Bson::Array(_)) => {
            return Err(CommandError::bad_value(
                "Must specify at least one index to create",
            ))
        }
        _ => {
            return Err(CommandError::type_mismatch(
                "createIndexes.indexes",
                "array",
            ))
        }
    };
    let mut parsed = Vec::new();
    for s in specs {
        let Bson::Document(spec) = s else {
            return Err(CommandError::type_mismatch(
                "createIndexes.indexes.0",
                "object",
            ));
        };
        parsed.push(parse_index(spec)?);
    }
    let mut inner = ctx.inner();
    let created = inner.create_collection(&ctx.db, &coll, Document::new());
    let c = inner.store.coll_or_create(&ctx.db, &coll);
    let before = c.indexes.len() as i32 + 1;
    for idx in parsed {
        if idx.name == "_id_" || idx.key == doc! {"_id": 1} {
            continue;
        }
        if let Some(existing) = c.indexes.iter().find(|i| i.name == idx.name) {
            if existing.key != idx.key {
                return Err(CommandError::new(
                    86,
                    format!("An existing index has the same name as the requested index. Requested index: {}, existing index: {}", idx.spec, existing.spec),
                ));
            }
            if existing.unique != idx.unique || existing.sparse != idx.sparse {
                return Err(CommandError::new(85, format!("An equivalent index already exists with the same name but different options. Requested index: {}", idx.spec)));
            }
            continue;
        }
        if let Some(existing) = c.indexes.iter().find(|i| i.key == idx.key) {
            return Err(CommandError::new(
                85,
                format!(
                    "Index already exists with a different name: {}",
                    existing.name
                ),
            ));
        }
        if idx.unique {
            let mut seen: Vec<Document> = Vec::new();
            for d in c.docs.values() {
                if let Some(k) = idx.key_value(d) {
                    if seen.iter().any(|s| {
                        crate::query::compare(
                            &Bson::Document(s.clone()),
                            &Bson::Document(k.clone()),
                        )
                        .is_eq()
                    }) {
                        return Err(duplicate_key(&ns, &idx.name, &idx.key, &k));
                    }
                    seen.push(k);
                }
            }
        }
        c.indexes.push(idx);
    }
    let after = c.indexes.len() as i32 + 1;
    let new_specs: Vec<Bson> = c.indexes[(before - 1) as usize..]
        .iter()
        .map(|i| Bson::Document(i.spec.clone()))
        .collect();
    index_event(ctx, inner, &coll, EventKind::CreateIndexes, new_specs);
    let mut reply = doc! {
        "numIndexesBefore": before,
        "numIndexesAfter": after,
        "createdCollectionAutomatically": created,
    };
    if before == after {
        reply.insert("note", "all indexes already exist");
    }
    Ok(reply)
}

fn parse_index(spec: Document) -> CmdResult<Index> {
    let key = match spec.get("key") {
        Some(Bson::Document(k)) if !k.is_empty() => k.clone(),
        _ => return Err(CommandError::new(67, "Index keys cannot be empty.")),
    };
    let name = match spec.get("name") {
        Some(Bson::String(n)) if !n.is_empty() => n.clone(),
        _ => {
            return Err(CommandError::failed_to_parse(
                "The 'name' field is a required property of an index specification",
            ))
        }
    };
    let truthy = |f: &str| match spec.get(f) {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Int32(n)) => *n != 0,
        Some(Bson::Int64(n)) => *n != 0,
        Some(Bson::Double(n)) => *n != 0.0,
        _ => false,
    };
    let unique = truthy("unique");
    let sparse = truthy("sparse");
    let partial = opt_doc(&spec, "partialFilterExpression")?;
    let mut listed = doc! { "v": 2, "key": key.clone(), "name": name.clone() };
    for (k, v) in &spec {
        if !matches!(k.as_str(), "key" | "name" | "v" | "ns") {
            listed.insert(k.clone(), v.clone());
        }
    }
    Ok(Index {
        name,
        key,
        unique,
        sparse,
        partial,
        spec: listed,
    })
}

/// `listIndexes`.
pub fn list_indexes(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "listIndexes")?;
    let ns = format!("{}.{coll}", ctx.db);
    let batch = batch_size(
        &opt_doc(ctx.body, "cursor")?.unwrap_or_default(),
        "batchSize",
    )?;
    let specs = {
        let inner = ctx.shared.inner();
        inner
            .store
            .coll(&ctx.db, &coll)
            .map(Collection::index_specs)
            .ok_or_else(|| CommandError::new(26, format!("ns does not exist: {ns}")))?
    };
    Ok(cursor_reply(ctx.shared, ns, specs, batch, false))
}

/// `dropIndexes`.
pub fn drop_indexes(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let field = if ctx.body.contains_key("dropIndexes") {
        "dropIndexes"
    } else {
        "deleteIndexes"
    };
    let coll = collection_name(ctx, field)?;
    let ns = format!("{}.{coll}", ctx.db);
    let which = ctx.body.get("index").cloned().unwrap_or(Bson::Null);
    let mut inner = ctx.shared.inner();
    let c = inner
        .store
        .coll_mut(&ctx.db, &coll)
        .ok_or_else(|| CommandError::new(26, format!("ns not found {ns}")))?;
    let was = c.indexes.len() as i32 + 1;
    let specs_before: Vec<Document> = c.indexes.iter().map(|i| i.spec.clone()).collect();
    let id_index = || CommandError::new(72, "cannot drop _id index");
    match which {
        Bson::String(s) if s == "*" => c.indexes.clear(),
        Bson::String(s) if s == "_id_" => return Err(id_index()),
        Bson::String(s) => remove_named(c, &s)?,
        Bson::Array(names) => {
            for n in names {
                match n {
                    Bson::String(s) if s == "_id_" => return Err(id_index()),
                    Bson::String(s) => remove_named(c, &s)?,
                    _ => return Err(CommandError::type_mismatch("dropIndexes.index", "string")),
                }
            }
        }
        Bson::Document(key) => {
            if key == doc! {"_id": 1} {
                return Err(id_index());
            }
            let pos = c.indexes.iter().position(|i| i.key == key).ok_or_else(|| {
                CommandError::new(27, format!("can't find index with key: {key}"))
            })?;
            c.indexes.remove(pos);
        }
        _ => return Err(CommandError::type_mismatch("dropIndexes.index", "string")),
    }
    let dropped: Vec<Bson> = specs_before
        .into_iter()
        .filter(|s| !c.indexes.iter().any(|i| &i.spec == s))
        .map(Bson::Document)
        .collect();
    index_event(ctx, inner, &coll, EventKind::DropIndexes, dropped);
    Ok(doc! { "nIndexesWas": was })
}

/// Records a createIndexes/dropIndexes event for `specs` (if any) and wakes streams.
fn index_event(
    ctx: &Ctx<'_>,
    mut inner: impl std::ops::DerefMut<Target = crate::state::Inner>,
    coll: &str,
    kind: EventKind,
    specs: Vec<Bson>,
) {
    if !specs.is_empty() {
        inner.ddl_event(&ctx.db, coll, kind, doc! {"indexes": specs});
    }
    drop(inner);
    ctx.shared.notify_changes();
}

fn remove_named(c: &mut Collection, name: &str) -> CmdResult<()> {
    let pos = c
        .indexes
        .iter()
        .position(|i| i.name == name)
        .ok_or_else(|| CommandError::new(27, format!("index not found with name [{name}]")))?;
    c.indexes.remove(pos);
    Ok(())
}
