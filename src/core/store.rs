//! The storage traits the engine talks to. They are shaped after what MongoDB does in one
//! round trip (a change stream, a sorted scan with projection, an unordered bulk write of
//! filtered upserts/deletes) so the MongoDB adapter stays thin; the in-memory store in
//! [`crate::core::memory`] implements them for tests.

use async_trait::async_trait;
use bson::{DateTime, Document};

use crate::core::error::StoreError;
use crate::core::types::{
    Key, ResumeToken, ScanEntry, Side, StreamItem, Tombstone, Write, WriteOutcome,
};

/// An open change stream on one collection.
#[async_trait]
pub trait ChangeStream: Send {
    /// Wait for the next item. Returns `Progress` items periodically when idle (at most
    /// about once per second) so the engine can checkpoint and measure liveness.
    /// Errors: `HistoryLost`/`Invalidated` end the stream; `Transient` means the caller
    /// should reopen from its last checkpoint.
    async fn next(&mut self) -> Result<StreamItem, StoreError>;
}

/// Where one side's single change stream comes from: the collections of every pair on
/// that side (MongoDB: one database- or cluster-level stream matching their namespaces).
/// Each event's `pair` is the index of its collection's pair in the engine.
#[async_trait]
pub trait StreamSource: Send + Sync {
    /// Open the stream after `resume_after` (or from now); see
    /// [`CollectionStore::open_stream`].
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError>;
}

/// The stream of one collection as the source of a one-pair engine (every event is
/// pair 0's).
pub struct CollectionStream(pub std::sync::Arc<dyn CollectionStore>);

#[async_trait]
impl StreamSource for CollectionStream {
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError> {
        self.0.open_stream(resume_after).await
    }
}

/// One synchronised collection on one side.
#[async_trait]
pub trait CollectionStore: Send + Sync {
    /// Open a change stream that yields changes after `resume_after`, or changes from
    /// now when `None`. Events carry the post-image (`fullDocument: updateLookup`); an
    /// update whose document is already gone is reported as a `Delete`… or skipped; the
    /// later delete event follows either way.
    /// Fails with `HistoryLost` when the token is older than the retained history.
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError>;

    /// Up to `limit` whole documents with their keys and raw `updatedAt` values, sorted
    /// by `_id` ascending (MongoDB order), strictly after `after`. Whole documents, not
    /// a projection: a reconcile compares the content of every key whose versions are
    /// equal (most of them) and copies the others, so a projected scan would need a
    /// second round trip per page fetching nearly the same documents by key.
    async fn scan(&self, after: Option<&Key>, limit: usize) -> Result<Vec<ScanEntry>, StoreError>;

    /// The full documents for `keys` (in any order; missing keys are simply absent).
    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Document>, StoreError>;

    /// Apply `writes` as one unordered batch. Returns one outcome per write, in order.
    /// `Err` means the batch as a whole failed (nothing is known to be applied; the
    /// writes are idempotent, so the caller retries them all).
    async fn apply(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Number of documents (an estimate is fine): drives progress bars.
    async fn count(&self) -> Result<u64, StoreError>;

    /// The server's wall clock now, where the store can tell (`None`: it cannot; the
    /// daemon's clock stands in). Read by the future-timestamp guard.
    async fn server_time(&self) -> Result<Option<DateTime>, StoreError> {
        Ok(None)
    }
}

/// Engine state that must survive restarts: per-side checkpoints, tombstones and sync
/// records. Lives on the local deployment (`state.database`).
///
/// A sync record is, per key, the `updatedAt` version both sides last agreed on (written
/// after the engine made them agree, CouchDB-style): it lets a full reconcile tell "the
/// other side deleted it since" (one-sided copy not newer than the record) from "created
/// here" (no record) when no tombstone exists because the delete's event was lost.
/// A missing record is always safe (the document is copied, as without records).
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The last saved resume token of `side`'s stream.
    async fn load_checkpoint(&self, side: Side) -> Result<Option<ResumeToken>, StoreError>;
    /// Save `side`'s resume token (overwrites).
    async fn save_checkpoint(&self, side: Side, token: &ResumeToken) -> Result<(), StoreError>;
    /// Forget `side`'s checkpoint (after history loss, before the reconcile that
    /// replaces it).
    async fn clear_checkpoint(&self, side: Side) -> Result<(), StoreError>;

    /// Tombstones that exist for `keys` (in any order).
    async fn tombstones(&self, keys: &[Key]) -> Result<Vec<Tombstone>, StoreError>;
    /// Record tombstones; an existing tombstone for the same key keeps the later
    /// `deleted_at` (and that one's origin).
    async fn record_tombstones(&self, tombstones: &[Tombstone]) -> Result<(), StoreError>;
    /// Remove the tombstones of `keys` (the documents were re-created by a newer write).
    async fn remove_tombstones(&self, keys: &[Key]) -> Result<(), StoreError>;
    /// Remove tombstones deleted before `before`; returns how many. (MongoDB also has a
    /// TTL index doing this.)
    async fn expire_tombstones(&self, before: DateTime) -> Result<u64, StoreError>;

    /// The sync records that exist for `keys` (in any order; missing keys are absent).
    async fn synced_versions(&self, keys: &[Key]) -> Result<Vec<(Key, DateTime)>, StoreError>;
    /// Up to `limit` sync records sorted by key ascending (MongoDB `_id` order), strictly
    /// after `after`: what a reconcile merge-joins with its scans instead of looking every
    /// page's keys up. A malformed record is returned with `None` (so a short page still
    /// means the end) and is treated as missing.
    async fn scan_synced(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<DateTime>)>, StoreError>;
    /// Record that both sides hold version `updatedAt` of each key (upsert, overwrites).
    async fn record_synced(&self, versions: &[(Key, DateTime)]) -> Result<(), StoreError>;
    /// [`StateStore::record_synced`] for keys the caller just saw without a record, so a
    /// store may insert instead of upserting (a key recorded meanwhile must still end up
    /// with the given version).
    async fn create_synced(&self, versions: &[(Key, DateTime)]) -> Result<(), StoreError> {
        self.record_synced(versions).await
    }
    /// Forget the sync records of `keys` (the documents were deleted).
    async fn remove_synced(&self, keys: &[Key]) -> Result<(), StoreError>;
}
