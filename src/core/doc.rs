//! Small helpers on documents shared by the engine, the reconcile and the in-memory
//! store: reading `_id` and `updatedAt`, byte-level content equality (MongoDB treats a
//! replace with identical bytes as a no-op).

use bson::{Bson, DateTime, Document};

use crate::core::types::Key;

/// The `_id` of `doc` as a [`Key`] (`Null` when missing: such a document cannot exist
/// in MongoDB).
pub fn key_of(doc: &Document) -> Key {
    Key(doc.get("_id").cloned().unwrap_or(Bson::Null))
}

/// The `updatedAt` field as a DateTime, or `None` when missing or of another type.
pub fn updated_at(doc: &Document, field: &str) -> Option<DateTime> {
    match doc.get(field) {
        Some(Bson::DateTime(d)) => Some(*d),
        _ => None,
    }
}

/// Whether two documents have the same fields, in the same order, with the same
/// typed values (what "byte-identical" means for a replace).
pub fn same_content(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
}
