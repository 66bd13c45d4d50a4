//! Change streams: opening a `$changeStream` (scope, fullDocument options, resume
//! options), turning retained history into change event documents, running the
//! user's later stages over each event, and batching with postBatchResumeTokens.
//!
//! Events are rendered straight to BSON from the stored documents (one encode, no
//! document clone per event); only a stream with later stages decodes them again.

mod batch;
mod render;
mod split;

use std::collections::VecDeque;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};

use crate::error::{CmdResult, CommandError};
use crate::oplog::{ts_before, Event, EventKind, Pos};
use crate::query;
use crate::state::Inner;
use crate::token::{ResumeToken, TokenKind};
use batch::Pending;

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
    /// History is consumed through this position.
    after: Pos,
    /// Resumed right after an invalidating event: the next batch is the invalidate.
    pending_invalidate: Option<Timestamp>,
    /// An invalidate was returned; the cursor is finished.
    pub closed: bool,
    /// `showExpandedEvents`: DDL events, `collectionUUID`, `operationDescription`,
    /// `disambiguatedPaths`.
    expanded: bool,
    /// The pipeline ends with `$changeStreamSplitLargeEvent`.
    splits: bool,
    /// Resumed from fragment `n` (0-based) of the event at this position: its first
    /// `n + 1` fragments are not returned again.
    resume_fragment: Option<(Pos, u16)>,
    /// Rendered items that did not fit in the last batch (fragments of a split event, or
    /// an event over the batch's byte budget), returned first by the next poll.
    pending: VecDeque<Pending>,
    /// The last postBatchResumeToken handed out.
    last_pbrt: ResumeToken,
    /// When the user's stages are only `$project`s excluding top-level fields (what a
    /// client asks to drop large parts such as `updateDescription`): those names, so
    /// events skip the decode the general pipeline needs.
    top_level_exclusion: Option<Vec<String>>,
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
        let mut expanded = false;
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
                "showExpandedEvents" => expanded = v.as_bool().unwrap_or(false),
                "allowToRunOnConfigDB" | "allowToRunOnSystemNS" => {}
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
        let splits = split::validate(&stages)?;
        let mut stages = stages;
        if splits {
            stages.pop();
        }
        for st in &stages {
            let name = st.keys().next().map(String::as_str).unwrap_or("");
            if !ALLOWED_STAGES.contains(&name) {
                // A stage the server does not know at all is 40324, as in any pipeline;
                // a known one is refused in a change stream (20).
                if let Err(e) = query::run_pipeline(Vec::new(), std::slice::from_ref(st)) {
                    if e.code == 40324 {
                        return Err(e.into());
                    }
                }
                return Err(CommandError::new(
                    20,
                    format!("{name} is not permitted in a $changeStream pipeline"),
                ));
            }
        }
        if !stages.is_empty() {
            query::run_pipeline(Vec::new(), &stages)?;
        }
        let now = inner.oplog.now();
        let mut stream = ChangeStream {
            ns,
            scope,
            full_document,
            before_change,
            pipeline: stages,
            after: Pos::end_of(now),
            pending_invalidate: None,
            closed: false,
            expanded,
            splits,
            resume_fragment: None,
            pending: VecDeque::new(),
            last_pbrt: ResumeToken::new(now, TokenKind::HighWater),
            top_level_exclusion: None,
        };
        stream.top_level_exclusion = top_level_exclusion(&stream.pipeline);
        match resume {
            None => {}
            Some(("startAtOperationTime", v)) => {
                let Bson::Timestamp(t) = v else {
                    return Err(CommandError::type_mismatch(
                        "$changeStream.startAtOperationTime",
                        "timestamp",
                    ));
                };
                if inner.oplog.resume_lost(Pos { ts: *t, op: 0 }) {
                    return Err(history_lost());
                }
                stream.after = Pos::end_of(ts_before(*t));
                stream.last_pbrt = ResumeToken::after(stream.after);
            }
            Some((option, v)) => {
                let token = ResumeToken::parse(v)?;
                if token.kind == TokenKind::Invalidate && option == "resumeAfter" {
                    return Err(CommandError::new(
                        260,
                        "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
                    ));
                }
                if inner.oplog.resume_lost(token.pos()) {
                    return Err(history_lost());
                }
                stream.after = token.pos();
                stream.last_pbrt = token;
                if let Some(n) = token.fragment {
                    if !stream.splits {
                        return Err(CommandError::new(
                            280,
                            "Resuming from a split event requires the $changeStreamSplitLargeEvent stage as the last stage of the pipeline",
                        ));
                    }
                    // The event is read again and its fragments up to `n` swallowed.
                    stream.after = token.pos().before();
                    stream.resume_fragment = Some((token.pos(), n));
                }
                if token.kind == TokenKind::Event {
                    if let Some(ev) = inner.oplog.event_at(token.pos()) {
                        if stream.invalidated_by(ev) {
                            stream.pending_invalidate = Some(ev.ts);
                        }
                    }
                }
            }
        }
        Ok(stream)
    }

    fn sees(&self, ev: &Event) -> bool {
        if ev.kind.is_expanded() && !self.expanded {
            return false;
        }
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

    fn apply_pipeline(&self, event: RawDocumentBuf) -> CmdResult<Option<RawDocumentBuf>> {
        if self.pipeline.is_empty() {
            return Ok(Some(event));
        }
        if let Some(names) = &self.top_level_exclusion {
            return Ok(Some(without_fields(&event, names)?));
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

/// The field names when every stage is `{$project: {name: 0 | false, …}}` with plain
/// top-level names other than `_id`.
fn top_level_exclusion(stages: &[Document]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for st in stages {
        let Some(Bson::Document(spec)) = st.get("$project") else {
            return None;
        };
        for (name, v) in spec {
            let excluded = matches!(v, Bson::Int32(0) | Bson::Int64(0) | Bson::Boolean(false))
                || matches!(v, Bson::Double(f) if *f == 0.0);
            if !excluded || name == "_id" || name.contains('.') || name.starts_with('$') {
                return None;
            }
            names.push(name.clone());
        }
    }
    (!names.is_empty()).then_some(names)
}

/// `event` without the top-level fields `names`.
fn without_fields(event: &RawDocumentBuf, names: &[String]) -> CmdResult<RawDocumentBuf> {
    let mut out = raw_with_capacity(event.as_bytes().len());
    for elem in event {
        let (name, value) = elem.map_err(internal)?;
        if !names.iter().any(|n| n == name) {
            out.append(name, value.to_raw_bson());
        }
    }
    Ok(out)
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
