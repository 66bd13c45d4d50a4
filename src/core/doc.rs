//! Small helpers on documents shared by the engine, the reconcile and the in-memory
//! store: reading `_id` and `updatedAt`, byte-level content equality (MongoDB treats a
//! replace with identical bytes as a no-op) and a content hash for echo detection.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use bson::{Bson, DateTime, Document};

use crate::core::key::hash_bson;
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

/// Hash of the document's content: field names in order, each value's BSON type and
/// its value (without serialising, which would allocate per call).
pub fn content_hash(doc: &Document) -> u64 {
    let mut h = DefaultHasher::new();
    for (k, v) in doc {
        h.write(k.as_bytes());
        h.write_u8(v.element_type() as u8);
        hash_bson(v, &mut h);
    }
    h.finish()
}
