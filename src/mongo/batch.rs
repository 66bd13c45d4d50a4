//! Turning core [`Write`]s into `update` / `delete` command statements and reading the
//! per-statement results back. Pure functions, so the rules ("a duplicate key on a
//! conditional upsert means the target is newer"; a filtered store's statements match
//! only documents inside its filter) are tested without a server;
//! [`crate::mongo::collection`] sends the commands.

use std::ops::Range;

use bson::{doc, Bson, Document, RawDocumentBuf};

use crate::core::types::{Write, WriteOutcome};
use crate::mongo::error::DUPLICATE_KEY;

/// Largest document the server stores (`maxBsonObjectSize`).
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// Most statements one write command may carry (`maxWriteBatchSize`).
pub const MAX_WRITE_BATCH_SIZE: usize = 100_000;
/// Target size of the statements of one command: half the command limit, so the
/// command envelope and a large statement always fit.
pub const MAX_COMMAND_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// One statement of an `update` or `delete` command and the write it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Position of the originating write in the caller's batch.
    pub index: usize,
    /// The statement document (`{q, u, upsert}` or `{q, limit}`), encoded.
    pub body: RawDocumentBuf,
    /// Encoded size of `body`, for chunking.
    pub size: usize,
}

/// The statements a batch of writes becomes, plus the outcomes already known without
/// asking the server (documents too large to send).
#[derive(Debug, Default)]
pub struct Plan {
    /// Statements for one `update` command (upserts and replacements).
    pub updates: Vec<Statement>,
    /// Statements for one `delete` command.
    pub deletes: Vec<Statement>,
    /// Outcome per write; `None` until the server has answered.
    pub outcomes: Vec<Option<WriteOutcome>>,
}

/// The `batchSize` of a find by `n` keys: all of them in the first reply (the server
/// still splits a reply at 16 MiB).
pub fn in_batch(n: usize) -> u32 {
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// `query` restricted to the documents matching `filter` (a filtered store's view);
/// `query` itself without a filter.
pub fn within(query: Document, filter: Option<&Document>) -> Document {
    match filter {
        None => query,
        Some(f) if query.is_empty() => f.clone(),
        Some(f) => doc! { "$and": [query, f.clone()] },
    }
}

/// Encodes the statement of one write (`{q, u, upsert}` or `{q, limit}`), once: the
/// bytes give its size and are sent as they are. Whether it goes to `update`. With a
/// `filter`, every query also requires it, so no statement changes a document outside
/// it (an upsert onto such an `_id` fails its insert with a duplicate key instead).
fn encode(
    write: &Write,
    updated_at_field: &str,
    filter: Option<&Document>,
) -> bson::raw::Result<(RawDocumentBuf, bool)> {
    let raw = |q: &Document| RawDocumentBuf::from_document(&within(q.clone(), filter));
    let mut body = RawDocumentBuf::new();
    let is_update = match write {
        Write::UpsertIfNewer {
            key,
            doc,
            updated_at,
            or_equal,
        } => {
            let op = if *or_equal { "$lte" } else { "$lt" };
            let q = doc! { "_id": key.as_bson().clone(), updated_at_field: { op: *updated_at } };
            body.append("q", raw(&q)?);
            body.append("u", RawDocumentBuf::from_document(doc)?);
            body.append("upsert", true);
            true
        }
        Write::Replace { key, doc } => {
            body.append("q", raw(&doc! { "_id": key.as_bson().clone() })?);
            body.append("u", RawDocumentBuf::from_document(doc)?);
            body.append("upsert", true);
            true
        }
        Write::DeleteIfNotNewer { key, deleted_at } => {
            let q =
                doc! { "_id": key.as_bson().clone(), updated_at_field: { "$lte": *deleted_at } };
            body.append("q", raw(&q)?);
            body.append("limit", 1);
            false
        }
        Write::Delete { key } => {
            body.append("q", raw(&doc! { "_id": key.as_bson().clone() })?);
            body.append("limit", 1);
            false
        }
    };
    Ok((body, is_update))
}

/// Builds the statements for `writes` against documents whose last-modified field is
/// `updated_at_field`, touching only documents that match `filter` when there is one.
pub fn plan(writes: &[Write], updated_at_field: &str, filter: Option<&Document>) -> Plan {
    let mut plan = Plan {
        outcomes: vec![None; writes.len()],
        ..Plan::default()
    };
    for (index, write) in writes.iter().enumerate() {
        let (body, is_update) = match encode(write, updated_at_field, filter) {
            Ok(x) => x,
            Err(e) => {
                plan.outcomes[index] = Some(WriteOutcome::Failed(format!(
                    "document cannot be encoded as BSON: {e}"
                )));
                continue;
            }
        };
        let size = body.as_bytes().len();
        if size > MAX_BSON_OBJECT_SIZE {
            plan.outcomes[index] = Some(WriteOutcome::Failed(format!(
                "document of {size} bytes exceeds the {MAX_BSON_OBJECT_SIZE}-byte BSON limit \
                 (BSONObjectTooLarge)"
            )));
            continue;
        }
        let statement = Statement { index, body, size };
        if is_update {
            plan.updates.push(statement);
        } else {
            plan.deletes.push(statement);
        }
    }
    plan
}

/// Splits `statements` into consecutive ranges of at most [`MAX_WRITE_BATCH_SIZE`]
/// statements and about [`MAX_COMMAND_STATEMENT_BYTES`] (a single larger statement
/// gets a range of its own).
pub fn chunks(statements: &[Statement]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, s) in statements.iter().enumerate() {
        let full = i - start == MAX_WRITE_BATCH_SIZE
            || (i > start && bytes + s.size > MAX_COMMAND_STATEMENT_BYTES);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += s.size;
    }
    if start < statements.len() {
        out.push(start..statements.len());
    }
    out
}

/// One entry of a command reply's `writeErrors`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementError {
    /// Index of the statement within the command.
    pub index: usize,
    /// Server error code.
    pub code: i32,
    /// Server message.
    pub message: String,
}

/// Reads a number the server may send as int32, int64 or double.
pub fn as_count(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

/// The `writeErrors` of a write command reply.
pub fn write_errors(reply: &Document) -> Vec<StatementError> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Vec::new();
    };
    errors
        .iter()
        .filter_map(|e| e.as_document())
        .filter_map(|e| {
            Some(StatementError {
                index: usize::try_from(as_count(e.get("index"))?).ok()?,
                code: as_count(e.get("code")).unwrap_or(0) as i32,
                message: e.get_str("errmsg").unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// Outcome of an update statement given its write error, if any. A duplicate key on a
/// conditional upsert means a document with that `_id` exists but did not match the
/// "older than" filter: the target is newer (or a concurrent insert won), not a failure.
/// On a `filtered` store it also means the `_id` exists outside the filter (for a
/// replacement too), a document the store must leave alone: not applied either.
pub fn update_outcome(
    write: &Write,
    error: Option<&StatementError>,
    filtered: bool,
) -> WriteOutcome {
    match error {
        None => WriteOutcome::Applied,
        Some(e)
            if e.code == DUPLICATE_KEY
                && (filtered || matches!(write, Write::UpsertIfNewer { .. })) =>
        {
            WriteOutcome::NotApplied
        }
        Some(e) => WriteOutcome::Failed(format!("error {}: {}", e.code, e.message)),
    }
}

#[cfg(test)]
mod tests {
    use bson::DateTime;

    use super::*;
    use crate::core::types::Key;

    fn key(n: i32) -> Key {
        Key(Bson::Int32(n))
    }

    #[test]
    fn conditional_upsert_filters_on_older_updated_at() {
        let t = DateTime::from_millis(1_000);
        let writes = [
            Write::UpsertIfNewer {
                key: key(1),
                doc: doc! {"_id": 1, "v": 1, "ts": t},
                updated_at: t,
                or_equal: false,
            },
            Write::UpsertIfNewer {
                key: key(2),
                doc: doc! {"_id": 2, "ts": t},
                updated_at: t,
                or_equal: true,
            },
        ];
        let p = plan(&writes, "ts", None);
        assert_eq!(
            p.updates[0].body.to_document().unwrap(),
            doc! {"q": {"_id": 1, "ts": {"$lt": t}}, "u": {"_id": 1, "v": 1, "ts": t}, "upsert": true}
        );
        assert_eq!(
            p.updates[1]
                .body
                .to_document()
                .unwrap()
                .get_document("q")
                .unwrap(),
            &doc! {"_id": 2, "ts": {"$lte": t}}
        );
        assert!(p.deletes.is_empty());
    }

    #[test]
    fn deletes_go_to_their_own_command_and_keep_input_positions() {
        let t = DateTime::from_millis(5);
        let writes = [
            Write::Delete { key: key(1) },
            Write::Replace {
                key: key(2),
                doc: doc! {"_id": 2},
            },
            Write::DeleteIfNotNewer {
                key: key(3),
                deleted_at: t,
            },
        ];
        let p = plan(&writes, "updatedAt", None);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].index, 1);
        assert_eq!(
            p.updates[0].body.to_document().unwrap(),
            doc! {"q": {"_id": 2}, "u": {"_id": 2}, "upsert": true}
        );
        assert_eq!(
            p.deletes.iter().map(|s| s.index).collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(
            p.deletes[0].body.to_document().unwrap(),
            doc! {"q": {"_id": 1}, "limit": 1}
        );
        assert_eq!(
            p.deletes[1].body.to_document().unwrap(),
            doc! {"q": {"_id": 3, "updatedAt": {"$lte": t}}, "limit": 1}
        );
    }

    #[test]
    fn a_filtered_store_only_matches_documents_inside_its_filter() {
        let t = DateTime::from_millis(5);
        let filter = doc! {"tenant": "a"};
        let writes = [
            Write::UpsertIfNewer {
                key: key(1),
                doc: doc! {"_id": 1, "tenant": "a", "ts": t},
                updated_at: t,
                or_equal: false,
            },
            Write::Replace {
                key: key(2),
                doc: doc! {"_id": 2, "tenant": "a"},
            },
            Write::DeleteIfNotNewer {
                key: key(3),
                deleted_at: t,
            },
            Write::Delete { key: key(4) },
        ];
        let p = plan(&writes, "ts", Some(&filter));
        let q = |s: &Statement| {
            s.body
                .to_document()
                .unwrap()
                .get_document("q")
                .unwrap()
                .clone()
        };
        assert_eq!(
            q(&p.updates[0]),
            doc! {"$and": [{"_id": 1, "ts": {"$lt": t}}, {"tenant": "a"}]}
        );
        assert_eq!(
            p.updates[0].body.to_document().unwrap().get_document("u"),
            Ok(&doc! {"_id": 1, "tenant": "a", "ts": t}),
            "the replacement document is sent as it is"
        );
        assert_eq!(
            q(&p.updates[1]),
            doc! {"$and": [{"_id": 2}, {"tenant": "a"}]}
        );
        assert_eq!(
            q(&p.deletes[0]),
            doc! {"$and": [{"_id": 3, "ts": {"$lte": t}}, {"tenant": "a"}]}
        );
        assert_eq!(
            q(&p.deletes[1]),
            doc! {"$and": [{"_id": 4}, {"tenant": "a"}]}
        );
        // A duplicate key on a filtered replacement: the `_id` is outside the filter.
        let dup = StatementError {
            index: 0,
            code: 11000,
            message: "E11000 duplicate key".into(),
        };
        assert_eq!(
            update_outcome(&writes[1], Some(&dup), true),
            WriteOutcome::NotApplied
        );
        assert_eq!(within(doc! {}, Some(&filter)), filter);
        assert_eq!(within(doc! {"_id": 1}, None), doc! {"_id": 1});
    }

    #[test]
    fn too_large_document_fails_without_being_sent() {
        let big = "x".repeat(MAX_BSON_OBJECT_SIZE);
        let writes = [Write::Replace {
            key: key(1),
            doc: doc! {"_id": 1, "big": big},
        }];
        let p = plan(&writes, "updatedAt", None);
        assert!(p.updates.is_empty());
        assert!(
            matches!(p.outcomes[0], Some(WriteOutcome::Failed(ref m)) if m.contains("BSONObjectTooLarge"))
        );
    }

    #[test]
    fn chunks_respect_size_and_count_limits() {
        let st = |size| Statement {
            index: 0,
            body: RawDocumentBuf::new(),
            size,
        };
        let five_mib = 5 * 1024 * 1024;
        let statements = vec![
            st(five_mib),
            st(five_mib),
            st(10),
            st(12 * 1024 * 1024),
            st(1),
        ];
        assert_eq!(chunks(&statements), vec![0..1, 1..3, 3..4, 4..5]);
        let many = vec![st(1); MAX_WRITE_BATCH_SIZE + 1];
        assert_eq!(
            chunks(&many),
            vec![
                0..MAX_WRITE_BATCH_SIZE,
                MAX_WRITE_BATCH_SIZE..MAX_WRITE_BATCH_SIZE + 1
            ]
        );
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn duplicate_key_on_conditional_upsert_is_not_applied() {
        let t = DateTime::from_millis(1);
        let cond = Write::UpsertIfNewer {
            key: key(1),
            doc: doc! {"_id": 1},
            updated_at: t,
            or_equal: false,
        };
        let dup = StatementError {
            index: 0,
            code: 11000,
            message: "E11000 duplicate key".into(),
        };
        assert_eq!(
            update_outcome(&cond, Some(&dup), false),
            WriteOutcome::NotApplied
        );
        assert_eq!(update_outcome(&cond, None, false), WriteOutcome::Applied);
        let replace = Write::Replace {
            key: key(1),
            doc: doc! {"_id": 1},
        };
        assert!(matches!(
            update_outcome(&replace, Some(&dup), false),
            WriteOutcome::Failed(_)
        ));
        let bad = StatementError {
            index: 0,
            code: 52,
            message: "dollar".into(),
        };
        assert_eq!(
            update_outcome(&cond, Some(&bad), false),
            WriteOutcome::Failed("error 52: dollar".into())
        );
    }

    #[test]
    fn write_errors_are_read_from_the_reply() {
        let reply = doc! {
            "n": 1, "ok": 1.0,
            "writeErrors": [
                {"index": 2, "code": 11000, "errmsg": "dup"},
                {"index": 5_i64, "code": 10334, "errmsg": "too large"},
            ],
        };
        assert_eq!(
            write_errors(&reply),
            vec![
                StatementError {
                    index: 2,
                    code: 11000,
                    message: "dup".into()
                },
                StatementError {
                    index: 5,
                    code: 10334,
                    message: "too large".into()
                },
            ]
        );
        assert!(write_errors(&doc! {"n": 3}).is_empty());
    }
}
