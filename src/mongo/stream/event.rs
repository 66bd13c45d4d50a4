//! What one raw change event means for the core ([`convert`]): an upsert with its
//! post-image, a delete, a change whose document must be fetched by `_id`, nothing, or
//! the end of the watched namespace. Decodes only the fields the sync reads.

use bson::{Bson, DateTime, Document, RawBsonRef, RawDocument};

use crate::core::types::{ChangeEvent, ChangeKind, Key, ResumeToken, Side};

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
    /// An insert, replace or update that came without its document (a lean stream):
    /// the document is fetched by `_id`.
    Fetch(Box<Fetch>),
}

/// A change whose document must be fetched by `_id`.
#[derive(Debug, PartialEq)]
pub struct Fetch {
    /// `_id` of the changed document.
    pub key: Key,
    /// Token to resume after the event.
    pub token: ResumeToken,
    /// Server time of the change.
    pub server_time: DateTime,
}

impl Fetch {
    /// The change as the core sees it once the document is known: an upsert of the
    /// document as it is now (what `updateLookup` gives too), or nothing when it is gone
    /// (its delete follows in the stream).
    pub fn into_event(self, side: Side, current: Option<Document>) -> Option<ChangeEvent> {
        Some(ChangeEvent {
            side,
            key: self.key,
            kind: ChangeKind::Upsert(current?),
            token: self.token,
            server_time: self.server_time,
            own: false,
            pair: 0,
        })
    }
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
    // `None`: the document is to be fetched.
    let kind = match op {
        "insert" | "replace" | "update" => match event.get("fullDocument") {
            Ok(Some(RawBsonRef::Document(d))) => Some(ChangeKind::Upsert(
                Document::try_from(d).map_err(|e| format!("{op} event: fullDocument: {e}"))?,
            )),
            Ok(None) => None,
            _ if op == "update" => return Ok(Converted::Skip),
            _ => return Err(format!("{op} event without fullDocument: {}", show())),
        },
        "delete" => Some(ChangeKind::Delete),
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
    let (key, token) = (Key(key), ResumeToken(token));
    Ok(match kind {
        Some(kind) => Converted::Event(Box::new(ChangeEvent {
            side,
            key,
            kind,
            token,
            server_time,
            own: false,
            pair: 0,
        })),
        None => Converted::Fetch(Box::new(Fetch {
            key,
            token,
            server_time,
        })),
    })
}

#[cfg(test)]
mod tests {
    use bson::{doc, RawDocumentBuf, Timestamp};

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
    }

    #[test]
    fn a_change_without_its_document_is_fetched_by_key() {
        for op in ["insert", "replace", "update"] {
            let Converted::Fetch(f) = convert(&event(op), Side::Local).unwrap() else {
                panic!("{op} without fullDocument should be fetched")
            };
            assert_eq!(f.key.as_bson(), &Bson::Int32(7));
            assert_eq!(f.token, ResumeToken(doc! {"_data": "82AB"}));
            let e = f.into_event(Side::Local, Some(doc! {"_id": 7, "v": 1}));
            assert_eq!(e.unwrap().kind, ChangeKind::Upsert(doc! {"_id": 7, "v": 1}));
        }
        let Converted::Fetch(f) = convert(&event("insert"), Side::Local).unwrap() else {
            panic!("expected a fetch")
        };
        assert_eq!(
            f.into_event(Side::Local, None),
            None,
            "a gone document: its delete follows"
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
}
