//! The in-memory catalog: databases → collections → documents keyed by `_id` (ordered by
//! MongoDB's BSON comparison, which is also our natural order), plus index definitions.
//! Unique secondary indexes are enforced here; everything else about indexes is metadata.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{doc, Bson, Document};

use crate::error::{CmdResult, CommandError};
use crate::query;

/// A BSON value ordered the way MongoDB orders `_id`s.
#[derive(Debug, Clone)]
pub struct Key(pub Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        query::compare(&self.0, &other.0)
    }
}

/// A secondary index definition.
#[derive(Debug, Clone)]
pub struct Index {
    /// Index name (`a_1`).
    pub name: String,
    /// Key pattern (`{a: 1}`).
    pub key: Document,
    /// Whether duplicates are refused.
    pub unique: bool,
    /// Sparse: documents missing every key field are not indexed.
    pub sparse: bool,
    /// Partial index filter: only matching documents are indexed.
    pub partial: Option<Document>,
    /// The spec as `listIndexes` reports it.
    pub spec: Document,
}

/// One collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Collection UUID (BinData 4), reported by `listCollections`.
    pub uuid: bson::Binary,
    /// Documents by `_id`.
    pub docs: BTreeMap<Key, Document>,
    /// Secondary indexes (the `_id_` index is implicit).
    pub indexes: Vec<Index>,
    /// Options given to `create`.
    pub options: Document,
}

impl Collection {
    /// Whether `changeStreamPreAndPostImages` is enabled (create or collMod option).
    pub fn images_enabled(&self) -> bool {
        self.options
            .get_document("changeStreamPreAndPostImages")
            .is_ok_and(|o| o.get_bool("enabled").unwrap_or(false))
    }
    /// An empty collection.
    pub fn new(options: Document) -> Self {
        Collection {
            uuid: bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: random_bytes16().to_vec(),
            },
            docs: BTreeMap::new(),
            indexes: Vec::new(),
            options,
        }
    }

    /// The `_id_` index spec.
    pub fn id_index_spec() -> Document {
        doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
    }

    /// Every index spec, `_id_` first.
    pub fn index_specs(&self) -> Vec<Document> {
        let mut out = vec![Self::id_index_spec()];
        out.extend(self.indexes.iter().map(|i| i.spec.clone()));
        out
    }

    /// Refuse `doc` if it duplicates another document (not `own_id`) on a unique index.
    pub fn check_unique(&self, ns: &str, doc: &Document, own_id: Option<&Key>) -> CmdResult<()> {
        self.check_unique_except(ns, doc, |k| Some(k) == own_id)
    }

    /// Refuse `doc` if it duplicates a document whose `_id` `skip` does not accept on a
    /// unique index.
    pub fn check_unique_except(
        &self,
        ns: &str,
        doc: &Document,
        skip: impl Fn(&Key) -> bool,
    ) -> CmdResult<()> {
        for idx in self.indexes.iter().filter(|i| i.unique) {
            let Some(value) = idx.key_value(doc) else {
                continue;
            };
            for (k, other) in &self.docs {
                if skip(k) {
                    continue;
                }
                if let Some(v) = idx.key_value(other) {
                    if keys_equal(&v, &value) {
                        return Err(duplicate_key(ns, &idx.name, &idx.key, &value));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Index {
    /// The index key `{field: value…}` of `doc`, or `None` when the document is not
    /// indexed (sparse with all fields missing, or outside the partial filter).
    pub fn key_value(&self, doc: &Document) -> Option<Document> {
        if let Some(filter) = &self.partial {
            if !query::matches(doc, filter).unwrap_or(false) {
                return None;
            }
        }
        let mut out = Document::new();
        let mut any = false;
        for field in self.key.keys() {
            match lookup_path(doc, field) {
                Some(v) => {
                    any = true;
                    out.insert(field.clone(), v.clone());
                }
                None => {
                    out.insert(field.clone(), Bson::Null);
                }
            }
        }
        if self.sparse && !any {
            return None;
        }
        Some(out)
    }
}

fn keys_equal(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.values()
            .zip(b.values())
            .all(|(x, y)| query::compare(x, y) == Ordering::Equal)
}

/// Value at a dotted path through embedded documents (arrays are not traversed).
pub fn lookup_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The 11000 error MongoDB returns, with `keyPattern` and `keyValue`.
pub fn duplicate_key(ns: &str, index: &str, pattern: &Document, value: &Document) -> CommandError {
    let shown: Vec<String> = value
        .iter()
        .map(|(k, v)| format!("{k}: {}", shell_repr(v)))
        .collect();
    CommandError::new(
        11000,
        format!(
            "E11000 duplicate key error collection: {ns} index: {index} dup key: {{ {} }}",
            shown.join(", ")
        ),
    )
    .with_extra("keyPattern", pattern.clone())
    .with_extra("keyValue", value.clone())
}

/// A value written the way the server prints it in error messages.
pub fn shell_repr(v: &Bson) -> String {
    match v {
        Bson::String(s) => format!("{s:?}"),
        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(d) if d.fract() == 0.0 && d.is_finite() => format!("{d:.1}"),
        Bson::Double(d) => d.to_string(),
        Bson::Null => "null".into(),
        Bson::Boolean(b) => b.to_string(),
        Bson::Document(d) => {
            let parts: Vec<String> = d
                .iter()
                .map(|(k, v)| format!("{k}: {}", shell_repr(v)))
                .collect();
            if parts.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", parts.join(", "))
            }
        }
        Bson::Array(a) => {
            let parts: Vec<String> = a.iter().map(shell_repr).collect();
            format!("[ {} ]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// All databases.
#[derive(Debug, Default)]
pub struct Store {
    /// Databases by name, each a map of collections by name.
    pub dbs: BTreeMap<String, BTreeMap<String, Collection>>,
}

impl Store {
    /// A collection, if it exists.
    pub fn coll(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db)?.get(coll)
    }
    /// A collection, mutably, if it exists.
    pub fn coll_mut(&mut self, db: &str, coll: &str) -> Option<&mut Collection> {
        self.dbs.get_mut(db)?.get_mut(coll)
    }
    /// A collection, created implicitly (as writes do) when missing.
    pub fn coll_or_create(&mut self, db: &str, coll: &str) -> &mut Collection {
        // Looked up first: the entry API would allocate both names on every write.
        if self.coll(db, coll).is_some() {
            return self.coll_mut(db, coll).expect("checked just above");
        }
        self.dbs
            .entry(db.to_string())
            .or_default()
            .entry(coll.to_string())
            .or_insert_with(|| Collection::new(Document::new()))
    }
    /// Remove a collection (and its database when it becomes empty).
    pub fn remove_coll(&mut self, db: &str, coll: &str) -> Option<Collection> {
        let colls = self.dbs.get_mut(db)?;
        let out = colls.remove(coll);
        if colls.is_empty() {
            self.dbs.remove(db);
        }
        out
    }
}

/// 16 pseudo-random bytes (collection UUIDs, cursor ids); not cryptographic.
pub fn random_bytes16() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}
