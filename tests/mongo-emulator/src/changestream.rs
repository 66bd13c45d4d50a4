//! Change streams: opening a `$changeStream` (scope, fullDocument options, resume
//! options), turning retained history into change event documents, running the
//! user's later stages over each event, and batching with postBatchResumeTokens.
//!
//! Events are rendered straight to BSON from the stored documents (one encode, no
//! document clone per event); only a stream with later stages decodes them again.

use bson::{doc, Bson, Document, RawArrayBuf, RawDocumentBuf, Timestamp};

use crate::error::{CmdResult, CommandError};
use crate::oplog::{ts_before, ts_key, Event, EventKind};
use crate::query;
use crate::state::Inner;
use crate::store::{Key, Store};
use crate::token::{ResumeToken, TokenKind};

/// Which events a stream sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// `aggregate: "coll"`.
    Collection(String, String),
    /// `aggregate: 1` on a database.
    Database(String),
    /// `aggregate: 1` on admin with `allChangesForCluster`.
    Cluster,
}

/// `fullDocument` option.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FullDocument {
    Default,
    UpdateLookup,
    WhenAvailable,
    Required,
}

/// `fullDocumentBeforeChange` option.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BeforeChange {
    Off,
    WhenAvailable,
    Required,
}

/// Stages allowed after `$changeStream`.
const ALLOWED_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
];

/// An open change stream cursor's state.
#[derive(Debug, Clone)]
pub struct ChangeStream {
    /// Namespace reported in cursor replies.
    pub ns: String,
    /// Which events are seen.
    scope: Scope,
    /// fullDocument option.
    full_document: FullDocument,
    /// fullDocumentBeforeChange option.
    before_change: BeforeChange,
    /// The user's stages after `$changeStream`.
    pipeline: Vec<Document>,
    /// History is consumed through this cluster time.
    after: Timestamp,
    /// Resumed right after an invalidating event: the next batch is the invalidate.
    pending_invalidate: Option<Timestamp>,
    /// An invalidate was returned; the cursor is finished.
    pub closed: bool,
}

/// One batch from a stream.
#[derive(Debug)]
pub struct StreamBatch {
    /// Change event documents, encoded.
    pub events: Vec<RawDocumentBuf>,
    /// postBatchResumeToken.
    pub post_batch_resume_token: Document,
}

impl ChangeStream {
    /// Open a stream for `aggregate` on `db` (`target` = the `aggregate` field), with the
    /// `$changeStream` options and the following stages.
    pub fn open(
        inner: &Inner,
        db: &str,
        target: &Bson,
        opts: &Document,
        stages: Vec<Document>,
    ) -> CmdResult<ChangeStream> {
        let mut cluster = false;
        let mut full_document = FullDocument::Default;
        let mut before_change = BeforeChange::Off;
        let mut resume: Option<(&str, &Bson)> = None;
        for (k, v) in opts {
            match k.as_str() {
                "fullDocument" => {
                    full_document = match v.as_str() {
                        Some("default") => FullDocument::Default,
                        Some("updateLookup") => FullDocument::UpdateLookup,
                        Some("whenAvailable") => FullDocument::WhenAvailable,
                        Some("required") => FullDocument::Required,
                        _ => {
                            return Err(CommandError::bad_value(format!(
                                "'{v}' is not a valid value for $changeStream.fullDocument"
                            )))
                        }
                    }
                }
                "fullDocumentBeforeChange" => {
                    before_change = match v.as_str() {
                        Some("off") => BeforeChange::Off,
                        Some("whenAvailable") => BeforeChange::WhenAvailable,
                        Some("required") => BeforeChange::Required,
                        _ => {
                            return Err(CommandError::bad_value(format!(
                            "'{v}' is not a valid value for $changeStream.fullDocumentBeforeChange"
                        )))
                        }
                    }
                }
                "resumeAfter" | "startAfter" | "startAtOperationTime" => {
                    if resume.is_some() {
                        return Err(CommandError::new(
                            40674,
                            "Only one type of resume option is allowed, but multiple were found.",
                        ));
                    }
                    resume = Some((k.as_str(), v));
                }
                "allChangesForCluster" => cluster = v.as_bool().unwrap_or(false),
                "showExpandedEvents" | "allowToRunOnConfigDB" | "allowToRunOnSystemNS" => {}
                other => {
                    return Err(CommandError::new(
                        40415,
                        format!("BSON field '$changeStream.{other}' is an unknown field."),
                    ))
                }
            }
        }
        let (scope, ns) = match target {
            Bson::String(coll) => {
                if cluster {
                    return Err(CommandError::new(
                        40415,
                        "allChangesForCluster requires aggregate: 1 on admin",
                    ));
                }
                if is_internal_db(db) {
                    return Err(CommandError::new(
                        73,
                        format!("$changeStream may not be opened on the internal {db} database"),
                    ));
                }
                (
                    Scope::Collection(db.to_string(), coll.clone()),
                    format!("{db}.{coll}"),
                )
            }
            _ if cluster => {
                if db != "admin" {
                    return Err(CommandError::new(
                        73,
                        "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database",
                    ));
                }
                (Scope::Cluster, "admin.$cmd.aggregate".to_string())
            }
            _ => {
                if is_internal_db(db) {
                    return Err(CommandError::new(
                        73,
                        format!("$changeStream may not be opened on the internal {db} database"),
                    ));
                }
                (
                    Scope::Database(db.to_string()),
                    format!("{db}.$cmd.aggregate"),
                )
            }
        };
        for st in &stages {
            let name = st.keys().next().map(String::as_str).unwrap_or("");
            if !ALLOWED_STAGES.contains(&name) {
                return Err(CommandError::new(
                    20,
                    format!("{name} is not permitted in a $changeStream pipeline"),
                ));
            }
        }
        if !stages.is_empty() {
            query::run_pipeline(Vec::new(), &stages)?;
        }
        let mut stream = ChangeStream {
            ns,
            scope,
            full_document,
            before_change,
            pipeline: stages,
            after: inner.oplog.now(),
            pending_invalidate: None,
            closed: false,
        };
        match resume {
            None => {}
            Some(("startAtOperationTime", v)) => {
                let Bson::Timestamp(t) = v else {
                    return Err(CommandError::type_mismatch(
                        "$changeStream.startAtOperationTime",
                        "timestamp",
                    ));
                };
                if inner.oplog.resume_lost(*t) {
                    return Err(history_lost());
                }
                stream.after = ts_before(*t);
            }
            Some((option, v)) => {
                let token = ResumeToken::parse(v)?;
                if token.kind == TokenKind::Invalidate && option == "resumeAfter" {
                    return Err(CommandError::new(
                        260,
                        "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
                    ));
                }
                if inner.oplog.resume_lost(token.ts) {
                    return Err(history_lost());
                }
                stream.after = token.ts;
                if token.kind == TokenKind::Event {
                    if let Some(ev) = inner.oplog.event_at(token.ts) {
                        if stream.invalidated_by(ev) {
                            stream.pending_invalidate = Some(ev.ts);
                        }
                    }
                }
            }
        }
        Ok(stream)
    }

    /// Take up to `max` events from history (without waiting).
    pub fn poll(&mut self, inner: &Inner, max: usize) -> CmdResult<StreamBatch> {
        if let Some(ts) = self.pending_invalidate.take() {
            self.closed = true;
            let wall = inner
                .oplog
                .event_at(ts)
                .map(|e| e.wall)
                .unwrap_or_else(bson::DateTime::now);
            return Ok(StreamBatch {
                events: vec![invalidate_event(ts, wall)?],
                post_batch_resume_token: ResumeToken::new(ts, TokenKind::Invalidate).to_document(),
            });
        }
        if inner.oplog.stream_lost(self.after) {
            return Err(history_lost());
        }
        let mut events = Vec::new();
        let mut more = false;
        let mut last_returned: Option<Timestamp> = None;
        let mut bytes = 0usize;
        for ev in inner.oplog.events_after(self.after) {
            // A batch stays within one 16 MiB document, as MongoDB's do.
            if events.len() >= max || bytes >= crate::state::MAX_BSON_SIZE {
                more = true;
                break;
            }
            self.after = ev.ts;
            if !self.sees(ev) {
                continue;
            }
            let rendered = self.render(ev, &inner.store)?;
            if let Some(out) = self.apply_pipeline(rendered)? {
                bytes += out.as_bytes().len();
                events.push(out);
                last_returned = Some(ev.ts);
            }
            if self.invalidated_by(ev) {
                self.closed = true;
                events.push(invalidate_event(ev.ts, ev.wall)?);
                return Ok(StreamBatch {
                    events,
                    post_batch_resume_token: ResumeToken::new(ev.ts, TokenKind::Invalidate)
                        .to_document(),
                });
            }
        }
        if !more {
            let now = inner.oplog.now();
            if ts_key(now) > ts_key(self.after) {
                self.after = now;
            }
        }
        let kind = if last_returned == Some(self.after) {
            TokenKind::Event
        } else {
            TokenKind::HighWater
        };
        Ok(StreamBatch {
            events,
            post_batch_resume_token: ResumeToken::new(self.after, kind).to_document(),
        })
    }

    fn sees(&self, ev: &Event) -> bool {
        match &self.scope {
            Scope::Collection(db, coll) => {
                ev.db == *db && ev.coll.as_deref() == Some(coll.as_str())
            }
            Scope::Database(db) => {
                ev.db == *db && !ev.coll.as_deref().unwrap_or("").starts_with("system.")
            }
            Scope::Cluster => !is_internal_db(&ev.db),
        }
    }

    fn invalidated_by(&self, ev: &Event) -> bool {
        match &self.scope {
            Scope::Collection(..) => {
                self.sees(ev) && matches!(ev.kind, EventKind::Drop | EventKind::Rename(..))
            }
            Scope::Database(db) => ev.db == *db && matches!(ev.kind, EventKind::DropDatabase),
            Scope::Cluster => false,
        }
    }

    /// The change event of `ev`, encoded (fields in MongoDB's order).
    fn render(&self, ev: &Event, store: &Store) -> CmdResult<RawDocumentBuf> {
        let op = match ev.kind {
            EventKind::Insert => "insert",
            EventKind::Update(..) => "update",
            EventKind::Replace => "replace",
            EventKind::Delete => "delete",
            EventKind::Drop => "drop",
            EventKind::DropDatabase => "dropDatabase",
            EventKind::Rename(..) => "rename",
        };
        // Sized once for the common event (header fields plus its document).
        let doc_len = ev.after.as_ref().map_or(0, |a| a.as_bytes().len());
        let mut d = raw_with_capacity(256 + doc_len);
        d.append_ref("_id", &ResumeToken::new(ev.ts, TokenKind::Event).to_raw());
        d.append_ref("operationType", op);
        d.append_ref("clusterTime", ev.ts);
        d.append_ref("wallTime", ev.wall);
        if matches!(ev.kind, EventKind::Insert | EventKind::Replace) {
            append_doc(&mut d, "fullDocument", ev.after.as_ref());
        }
        let mut ns = RawDocumentBuf::new();
        ns.append_ref("db", ev.db.as_str());
        if let Some(c) = &ev.coll {
            ns.append_ref("coll", c.as_str());
        }
        d.append_ref("ns", &ns);
        if let EventKind::Rename(to_db, to_coll) = &ev.kind {
            let mut to = RawDocumentBuf::new();
            to.append_ref("db", to_db.as_str());
            to.append_ref("coll", to_coll.as_str());
            d.append("to", to);
        }
        if let Some(id) = &ev.id {
            let mut key = RawDocumentBuf::new();
            key.append(
                "_id",
                bson::RawBson::try_from(id.clone()).map_err(internal)?,
            );
            d.append_ref("documentKey", &key);
        }
        if let EventKind::Update(updated, removed) = &ev.kind {
            let mut desc = RawDocumentBuf::new();
            desc.append("updatedFields", encode(updated)?);
            let mut names = RawArrayBuf::new();
            for r in removed {
                names.push(r.as_str());
            }
            desc.append("removedFields", names);
            desc.append("truncatedArrays", RawArrayBuf::new());
            d.append("updateDescription", desc);
            match self.full_document {
                FullDocument::Default => {}
                FullDocument::UpdateLookup => {
                    let current = ev.id.as_ref().and_then(|id| {
                        let coll = store.coll(&ev.db, ev.coll.as_deref()?)?;
                        coll.docs.get(&Key(id.clone()))
                    });
                    let current = current.map(encode).transpose()?;
                    append_doc(&mut d, "fullDocument", current.as_ref());
                }
                FullDocument::WhenAvailable | FullDocument::Required => {
                    append_doc(&mut d, "fullDocument", ev.after.as_ref());
                }
            }
        }
        if self.before_change != BeforeChange::Off
            && matches!(
                ev.kind,
                EventKind::Update(..) | EventKind::Replace | EventKind::Delete
            )
        {
            append_doc(&mut d, "fullDocumentBeforeChange", ev.before.as_ref());
        }
        Ok(d)
    }

    fn apply_pipeline(&self, event: RawDocumentBuf) -> CmdResult<Option<RawDocumentBuf>> {
        if self.pipeline.is_empty() {
            return Ok(Some(event));
        }
        let event = Document::try_from(event.as_ref()).map_err(internal)?;
        let id = event.get("_id").cloned();
        let mut out = query::run_pipeline(vec![event], &self.pipeline)?;
        if out.is_empty() {
            return Ok(None);
        }
        let d = out.swap_remove(0);
        if d.get("_id") != id.as_ref() {
            return Err(CommandError::new(
                280,
                "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point. Only transformations that retain the unmodified _id field are allowed.",
            ));
        }
        encode(&d).map(Some)
    }
}

/// `doc` encoded; a document that cannot be encoded (a name with a NUL byte) is an
/// internal error, as it would be when MongoDB wrote it to its oplog.
fn encode(doc: &Document) -> CmdResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(doc).map_err(internal)
}

/// An empty document with room for `n` bytes.
fn raw_with_capacity(n: usize) -> RawDocumentBuf {
    let mut bytes = Vec::with_capacity(n);
    bytes.extend_from_slice(&[5, 0, 0, 0, 0]);
    RawDocumentBuf::from_bytes(bytes).expect("the empty document is valid BSON")
}

fn internal(e: impl std::fmt::Display) -> CommandError {
    CommandError::new(1, format!("cannot encode a change event: {e}"))
}

/// Appends `name: doc`, or `name: null` when there is no document.
fn append_doc(d: &mut RawDocumentBuf, name: &str, doc: Option<&RawDocumentBuf>) {
    match doc {
        Some(doc) => d.append_ref(name, doc),
        None => d.append(name, bson::RawBson::Null),
    }
}

fn is_internal_db(db: &str) -> bool {
    matches!(db, "admin" | "config" | "local")
}

fn history_lost() -> CommandError {
    CommandError::new(
        286,
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
    )
}

fn invalidate_event(ts: Timestamp, wall: bson::DateTime) -> CmdResult<RawDocumentBuf> {
    encode(&doc! {
        "_id": ResumeToken::new(ts, TokenKind::Invalidate).to_document(),
        "operationType": "invalidate",
        "clusterTime": ts,
        "wallTime": wall,
    })
}
