//! Command dispatch: picks the handler by command name, applies injected faults, runs
//! the commands of a multi-document transaction on the catalog as the transaction sees
//! it (see `txn.rs`), answers retried writes from the cache, and adds
//! `operationTime`/`$clusterTime` to every reply.

mod admin;
mod aggregate;
mod collation;
mod crud;
mod cursors;
mod find;
mod handshake;
mod idrange;
mod indexes;
mod letvars;
mod update;

use std::sync::{Arc, Mutex};

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document, RawDocumentBuf};

use crate::error::{CmdResult, CommandError};
use crate::failpoint::Action;
use crate::state::{lock, Inner, Shared};
use crate::txn::{self, TxnFields};

/// What a handler gets.
pub struct Ctx<'a> {
    /// Shared server state.
    pub shared: &'a Arc<Shared>,
    /// Target database (`$db`).
    pub db: String,
    /// The command document.
    pub body: &'a Document,
    /// This connection's id.
    pub connection_id: i64,
    /// The statement or document array of an `insert` or `update`, moved out of the
    /// request (see [`Ctx::take_docs`]).
    moved: Mutex<Option<Vec<Bson>>>,
    /// The transaction the command runs in, if any.
    txn: Option<txn::Handle>,
}

impl Ctx<'_> {
    /// The catalog the command reads and writes: the server's, seen through its
    /// transaction inside one. Never hold across an await.
    pub fn inner(&self) -> InnerGuard<'_> {
        match &self.txn {
            Some(t) => InnerGuard::Txn(txn::Overlay::new(self.shared, t)),
            None => InnerGuard::Plain(self.shared.inner()),
        }
    }

    /// The array `field` of the command as owned documents: the array moved out of the
    /// request when there is one (a write's documents are then stored or parsed as
    /// they are, not cloned), else read from the body with [`doc_array`]'s errors.
    pub fn take_docs(&self, field: &str) -> CmdResult<Vec<Document>> {
        let Some(items) = lock(&self.moved).take() else {
            return Ok(doc_array(self.body, field)?.into_iter().cloned().collect());
        };
        if items.iter().any(|v| !matches!(v, Bson::Document(_))) {
            return Err(CommandError::type_mismatch(&format!("{field}.0"), "object"));
        }
        Ok(items
            .into_iter()
            .filter_map(|v| match v {
                Bson::Document(d) => Some(d),
                _ => None,
            })
            .collect())
    }
}

/// The locked catalog a command works on.
pub enum InnerGuard<'a> {
    /// The server's, outside a transaction.
    Plain(std::sync::MutexGuard<'a, Inner>),
    /// Seen through a transaction.
    Txn(txn::Overlay<'a>),
}

impl std::ops::Deref for InnerGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        match self {
            InnerGuard::Plain(g) => g,
            InnerGuard::Txn(o) => o,
        }
    }
}

impl std::ops::DerefMut for InnerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        match self {
            InnerGuard::Plain(g) => g,
            InnerGuard::Txn(o) => o,
        }
    }
}

/// The array a write command carries, moved out of `body` (only when it is an array:
/// anything else stays for the handler's usual error).
fn move_write_array(body: &mut Document, name: &str) -> Option<Vec<Bson>> {
    let field = match name {
        "insert" => "documents",
        "update" => "updates",
        _ => return None,
    };
    match body.get_mut(field) {
        Some(Bson::Array(a)) => Some(std::mem::take(a)),
        _ => None,
    }
}

/// A complete reply: a document, or one already encoded (a change stream's `getMore`,
/// whose events are rendered straight to BSON).
#[derive(Debug)]
pub enum Reply {
    /// A reply document.
    Doc(Document),
    /// An encoded reply document.
    Raw(RawDocumentBuf),
    /// No reply: the connection is closed (a `closeConnection` fail point).
    Close,
}

impl Reply {
    /// Appends a field at the end.
    fn append(&mut self, name: &str, value: Bson) {
        match self {
            Reply::Doc(d) => {
                d.insert(name, value);
            }
            Reply::Raw(r) => match bson::RawBson::try_from(value) {
                Ok(v) => r.append(name, v),
                Err(_) => unreachable!("the reply fields appended here are all encodable"),
            },
            Reply::Close => {}
        }
    }

    /// The reply, encoded.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Reply::Doc(d) => {
                let mut out = Vec::new();
                d.to_writer(&mut out)
                    .expect("writing BSON to a Vec cannot fail");
                out
            }
            Reply::Raw(r) => r.as_bytes().to_vec(),
            Reply::Close => Vec::new(),
        }
    }
}

/// Commands that are retryable writes (cached by lsid + txnNumber).
const WRITE_COMMANDS: &[&str] = &["insert", "update", "delete", "findAndModify"];

/// Run one command and build the complete reply.
pub async fn run(
    shared: &Arc<Shared>,
    body: &mut Document,
    db: String,
    connection_id: i64,
) -> Reply {
    let name = body.keys().next().cloned().unwrap_or_default();
    shared.faults.count_command(&name);
    let let_error = letvars::apply(&name, body).err();
    collation::apply(&name, body);
    let moved = Mutex::new(move_write_array(body, &name));
    let in_txn = body.contains_key("autocommit");
    let ctx = Ctx {
        shared,
        db,
        body,
        connection_id,
        moved,
        txn: None,
    };
    let mut action = if name == "configureFailPoint" {
        Action::Proceed
    } else {
        let app = lock(&shared.app_names).get(&connection_id).cloned();
        shared.fail_points.check(&name, app.as_deref(), in_txn)
    };
    if let Action::Block(d, then) = action {
        tokio::time::sleep(d).await;
        action = *then;
    }
    let result = match (action, shared.faults.take_failure(&name, in_txn)) {
        (Action::Close, _) => return Reply::Close,
        (_, None) if let_error.is_some() => Err(let_error.unwrap_or_else(|| unreachable!())),
        (Action::Fail(err), _) | (_, Some(err)) => Err(err),
        (Action::WriteConcernError(wce), None) => run_checked(&ctx, &name)
            .await
            .map(|r| with_write_concern_error(r, wce, &name, in_txn)),
        (_, None) => run_checked(&ctx, &name).await,
    };
    let mut reply = match result {
        Ok(Reply::Doc(mut d)) => {
            if !d.contains_key("ok") {
                d.insert("ok", 1.0);
            }
            Reply::Doc(d)
        }
        Ok(Reply::Raw(mut r)) => {
            if r.get("ok").ok().flatten().is_none() {
                r.append("ok", 1.0);
            }
            Reply::Raw(r)
        }
        Err(e) => Reply::Doc(e.to_reply()),
        Ok(Reply::Close) => return Reply::Close,
    };
    let now = shared.inner().oplog.last_write();
    reply.append(
        "$clusterTime",
        Bson::Document(doc! {
            "clusterTime": now,
            "signature": {
                "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0u8; 20] },
                "keyId": 0i64,
            },
        }),
    );
    reply.append("operationTime", Bson::Timestamp(now));
    reply
}

/// A command's success with a fail point's `writeConcernError`; the server labels it
/// `RetryableWriteError` on retryable writes (outside a transaction) and on
/// `commitTransaction`/`abortTransaction`, as it would a real one.
fn with_write_concern_error(reply: Reply, wce: Document, command: &str, in_txn: bool) -> Reply {
    let Reply::Doc(mut d) = reply else {
        return reply;
    };
    let code = wce.get_i32("code").unwrap_or(0);
    let retryable = matches!(command, "commitTransaction" | "abortTransaction")
        || (WRITE_COMMANDS.contains(&command) && !in_txn);
    if retryable && crate::error::RETRYABLE_WRITE_CODES.contains(&code) {
        d.insert(
            "errorLabels",
            vec![Bson::String("RetryableWriteError".into())],
        );
    }
    d.insert("writeConcernError", wce);
    Reply::Doc(d)
}

async fn run_checked(ctx: &Ctx<'_>, name: &str) -> CmdResult<Reply> {
    if let Some(f) = TxnFields::parse(ctx.body)? {
        return run_in_txn(ctx, name, &f).await;
    }
    if matches!(name, "commitTransaction" | "abortTransaction") {
        return Err(CommandError::new(
            50768,
            format!("{name} must be run within a transaction"),
        ));
    }
    let session = retry_key(ctx.body);
    if let Some((key, number)) = &session {
        lock(&ctx.shared.txns).observe_number(key, *number);
    }
    let retry_key = if WRITE_COMMANDS.contains(&name) {
        session
    } else {
        None
    };
    if let Some(key) = &retry_key {
        if let Some(reply) = lock(&ctx.shared.retry).get(key) {
            return Ok(Reply::Doc(reply));
        }
    }
    let out = dispatch(ctx, name).await;
    if let (Some(key), Ok(Reply::Doc(reply))) = (retry_key, &out) {
        lock(&ctx.shared.retry).put(key, reply.clone());
    }
    out
}

/// A command of the multi-document transaction `f`: `commitTransaction` and
/// `abortTransaction` (on `admin`), or a command allowed in a transaction, run on the
/// catalog as the transaction sees it; a failed one aborts the transaction.
async fn run_in_txn(ctx: &Ctx<'_>, name: &str, f: &TxnFields) -> CmdResult<Reply> {
    let shared = ctx.shared;
    if matches!(name, "commitTransaction" | "abortTransaction") {
        if ctx.db != "admin" {
            return Err(CommandError::new(
                13,
                format!("{name} may only be run against the admin database."),
            ));
        }
        let mut txns = lock(&shared.txns);
        let out = if name == "commitTransaction" {
            txns.commit(shared, f)
        } else {
            txns.abort(f)
        };
        return out.map(|()| Reply::Doc(doc! {}));
    }
    if !txn::ALLOWED.contains(&name) {
        lock(&shared.txns).abort_command(f);
        return Err(CommandError::new(
            263,
            format!("Cannot run '{name}' in a multi-document transaction."),
        ));
    }
    if name == "aggregate" {
        let stages = ctx
            .body
            .get_array("pipeline")
            .map(|p| p.as_slice())
            .unwrap_or(&[]);
        let refused = stages.iter().find_map(|st| {
            let d = st.as_document()?;
            let stage = d.keys().next()?;
            ["$changeStream", "$out", "$merge"]
                .contains(&stage.as_str())
                .then(|| stage.clone())
        });
        if let Some(stage) = refused {
            lock(&shared.txns).abort_command(f);
            return Err(CommandError::new(
                263,
                format!("{stage} cannot be used in a transaction"),
            ));
        }
    }
    // Every command allowed here reads or writes the one collection it names (the
    // pipeline stages that read others are not supported), or none (getMore).
    let coll = ctx.body.values().next().and_then(Bson::as_str);
    if name == "createIndexes" {
        // Only on a collection the transaction creates (MongoDB 4.4+).
        let exists = coll.is_some_and(|c| shared.inner().store.coll(&ctx.db, c).is_some());
        if exists {
            lock(&shared.txns).abort_command(f);
            return Err(CommandError::new(
                263,
                format!(
                    "Cannot create new indexes on existing collection {}.{} in a multi-document transaction.",
                    ctx.db,
                    coll.unwrap_or_default()
                ),
            ));
        }
    }
    let handle = lock(&shared.txns).begin_or_continue(
        shared,
        f,
        coll.map(|c| (ctx.db.as_str(), c)),
        ctx.body.contains_key("readConcern"),
    )?;
    let tctx = Ctx {
        shared,
        db: ctx.db.clone(),
        body: ctx.body,
        connection_id: ctx.connection_id,
        moved: Mutex::new(lock(&ctx.moved).take()),
        txn: Some(handle),
    };
    let out = dispatch(&tctx, name).await;
    let failed = match &out {
        Err(_) => true,
        Ok(Reply::Doc(d)) => d.contains_key("writeErrors"),
        Ok(_) => false,
    };
    lock(&shared.txns).after_command(shared, f, failed)?;
    out
}

fn retry_key(body: &Document) -> Option<(Vec<u8>, i64)> {
    let lsid = body.get_document("lsid").ok()?;
    let txn = match body.get("txnNumber")? {
        Bson::Int64(n) => *n,
        Bson::Int32(n) => *n as i64,
        _ => return None,
    };
    let mut bytes = Vec::new();
    lsid.to_writer(&mut bytes).ok()?;
    Some((bytes, txn))
}

async fn dispatch(ctx: &Ctx<'_>, name: &str) -> CmdResult<Reply> {
    if name == "getMore" {
        return cursors::get_more(ctx).await;
    }
    dispatch_doc(ctx, name).map(Reply::Doc)
}

fn dispatch_doc(ctx: &Ctx<'_>, name: &str) -> CmdResult<Document> {
    match name {
        "hello" | "isMaster" | "ismaster" => Ok(handshake::hello(ctx, name)),
        "ping" => Ok(doc! {}),
        "buildInfo" | "buildinfo" => Ok(handshake::build_info()),
        "endSessions" | "killSessions" => {
            end_sessions(ctx, name);
            Ok(doc! {})
        }
        "killAllSessions" => {
            lock(&ctx.shared.txns).end_all();
            Ok(doc! {})
        }
        "refreshSessions" => Ok(doc! {}),
        "getParameter" => Ok(handshake::get_parameter(ctx)),
        "serverStatus" => Ok(handshake::server_status(ctx)),
        "insert" => crud::insert(ctx),
        "delete" => crud::delete(ctx),
        "update" => update::update(ctx),
        "findAndModify" | "findandmodify" => update::find_and_modify(ctx),
        "find" => find::find(ctx),
        "count" => find::count(ctx),
        "distinct" => find::distinct(ctx),
        "killCursors" => cursors::kill_cursors(ctx),
        "aggregate" => aggregate::aggregate(ctx),
        "listDatabases" => admin::list_databases(ctx),
        "listCollections" => admin::list_collections(ctx),
        "create" => admin::create(ctx),
        "collMod" => admin::coll_mod(ctx),
        "drop" => admin::drop(ctx),
        "dropDatabase" => admin::drop_database(ctx),
        "renameCollection" => admin::rename_collection(ctx),
        "emulatorFault" => admin::emulator_fault(ctx),
        "configureFailPoint" => admin::configure_fail_point(ctx),
        "getCmdLineOpts" => Ok(handshake::cmd_line_opts(ctx)),
        "createIndexes" => indexes::create_indexes(ctx),
        "listIndexes" => indexes::list_indexes(ctx),
        "dropIndexes" | "deleteIndexes" => indexes::drop_indexes(ctx),
        other => Err(CommandError::new(59, format!("no such command: '{other}'"))),
    }
}

/// `endSessions` / `killSessions`: the sessions' open transactions are aborted.
fn end_sessions(ctx: &Ctx<'_>, name: &str) {
    let Ok(ids) = ctx.body.get_array(name) else {
        return;
    };
    let mut txns = lock(&ctx.shared.txns);
    for id in ids.iter().filter_map(Bson::as_document) {
        txns.end_session(&txn::session_key(id));
    }
}

/// The collection named by the command field `field`.
pub fn collection_name(ctx: &Ctx<'_>, field: &str) -> CmdResult<String> {
    match ctx.body.get(field) {
        Some(Bson::String(s)) if !s.is_empty() && !s.contains('\0') && !s.starts_with('$') => {
            Ok(s.clone())
        }
        Some(Bson::String(s)) => Err(CommandError::new(
            73,
            format!("Invalid namespace specified '{}.{s}'", ctx.db),
        )),
        Some(other) => Err(CommandError::new(
            73,
            format!("collection name has invalid type {}", type_name(other)),
        )),
        None => Err(CommandError::new(73, "missing collection name")),
    }
}

/// MongoDB's name of a BSON type.
pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
        _ => "unknown",
    }
}

/// An optional document field.
pub fn opt_doc(body: &Document, field: &str) -> CmdResult<Option<Document>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d.clone())),
        Some(_) => Err(CommandError::type_mismatch(field, "object")),
    }
}

/// An optional integer field (any numeric type).
pub fn opt_i64(body: &Document, field: &str) -> CmdResult<Option<i64>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(n)) => Ok(Some(*n as i64)),
        Some(Bson::Int64(n)) => Ok(Some(*n)),
        Some(Bson::Double(f)) if f.fract() == 0.0 => Ok(Some(*f as i64)),
        Some(_) => Err(CommandError::type_mismatch(field, "long")),
    }
}

/// An optional boolean field (numbers accepted, as MongoDB does).
pub fn opt_bool(body: &Document, field: &str, default: bool) -> CmdResult<bool> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(default),
        Some(Bson::Boolean(b)) => Ok(*b),
        Some(Bson::Int32(n)) => Ok(*n != 0),
        Some(Bson::Int64(n)) => Ok(*n != 0),
        Some(Bson::Double(f)) => Ok(*f != 0.0),
        Some(_) => Err(CommandError::type_mismatch(field, "bool")),
    }
}

/// The array of statements/documents `field` (a body array or a kind-1 sequence).
pub fn doc_array<'a>(body: &'a Document, field: &str) -> CmdResult<Vec<&'a Document>> {
    match body.get(field) {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|v| match v {
                Bson::Document(d) => Ok(d),
                _ => Err(CommandError::type_mismatch(&format!("{field}.0"), "object")),
            })
            .collect(),
        Some(_) => Err(CommandError::type_mismatch(field, "array")),
        None => Err(CommandError::new(
            40414,
            format!("BSON field '{field}' is missing but a required field"),
        )),
    }
}
