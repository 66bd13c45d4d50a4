//! [`MongoState`]: the engine's durable state (checkpoints, tombstones, sync records) in
//! `state.database` on the local deployment.
//!
//! Layout, for one synced pair named `<localdb>.<localcoll>__<clouddb>.<cloudcoll>`
//! (see [`pair_name`]):
//! - `checkpoints`: `{_id: "<side>:<pair>", side, pair, token: <resume token>, savedAt}`
//!   plus `filter` for a filtered pair. The pair (both namespaces) is in the id, so
//!   changing either collection in the config never resumes from a token that belongs
//!   to another sync; a checkpoint saved under another filter (or none) is not loaded,
//!   so changing a pair's filter makes the engine reconcile that pair in full. (Fields
//!   older versions kept there, `pendingDeletes*`, are dropped by the next save.)
//! - `tombstones_<pair>`: `{_id: <document key>, deletedAt: Date, origin: "local"|"cloud"}`
//!   (a `quiet` field older versions wrote is ignored); one collection per pair so keys
//!   of different pairs never collide, with a TTL index on `deletedAt`.
//! - `own_sessions`: the session ids of the daemon's transactions (see
//!   [`crate::mongo::own`]).
//! - `synced_<pair>`: `{_id: <document key>, updatedAt: Date}`, the version both sides
//!   last agreed on (see [`crate::core::store::StateStore`]); one collection per pair.

use std::time::Duration;

use async_trait::async_trait;
use bson::{doc, Bson, DateTime, Document};
use futures::TryStreamExt;
use mongodb::options::ReplaceOptions;
use mongodb::{Client, Collection, Database};

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::StateStore;
use crate::core::types::{Key, ResumeToken, Side, Tombstone};
use crate::mongo::batch::{self, MAX_WRITE_BATCH_SIZE};
use crate::mongo::error::{error_code, map_error, DUPLICATE_KEY};
use crate::mongo::scan_filter::after_filter;

/// Collection holding the resume tokens.
pub const CHECKPOINTS: &str = "checkpoints";
/// Prefix of the per-pair tombstone collections.
pub const TOMBSTONES_PREFIX: &str = "tombstones_";
/// Prefix of the per-pair sync-record collections.
pub const SYNCED_PREFIX: &str = "synced_";
/// Name of the TTL index on `deletedAt`.
pub const TTL_INDEX: &str = "deletedAt_ttl";
/// Keys per `$in` query or statement batch.
const KEYS_PER_QUERY: usize = 10_000;

/// Name of a synced pair: both namespaces, local first.
pub fn pair_name(local_db: &str, local_coll: &str, cloud_db: &str, cloud_coll: &str) -> String {
    format!("{local_db}.{local_coll}__{cloud_db}.{cloud_coll}")
}

/// Name of the tombstone collection of `pair`.
pub fn tombstones_collection(pair: &str) -> String {
    format!("{TOMBSTONES_PREFIX}{pair}")
}

/// Name of the sync-record collection of `pair`.
pub fn synced_collection(pair: &str) -> String {
    format!("{SYNCED_PREFIX}{pair}")
}

/// Checkpoints, tombstones and sync records of one synced pair.
#[derive(Clone, Debug)]
pub struct MongoState {
    /// The state database.
    db: Database,
    /// `checkpoints` collection.
    checkpoints: Collection<Document>,
    /// This pair's tombstone collection.
    tombstones: Collection<Document>,
    /// This pair's sync-record collection.
    synced: Collection<Document>,
    /// The pair's name (part of checkpoint ids).
    pair: String,
    /// The pair's filter: saved with its checkpoints, which load only under the same one.
    filter: Option<Document>,
}

impl MongoState {
    /// State of the pair `pair_name` (see [`pair_name`]) in database `state_db`.
    pub fn new(client: Client, state_db: &str, pair_name: &str) -> Self {
        let db = client.database(state_db);
        MongoState {
            checkpoints: db.collection(CHECKPOINTS),
            tombstones: db.collection(&tombstones_collection(pair_name)),
            synced: db.collection(&synced_collection(pair_name)),
            db,
            pair: pair_name.to_string(),
            filter: None,
        }
    }

    /// The same state, for a pair syncing only the documents matching `filter`.
    pub fn with_filter(mut self, filter: Option<Document>) -> Self {
        self.filter = filter;
        self
    }

    /// The tombstone collection (tests and tools).
    pub fn tombstone_collection(&self) -> &Collection<Document> {
        &self.tombstones
    }

    /// The sync-record collection (tests and tools).
    pub fn synced_records(&self) -> &Collection<Document> {
        &self.synced
    }

    /// Creates the TTL index removing tombstones `ttl` after their `deletedAt`, or
    /// changes its expiry (`collMod`) when it exists with another one.
    pub async fn ensure_indexes(&self, ttl: Duration) -> Result<(), StoreError> {
        let seconds = i64::try_from(ttl.as_secs())
            .unwrap_or(i64::MAX)
            .min(i64::from(i32::MAX));
        match self.ttl_index_seconds().await? {
            Some(Some(current)) if current == seconds => Ok(()),
            Some(_) => self.change_ttl(seconds).await,
            None => match self.create_ttl_index(seconds).await {
                // 85 IndexOptionsConflict / 86 IndexKeySpecsConflict: created meanwhile.
                Err(e) if matches!(error_code(&e), Some(85 | 86)) => self.change_ttl(seconds).await,
                other => other.map_err(|e| self.err("createIndexes", &e)),
            },
        }
    }

    /// `None` when the TTL index is missing, else its `expireAfterSeconds`.
    async fn ttl_index_seconds(&self) -> Result<Option<Option<i64>>, StoreError> {
        let indexes: Vec<Document> = match self.tombstones.list_indexes().await {
            Ok(cursor) => cursor
                .map_ok(|model| {
                    let mut d = doc! { "key": model.keys };
                    if let Some(o) = model.options {
                        d.insert("name", o.name.unwrap_or_default());
                        if let Some(ttl) = o.expire_after {
                            d.insert("expireAfterSeconds", ttl.as_secs() as i64);
                        }
                    }
                    d
                })
                .try_collect()
                .await
                .map_err(|e| self.err("listIndexes", &e))?,
            // 26 NamespaceNotFound: no collection yet, so no index.
            Err(e) if error_code(&e) == Some(26) => Vec::new(),
            Err(e) => return Err(self.err("listIndexes", &e)),
        };
        Ok(indexes
            .iter()
            .find(|i| i.get_str("name") == Ok(TTL_INDEX))
            .map(|i| batch::as_count(i.get("expireAfterSeconds"))))
    }

    /// Creates the TTL index.
    async fn create_ttl_index(&self, seconds: i64) -> Result<(), mongodb::error::Error> {
        let create = doc! {
            "createIndexes": self.tombstones.name(),
            "indexes": [{ "key": { "deletedAt": 1 }, "name": TTL_INDEX, "expireAfterSeconds": seconds }],
        };
        self.db.run_command(create).await.map(drop)
    }

    /// Changes the TTL of the existing index; where `collMod` is not available
    /// (59 CommandNotFound), drops and re-creates the index instead.
    async fn change_ttl(&self, seconds: i64) -> Result<(), StoreError> {
        let coll_mod = doc! {
            "collMod": self.tombstones.name(),
            "index": { "name": TTL_INDEX, "expireAfterSeconds": seconds },
        };
        match self.db.run_command(coll_mod).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(59) => {
                let drop_index = doc! { "dropIndexes": self.tombstones.name(), "index": TTL_INDEX };
                self.db
                    .run_command(drop_index)
                    .await
                    .map_err(|e| self.err("dropIndexes", &e))?;
                self.create_ttl_index(seconds)
                    .await
                    .map_err(|e| self.err("createIndexes", &e))
            }
            Err(e) => Err(self.err("collMod", &e)),
        }
    }

    /// Maps a driver error, naming the state database.
    fn err(&self, what: &str, e: &mongodb::error::Error) -> StoreError {
        map_error(
            e,
            &format!("{what} in state database {}", self.db.name()),
            &[],
        )
    }

    /// Runs `updates` (update statements, in order) on the tombstone collection.
    async fn update_tombstones(
        &self,
        what: &str,
        updates: Vec<Document>,
    ) -> Result<(), StoreError> {
        let cmd = doc! { "update": self.tombstones.name(), "updates": updates, "ordered": true };
        let reply = self
            .db
            .run_command(cmd)
            .await
            .map_err(|e| self.err(what, &e))?;
        match batch::write_errors(&reply).first() {
            None => Ok(()),
            Some(e) => {
                // A duplicate key here is a concurrent upsert of the same key: retrying
                // wins.
                let kind = if e.code == DUPLICATE_KEY {
                    StoreErrorKind::Transient
                } else {
                    StoreErrorKind::Fatal
                };
                Err(StoreError::new(
                    kind,
                    format!("{what}: error {}: {}", e.code, e.message),
                ))
            }
        }
    }

    /// Id of `side`'s checkpoint document.
    fn checkpoint_id(&self, side: Side) -> String {
        format!("{side}:{}", self.pair)
    }
}

/// Reads a tombstone document back.
fn parse_tombstone(mut d: Document) -> Option<Tombstone> {
    let key = Key(d.remove("_id")?);
    let deleted_at = d.get_datetime("deletedAt").ok().copied()?;
    let origin = d.get_str("origin").ok()?.parse().ok()?;
    Some(Tombstone {
        key,
        deleted_at,
        origin,
    })
}

/// The tombstone document of `t`, inserted when the key has none yet.
fn tombstone_document(t: &Tombstone) -> Document {
    doc! { "_id": t.key.as_bson().clone(), "deletedAt": t.deleted_at, "origin": t.origin.as_str() }
}

/// The statement overwriting the key's existing tombstone with `t` only when that one
/// is older (the later `deletedAt` wins; an equal one is kept).
fn tombstone_statement(t: &Tombstone) -> Document {
    let fields = doc! { "deletedAt": t.deleted_at, "origin": t.origin.as_str() };
    doc! {
        "q": { "_id": t.key.as_bson().clone(), "deletedAt": { "$lt": t.deleted_at } },
        "u": { "$set": fields },
    }
}

/// Reads a sync record back.
fn parse_synced(d: &Document) -> Option<(Key, DateTime)> {
    let key = Key(d.get("_id")?.clone());
    Some((key, *d.get_datetime("updatedAt").ok()?))
}

/// The statement recording version `v` of `key` (overwrites, inserts if missing).
fn synced_statement(key: &Key, v: DateTime) -> Document {
    // A replacement, not `$set`: a record is `{_id, updatedAt}` and nothing else, so
    // both leave the same document, and the server applies a replacement without
    // parsing update operators or computing a field diff.
    doc! { "q": { "_id": key.as_bson().clone() }, "u": { "updatedAt": v }, "upsert": true }
}

#[async_trait]
impl StateStore for MongoState {
    async fn load_checkpoint(&self, side: Side) -> Result<Option<ResumeToken>, StoreError> {
        let found = self
            .checkpoints
            .find_one(doc! { "_id": self.checkpoint_id(side) })
            .await
            .map_err(|e| self.err("load checkpoint", &e))?;
        Ok(found
            .filter(|d| d.get_document("filter").ok() == self.filter.as_ref())
            .and_then(|d| d.get_document("token").ok().cloned())
            .map(ResumeToken))
    }

    async fn save_checkpoint(&self, side: Side, token: &ResumeToken) -> Result<(), StoreError> {
        let id = self.checkpoint_id(side);
        let mut replacement = doc! {
            "_id": id.clone(),
            "side": side.as_str(),
            "pair": self.pair.as_str(),
            "token": token.0.clone(),
            "savedAt": DateTime::now(),
        };
        if let Some(f) = &self.filter {
            replacement.insert("filter", f.clone());
        }
        self.checkpoints
            .replace_one(doc! { "_id": id }, replacement)
            .with_options(ReplaceOptions::builder().upsert(true).build())
            .await
            .map(drop)
            .map_err(|e| self.err("save checkpoint", &e))
    }

    async fn clear_checkpoint(&self, side: Side) -> Result<(), StoreError> {
        self.checkpoints
            .delete_one(doc! { "_id": self.checkpoint_id(side) })
            .await
            .map(drop)
            .map_err(|e| self.err("clear checkpoint", &e))
    }

    async fn tombstones(&self, keys: &[Key]) -> Result<Vec<Tombstone>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            let docs: Vec<Document> = self
                .tombstones
                .find(doc! { "_id": { "$in": ids } })
                // One reply for the whole chunk (the default first batch is 101).
                .batch_size(batch::in_batch(chunk.len()))
                .await
                .map_err(|e| self.err("read tombstones", &e))?
                .try_collect()
                .await
                .map_err(|e| self.err("read tombstones", &e))?;
            out.extend(docs.into_iter().filter_map(parse_tombstone));
        }
        Ok(out)
    }

    async fn record_tombstones(&self, tombstones: &[Tombstone]) -> Result<(), StoreError> {
        // Plain inserts first (a deleted key rarely has a tombstone already, and an
        // insert is the cheapest write); a key that has one fails with a duplicate key
        // and gets the conditional overwrite instead, in the input's order (a key twice
        // in `tombstones` ends with the later `deletedAt`, as recorded one by one).
        let mut exists = Vec::new();
        for chunk in tombstones.chunks(KEYS_PER_QUERY.min(MAX_WRITE_BATCH_SIZE)) {
            let docs: Vec<Document> = chunk.iter().map(tombstone_document).collect();
            let cmd =
                doc! { "insert": self.tombstones.name(), "documents": docs, "ordered": false };
            let reply = self
                .db
                .run_command(cmd)
                .await
                .map_err(|e| self.err("record tombstones", &e))?;
            let mut errors = batch::write_errors(&reply);
            errors.sort_by_key(|e| e.index);
            for e in errors {
                match chunk.get(e.index) {
                    Some(t) if e.code == DUPLICATE_KEY => exists.push(tombstone_statement(t)),
                    _ => {
                        return Err(StoreError::new(
                            StoreErrorKind::Fatal,
                            format!("record tombstones: error {}: {}", e.code, e.message),
                        ))
                    }
                }
            }
        }
        for chunk in exists.chunks(KEYS_PER_QUERY.min(MAX_WRITE_BATCH_SIZE)) {
            self.update_tombstones("record tombstones", chunk.to_vec())
                .await?;
        }
        Ok(())
    }

    async fn remove_tombstones(&self, keys: &[Key]) -> Result<(), StoreError> {
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            self.tombstones
                .delete_many(doc! { "_id": { "$in": ids } })
                .await
                .map_err(|e| self.err("remove tombstones", &e))?;
        }
        Ok(())
    }

    async fn expire_tombstones(&self, before: DateTime) -> Result<u64, StoreError> {
        self.tombstones
            .delete_many(doc! { "deletedAt": { "$lt": before } })
            .await
            .map(|r| r.deleted_count)
            .map_err(|e| self.err("expire tombstones", &e))
    }

    async fn synced_versions(&self, keys: &[Key]) -> Result<Vec<(Key, DateTime)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            let docs: Vec<Document> = self
                .synced
                .find(doc! { "_id": { "$in": ids } })
                // One reply for the whole chunk (the default first batch is 101).
                .batch_size(batch::in_batch(chunk.len()))
                .await
                .map_err(|e| self.err("read sync records", &e))?
                .try_collect()
                .await
                .map_err(|e| self.err("read sync records", &e))?;
            out.extend(docs.iter().filter_map(parse_synced));
        }
        Ok(out)
    }

    async fn scan_synced(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<DateTime>)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let docs: Vec<Document> = self
            .synced
            .find(after_filter(after.map(Key::as_bson)))
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .batch_size(u32::try_from(limit).unwrap_or(u32::MAX))
            .await
            .map_err(|e| self.err("scan sync records", &e))?
            .try_collect()
            .await
            .map_err(|e| self.err("scan sync records", &e))?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let key = Key(d.get("_id")?.clone());
                Some((key, d.get_datetime("updatedAt").ok().copied()))
            })
            .collect())
    }

    async fn create_synced(&self, versions: &[(Key, DateTime)]) -> Result<(), StoreError> {
        // Plain inserts (cheaper than upserts); a key recorded meanwhile fails with a
        // duplicate key and is then upserted like any other.
        let mut exists = Vec::new();
        for chunk in versions.chunks(KEYS_PER_QUERY.min(MAX_WRITE_BATCH_SIZE)) {
            let docs: Vec<Bson> = chunk
                .iter()
                .map(|(k, v)| Bson::Document(doc! { "_id": k.as_bson().clone(), "updatedAt": *v }))
                .collect();
            let cmd = doc! { "insert": self.synced.name(), "documents": docs, "ordered": false };
            let reply = self
                .db
                .run_command(cmd)
                .await
                .map_err(|e| self.err("create sync records", &e))?;
            for e in batch::write_errors(&reply) {
                match chunk.get(e.index) {
                    Some(v) if e.code == DUPLICATE_KEY => exists.push(v.clone()),
                    _ => {
                        return Err(StoreError::new(
                            StoreErrorKind::Fatal,
                            format!("create sync records: error {}: {}", e.code, e.message),
                        ))
                    }
                }
            }
        }
        if exists.is_empty() {
            Ok(())
        } else {
            self.record_synced(&exists).await
        }
    }

    async fn record_synced(&self, versions: &[(Key, DateTime)]) -> Result<(), StoreError> {
        for chunk in versions.chunks(KEYS_PER_QUERY.min(MAX_WRITE_BATCH_SIZE)) {
            let updates: Vec<Bson> = chunk
                .iter()
                .map(|(k, v)| Bson::Document(synced_statement(k, *v)))
                .collect();
            let cmd = doc! { "update": self.synced.name(), "updates": updates, "ordered": false };
            let reply = self
                .db
                .run_command(cmd)
                .await
                .map_err(|e| self.err("record sync records", &e))?;
            if let Some(e) = batch::write_errors(&reply).first() {
                // A duplicate key is a concurrent upsert of the same key: retrying wins.
                let kind = if e.code == DUPLICATE_KEY {
                    StoreErrorKind::Transient
                } else {
                    StoreErrorKind::Fatal
                };
                return Err(StoreError::new(
                    kind,
                    format!("record sync records: error {}: {}", e.code, e.message),
                ));
            }
        }
        Ok(())
    }

    async fn remove_synced(&self, keys: &[Key]) -> Result<(), StoreError> {
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            self.synced
                .delete_many(doc! { "_id": { "$in": ids } })
                .await
                .map_err(|e| self.err("remove sync records", &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_name_holds_both_namespaces() {
        let p = pair_name("app", "items", "cloud", "items");
        assert_eq!(p, "app.items__cloud.items");
        assert_eq!(
            tombstones_collection(&p),
            "tombstones_app.items__cloud.items"
        );
    }

    #[test]
    fn tombstones_are_inserted_or_overwrite_only_older() {
        let t = Tombstone {
            key: Key(Bson::String("k".into())),
            deleted_at: DateTime::from_millis(10),
            origin: Side::Cloud,
        };
        assert_eq!(
            tombstone_document(&t),
            doc! {"_id": "k", "deletedAt": DateTime::from_millis(10), "origin": "cloud"}
        );
        let fields = doc! {"deletedAt": DateTime::from_millis(10), "origin": "cloud"};
        assert_eq!(
            tombstone_statement(&t),
            doc! {"q": {"_id": "k", "deletedAt": {"$lt": DateTime::from_millis(10)}}, "u": {"$set": fields}}
        );
    }

    #[test]
    fn sync_records_are_upserted_as_replacements_and_read_back() {
        let k = Key(Bson::String("k".into()));
        let v = DateTime::from_millis(7);
        assert_eq!(
            synced_statement(&k, v),
            doc! {"q": {"_id": "k"}, "u": {"updatedAt": v}, "upsert": true}
        );
        assert_eq!(
            parse_synced(&doc! {"_id": "k", "updatedAt": v}),
            Some((k, v))
        );
        assert_eq!(parse_synced(&doc! {"_id": "k", "updatedAt": 7}), None);
        assert_eq!(synced_collection("a.b__c.d"), "synced_a.b__c.d");
    }

    #[test]
    fn malformed_tombstones_are_ignored() {
        let good = doc! {"_id": 1, "deletedAt": DateTime::from_millis(3), "origin": "local"};
        let t = parse_tombstone(good).unwrap();
        assert_eq!(t.key.as_bson(), &Bson::Int32(1));
        assert_eq!(t.deleted_at, DateTime::from_millis(3));
        assert_eq!(t.origin, Side::Local);
        assert!(parse_tombstone(doc! {"_id": 1, "origin": "local"}).is_none());
        assert!(parse_tombstone(
            doc! {"_id": 1, "deletedAt": DateTime::from_millis(3), "origin": "x"}
        )
        .is_none());
    }
}
