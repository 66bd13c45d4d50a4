//! The 16 MiB limit on change events and `$changeStreamSplitLargeEvent`, as MongoDB 7.0
//! applies them (manual: "$changeStreamSplitLargeEvent (aggregation)", "Large Change
//! Events"). Without the stage an event whose BSON exceeds the server's internal
//! object limit fails the command with 10334 BSONObjectTooLarge; with it, an event over
//! the split threshold becomes fragments, each with its own resume token.

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

use crate::oplog::Pos;

use crate::error::{CmdResult, CommandError};
use crate::token::ResumeToken;

/// MongoDB's `BSONObjMaxInternalSize` (16 MiB + 16 KiB): the largest object the server
/// serialises; a change event over it fails with BSONObjectTooLarge.
pub const MAX_INTERNAL_SIZE: usize = 16 * 1024 * 1024 + 16 * 1024;

/// `$changeStreamSplitLargeEvent`'s threshold: events at most this size are returned
/// whole, larger ones are split into fragments of at most this size less the token.
pub const MAX_EVENT_SIZE: usize = MAX_INTERNAL_SIZE - 8 * 1024;

/// Stage name.
pub const STAGE: &str = "$changeStreamSplitLargeEvent";

/// 10334 for an event of `size` bytes that cannot be returned.
pub fn too_large(event: &RawDocument, size: usize) -> CommandError {
    let first = match event.get("_id") {
        Ok(Some(RawBsonRef::Document(t))) => match t.get_str("_data") {
            Ok(data) => format!("_id: {{ _data: \"{data}\" }}"),
            Err(_) => "_id: {}".to_string(),
        },
        _ => "_id: {}".to_string(),
    };
    CommandError::new(
        10334,
        format!(
            "BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and {MAX_INTERNAL_SIZE}(16MB) First element: {first}"
        ),
    )
}

/// 280 when a stream resumed from a fragment cannot find that fragment again.
pub fn different_split() -> CommandError {
    CommandError::new(
        280,
        "Attempted to resume from a split event, but the resumed stream produced a different split. Ensure that the pipeline used to resume is the same as the original",
    )
}

/// Checks the user's stages around `$changeStreamSplitLargeEvent`: an empty object,
/// once, last. Returns whether the stage is present.
pub fn validate(stages: &[bson::Document]) -> CmdResult<bool> {
    let mut found = false;
    for (i, st) in stages.iter().enumerate() {
        let Some(spec) = st.get(STAGE) else { continue };
        if !matches!(spec, bson::Bson::Document(d) if d.is_empty()) {
            return Err(CommandError::new(
                7182800,
                "$changeStreamSplitLargeEvent spec should be an empty object",
            ));
        }
        if found || i + 1 != stages.len() {
            return Err(CommandError::new(
                7182802,
                "$changeStreamSplitLargeEvent must be the last stage in the pipeline",
            ));
        }
        found = true;
    }
    Ok(found)
}

/// One top-level field of the event, with its encoded size as an element.
struct Field<'a> {
    size: usize,
    name: &'a str,
    value: RawBsonRef<'a>,
}

/// Splits `event` (the change event at `ts`, larger than [`MAX_EVENT_SIZE`]) into
/// fragments, each `{_id: <fragment token>, splitEvent: {fragment, of}, …fields}`.
/// Fields other than `_id` are taken smallest first (ties by name), filling each
/// fragment greedily, so the first fragment carries as many fields as fit; a field is
/// never split. A fragment that still exceeds the limit (one field too large) → 7182500.
pub fn split(event: &RawDocument, ts: Pos) -> CmdResult<Vec<(RawDocumentBuf, ResumeToken)>> {
    let mut fields = Vec::new();
    for elem in event {
        let (name, value) = elem.map_err(|e| CommandError::new(1, format!("change event: {e}")))?;
        if name == "_id" {
            continue;
        }
        let mut one = RawDocumentBuf::new();
        one.append(name, value.to_raw_bson());
        // An element is its one-field document less the 4-byte length and trailing NUL.
        fields.push(Field {
            size: one.as_bytes().len() - 5,
            name,
            value,
        });
    }
    if fields.is_empty() {
        return Err(CommandError::new(
            7182502,
            "Cannot split an empty event or an event containing solely '_id' field",
        ));
    }
    fields.sort_by(|a, b| (a.size, a.name).cmp(&(b.size, b.name)));
    let token_size = ResumeToken::event(ts).to_raw().as_bytes().len();
    let max_fragment = MAX_EVENT_SIZE - token_size;
    // Group the fields into fragments.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < fields.len() {
        let n = groups.len();
        let mut size = header(ts, n, 0).as_bytes().len() + sort_key_size(ts, n);
        let start = i;
        loop {
            size += fields[i].size;
            i += 1;
            if i == fields.len() || size + fields[i].size > max_fragment {
                break;
            }
        }
        if size > max_fragment {
            return Err(CommandError::new(
                7182500,
                format!(
                    "Splitting change event failed: fragment size {size} is greater than maximum allowed fragment size {max_fragment}"
                ),
            ));
        }
        groups.push(start..i);
    }
    let of = groups.len();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(n, range)| {
            let mut d = header(ts, n, of);
            for f in &fields[range] {
                d.append(f.name, f.value.to_raw_bson());
            }
            (d, fragment_token(ts, n))
        })
        .collect())
}

fn fragment_token(ts: Pos, n: usize) -> ResumeToken {
    ResumeToken::fragment(ts, u16::try_from(n).unwrap_or(u16::MAX))
}

/// `{_id: token, splitEvent: {fragment: n + 1, of}}`.
fn header(ts: Pos, n: usize, of: usize) -> RawDocumentBuf {
    let mut split = RawDocumentBuf::new();
    split.append("fragment", i32::try_from(n + 1).unwrap_or(i32::MAX));
    split.append("of", i32::try_from(of).unwrap_or(i32::MAX));
    let mut d = RawDocumentBuf::new();
    d.append("_id", fragment_token(ts, n).to_raw());
    d.append("splitEvent", split);
    d
}

/// The server sizes a fragment with its metadata, which repeats the token as `$sortKey`.
fn sort_key_size(ts: Pos, n: usize) -> usize {
    1 + "$sortKey".len() + 1 + fragment_token(ts, n).to_raw().as_bytes().len()
}

#[cfg(test)]
mod tests {
    use bson::{doc, Document, Timestamp};

    use super::*;

    const TS: Timestamp = Timestamp {
        time: 5,
        increment: 1,
    };

    fn big(n: usize) -> String {
        "x".repeat(n)
    }

    #[test]
    fn fragments_fill_smallest_fields_first_and_stay_under_the_limit() {
        let ts = TS;
        let event = RawDocumentBuf::from_document(&doc! {
            "_id": ResumeToken::new(ts, crate::token::TokenKind::Event).to_document(),
            "operationType": "update",
            "clusterTime": ts,
            "fullDocument": {"_id": 1, "a": big(10 * 1024 * 1024)},
            "ns": {"db": "d", "coll": "c"},
            "fullDocumentBeforeChange": {"_id": 1, "a": big(10 * 1024 * 1024)},
            "documentKey": {"_id": 1},
        })
        .unwrap();
        let parts = split(&event, Pos { ts, op: 0 }).unwrap();
        assert_eq!(parts.len(), 2);
        let first = Document::try_from(parts[0].0.as_ref()).unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "splitEvent",
                "clusterTime",
                "operationType",
                "documentKey",
                "ns",
                "fullDocument"
            ]
        );
        assert_eq!(
            first.get_document("splitEvent").unwrap(),
            &doc! {"fragment": 1, "of": 2}
        );
        let second = Document::try_from(parts[1].0.as_ref()).unwrap();
        assert_eq!(
            second.keys().collect::<Vec<_>>(),
            ["_id", "splitEvent", "fullDocumentBeforeChange"]
        );
        for (d, token) in &parts {
            assert!(d.as_bytes().len() <= MAX_EVENT_SIZE);
            assert_eq!(d.get_document("_id").unwrap(), token.to_raw().as_ref());
        }
    }

    #[test]
    fn one_field_over_the_limit_cannot_be_split() {
        let ts = TS;
        let event = RawDocumentBuf::from_document(&doc! {
            "_id": {"_data": "82"},
            "fullDocument": {"a": big(MAX_EVENT_SIZE)},
        })
        .unwrap();
        assert_eq!(split(&event, Pos { ts, op: 0 }).unwrap_err().code, 7182500);
    }

    #[test]
    fn the_stage_must_be_last_once_and_empty() {
        let s = |d: Document| d;
        assert!(!validate(&[s(doc! {"$match": {}})]).unwrap());
        assert!(validate(&[s(doc! {"$match": {}}), s(doc! {STAGE: {}})]).unwrap());
        let code = |stages: &[Document]| validate(stages).unwrap_err().code;
        assert_eq!(code(&[doc! {STAGE: {}}, doc! {"$match": {}}]), 7182802);
        assert_eq!(code(&[doc! {STAGE: {}}, doc! {STAGE: {}}]), 7182802);
        assert_eq!(code(&[doc! {STAGE: {"x": 1}}]), 7182800);
    }
}
