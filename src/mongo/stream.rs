//! A MongoDB change stream as a core [`ChangeStream`], of one collection or of several
//! pairs' collections at once (see [`Watched`]): raw change events become core
//! [`ChangeEvent`](crate::core::types::ChangeEvent)s tagged with their pair, idle
//! `getMore`s become [`StreamItem::Progress`] carrying the `postBatchResumeToken`, and
//! the end of a watched namespace (drop, rename, invalidate) becomes an `Invalidated`
//! error. The driver resumes by itself after resumable errors.
//!
//! Events over 16 MiB never stall the stream (manual: "Change Events", "Large change
//! events", "$changeStreamSplitLargeEvent"): the server is asked only for the
//! post-image (`updateDescription`, as large as the update, is projected away), events
//! it still splits are reassembled, and when it fails a batch with BSONObjectTooLarge
//! the stream reopens without documents and fetches each changed document by `_id`
//! until it has caught up.

mod event;
mod fragments;
mod watched;

use std::time::Duration;

use async_trait::async_trait;
use bson::{doc, Bson, Document, RawDocumentBuf};
pub use event::{convert, Converted, Fetch};
use mongodb::change_stream::event::ResumeToken as DriverToken;
use mongodb::options::FullDocumentType;
use mongodb::Collection;
use tokio::time::Instant;
pub use watched::Watched;

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::ChangeStream;
use crate::core::types::{Key, ResumeToken, Side, StreamItem};
use crate::mongo::error::{error_code, invalidated, map_error};
use fragments::{Fragments, Piece};

/// How long one `getMore` waits for events on the server.
pub const MAX_AWAIT: Duration = Duration::from_millis(500);
/// Events per batch.
pub const BATCH_SIZE: u32 = 1000;
/// Minimum spacing of [`StreamItem::Progress`] items.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// An empty `getMore` that came back faster than this did not wait on the server; the
/// stream pauses this long before the next one instead of spinning.
const MIN_POLL: Duration = Duration::from_millis(100);
/// 10334 BSONObjectTooLarge: an event the server cannot return.
const BSON_OBJECT_TOO_LARGE: i32 = 10334;
/// 40324: a pipeline stage the server does not know (`$changeStreamSplitLargeEvent`
/// before MongoDB 6.0.9).
const UNRECOGNIZED_STAGE: i32 = 40324;
/// Events a fetch-by-key (lean) stream hands out at most before the stream goes back to
/// post-images, if it has not caught up before.
const LEAN_EVENTS: u32 = BATCH_SIZE;

/// The driver change stream of raw event documents (left encoded: [`convert`] decodes
/// only the parts it keeps).
type RawStream = mongodb::change_stream::ChangeStream<RawDocumentBuf>;

/// What the stream asks the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Post-images (`updateLookup`): the usual mode.
    Full,
    /// No documents at all: each changed document is fetched by `_id`. Used after the
    /// server failed a batch with BSONObjectTooLarge, until the stream catches up.
    Lean,
}

/// Core token → driver token.
pub fn to_driver_token(token: &ResumeToken) -> Result<DriverToken, StoreError> {
    bson::from_bson(Bson::Document(token.0.clone())).map_err(|e| {
        StoreError::new(
            StoreErrorKind::HistoryLost,
            format!("unusable resume token {}: {e}", token.0),
        )
    })
}

/// Driver token → core token (a token is always a document, `{_data: "…"}`).
pub fn from_driver_token(token: &DriverToken) -> Option<ResumeToken> {
    match bson::to_bson(token).ok()? {
        Bson::Document(d) => Some(ResumeToken(d)),
        _ => None,
    }
}

/// The stages after `$changeStream`: the namespaces of a shared stream (`ns_match`),
/// only the fields the sync reads, and the split of events still over 16 MiB where the
/// server has the stage.
fn pipeline(ns_match: Option<Document>, mode: Mode, split: bool) -> Vec<Document> {
    let mut stages: Vec<Document> = ns_match.into_iter().collect();
    stages.push(match mode {
        Mode::Full => doc! {"$project": {"updateDescription": 0}},
        Mode::Lean => doc! {"$project": {"updateDescription": 0, "fullDocument": 0}},
    });
    // Kept in lean mode too: a stream resumed from a fragment's token needs the stage.
    if split {
        stages.push(doc! {"$changeStreamSplitLargeEvent": {}});
    }
    stages
}

/// Opens the driver change stream on `watched`.
async fn watch(
    watched: &Watched,
    resume_after: Option<DriverToken>,
    mode: Mode,
    split: bool,
) -> Result<RawStream, mongodb::error::Error> {
    let mut watch = watched
        .watch()
        .pipeline(pipeline(watched.ns_match(), mode, split))
        .max_await_time(MAX_AWAIT)
        .batch_size(BATCH_SIZE)
        .resume_after(resume_after);
    if mode == Mode::Full {
        watch = watch.full_document(FullDocumentType::UpdateLookup);
    }
    Ok(watch.await?.with_type::<RawDocumentBuf>())
}

/// Opens the driver stream in `mode`, or, when a post-image stream's first batch is
/// already refused with BSONObjectTooLarge (the next event is too large), a lean one:
/// the stream it opened and its mode.
async fn watch_past_large(
    watched: &Watched,
    resume_after: Option<DriverToken>,
    mode: Mode,
    split: bool,
) -> Result<(RawStream, Mode), mongodb::error::Error> {
    match watch(watched, resume_after.clone(), mode, split).await {
        Err(e) if mode == Mode::Full && error_code(&e) == Some(BSON_OBJECT_TOO_LARGE) => {
            tracing::warn!(error = %e, "change event over 16 MiB; fetching documents by key until caught up");
            Ok((
                watch(watched, resume_after, Mode::Lean, split).await?,
                Mode::Lean,
            ))
        }
        other => Ok((other?, mode)),
    }
}

/// Opens the change stream on `watched` (post-images of updates), splitting events
/// over 16 MiB where the server can (6.0.9+; an older one refuses the stage with 40324).
pub async fn open(
    watched: Watched,
    resume_after: Option<DriverToken>,
    side: Side,
) -> Result<MongoChangeStream, mongodb::error::Error> {
    let mut split = true;
    let opened = match watch_past_large(&watched, resume_after.clone(), Mode::Full, true).await {
        Err(e) if error_code(&e) == Some(UNRECOGNIZED_STAGE) => {
            split = false;
            watch_past_large(&watched, resume_after.clone(), Mode::Full, false).await?
        }
        other => other?,
    };
    let (inner, mode) = opened;
    Ok(MongoChangeStream {
        resume_at: resume_after.or_else(|| inner.resume_token()),
        inner,
        ns: watched.describe(),
        watched,
        side,
        split,
        mode,
        lean_left: LEAN_EVENTS,
        fragments: Fragments::default(),
        last_progress: None,
        ended: None,
        own: None,
    })
}

/// [`open`] for the core: from a core token, marking the events of `own`'s
/// transactions, errors mapped.
pub async fn open_for_core(
    watched: Watched,
    resume_after: Option<&ResumeToken>,
    side: Side,
    own: Option<std::sync::Arc<crate::mongo::own::OwnSessions>>,
) -> Result<Box<dyn ChangeStream>, StoreError> {
    let token = resume_after.map(to_driver_token).transpose()?;
    let what = format!("watch {}", watched.describe());
    let opened = open(watched, token, side)
        .await
        .map_err(|e| map_error(&e, &what, &[]))?;
    Ok(Box::new(opened.with_own_sessions(own)))
}

/// An open change stream of one collection, or of several pairs' collections.
pub struct MongoChangeStream {
    /// The driver stream.
    inner: RawStream,
    /// The watched collections: reopening, an event's pair, fetching documents by `_id`.
    watched: Watched,
    /// Side stamped on events.
    side: Side,
    /// `db.coll` (or the shared stream's namespaces), for messages.
    ns: String,
    /// The server has `$changeStreamSplitLargeEvent`.
    split: bool,
    /// What the server is asked for.
    mode: Mode,
    /// Events a lean stream may still hand out before going back to [`Mode::Full`].
    lean_left: u32,
    /// Fragments of a split event read so far.
    fragments: Fragments,
    /// Where a reopened stream resumes: the token after the last whole event (or idle
    /// batch) this stream read, never one inside a split event.
    resume_at: Option<DriverToken>,
    /// When the last `Progress` was handed out; `None` until the first one, which is
    /// handed out at once (the open's `postBatchResumeToken`) so a fresh stream can be
    /// checkpointed before any event arrives.
    last_progress: Option<Instant>,
    /// Set once the stream has ended for good; returned by every later `next`.
    ended: Option<StoreError>,
    /// The daemon's transaction sessions: events of their transactions are its own.
    own: Option<std::sync::Arc<crate::mongo::own::OwnSessions>>,
}

impl MongoChangeStream {
    /// The same stream, marking the events of `own`'s transactions as the engine's.
    pub fn with_own_sessions(
        mut self,
        own: Option<std::sync::Arc<crate::mongo::own::OwnSessions>>,
    ) -> Self {
        self.own = own;
        self
    }
}

/// The current version of the document `key` in `coll` (`None`: deleted).
async fn fetch(
    coll: &Collection<Document>,
    key: &Key,
    ns: &str,
) -> Result<Option<Document>, StoreError> {
    coll.find_one(doc! {"_id": key.as_bson().clone()})
        .await
        .map_err(|e| map_error(&e, &format!("fetch a changed document of {ns}"), &[]))
}

impl MongoChangeStream {
    /// Ends the stream with `err` (kept for later calls) and returns it.
    fn end(&mut self, err: StoreError) -> StoreError {
        self.ended = Some(err.clone());
        err
    }

    /// Reopens the driver stream in `mode` from [`Self::resume_at`] (lean instead when
    /// the next event is too large for post-images).
    async fn reopen(&mut self, mode: Mode) -> Result<(), StoreError> {
        let (inner, mode) =
            watch_past_large(&self.watched, self.resume_at.clone(), mode, self.split)
                .await
                .map_err(|e| map_error(&e, &format!("reopen change stream on {}", self.ns), &[]))?;
        self.inner = inner;
        self.mode = mode;
        self.lean_left = LEAN_EVENTS;
        self.fragments = Fragments::default();
        Ok(())
    }

    /// The driver's resume token, as the core's.
    fn driver_progress(&self) -> Option<ResumeToken> {
        self.inner
            .resume_token()
            .as_ref()
            .and_then(from_driver_token)
    }

    /// Handles one raw event; `None` when there is nothing to hand out.
    async fn on_event(&mut self, raw: RawDocumentBuf) -> Result<Option<StreamItem>, StoreError> {
        let event = match self.fragments.push(raw) {
            Piece::Whole(event) => event,
            Piece::Partial => return Ok(None),
            // The missing fragments cannot be had from this stream any more: read the
            // event again from the last whole one.
            Piece::Broken => {
                tracing::warn!(ns = %self.ns, "change stream resumed inside a split event; reopening from the last whole event");
                self.reopen(self.mode).await?;
                return Ok(None);
            }
        };
        let converted = convert(&event, self.side);
        if let Some(token) = event
            .get_document("_id")
            .ok()
            .and_then(|t| Document::try_from(t).ok())
        {
            self.resume_at = bson::from_document(token).ok();
        }
        if self.mode == Mode::Lean {
            self.lean_left = self.lean_left.saturating_sub(1);
        }
        let pair = self.watched.pair_of(&event);
        match converted {
            // Another namespace's change (the shared stream's first stage keeps them out).
            Ok(Converted::Event(_) | Converted::Fetch(_)) if pair.is_none() => Ok(None),
            Ok(Converted::Event(mut e)) => {
                e.pair = pair.unwrap_or_default();
                e.own = self
                    .own
                    .as_ref()
                    .is_some_and(|o| o.is_own(event.get_document("lsid").ok()));
                Ok(Some(StreamItem::Event(*e)))
            }
            Ok(Converted::Skip) => Ok(None),
            Ok(Converted::Fetch(f)) => {
                let pair = pair.unwrap_or_default();
                let Some(coll) = self.watched.collection_of(pair) else {
                    return Ok(None);
                };
                let current = fetch(coll, &f.key, &coll.namespace().to_string()).await?;
                Ok(f.into_event(self.side, current).map(|mut e| {
                    e.pair = pair;
                    StreamItem::Event(e)
                }))
            }
            Ok(Converted::End(why)) => {
                // Named by the collection it ended when a shared stream can tell.
                let on = match pair.and_then(|p| self.watched.collection_of(p)) {
                    Some(coll) => coll.namespace().to_string(),
                    None => self.ns.clone(),
                };
                Err(self.end(invalidated(&format!("{why} on {on}"))))
            }
            Err(msg) => Err(self.end(StoreError::new(StoreErrorKind::Fatal, msg))),
        }
    }
}

#[async_trait]
impl ChangeStream for MongoChangeStream {
    /// Cancel-safety: dropping this future mid-`getMore` leaves the driver cursor in an
    /// unknown state; the caller then drops the whole stream and reopens from its
    /// checkpoint, which is always safe.
    async fn next(&mut self) -> Result<StreamItem, StoreError> {
        loop {
            if let Some(err) = &self.ended {
                return Err(err.clone());
            }
            if self.last_progress.is_none() {
                self.last_progress = Some(Instant::now());
                if let Some(token) = self.driver_progress() {
                    return Ok(StreamItem::Progress(token));
                }
            }
            if self.mode == Mode::Lean && self.lean_left == 0 {
                self.reopen(Mode::Full).await?;
            }
            let started = Instant::now();
            match self.inner.next_if_any().await {
                Ok(Some(raw)) => {
                    if let Some(item) = self.on_event(raw).await? {
                        return Ok(item);
                    }
                }
                Ok(None) if !self.inner.is_alive() => {
                    let err = invalidated(&format!("change stream on {} was closed", self.ns));
                    return Err(self.end(err));
                }
                // Half a split event read: its fragments' tokens are no place to resume.
                Ok(None) if self.fragments.is_open() => {}
                Ok(None) => {
                    self.resume_at = self.inner.resume_token().or(self.resume_at.take());
                    if self.mode == Mode::Lean {
                        // Caught up past the event that was too large.
                        tracing::info!(ns = %self.ns, "change stream caught up; back to post-images");
                        self.reopen(Mode::Full).await?;
                        continue;
                    }
                    if self
                        .last_progress
                        .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL)
                    {
                        if let Some(token) = self.driver_progress() {
                            self.last_progress = Some(Instant::now());
                            return Ok(StreamItem::Progress(token));
                        }
                    }
                    if started.elapsed() < MIN_POLL {
                        tokio::time::sleep(MIN_POLL).await;
                    }
                }
                Err(e)
                    if error_code(&e) == Some(BSON_OBJECT_TOO_LARGE) && self.mode == Mode::Full =>
                {
                    // The server cannot return an event (and would fail the same way on
                    // every resume): read past it without documents, fetching each by key.
                    tracing::warn!(ns = %self.ns, error = %e, "change event over 16 MiB; fetching documents by key until caught up");
                    self.reopen(Mode::Lean).await?;
                }
                Err(e) => {
                    let err = map_error(&e, &format!("change stream on {}", self.ns), &[]);
                    if err.kind == StoreErrorKind::Transient {
                        return Err(err);
                    }
                    return Err(self.end(err));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn the_stream_asks_only_for_what_the_sync_reads() {
        assert_eq!(
            pipeline(None, Mode::Full, true),
            vec![
                doc! {"$project": {"updateDescription": 0}},
                doc! {"$changeStreamSplitLargeEvent": {}},
            ]
        );
        assert_eq!(
            pipeline(None, Mode::Lean, false),
            vec![doc! {"$project": {"updateDescription": 0, "fullDocument": 0}}]
        );
    }

    #[test]
    fn resume_token_round_trips_through_the_driver_type() {
        let core = ResumeToken(doc! {"_data": "8263A1B2C3000000012B0229296E04"});
        let driver = to_driver_token(&core).unwrap();
        assert_eq!(from_driver_token(&driver), Some(core));
    }
}
