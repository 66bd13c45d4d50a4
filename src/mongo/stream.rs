//! A MongoDB change stream as a core [`ChangeStream`]: raw change events become
//! [`ChangeEvent`]s, idle `getMore`s become [`StreamItem::Progress`] carrying the
//! `postBatchResumeToken`, and the end of the namespace (drop, rename, invalidate)
//! becomes an `Invalidated` error. The driver resumes by itself after resumable errors.

use std::time::Duration;

use async_trait::async_trait;
use bson::{Bson, DateTime, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::change_stream::event::ResumeToken as DriverToken;
use mongodb::options::FullDocumentType;
use mongodb::Collection;
use tokio::time::Instant;

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::ChangeStream;
use crate::core::types::{ChangeEvent, ChangeKind, Key, ResumeToken, Side, StreamItem};
use crate::mongo::error::{invalidated, map_error};

/// How long one `getMore` waits for events on the server.
pub const MAX_AWAIT: Duration = Duration::from_millis(500);
/// Events per batch.
pub const BATCH_SIZE: u32 = 1000;
/// Minimum spacing of [`StreamItem::Progress`] items.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// An empty `getMore` that came back faster than this did not wait on the server; the
/// stream pauses this long before the next one instead of spinning.
const MIN_POLL: Duration = Duration::from_millis(100);

/// The driver change stream of raw event documents (left encoded: [`convert`] decodes
/// only the parts it keeps).
type RawStream = mongodb::change_stream::ChangeStream<RawDocumentBuf>;

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

/// Opens the driver change stream on `coll` with post-images of updates.
pub async fn open(
    coll: &Collection<Document>,
    resume_after: Option<DriverToken>,
) -> Result<RawStream, mongodb::error::Error> {
    let stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .max_await_time(MAX_AWAIT)
        .batch_size(BATCH_SIZE)
        .resume_after(resume_after)
        .await?;
    Ok(stream.with_type::<RawDocumentBuf>())
}

/// An open change stream of one collection.
pub struct MongoChangeStream {
    /// The driver stream.
    inner: RawStream,
    /// Side stamped on events.
    side: Side,
    /// `db.coll`, for messages.
    ns: String,
    /// When the last `Progress` was handed out; `None` until the first one, which is
    /// handed out at once (the open's `postBatchResumeToken`) so a fresh stream can be
    /// checkpointed before any event arrives.
    last_progress: Option<Instant>,
    /// Set once the stream has ended for good; returned by every later `next`.
    ended: Option<StoreError>,
}

impl MongoChangeStream {
    /// Wraps a driver stream watching `ns` on `side`.
    pub fn new(inner: RawStream, side: Side, ns: String) -> Self {
        MongoChangeStream {
            inner,
            side,
            ns,
            last_progress: None,
            ended: None,
        }
    }

    /// Ends the stream with `err` (kept for later calls) and returns it.
    fn end(&mut self, err: StoreError) -> StoreError {
        self.ended = Some(err.clone());
        err
    }
}

/// What one raw change event means for the core.
#[derive(Debug, PartialEq)]
pub enum Converted {
    /// A change to hand to the engine.
    Event(Box<ChangeEvent>),
    /// Nothing to report (an update whose document is already gone: its delete follows;
    /// or an event type the sync does not care about).
    Skip,
    /// The namespace is gone: the stream is over.
    End(String),
}

/// Interprets one raw change event of a stream on `side`.
pub fn convert(event: &RawDocument, side: Side) -> Result<Converted, String> {
    let show = || match Document::try_from(event) {
        Ok(d) => d.to_string(),
        Err(e) => format!("<undecodable event: {e}>"),
    };
    let op = event
        .get_str("operationType")
        .map_err(|_| format!("change event without operationType: {}", show()))?;
    let kind = match op {
        "insert" | "replace" | "update" => match event.get("fullDocument") {
            Ok(Some(RawBsonRef::Document(d))) => ChangeKind::Upsert(
                Document::try_from(d).map_err(|e| format!("{op} event: fullDocument: {e}"))?,
            ),
            _ if op == "update" => return Ok(Converted::Skip),
            _ => return Err(format!("{op} event without fullDocument: {}", show())),
        },
        "delete" => ChangeKind::Delete,
        "drop" | "rename" | "dropDatabase" | "invalidate" => {
            return Ok(Converted::End(format!(
                "change stream ended by a {op} event"
            )))
        }
        _ => return Ok(Converted::Skip),
    };
    let token = event
        .get_document("_id")
        .ok()
        .and_then(|t| Document::try_from(t).ok())
        .ok_or_else(|| format!("change event without resume token: {}", show()))?;
    let key = event
        .get_document("documentKey")
        .ok()
        .and_then(|k| k.get("_id").ok().flatten())
        .and_then(|id| Bson::try_from(id).ok())
        .ok_or_else(|| format!("{op} event without documentKey._id: {}", show()))?;
    let server_time = match (event.get("wallTime"), event.get("clusterTime")) {
        (Ok(Some(RawBsonRef::DateTime(t))), _) => t,
        (_, Ok(Some(RawBsonRef::Timestamp(ts)))) => {
            DateTime::from_millis(i64::from(ts.time) * 1000)
        }
        _ => {
            return Err(format!(
                "{op} event without wallTime or clusterTime: {}",
                show()
            ))
        }
    };
    Ok(Converted::Event(Box::new(ChangeEvent {
        side,
        key: Key(key),
        kind,
        token: ResumeToken(token),
        server_time,
    })))
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
                if let Some(token) = self
                    .inner
                    .resume_token()
                    .as_ref()
                    .and_then(from_driver_token)
                {
                    return Ok(StreamItem::Progress(token));
                }
            }
            let started = Instant::now();
            match self.inner.next_if_any().await {
                Ok(Some(event)) => match convert(&event, self.side) {
                    Ok(Converted::Event(e)) => return Ok(StreamItem::Event(*e)),
                    Ok(Converted::Skip) => continue,
                    Ok(Converted::End(why)) => {
                        let err = invalidated(&format!("{} on {}", why, self.ns));
                        return Err(self.end(err));
                    }
                    Err(msg) => {
                        let err = StoreError::new(StoreErrorKind::Fatal, msg);
                        return Err(self.end(err));
                    }
                },
                Ok(None) if !self.inner.is_alive() => {
                    let err = invalidated(&format!("change stream on {} was closed", self.ns));
                    return Err(self.end(err));
                }
                Ok(None) => {
                    if self
                        .last_progress
                        .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL)
                    {
                        if let Some(token) = self
                            .inner
                            .resume_token()
                            .as_ref()
                            .and_then(from_driver_token)
                        {
                            self.last_progress = Some(Instant::now());
                            return Ok(StreamItem::Progress(token));
                        }
                    }
                    if started.elapsed() < MIN_POLL {
                        tokio::time::sleep(MIN_POLL).await;
                    }
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
    use bson::{doc, Timestamp};

    use super::*;

    /// `convert` of a document, encoded as the driver hands it over.
    fn convert(event: &Document, side: Side) -> Result<Converted, String> {
        super::convert(&RawDocumentBuf::from_document(event).unwrap(), side)
    }

    fn event(op: &str) -> Document {
        doc! {
            "_id": {"_data": "82AB"},
            "operationType": op,
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 1 },
            "wallTime": DateTime::from_millis(1_700_000_000_123),
            "ns": {"db": "d", "coll": "c"},
            "documentKey": {"_id": 7},
        }
    }

    #[test]
    fn insert_becomes_upsert_with_wall_time_and_token() {
        let mut e = event("insert");
        e.insert("fullDocument", doc! {"_id": 7, "x": 1});
        let Converted::Event(ev) = convert(&e, Side::Cloud).unwrap() else {
            panic!("expected an event")
        };
        assert_eq!(ev.side, Side::Cloud);
        assert_eq!(ev.key.as_bson(), &Bson::Int32(7));
        assert_eq!(ev.kind, ChangeKind::Upsert(doc! {"_id": 7, "x": 1}));
        assert_eq!(ev.token, ResumeToken(doc! {"_data": "82AB"}));
        assert_eq!(ev.server_time, DateTime::from_millis(1_700_000_000_123));
    }

    #[test]
    fn update_of_a_deleted_document_is_skipped() {
        let mut e = event("update");
        e.insert("fullDocument", Bson::Null);
        assert_eq!(convert(&e, Side::Local).unwrap(), Converted::Skip);
        assert_eq!(
            convert(&event("update"), Side::Local).unwrap(),
            Converted::Skip
        );
    }

    #[test]
    fn delete_uses_cluster_time_when_wall_time_is_missing() {
        let mut e = event("delete");
        e.remove("wallTime");
        let Converted::Event(ev) = convert(&e, Side::Local).unwrap() else {
            panic!("expected an event")
        };
        assert_eq!(ev.kind, ChangeKind::Delete);
        assert_eq!(ev.server_time, DateTime::from_millis(1_700_000_000_000));
    }

    #[test]
    fn namespace_events_end_the_stream() {
        for op in ["drop", "rename", "dropDatabase", "invalidate"] {
            assert!(matches!(
                convert(&event(op), Side::Local).unwrap(),
                Converted::End(_)
            ));
        }
        assert_eq!(
            convert(&event("createIndexes"), Side::Local).unwrap(),
            Converted::Skip
        );
    }

    #[test]
    fn resume_token_round_trips_through_the_driver_type() {
        let core = ResumeToken(doc! {"_data": "8263A1B2C3000000012B0229296E04"});
        let driver = to_driver_token(&core).unwrap();
        assert_eq!(from_driver_token(&driver), Some(core));
    }
}
