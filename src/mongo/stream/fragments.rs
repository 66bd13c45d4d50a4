//! Reassembles the fragments `$changeStreamSplitLargeEvent` cuts an event over 16 MiB
//! into (`{_id, splitEvent: {fragment, of}, …some top-level fields}`, in order, each
//! with its own resume token) back into one event carrying the last fragment's token,
//! which resumes after the whole event.

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

/// What one raw event from the driver amounts to.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// A whole event: one that was not split, or the last fragment's completion.
    Whole(RawDocumentBuf),
    /// A fragment of an event not yet complete.
    Partial,
    /// A fragment out of sequence: the fragments before it cannot be had from this
    /// stream any more.
    Broken,
}

/// Fragments read so far of one split event.
#[derive(Debug, Default)]
pub struct Fragments {
    /// The event being rebuilt (fields of the fragments so far, without `_id` and
    /// `splitEvent`) and the next fragment number expected; `None` between events.
    open: Option<(RawDocumentBuf, i32)>,
}

/// `splitEvent: {fragment, of}` of a raw event, if it is a fragment.
pub fn split_info(event: &RawDocument) -> Option<(i32, i32)> {
    let split = event.get_document("splitEvent").ok()?;
    Some((split.get_i32("fragment").ok()?, split.get_i32("of").ok()?))
}

impl Fragments {
    /// Whether an event is half read (its resume point is not a whole event).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Takes the next raw event from the stream.
    pub fn push(&mut self, event: RawDocumentBuf) -> Piece {
        let Some((n, of)) = split_info(&event) else {
            // A whole event drops any half-read one (cannot happen in a well-formed
            // stream: fragments of one event are consecutive).
            self.open = None;
            return Piece::Whole(event);
        };
        let mut rebuilt = match self.open.take() {
            None if n == 1 => RawDocumentBuf::new(),
            Some((doc, next)) if next == n => doc,
            _ => return Piece::Broken,
        };
        append_fields(&mut rebuilt, &event, false);
        if n < of {
            self.open = Some((rebuilt, n + 1));
            return Piece::Partial;
        }
        // The whole event resumes from its last fragment's token.
        let mut whole = RawDocumentBuf::new();
        if let Ok(Some(id)) = event.get("_id") {
            whole.append("_id", id.to_raw_bson());
        }
        append_fields(&mut whole, &rebuilt, true);
        Piece::Whole(whole)
    }
}

/// Appends `from`'s fields to `to`, except `splitEvent` and (unless `with_id`) `_id`.
fn append_fields(to: &mut RawDocumentBuf, from: &RawDocument, with_id: bool) {
    for (name, value) in from.iter().flatten() {
        if name == "splitEvent" || (name == "_id" && !with_id) {
            continue;
        }
        let value: RawBsonRef<'_> = value;
        to.append(name, value.to_raw_bson());
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, Document};

    use super::*;

    fn raw(d: Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&d).unwrap()
    }

    fn fragment(n: i32, of: i32, fields: Document) -> RawDocumentBuf {
        let mut d = doc! {"_id": {"_data": format!("82AB{n:04X}")}, "splitEvent": {"fragment": n, "of": of}};
        d.extend(fields);
        raw(d)
    }

    #[test]
    fn fragments_rebuild_the_event_with_the_last_token() {
        let mut f = Fragments::default();
        let first = fragment(
            1,
            2,
            doc! {"operationType": "update", "documentKey": {"_id": 1}},
        );
        assert_eq!(f.push(first), Piece::Partial);
        assert!(f.is_open());
        let Piece::Whole(whole) = f.push(fragment(2, 2, doc! {"fullDocument": {"_id": 1}})) else {
            panic!("expected the whole event")
        };
        assert!(!f.is_open());
        assert_eq!(
            Document::try_from(whole.as_ref()).unwrap(),
            doc! {
                "_id": {"_data": "82AB0002"},
                "operationType": "update",
                "documentKey": {"_id": 1},
                "fullDocument": {"_id": 1},
            }
        );
    }

    #[test]
    fn a_fragment_out_of_sequence_is_broken_and_an_unsplit_event_is_whole() {
        let mut f = Fragments::default();
        let late = fragment(2, 3, doc! {"fullDocument": {"_id": 1}});
        assert_eq!(f.push(late), Piece::Broken);
        let plain = raw(doc! {"_id": {"_data": "82"}, "operationType": "delete"});
        assert_eq!(f.push(plain.clone()), Piece::Whole(plain));
    }
}
