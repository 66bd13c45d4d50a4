//! Rendering one stored change as the change event document MongoDB sends, straight to
//! BSON: the fields of its operation type, the options' documents (post-images and
//! pre-images only where the collection recorded them), and under
//! `showExpandedEvents` `collectionUUID`, `operationDescription` and
//! `disambiguatedPaths`.

use bson::{RawArrayBuf, RawDocumentBuf};

use super::{
    append_doc, encode, internal, raw_with_capacity, BeforeChange, ChangeStream, FullDocument,
};
use crate::error::{CmdResult, CommandError};
use crate::oplog::{Event, EventKind};
use crate::store::{Key, Store};
use crate::token::ResumeToken;

/// 47 NoMatchingDocument: an image the stream requires was not recorded.
fn image_missing(which: &str, ev: &Event) -> CommandError {
    CommandError::new(
        47,
        format!(
            "Change stream was configured to require a {which} for all update, delete and replace events, but the {which} was not found for event at {}",
            ev.ts
        ),
    )
}

impl ChangeStream {
    /// The change event of `ev`, encoded (fields in MongoDB's order).
    pub(super) fn render(&self, ev: &Event, store: &Store) -> CmdResult<RawDocumentBuf> {
        let op = match ev.kind {
            EventKind::Insert => "insert",
            EventKind::Update(..) => "update",
            EventKind::Replace => "replace",
            EventKind::Delete => "delete",
            EventKind::Drop => "drop",
            EventKind::DropDatabase => "dropDatabase",
            EventKind::Rename(..) => "rename",
            EventKind::Create => "create",
            EventKind::CreateIndexes => "createIndexes",
            EventKind::DropIndexes => "dropIndexes",
            EventKind::Modify => "modify",
        };
        // Sized once for the common event (header fields plus its document).
        let doc_len = ev.after.as_ref().map_or(0, |a| a.as_bytes().len());
        let mut d = raw_with_capacity(256 + doc_len);
        d.append_ref("_id", &ResumeToken::event(ev.pos()).to_raw());
        d.append_ref("operationType", op);
        d.append_ref("clusterTime", ev.ts);
        d.append_ref("wallTime", ev.wall);
        if let (true, Some(uuid)) = (self.expanded, &ev.uuid) {
            d.append("collectionUUID", bson::RawBson::Binary(uuid.clone()));
        }
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
        if let (true, Some(desc)) = (self.expanded, &ev.description) {
            d.append("operationDescription", encode(desc)?);
        }
        if let Some(id) = &ev.id {
            let mut key = RawDocumentBuf::new();
            key.append(
                "_id",
                bson::RawBson::try_from(id.clone()).map_err(internal)?,
            );
            d.append_ref("documentKey", &key);
        }
        // Only the events of a multi-document transaction name it.
        if let Some(txn) = &ev.txn {
            d.append("lsid", encode(&txn.lsid)?);
            d.append("txnNumber", txn.txn_number);
        }
        if let EventKind::Update(desc) = &ev.kind {
            let mut out = RawDocumentBuf::new();
            out.append("updatedFields", encode(&desc.updated)?);
            let mut names = RawArrayBuf::new();
            for r in &desc.removed {
                names.push(r.as_str());
            }
            out.append("removedFields", names);
            let mut truncated = RawArrayBuf::new();
            for (field, size) in &desc.truncated {
                let mut t = RawDocumentBuf::new();
                t.append("field", field.as_str());
                t.append("newSize", *size);
                truncated.push(t);
            }
            out.append("truncatedArrays", truncated);
            if self.expanded {
                out.append("disambiguatedPaths", encode(&desc.disambiguated)?);
            }
            d.append("updateDescription", out);
            self.append_post_image(&mut d, ev, store)?;
        }
        if self.before_change != BeforeChange::Off
            && matches!(
                ev.kind,
                EventKind::Update(..) | EventKind::Replace | EventKind::Delete
            )
        {
            let before = ev.before.as_ref().filter(|_| ev.images);
            if before.is_none() && self.before_change == BeforeChange::Required {
                return Err(image_missing("pre-image", ev));
            }
            append_doc(&mut d, "fullDocumentBeforeChange", before);
        }
        Ok(d)
    }

    /// `fullDocument` of an update event.
    fn append_post_image(
        &self,
        d: &mut RawDocumentBuf,
        ev: &Event,
        store: &Store,
    ) -> CmdResult<()> {
        match self.full_document {
            FullDocument::Default => {}
            FullDocument::UpdateLookup => {
                let current = ev.id.as_ref().and_then(|id| {
                    let coll = store.coll(&ev.db, ev.coll.as_deref()?)?;
                    coll.docs.get(&Key(id.clone()))
                });
                let current = current.map(encode).transpose()?;
                append_doc(d, "fullDocument", current.as_ref());
            }
            FullDocument::WhenAvailable | FullDocument::Required => {
                let after = ev.after.as_ref().filter(|_| ev.images);
                if after.is_none() && self.full_document == FullDocument::Required {
                    return Err(image_missing("post-image", ev));
                }
                append_doc(d, "fullDocument", after);
            }
        }
        Ok(())
    }
}
