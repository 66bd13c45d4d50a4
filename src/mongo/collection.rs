//! [`MongoStore`]: one synchronised collection as a core [`CollectionStore`]. Scans are
//! keyset pages of whole documents in `_id` order, fetches are `$in` finds, and a batch of writes becomes
//! one unordered `update` command and one unordered `delete` command, sent with
//! `runCommand` so every statement's own error can be read. A store with a filter (a
//! filtered pair) is a view: every query and write statement also requires the filter.

use std::collections::HashSet;

use async_trait::async_trait;
use bson::{doc, Bson, Document, RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};
use futures::TryStreamExt;
use mongodb::{Client, ClientSession, Collection, Database};

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::{ChangeStream, CollectionStore};
use crate::core::types::{Key, ResumeToken, ScanEntry, Side, Write, WriteOutcome};
use crate::mongo::batch::{self, as_count, Statement};
use crate::mongo::error::{error_code, map_error};
use crate::mongo::own::OwnSessions;
use crate::mongo::scan_filter::after_filter;
use crate::mongo::stream;

/// `IllegalOperation`: what a server without transactions answers a transaction with.
const ILLEGAL_OPERATION: i32 = 20;

/// Keys per `$in` query: keeps the filter far below the 16 MiB document limit for
/// any reasonable `_id`.
const KEYS_PER_QUERY: usize = 10_000;

/// One collection on one side.
#[derive(Clone, Debug)]
pub struct MongoStore {
    /// Database holding the collection (write commands run here).
    db: Database,
    /// The collection.
    coll: Collection<Document>,
    /// `db.coll`, for messages.
    ns: String,
    /// Last-modified field used by the conditional writes (may be a dotted path).
    updated_at_field: String,
    /// Side stamped on change events.
    side: Side,
    /// The client (sessions for the transactions deletes are made in).
    client: Client,
    /// The daemon's transaction sessions: with them, deletes are made in transactions
    /// and change events made by them are marked as the engine's own.
    own: Option<std::sync::Arc<OwnSessions>>,
    /// Only documents matching this query belong to the synced set (a filtered pair).
    filter: Option<Document>,
}

impl MongoStore {
    /// The collection `db.coll` reached through `client`, whose documents carry their
    /// last-modified time in `updated_at_field`. Change events are stamped
    /// [`Side::Local`] unless [`MongoStore::with_side`] says otherwise.
    pub fn new(client: Client, db: &str, coll: &str, updated_at_field: &str) -> Self {
        let database = client.database(db);
        MongoStore {
            client,
            own: None,
            filter: None,
            coll: database.collection(coll),
            db: database,
            ns: format!("{db}.{coll}"),
            updated_at_field: updated_at_field.to_string(),
            side: Side::Local,
        }
    }

    /// The same store, making its deletes in transactions of sessions recorded in
    /// `own`, whose change events it marks as the engine's own (see [`OwnSessions`]).
    pub fn with_own_sessions(mut self, own: std::sync::Arc<OwnSessions>) -> Self {
        self.own = Some(own);
        self
    }

    /// The same store, stamping change events with `side`.
    pub fn with_side(mut self, side: Side) -> Self {
        self.side = side;
        self
    }

    /// The same store seeing only the documents that match `filter`: scans, fetches
    /// and counts return only those, and writes never change any other.
    pub fn with_filter(mut self, filter: Document) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The query a document must match to belong to this store, if any.
    pub fn filter(&self) -> Option<&Document> {
        self.filter.as_ref()
    }

    /// `db.coll` of this store.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The driver collection (tests and tools).
    pub fn collection(&self) -> &Collection<Document> {
        &self.coll
    }

    /// The client the store reaches its collection through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The side stamped on change events.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The daemon's transaction sessions, if the store makes its deletes in them.
    pub fn own_sessions(&self) -> Option<&std::sync::Arc<OwnSessions>> {
        self.own.as_ref()
    }

    /// `query` restricted to this store's documents (itself when unfiltered).
    fn within(&self, query: Document) -> Document {
        batch::within(query, self.filter.as_ref())
    }

    /// Maps a driver error, naming what was being done.
    fn err(&self, what: &str, e: &mongodb::error::Error) -> StoreError {
        map_error(e, &format!("{what} {}", self.ns), &[])
    }

    /// Runs one write command made of `statements[range]` under `array` (`updates` or
    /// `deletes`) and returns the reply.
    async fn run_write(
        &self,
        command: &str,
        array: &str,
        statements: &[Statement],
        session: Option<&mut ClientSession>,
    ) -> Result<Document, StoreError> {
        // Sent as encoded by the plan: no statement is encoded twice.
        let mut body = RawArrayBuf::new();
        for s in statements {
            body.push(s.body.clone());
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append(command, self.coll.name());
        cmd.append(array, body);
        cmd.append("ordered", false);
        let run = self.db.run_raw_command(cmd);
        let reply = match session {
            Some(s) => run.session(s).await,
            None => run.await,
        }
        .map_err(|e| self.err(command, &e))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(StoreError::new(
                StoreErrorKind::Transient,
                format!("{command} {}: write concern error: {wce}", self.ns),
            ));
        }
        Ok(reply)
    }

    /// Sends the upserts/replacements and records each statement's outcome.
    async fn apply_updates(
        &self,
        writes: &[Write],
        statements: &[Statement],
        outcomes: &mut [Option<WriteOutcome>],
    ) -> Result<(), StoreError> {
        for range in batch::chunks(statements) {
            let chunk = &statements[range];
            let reply = self.run_write("update", "updates", chunk, None).await?;
            let errors = batch::write_errors(&reply);
            for (i, s) in chunk.iter().enumerate() {
                let error = errors.iter().find(|e| e.index == i);
                outcomes[s.index] = Some(batch::update_outcome(
                    &writes[s.index],
                    error,
                    self.filter.is_some(),
                ));
            }
        }
        Ok(())
    }

    /// Sends the deletes. The reply only has a total `n`, so outcomes are made exact
    /// around it: when a chunk has several statements, one `find` first tells which keys
    /// exist (absent ones are `NotApplied` and not sent), and when the server then
    /// deleted fewer than were sent, one more `find` tells which are still there (with
    /// own sessions, a transaction that removed them all comes first, see below).
    async fn apply_deletes(
        &self,
        writes: &[Write],
        statements: &[Statement],
        outcomes: &mut [Option<WriteOutcome>],
    ) -> Result<(), StoreError> {
        for range in batch::chunks(statements) {
            let mut chunk: Vec<Statement> = statements[range].to_vec();
            // The usual case (every key still there, not newer) costs no extra read: a
            // transaction that removed fewer than it was sent is undone, and the exact
            // way below follows.
            if let Some(own) = &self.own {
                if chunk.len() > 1
                    && self
                        .delete_in_transaction(own, &chunk, true)
                        .await?
                        .is_some()
                {
                    for st in &chunk {
                        outcomes[st.index] = Some(WriteOutcome::Applied);
                    }
                    continue;
                }
            }
            if chunk.len() > 1 {
                let keys: Vec<Key> = chunk
                    .iter()
                    .map(|s| writes[s.index].key().clone())
                    .collect();
                let present: HashSet<Key> = self.existing_keys(&keys).await?.into_iter().collect();
                chunk.retain(|s| {
                    let here = present.contains(writes[s.index].key());
                    if !here {
                        outcomes[s.index] = Some(WriteOutcome::NotApplied);
                    }
                    here
                });
                if chunk.is_empty() {
                    continue;
                }
            }
            let reply = match &self.own {
                Some(own) => self
                    .delete_in_transaction(own, &chunk, false)
                    .await?
                    .unwrap_or_default(),
                None => self.run_write("delete", "deletes", &chunk, None).await?,
            };
            let errors = batch::write_errors(&reply);
            let mut pending = Vec::new();
            for (i, s) in chunk.iter().enumerate() {
                match errors.iter().find(|e| e.index == i) {
                    Some(e) => {
                        outcomes[s.index] = Some(WriteOutcome::Failed(format!(
                            "error {}: {}",
                            e.code, e.message
                        )))
                    }
                    None => pending.push(s.index),
                }
            }
            let n = as_count(reply.get("n")).unwrap_or(0);
            if n == pending.len() as i64 {
                pending
                    .iter()
                    .for_each(|&i| outcomes[i] = Some(WriteOutcome::Applied));
            } else if n <= 0 {
                pending
                    .iter()
                    .for_each(|&i| outcomes[i] = Some(WriteOutcome::NotApplied));
            } else {
                let keys: Vec<Key> = pending.iter().map(|&i| writes[i].key().clone()).collect();
                let present: HashSet<Key> = self.existing_keys(&keys).await?.into_iter().collect();
                for &i in &pending {
                    outcomes[i] = Some(if present.contains(writes[i].key()) {
                        WriteOutcome::NotApplied
                    } else {
                        WriteOutcome::Applied
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs one `delete` command in a transaction of a session recorded in `own` first,
    /// so its change events are known as the engine's own, even after a restart. With
    /// `all`, the transaction is aborted (and `None` returned) unless every statement
    /// removed a document.
    async fn delete_in_transaction(
        &self,
        own: &OwnSessions,
        statements: &[Statement],
        all: bool,
    ) -> Result<Option<Document>, StoreError> {
        let txn_err = |what: &str, e: &mongodb::error::Error| {
            if error_code(e) == Some(ILLEGAL_OPERATION) {
                // A standalone server (or an emulator without transactions).
                StoreError::new(
                    StoreErrorKind::Fatal,
                    format!(
                        "{what} {}: the server refuses multi-document transactions, which                          the daemon makes its deletes in (a replica set or sharded cluster                          with featureCompatibilityVersion 4.0 or later is needed): {}",
                        self.ns, e.kind
                    ),
                )
            } else {
                self.err(what, e)
            }
        };
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| self.err("start session", &e))?;
        own.remember(&session).await?;
        session
            .start_transaction()
            .await
            .map_err(|e| txn_err("start transaction", &e))?;
        let reply = match self
            .run_write("delete", "deletes", statements, Some(&mut session))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = session.abort_transaction().await;
                return Err(e);
            }
        };
        let removed_all = batch::write_errors(&reply).is_empty()
            && as_count(reply.get("n")) == Some(statements.len() as i64);
        if all && !removed_all {
            session
                .abort_transaction()
                .await
                .map_err(|e| txn_err("abort transaction", &e))?;
            return Ok(None);
        }
        // An unknown commit result may be retried (the commit is idempotent); anything
        // else fails the batch, which the engine retries whole (its deletes are
        // conditional, so a transaction that did commit makes them no-ops).
        let mut attempts = 0;
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(Some(reply)),
                Err(e)
                    if attempts < 3
                        && e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(txn_err("commit transaction", &e)),
            }
        }
    }

    /// Which of `keys` exist now.
    async fn existing_keys(&self, keys: &[Key]) -> Result<Vec<Key>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            let docs: Vec<Document> = self
                .coll
                .find(self.within(doc! { "_id": { "$in": ids } }))
                // One reply for the whole chunk (the default first batch is 101).
                .batch_size(batch::in_batch(chunk.len()))
                .projection(doc! { "_id": 1 })
                .await
                .map_err(|e| self.err("find", &e))?
                .try_collect()
                .await
                .map_err(|e| self.err("find", &e))?;
            out.extend(
                docs.into_iter()
                    .filter_map(|mut d| d.remove("_id"))
                    .map(Key),
            );
        }
        Ok(out)
    }
}

/// An owned copy of a raw value (`None` if it is malformed).
fn owned(v: RawBsonRef<'_>) -> Option<Bson> {
    Bson::try_from(v.to_raw_bson()).ok()
}

/// Value at a dotted `path` inside a raw document.
fn raw_path(doc: &RawDocument, path: &str) -> Option<Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?).ok()??;
    for part in parts {
        value = value.as_document()?.get(part).ok()??;
    }
    owned(value)
}

#[async_trait]
impl CollectionStore for MongoStore {
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError> {
        let watched = stream::Watched::collection(self.coll.clone());
        stream::open_for_core(watched, resume_after.as_ref(), self.side, self.own.clone()).await
    }

    async fn scan(&self, after: Option<&Key>, limit: usize) -> Result<Vec<ScanEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
        // Raw documents: the reconcile compares them byte for byte and parses only the
        // few it copies, so most are never turned into maps.
        let docs: Vec<RawDocumentBuf> = self
            .coll
            .clone_with_type::<RawDocumentBuf>()
            .find(self.within(after_filter(after.map(Key::as_bson))))
            .sort(doc! { "_id": 1 })
            .limit(limit_i64)
            .batch_size(u32::try_from(limit).unwrap_or(u32::MAX))
            .await
            .map_err(|e| self.err("scan", &e))?
            .try_collect()
            .await
            .map_err(|e| self.err("scan", &e))?;
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                let updated_at = raw_path(&d, &self.updated_at_field);
                let key = Key(owned(d.get("_id").ok()??)?);
                Some(ScanEntry {
                    key,
                    updated_at,
                    doc: d,
                })
            })
            .collect())
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Document>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().map(|k| k.as_bson().clone()).collect();
            let docs: Vec<Document> = self
                .coll
                .find(self.within(doc! { "_id": { "$in": ids } }))
                // One reply for the whole chunk (the default first batch is 101).
                .batch_size(batch::in_batch(chunk.len()))
                .await
                .map_err(|e| self.err("fetch", &e))?
                .try_collect()
                .await
                .map_err(|e| self.err("fetch", &e))?;
            out.extend(docs);
        }
        Ok(out)
    }

    async fn apply(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError> {
        let batch::Plan {
            updates,
            deletes,
            mut outcomes,
        } = batch::plan(writes, &self.updated_at_field, self.filter.as_ref());
        if !updates.is_empty() {
            self.apply_updates(writes, &updates, &mut outcomes).await?;
        }
        if !deletes.is_empty() {
            self.apply_deletes(writes, &deletes, &mut outcomes).await?;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| WriteOutcome::Failed("no reply for this write".into())))
            .collect())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        // The estimate (collection metadata) cannot see a filter: a filtered store
        // counts its matching documents.
        match &self.filter {
            None => self.coll.estimated_document_count().await,
            Some(f) => self.coll.count_documents(f.clone()).await,
        }
        .map_err(|e| self.err("count", &e))
    }

    async fn server_time(&self) -> Result<Option<bson::DateTime>, StoreError> {
        // `hello` answers with the server's `localTime` (MongoDB manual, hello command).
        let reply = self
            .db
            .run_command(doc! {"hello": 1})
            .await
            .map_err(|e| self.err("hello", &e))?;
        Ok(reply.get_datetime("localTime").ok().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_updated_at_path_is_followed() {
        let d = doc! {"_id": 1, "meta": {"updatedAt": 5}, "top": 1};
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        assert_eq!(raw_path(&raw, "meta.updatedAt"), Some(Bson::Int32(5)));
        assert_eq!(raw_path(&raw, "top"), Some(Bson::Int32(1)));
        assert_eq!(raw_path(&raw, "top.x"), None);
        assert_eq!(raw_path(&raw, "missing"), None);
    }
}
