//! Catalog and administration commands: `listDatabases`, `listCollections`, `create`,
//! `drop`, `dropDatabase`, `renameCollection`, and the emulator's own
//! `emulatorFault` (fault injection and counters for other processes).

use std::time::Duration;

use bson::{doc, Bson, Document};

use super::cursors::{batch_size, cursor_reply};
use super::{collection_name, opt_bool, opt_doc, opt_i64, Ctx};
use crate::error::{CmdResult, CommandError};
use crate::oplog::EventKind;
use crate::query;
use crate::store::Collection;

/// Fields every command may carry that are not options of the command itself.
const GENERIC_FIELDS: &[&str] = &[
    "lsid",
    "txnNumber",
    "$db",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "comment",
    "maxTimeMS",
    "$clusterTime",
    "autocommit",
];

/// `listDatabases`.
pub fn list_databases(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let filter = opt_doc(ctx.body, "filter")?.unwrap_or_default();
    let name_only = opt_bool(ctx.body, "nameOnly", false)?;
    let mut entries: Vec<(String, i64)> = {
        let inner = ctx.shared.inner();
        inner
            .store
            .dbs
            .iter()
            .map(|(name, colls)| {
                let size: usize = colls.values().map(|c| c.docs.len() * 64 + 4096).sum();
                (name.clone(), size as i64)
            })
            .collect()
    };
    for internal in ["admin", "config", "local"] {
        if !entries.iter().any(|(n, _)| n == internal) {
            entries.push((internal.to_string(), 8192));
        }
    }
    entries.sort();
    let mut dbs = Vec::new();
    let mut total = 0i64;
    for (name, size) in entries {
        let entry = if name_only {
            doc! { "name": name }
        } else {
            doc! { "name": name, "sizeOnDisk": size, "empty": false }
        };
        if filter.is_empty() || query::matches(&entry, &filter)? {
            total += size;
            dbs.push(Bson::Document(entry));
        }
    }
    if name_only {
        return Ok(doc! { "databases": dbs });
    }
    Ok(doc! { "databases": dbs, "totalSize": total, "totalSizeMb": total / (1024 * 1024) })
}

/// `listCollections`.
pub fn list_collections(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let filter = opt_doc(ctx.body, "filter")?.unwrap_or_default();
    let name_only = opt_bool(ctx.body, "nameOnly", false)?;
    let batch = batch_size(
        &opt_doc(ctx.body, "cursor")?.unwrap_or_default(),
        "batchSize",
    )?;
    let entries: Vec<Document> = {
        let inner = ctx.shared.inner();
        inner
            .store
            .dbs
            .get(&ctx.db)
            .map(|colls| {
                colls
                    .iter()
                    .map(|(name, c)| {
                        if name_only {
                            doc! { "name": name.clone(), "type": "collection" }
                        } else {
                            doc! {
                                "name": name.clone(),
                                "type": "collection",
                                "options": c.options.clone(),
                                "info": { "readOnly": false, "uuid": c.uuid.clone() },
                                "idIndex": Collection::id_index_spec(),
                            }
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for e in entries {
        if filter.is_empty() || query::matches(&e, &filter)? {
            out.push(e);
        }
    }
    Ok(cursor_reply(
        ctx.shared,
        format!("{}.$cmd.listCollections", ctx.db),
        out,
        batch,
        false,
    ))
}

/// `create`.
pub fn create(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "create")?;
    if ctx.body.contains_key("viewOn") {
        return Err(CommandError::bad_value(
            "views are not supported by the MongoDB emulator",
        ));
    }
    let mut options = Document::new();
    for (k, v) in ctx.body.iter().skip(1) {
        if !GENERIC_FIELDS.contains(&k.as_str()) {
            options.insert(k.clone(), v.clone());
        }
    }
    if !ctx.inner().create_collection(&ctx.db, &coll, options) {
        return Err(CommandError::new(
            48,
            format!("Collection {}.{coll} already exists.", ctx.db),
        ));
    }
    ctx.shared.notify_changes();
    Ok(doc! {})
}

/// `collMod`: `index` changes an index's `expireAfterSeconds`/`hidden` (found by
/// `name` or `keyPattern`; 27 when missing); other options are stored
/// (`changeStreamPreAndPostImages` takes effect for later writes, the rest is
/// metadata); a `modify` event is recorded.
pub fn coll_mod(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "collMod")?;
    let mut changes = Document::new();
    for (k, v) in ctx.body.iter().skip(1) {
        if !GENERIC_FIELDS.contains(&k.as_str()) {
            changes.insert(k.clone(), v.clone());
        }
    }
    if let Some(v) = changes.get("changeStreamPreAndPostImages") {
        let ok =
            matches!(v, Bson::Document(d) if matches!(d.get("enabled"), Some(Bson::Boolean(_))));
        if !ok {
            return Err(CommandError::new(
                40414,
                "BSON field 'changeStreamPreAndPostImages.enabled' is missing but a required field",
            ));
        }
    }
    {
        let mut inner = ctx.shared.inner();
        let ns = format!("{}.{coll}", ctx.db);
        let c = inner
            .store
            .coll_mut(&ctx.db, &coll)
            .ok_or_else(|| CommandError::new(26, format!("ns does not exist: {ns}")))?;
        let mut reply = Document::new();
        for (k, v) in &changes {
            match (k.as_str(), v) {
                ("index", Bson::Document(spec)) => reply = modify_index(c, spec)?,
                ("index", _) => return Err(CommandError::type_mismatch("collMod.index", "object")),
                _ => {
                    c.options.insert(k.clone(), v.clone());
                }
            }
        }
        inner.ddl_event(&ctx.db, &coll, EventKind::Modify, changes);
        std::mem::drop(inner);
        ctx.shared.notify_changes();
        Ok(reply)
    }
}

/// `collMod`'s `index` option on collection `c`; the reply's old/new values.
fn modify_index(c: &mut Collection, spec: &Document) -> CmdResult<Document> {
    let found = c
        .indexes
        .iter_mut()
        .find(|i| match (spec.get("name"), spec.get("keyPattern")) {
            (Some(Bson::String(n)), _) => &i.name == n,
            (_, Some(Bson::Document(k))) => &i.key == k,
            _ => false,
        });
    let index = found.ok_or_else(|| CommandError::new(27, format!("cannot find index {spec}")))?;
    let mut reply = Document::new();
    for field in ["expireAfterSeconds", "hidden"] {
        if let Some(new) = spec.get(field) {
            if let Some(old) = index.spec.get(field) {
                reply.insert(format!("{field}_old"), old.clone());
            }
            reply.insert(format!("{field}_new"), new.clone());
            index.spec.insert(field, new.clone());
        }
    }
    Ok(reply)
}

/// `drop` (MongoDB 7.0: dropping a missing collection succeeds).
pub fn drop(ctx: &Ctx<'_>) -> CmdResult<Document> {
    let coll = collection_name(ctx, "drop")?;
    let dropped = ctx.shared.inner().drop_collection(&ctx.db, &coll);
    match dropped {
        Some(n) => {
            ctx.shared.notify_changes();
            Ok(doc! { "nIndexesWas": n as i32, "ns": format!("{}.{coll}", ctx.db) })
        }
        None => Ok(doc! {}),
    }
}

/// `dropDatabase`.
pub fn drop_database(ctx: &Ctx<'_>) -> CmdResult<Document> {
    ctx.shared.inner().drop_database(&ctx.db);
    ctx.shared.notify_changes();
    Ok(doc! { "dropped": ctx.db.clone() })
}

/// `renameCollection` (admin only).
pub fn rename_collection(ctx: &Ctx<'_>) -> CmdResult<Document> {
    if ctx.db != "admin" {
        return Err(CommandError::new(
            13,
            "renameCollection may only be run against the admin database.",
        ));
    }
    let split = |field: &str| -> CmdResult<(String, String)> {
        let s = ctx
            .body
            .get_str(field)
            .map_err(|_| CommandError::type_mismatch(field, "string"))?;
        match s.split_once('.') {
            Some((d, c)) if !d.is_empty() && !c.is_empty() => Ok((d.to_string(), c.to_string())),
            _ => Err(CommandError::new(
                73,
                format!("Invalid namespace specified '{s}'"),
            )),
        }
    };
    let from = split("renameCollection")?;
    let to = split("to")?;
    let drop_target = opt_bool(ctx.body, "dropTarget", false)?;
    ctx.shared
        .inner()
        .rename((&from.0, &from.1), (&to.0, &to.1), drop_target)?;
    ctx.shared.notify_changes();
    Ok(doc! {})
}

/// `configureFailPoint` (admin only, as on MongoDB).
pub fn configure_fail_point(ctx: &Ctx<'_>) -> CmdResult<Document> {
    if ctx.db != "admin" {
        return Err(CommandError::new(
            13,
            "configureFailPoint may only be run against the admin database.",
        ));
    }
    ctx.shared.fail_points.configure(ctx.body)
}

/// `emulatorFault` on admin: closeConnections, failCommand, delay, forgetHistory,
/// counters.
pub fn emulator_fault(ctx: &Ctx<'_>) -> CmdResult<Document> {
    if ctx.db != "admin" {
        return Err(CommandError::new(
            13,
            "emulatorFault may only be run against the admin database.",
        ));
    }
    let faults = &ctx.shared.faults;
    match ctx.body.get_str("emulatorFault").unwrap_or("") {
        "closeConnections" => {
            // Close after this reply has gone out.
            let shared = ctx.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                shared.faults.close_all();
            });
            Ok(doc! {})
        }
        "failCommand" => {
            let command = ctx
                .body
                .get_str("command")
                .map_err(|_| CommandError::type_mismatch("command", "string"))?;
            let code = opt_i64(ctx.body, "code")?.unwrap_or(91) as i32;
            let times = opt_i64(ctx.body, "times")?.unwrap_or(1).max(0) as u32;
            faults.fail_command(command, code, times);
            Ok(doc! {})
        }
        "delay" => {
            let ms = opt_i64(ctx.body, "ms")?.unwrap_or(0).max(0) as u64;
            faults.set_delay(Duration::from_millis(ms));
            Ok(doc! {})
        }
        "forgetHistory" => {
            ctx.shared.inner().oplog.forget();
            Ok(doc! {})
        }
        "counters" => {
            let c = faults.counters();
            let map = |m: &std::collections::BTreeMap<String, u64>| -> Document {
                m.iter().map(|(k, v)| (k.clone(), Bson::Int64(*v as i64))).collect()
            };
            Ok(doc! {
                "commands": map(&c.commands),
                "writeStatements": map(&c.write_statements),
                "documentsChanged": map(&c.documents_changed),
                "changeStreamsOpened": map(&c.change_streams_opened),
            })
        }
        other => Err(CommandError::bad_value(format!(
            "unknown emulatorFault '{other}' (closeConnections, failCommand, delay, forgetHistory, counters)"
        ))),
    }
}
