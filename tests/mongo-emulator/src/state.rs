//! Server state shared by every connection: the catalog and change history behind one
//! short-lived std mutex (so every stream sees one write order and no lock is held
//! across an await), open cursors, the retryable-write cache, faults and counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, RawDocumentBuf, Timestamp};
use tokio::sync::watch;

use crate::changestream::ChangeStream;
use crate::error::{CmdResult, CommandError};
use crate::failpoint::FailPoints;
use crate::faults::Faults;
use crate::oplog::{Event, EventKind, Oplog};
use crate::store::{Key, Store};

/// Idle time after which a cursor is killed (MongoDB's default `cursorTimeoutMillis`).
const CURSOR_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest document (`maxBsonObjectSize`).
pub const MAX_BSON_SIZE: usize = 16 * 1024 * 1024;

/// Catalog plus history, always changed together.
#[derive(Debug)]
pub struct Inner {
    /// Databases and documents.
    pub store: Store,
    /// Clock and change history.
    pub oplog: Oplog,
    /// When each document (by namespace and `_id`, deleted ones included) was last
    /// written: what a transaction's write-conflict check compares with its snapshot.
    pub versions: HashMap<(String, String), BTreeMap<Key, Timestamp>>,
    /// While a transaction's command runs (see `txn::Overlay`): the events it records,
    /// kept out of the history, and no document versions are bumped.
    pub capture: Option<Vec<Event>>,
    /// Whether `versions` are kept: only while a transaction is open (a write before
    /// every open transaction started cannot conflict with one).
    pub track_versions: Arc<AtomicBool>,
}

impl Inner {
    /// An empty catalog keeping at most `history_limit` events.
    pub fn new(history_limit: usize) -> Self {
        Inner {
            store: Store::default(),
            oplog: Oplog::new(history_limit),
            versions: HashMap::new(),
            capture: None,
            track_versions: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Record a change event: in the history, or captured for a transaction.
    pub fn record(&mut self, ev: Event) {
        match &mut self.capture {
            Some(events) => events.push(ev),
            None => self.oplog.push(ev),
        }
    }

    /// When the document `id` of `db.coll` was last written, if ever.
    pub fn version(&self, db: &str, coll: &str, id: &Key) -> Option<Timestamp> {
        self.versions
            .get(&(db.to_string(), coll.to_string()))?
            .get(id)
            .copied()
    }

    /// Records that the document `id` of `db.coll` was written at `ts`.
    pub fn set_version(&mut self, db: &str, coll: &str, id: Key, ts: Timestamp) {
        if self.capture.is_some() || !self.track_versions.load(Ordering::Relaxed) {
            return;
        }
        self.versions
            .entry((db.to_string(), coll.to_string()))
            .or_default()
            .insert(id, ts);
    }
}

/// An open cursor.
#[derive(Debug)]
pub enum Cursor {
    /// Remaining documents of a find/aggregate/list command.
    Docs {
        /// Namespace of the cursor (`db.coll`).
        ns: String,
        /// Documents not yet returned.
        docs: VecDeque<Document>,
    },
    /// A change stream.
    Stream(Box<ChangeStream>),
}

impl Cursor {
    /// The cursor's namespace.
    pub fn ns(&self) -> &str {
        match self {
            Cursor::Docs { ns, .. } => ns,
            Cursor::Stream(s) => &s.ns,
        }
    }
}

/// A registered cursor and when it was last used.
type CursorEntry = (Arc<Mutex<Cursor>>, Instant);

/// Replies of recent retryable writes, by (lsid, txnNumber).
#[derive(Debug, Default)]
pub struct RetryCache {
    /// Reply by key.
    replies: HashMap<(Vec<u8>, i64), Document>,
    /// Insertion order, for eviction.
    order: VecDeque<(Vec<u8>, i64)>,
}

/// How many retryable-write replies are remembered.
const RETRY_CACHE_SIZE: usize = 10_000;

impl RetryCache {
    /// A remembered reply.
    pub fn get(&self, key: &(Vec<u8>, i64)) -> Option<Document> {
        self.replies.get(key).cloned()
    }
    /// Remember a reply.
    pub fn put(&mut self, key: (Vec<u8>, i64), reply: Document) {
        if self.replies.insert(key.clone(), reply).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RETRY_CACHE_SIZE {
            if let Some(k) = self.order.pop_front() {
                self.replies.remove(&k);
            }
        }
    }
}

/// Everything the connection tasks share.
#[derive(Debug)]
pub struct Shared {
    /// Replica set name.
    pub replica_set: String,
    /// `host:port` reported in `hello`.
    pub advertised: String,
    /// electionId reported in `hello`.
    pub election_id: ObjectId,
    /// Catalog and history.
    inner: Mutex<Inner>,
    /// Bumped after each batch of change events (wakes awaiting getMores).
    changes: watch::Sender<u64>,
    /// Open cursors by id, with when each was last used (idle ones are reaped).
    cursors: Mutex<HashMap<i64, CursorEntry>>,
    /// Next cursor id.
    next_cursor: AtomicI64,
    /// Next connection id.
    next_connection: AtomicI64,
    /// Faults and counters.
    pub faults: Faults,
    /// `configureFailPoint` state.
    pub fail_points: FailPoints,
    /// Application name each connection gave in its handshake (`client.application`),
    /// which `failCommand`'s `appName` matches.
    pub app_names: Mutex<HashMap<i64, String>>,
    /// Retryable write replies.
    pub retry: Mutex<RetryCache>,
    /// Sessions' multi-document transactions. Locked before `inner` when both are.
    pub txns: Mutex<crate::txn::Transactions>,
}

/// Lock a std mutex, recovering from poisoning (state stays consistent: writers
/// validate before mutating).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Fresh state.
    pub fn new(replica_set: String, advertised: String, history_limit: usize) -> Self {
        let seed = i64::from_le_bytes(
            crate::store::random_bytes16()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        Shared {
            replica_set,
            advertised,
            election_id: ObjectId::parse_str("7fffffff0000000000000001").expect("valid hex"),
            inner: Mutex::new(Inner::new(history_limit)),
            changes: watch::channel(0).0,
            cursors: Mutex::new(HashMap::new()),
            next_cursor: AtomicI64::new((seed & 0x0000_7fff_ffff_0000).max(1 << 20)),
            next_connection: AtomicI64::new(1),
            faults: Faults::default(),
            fail_points: FailPoints::default(),
            app_names: Mutex::new(HashMap::new()),
            retry: Mutex::new(RetryCache::default()),
            txns: Mutex::new(crate::txn::Transactions::default()),
        }
    }

    /// Lock catalog + history. Never hold across an await.
    pub fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Wake change stream waiters (call after writes that produced events).
    pub fn notify_changes(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Subscribe to change notifications.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A new connection id.
    pub fn connection_id(&self) -> i64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Register a cursor; returns its id.
    pub fn add_cursor(&self, cursor: Cursor) -> i64 {
        let id = self.next_cursor.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut cursors = lock(&self.cursors);
        // MongoDB kills cursors idle for 10 minutes (cursorTimeoutMillis).
        cursors.retain(|_, (_, used)| now.duration_since(*used) < CURSOR_IDLE_TIMEOUT);
        cursors.insert(id, (Arc::new(Mutex::new(cursor)), now));
        id
    }

    /// An open cursor (marks it used).
    pub fn cursor(&self, id: i64) -> Option<Arc<Mutex<Cursor>>> {
        let mut cursors = lock(&self.cursors);
        let entry = cursors.get_mut(&id)?;
        entry.1 = Instant::now();
        Some(entry.0.clone())
    }

    /// Remove a cursor; whether it existed.
    pub fn remove_cursor(&self, id: i64) -> bool {
        lock(&self.cursors).remove(&id).is_some()
    }
}

/// Size of a document as BSON. Computed without encoding (it runs for every stored
/// document and every change event); the rare values whose size is not plain (a
/// regular expression, a DBPointer, a name with a NUL byte, which cannot be encoded)
/// fall back to encoding.
pub fn bson_size(doc: &Document) -> usize {
    match encoded_doc_size(doc) {
        Some(n) => n,
        None => encoded_size_slow(doc),
    }
}

/// Encoded size of `doc`, or `None` when only encoding can tell.
fn encoded_doc_size(doc: &Document) -> Option<usize> {
    let mut n = 5; // length prefix and trailing NUL
    for (k, v) in doc {
        if k.as_bytes().contains(&0) {
            return None;
        }
        n += 1 + k.len() + 1 + encoded_value_size(v)?;
    }
    Some(n)
}

/// Encoded size of one value (without its type byte and name).
fn encoded_value_size(v: &Bson) -> Option<usize> {
    Some(match v {
        Bson::Double(_) | Bson::DateTime(_) | Bson::Timestamp(_) | Bson::Int64(_) => 8,
        Bson::String(s) | Bson::JavaScriptCode(s) | Bson::Symbol(s) => 4 + s.len() + 1,
        Bson::Document(d) => encoded_doc_size(d)?,
        Bson::Array(items) => {
            let mut n = 5;
            for (i, item) in items.iter().enumerate() {
                n += 1 + decimal_len(i) + 1 + encoded_value_size(item)?;
            }
            n
        }
        Bson::Binary(b) => {
            let old = b.subtype == bson::spec::BinarySubtype::BinaryOld;
            4 + 1 + b.bytes.len() + if old { 4 } else { 0 }
        }
        Bson::ObjectId(_) => 12,
        Bson::Boolean(_) => 1,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
        Bson::Int32(_) => 4,
        Bson::Decimal128(_) => 16,
        Bson::JavaScriptCodeWithScope(c) => 4 + 4 + c.code.len() + 1 + encoded_doc_size(&c.scope)?,
        Bson::RegularExpression(_) | Bson::DbPointer(_) => return None,
    })
}

/// Digits of `i` in decimal (an array index as a BSON name).
fn decimal_len(mut i: usize) -> usize {
    let mut n = 1;
    while i >= 10 {
        i /= 10;
        n += 1;
    }
    n
}

fn encoded_size_slow(doc: &Document) -> usize {
    let mut buf = Vec::new();
    doc.to_writer(&mut buf)
        .map(|_| buf.len())
        .unwrap_or(usize::MAX)
}

/// Refuse documents over 16 MiB (10334 BSONObjectTooLarge).
pub fn check_size(doc: &Document) -> CmdResult<()> {
    let size = bson_size(doc);
    if size > MAX_BSON_SIZE {
        return Err(CommandError::new(
            10334,
            format!("BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and 16793600(16MB)"),
        ));
    }
    Ok(())
}

/// A stored document encoded for the change history. Every stored document is encodable
/// (`check_size` refused the ones that are not before they were stored), so this cannot
/// fail; it runs before anything is mutated all the same.
fn encoded(doc: &Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(doc).expect("stored documents passed check_size, so encode")
}

impl Inner {
    fn event(&mut self, db: &str, coll: Option<&str>, kind: EventKind) -> Event {
        let c = coll.and_then(|c| self.store.coll(db, c));
        Event {
            ts: self.oplog.tick(),
            wall: DateTime::now(),
            db: db.to_string(),
            coll: coll.map(str::to_string),
            kind,
            id: None,
            before: None,
            after: None,
            uuid: c.map(|c| c.uuid.clone()),
            images: c.is_some_and(|c| c.images_enabled()),
            description: None,
            op_index: 0,
            txn: None,
        }
    }

    /// Records a DDL event (shown to streams with `showExpandedEvents`).
    pub fn ddl_event(&mut self, db: &str, coll: &str, kind: EventKind, description: Document) {
        let mut ev = self.event(db, Some(coll), kind);
        ev.description = Some(description);
        self.record(ev);
    }

    /// Creates `db.coll` with `options` if it does not exist, recording a `create`
    /// event; whether it was created.
    pub fn create_collection(&mut self, db: &str, coll: &str, options: Document) -> bool {
        if self.store.coll(db, coll).is_some() {
            return false;
        }
        self.store
            .dbs
            .entry(db.to_string())
            .or_default()
            .insert(coll.to_string(), crate::store::Collection::new(options));
        let description = bson::doc! {"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}};
        self.ddl_event(db, coll, EventKind::Create, description);
        true
    }

    /// Insert a validated document (`_id` first). Duplicate `_id` → 11000.
    pub fn insert(&mut self, db: &str, coll: &str, doc: Document) -> CmdResult<()> {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let key = Key(id.clone());
        self.create_collection(db, coll, Document::new());
        let c = self.store.coll_or_create(db, coll);
        if c.docs.contains_key(&key) {
            return Err(crate::store::duplicate_key(
                &format!("{db}.{coll}"),
                "_id_",
                &bson::doc! {"_id": 1},
                &bson::doc! {"_id": id},
            ));
        }
        if c.indexes.iter().any(|i| i.unique) {
            c.check_unique(&format!("{db}.{coll}"), &doc, None)?;
        }
        let after = encoded(&doc);
        c.docs.insert(key.clone(), doc);
        let mut ev = self.event(db, Some(coll), EventKind::Insert);
        self.set_version(db, coll, key, ev.ts);
        ev.id = Some(id);
        ev.after = Some(after);
        self.record(ev);
        Ok(())
    }

    /// Store `new` over the existing document `before` (same `_id`), recording an
    /// update (with its description) or a replace event.
    pub fn overwrite(
        &mut self,
        db: &str,
        coll: &str,
        before: &Document,
        new: Document,
        replacement: bool,
    ) -> CmdResult<()> {
        let ns = format!("{db}.{coll}");
        check_size(&new)?;
        let id = before.get("_id").cloned().unwrap_or(Bson::Null);
        let key = Key(id.clone());
        let c = self
            .store
            .coll_mut(db, coll)
            .ok_or_else(|| CommandError::new(26, format!("ns does not exist: {ns}")))?;
        c.check_unique(&ns, &new, Some(&key))?;
        // Computed before mutating so a failure cannot leave a change without its event.
        let kind = if replacement {
            EventKind::Replace
        } else {
            EventKind::Update(Box::new(crate::query::update_description(before, &new)))
        };
        let (before, after) = (encoded(before), encoded(&new));
        c.docs.insert(key.clone(), new);
        let mut ev = self.event(db, Some(coll), kind);
        self.set_version(db, coll, key, ev.ts);
        ev.id = Some(id);
        ev.before = Some(before);
        ev.after = Some(after);
        self.record(ev);
        Ok(())
    }

    /// Delete the document with `_id` `id`, recording a delete event.
    pub fn delete(&mut self, db: &str, coll: &str, id: &Bson) -> Option<Document> {
        let c = self.store.coll_mut(db, coll)?;
        let before = c.docs.remove(&Key(id.clone()))?;
        let mut ev = self.event(db, Some(coll), EventKind::Delete);
        self.set_version(db, coll, Key(id.clone()), ev.ts);
        ev.id = Some(id.clone());
        ev.before = Some(encoded(&before));
        self.record(ev);
        Some(before)
    }

    /// Drop a collection (drop event); whether it existed.
    pub fn drop_collection(&mut self, db: &str, coll: &str) -> Option<usize> {
        let ev = self.event(db, Some(coll), EventKind::Drop);
        let c = self.store.remove_coll(db, coll)?;
        self.record(ev);
        Some(c.indexes.len() + 1)
    }

    /// Drop a database: a drop event per collection, then dropDatabase.
    pub fn drop_database(&mut self, db: &str) {
        let names: Vec<String> = self
            .store
            .dbs
            .get(db)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        if names.is_empty() {
            return;
        }
        for n in names {
            self.drop_collection(db, &n);
        }
        let ev = self.event(db, None, EventKind::DropDatabase);
        self.record(ev);
    }

    /// Rename a collection (rename event on the source namespace).
    pub fn rename(
        &mut self,
        from: (&str, &str),
        to: (&str, &str),
        drop_target: bool,
    ) -> CmdResult<()> {
        if self.store.coll(from.0, from.1).is_none() {
            return Err(CommandError::new(26, "Source collection does not exist"));
        }
        let mut description = bson::doc! {"to": {"db": to.0, "coll": to.1}};
        if let Some(target) = self.store.coll(to.0, to.1).map(|t| t.uuid.clone()) {
            if !drop_target {
                return Err(CommandError::new(48, "target namespace exists"));
            }
            description.insert("dropTarget", target);
            self.drop_collection(to.0, to.1);
        }
        let mut ev = self.event(
            from.0,
            Some(from.1),
            EventKind::Rename(to.0.into(), to.1.into()),
        );
        ev.description = Some(description);
        let c = self
            .store
            .remove_coll(from.0, from.1)
            .expect("checked above");
        self.store
            .dbs
            .entry(to.0.to_string())
            .or_default()
            .insert(to.1.to_string(), c);
        self.record(ev);
        Ok(())
    }
}

#[cfg(test)]
mod size_tests {
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson, DateTime, Decimal128, JavaScriptCodeWithScope, Timestamp};

    use super::{bson_size, encoded_size_slow};

    #[test]
    fn computed_size_matches_the_encoding() {
        let docs = [
            doc! {},
            doc! {"_id": 1, "name": "event 1", "value": 3.5, "updatedAt": DateTime::now()},
            doc! {"a": {"b": [1, "x", {"c": null}, [true, false]], "t": Timestamp {time: 1, increment: 2}},
            "big": (0..123).map(Bson::from).collect::<Vec<_>>(), "l": 7_i64,
            "bin": Binary {subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3]},
            "old": Binary {subtype: BinarySubtype::BinaryOld, bytes: vec![1, 2, 3]},
            "oid": bson::oid::ObjectId::new(), "d": Decimal128::from_bytes([0; 16]),
            "js": Bson::JavaScriptCode("f()".into()), "u": Bson::Undefined,
            "min": Bson::MinKey, "max": Bson::MaxKey, "sym": Bson::Symbol("s".into()),
            "jsw": JavaScriptCodeWithScope {code: "g()".into(), scope: doc! {"k": 1}},
            "re": bson::Regex {pattern: "a.*".into(), options: "ix".into()}},
        ];
        for d in &docs {
            assert_eq!(bson_size(d), encoded_size_slow(d), "{d}");
        }
        assert_eq!(bson_size(&doc! {"a\0b": 1}), usize::MAX);
    }
}
