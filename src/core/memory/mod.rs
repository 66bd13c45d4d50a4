//! In-memory [`CollectionStore`] with MongoDB-like change streams, for tests and the
//! benchmark: every change gets a monotonically increasing sequence number encoded in
//! its resume token, a bounded history is retained (older tokens fail with
//! `HistoryLost`), resumed streams re-deliver events after the token, idle streams emit
//! `Progress`, and faults can be injected. The test drives a settable "server clock".

mod merged;
mod state;
mod stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bson::{doc, DateTime, Document, RawDocumentBuf};
use tokio::sync::watch;

use crate::core::doc::{key_of, same_content, updated_at};
use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::{ChangeStream, CollectionStore};
use crate::core::types::{ChangeKind, Key, ResumeToken, ScanEntry, Side, Write, WriteOutcome};

pub use merged::merged_streams;
pub use state::MemoryState;

/// Which documents a filtered [`MemoryStore`] handle sees (a pair's filter).
pub type MemoryFilter = Arc<dyn Fn(&Document) -> bool + Send + Sync>;

/// Store calls whose next invocations can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `open_stream`.
    OpenStream,
    /// `ChangeStream::next`.
    Next,
    /// `scan`.
    Scan,
    /// `fetch`.
    Fetch,
    /// `apply`.
    Apply,
    /// Every [`crate::core::StateStore`] call (on [`MemoryState`]).
    State,
}

/// Counters of what happened to a store, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Client writes that changed something (made through the client API).
    pub client_writes: u64,
    /// `apply` calls that succeeded.
    pub apply_calls: u64,
    /// Write statements received through `apply`.
    pub apply_statements: u64,
    /// Write statements through `apply` that changed a document.
    pub engine_changes: u64,
    /// Largest `limit` passed to `scan`.
    pub max_scan_limit: u64,
    /// Largest number of keys passed to one `fetch`.
    pub max_fetch_keys: u64,
    /// Keys passed to `fetch`, all calls together.
    pub fetched_keys: u64,
}

/// One retained change.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    /// Sequence number (the token encodes it).
    pub(crate) seq: u64,
    /// Changed key.
    pub(crate) key: Key,
    /// The change.
    pub(crate) kind: ChangeKind,
    /// Server time of the change.
    pub(crate) time: DateTime,
    /// The handle whose `apply` made the change (`None`: a client's write).
    pub(crate) writer: Option<u64>,
}

/// Mutable state behind the store's lock.
pub(crate) struct Inner {
    /// Documents by key.
    docs: BTreeMap<Key, Document>,
    /// Retained change history, oldest first.
    pub(crate) log: VecDeque<LogEntry>,
    /// Sequence of the newest change.
    pub(crate) seq: u64,
    /// Oldest sequence a stream can resume after.
    pub(crate) floor: u64,
    /// How many changes are retained.
    retain: usize,
    /// The "server clock" used for engine writes.
    clock: DateTime,
    /// Remaining injected failures per call kind.
    faults: HashMap<FaultOp, u32>,
    /// Bumped by `drop_streams`; streams of an older epoch fail.
    pub(crate) epoch: u64,
    /// Counters.
    counters: StoreCounters,
    /// Name of the `updatedAt` field.
    field: String,
    /// Which side this collection plays (stamped on its change events).
    pub(crate) side: Side,
    /// Delay of every `apply` reply (see [`MemoryStore::set_reply_delay`]).
    pub(crate) reply_delay: std::time::Duration,
}

impl Inner {
    /// Consume one injected failure of `op`, if any.
    pub(crate) fn take_fault(&mut self, op: FaultOp) -> Option<StoreError> {
        let left = self.faults.get_mut(&op)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(StoreError::transient(format!("injected {op:?} failure")))
    }

    /// Set or delete `key` (`writer`: the engine handle making the change, `None` for a
    /// client), logging a change event unless nothing changed.
    fn change(
        &mut self,
        key: Key,
        new: Option<Document>,
        time: DateTime,
        writer: Option<u64>,
    ) -> bool {
        let changed = match (&new, self.docs.get(&key)) {
            (None, None) => false,
            (Some(n), Some(old)) => !same_content(n, old),
            _ => true,
        };
        if !changed {
            return false;
        }
        let kind = match new {
            Some(d) => {
                self.docs.insert(key.clone(), d.clone());
                ChangeKind::Upsert(d)
            }
            None => {
                self.docs.remove(&key);
                ChangeKind::Delete
            }
        };
        self.seq += 1;
        self.log.push_back(LogEntry {
            seq: self.seq,
            key,
            kind,
            time,
            writer,
        });
        while self.log.len() > self.retain {
            if let Some(old) = self.log.pop_front() {
                self.floor = old.seq;
            }
        }
        true
    }

    fn apply_one(&mut self, w: &Write, writer: u64, filter: Option<&MemoryFilter>) -> WriteOutcome {
        let now = self.clock;
        // A filtered handle never changes a document outside its filter (MongoDB: the
        // filter is part of every write's query, and an upsert onto such an `_id`
        // fails with a duplicate key).
        if let (Some(f), Some(cur)) = (filter, self.docs.get(w.key())) {
            if !f(cur) {
                return WriteOutcome::NotApplied;
            }
        }
        // As the MongoDB adapter: only deletes are marked (they are made in
        // transactions); the echo of a copy comes back unmarked and is decided from
        // state, where both sides already agree.
        let by =
            matches!(w, Write::DeleteIfNotNewer { .. } | Write::Delete { .. }).then_some(writer);
        let cur_u = self.docs.get(w.key()).map(|d| updated_at(d, &self.field));
        let changed = match w {
            Write::UpsertIfNewer {
                key,
                doc,
                updated_at: u,
                or_equal,
            } => match cur_u {
                Some(None) => return WriteOutcome::NotApplied,
                Some(Some(t)) if t > *u || (t == *u && !or_equal) => {
                    return WriteOutcome::NotApplied
                }
                _ => self.change(key.clone(), Some(doc.clone()), now, by),
            },
            Write::DeleteIfNotNewer { key, deleted_at } => match cur_u {
                Some(Some(t)) if t <= *deleted_at => self.change(key.clone(), None, now, by),
                _ => return WriteOutcome::NotApplied,
            },
            Write::Replace { key, doc } => self.change(key.clone(), Some(doc.clone()), now, by),
            Write::Delete { key } => {
                if cur_u.is_none() {
                    return WriteOutcome::NotApplied;
                }
                self.change(key.clone(), None, now, by)
            }
        };
        if changed {
            self.counters.engine_changes += 1;
        }
        WriteOutcome::Applied
    }
}

/// Shared part of a [`MemoryStore`].
pub(crate) struct Shared {
    /// Everything mutable.
    pub(crate) inner: Mutex<Inner>,
    /// Carries the newest sequence (and epoch bumps) to waiting streams.
    pub(crate) notify: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a failing test.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-memory collection with a change stream. Clones share the same collection.
#[derive(Clone)]
pub struct MemoryStore {
    /// The shared collection.
    shared: Arc<Shared>,
    /// Of a filtered handle ([`MemoryStore::filtered`]): the documents it sees.
    filter: Option<MemoryFilter>,
    /// Who writes through this handle's `apply`: the change events of its deletes come
    /// back marked as its own on the streams it opens (what the session id of the
    /// MongoDB adapter's delete transactions does).
    writer: u64,
}

/// Source of writer identities of [`MemoryStore`] handles.
static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn new_writer() -> u64 {
    WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The resume token of sequence `seq`.
pub(crate) fn token(seq: u64) -> ResumeToken {
    ResumeToken(doc! {"seq": seq as i64})
}

fn token_seq(t: &ResumeToken) -> Option<u64> {
    t.0.get_i64("seq").ok().map(|s| s as u64)
}

impl MemoryStore {
    /// An empty collection playing `side`, whose `updatedAt` field is
    /// `updated_at_field`, retaining the last `retain` changes.
    pub fn new(side: Side, updated_at_field: &str, retain: usize) -> Self {
        let (notify, _) = watch::channel(0);
        MemoryStore {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    docs: BTreeMap::new(),
                    log: VecDeque::new(),
                    seq: 0,
                    floor: 0,
                    retain: retain.max(1),
                    clock: DateTime::from_millis(0),
                    faults: HashMap::new(),
                    epoch: 0,
                    counters: StoreCounters::default(),
                    field: updated_at_field.to_string(),
                    side,
                    reply_delay: std::time::Duration::ZERO,
                }),
                notify,
            }),
            writer: new_writer(),
            filter: None,
        }
    }

    /// The same handle (same writer) seeing only the documents `filter` accepts, as a
    /// filtered pair's store: scans, fetches and counts skip the others, writes never
    /// change them; its change stream still reports every change of the collection.
    pub fn filtered(&self, filter: MemoryFilter) -> Self {
        MemoryStore {
            filter: Some(filter),
            ..self.clone()
        }
    }

    /// An identifier of the collection (shared by its handles), unique in the process.
    pub fn collection_id(&self) -> String {
        format!("{:x}", Arc::as_ptr(&self.shared) as usize)
    }

    fn sees(&self, d: &Document) -> bool {
        self.filter.as_ref().is_none_or(|f| f(d))
    }

    /// Another handle on the same collection with a writer identity of its own: what a
    /// second engine sharing the collection (another edge's daemon) uses, whose writes
    /// this handle's streams report as anybody's.
    pub fn another_writer(&self) -> Self {
        MemoryStore {
            shared: self.shared.clone(),
            writer: new_writer(),
            filter: self.filter.clone(),
        }
    }

    fn wake(&self, inner: &Inner) {
        self.shared.notify.send_replace(inner.seq + inner.epoch);
    }

    /// Client write: insert or replace `doc` (by its `_id`). Returns whether it changed
    /// anything (an identical replace emits no event, like MongoDB).
    pub fn put(&self, doc: Document) -> bool {
        let mut inner = self.shared.lock();
        let now = inner.clock;
        let changed = inner.change(key_of(&doc), Some(doc), now, None);
        if changed {
            inner.counters.client_writes += 1;
            self.wake(&inner);
        }
        changed
    }

    /// Client delete at server time `at`. Returns whether a document was deleted.
    pub fn delete(&self, key: &Key, at: DateTime) -> bool {
        let mut inner = self.shared.lock();
        let changed = inner.change(key.clone(), None, at, None);
        if changed {
            inner.counters.client_writes += 1;
            self.wake(&inner);
        }
        changed
    }

    /// Set the server clock used as the time of engine writes.
    pub fn set_clock(&self, now: DateTime) {
        self.shared.lock().clock = now;
    }

    /// The document stored under `key`.
    pub fn get(&self, key: &Key) -> Option<Document> {
        self.shared.lock().docs.get(key).cloned()
    }

    /// All documents, sorted by key.
    pub fn snapshot(&self) -> Vec<Document> {
        self.shared.lock().docs.values().cloned().collect()
    }

    /// Write and call counters.
    pub fn counters(&self) -> StoreCounters {
        self.shared.lock().counters
    }

    /// The token of the newest change (resuming from it skips all history).
    pub fn latest_token(&self) -> ResumeToken {
        token(self.shared.lock().seq)
    }

    /// Make the next `n` calls of `op` fail with a transient error.
    pub fn fail_next(&self, op: FaultOp, n: u32) {
        *self.shared.lock().faults.entry(op).or_default() += n;
    }

    /// Drop every open stream: their next `next()` fails with a transient error.
    pub fn drop_streams(&self) {
        let mut inner = self.shared.lock();
        inner.epoch += 1;
        self.wake(&inner);
    }

    /// Forget all retained history: every existing token becomes too old.
    pub fn lose_history(&self) {
        let mut inner = self.shared.lock();
        inner.log.clear();
        inner.floor = inner.seq;
        inner.epoch += 1;
        self.wake(&inner);
    }

    /// Delay every `apply` reply by `d` after the writes are made (and visible to
    /// streams), like a slow network: lets a reader see an engine write's echo before
    /// the engine learns the write's outcome.
    pub fn set_reply_delay(&self, d: std::time::Duration) {
        self.shared.lock().reply_delay = d;
    }

    /// Change how many changes are retained.
    pub fn set_retained_history(&self, retain: usize) {
        self.shared.lock().retain = retain.max(1);
    }
}

#[async_trait]
impl CollectionStore for MemoryStore {
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError> {
        let mut inner = self.shared.lock();
        if let Some(e) = inner.take_fault(FaultOp::OpenStream) {
            return Err(e);
        }
        let pos = match resume_after.as_ref() {
            None => inner.seq,
            Some(t) => {
                let s = token_seq(t)
                    .ok_or_else(|| StoreError::history_lost("unrecognised resume token"))?;
                if s < inner.floor {
                    return Err(StoreError::history_lost(format!(
                        "resume point {s} is older than the retained history ({})",
                        inner.floor
                    )));
                }
                s.min(inner.seq)
            }
        };
        Ok(Box::new(stream::MemoryStream::new(
            self.shared.clone(),
            pos,
            inner.epoch,
            self.writer,
        )))
    }

    async fn scan(&self, after: Option<&Key>, limit: usize) -> Result<Vec<ScanEntry>, StoreError> {
        let mut inner = self.shared.lock();
        if let Some(e) = inner.take_fault(FaultOp::Scan) {
            return Err(e);
        }
        inner.counters.max_scan_limit = inner.counters.max_scan_limit.max(limit as u64);
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let field = inner.field.clone();
        inner
            .docs
            .range((lower, Bound::Unbounded))
            .filter(|(_, d)| self.sees(d))
            .take(limit)
            .map(|(k, d)| {
                let doc = RawDocumentBuf::from_document(d).map_err(|e| {
                    StoreError::new(StoreErrorKind::Fatal, format!("unserialisable {k}: {e}"))
                })?;
                Ok(ScanEntry {
                    key: k.clone(),
                    updated_at: d.get(&field).cloned(),
                    doc,
                })
            })
            .collect()
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Document>, StoreError> {
        let mut inner = self.shared.lock();
        if let Some(e) = inner.take_fault(FaultOp::Fetch) {
            return Err(e);
        }
        inner.counters.max_fetch_keys = inner.counters.max_fetch_keys.max(keys.len() as u64);
        inner.counters.fetched_keys += keys.len() as u64;
        Ok(keys
            .iter()
            .filter_map(|k| inner.docs.get(k).filter(|d| self.sees(d)).cloned())
            .collect())
    }

    async fn apply(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError> {
        let (out, delay) = {
            let mut inner = self.shared.lock();
            if let Some(e) = inner.take_fault(FaultOp::Apply) {
                return Err(e);
            }
            inner.counters.apply_calls += 1;
            inner.counters.apply_statements += writes.len() as u64;
            let before = inner.seq;
            let out: Vec<WriteOutcome> = writes
                .iter()
                .map(|w| inner.apply_one(w, self.writer, self.filter.as_ref()))
                .collect();
            if inner.seq != before {
                self.wake(&inner);
            }
            (out, inner.reply_delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(out)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let inner = self.shared.lock();
        Ok(inner.docs.values().filter(|d| self.sees(d)).count() as u64)
    }

    async fn server_time(&self) -> Result<Option<DateTime>, StoreError> {
        // The settable clock; before a test sets one, the daemon's clock stands in.
        let clock = self.shared.lock().clock;
        Ok((clock.timestamp_millis() != 0).then_some(clock))
    }
}
