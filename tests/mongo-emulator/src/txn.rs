//! Multi-document transactions (`lsid` + `txnNumber` + `autocommit: false`, the first
//! command with `startTransaction: true`), as MongoDB's manual and the driver
//! transactions specification describe them.
//!
//! A transaction keeps its writes to itself: the final state of each document it wrote,
//! the collections it created, and the events it recorded. Each of its commands runs on
//! the server's catalog seen through an [`Overlay`]: for as long as the command holds the
//! catalog, documents others wrote since the transaction started are shown as they were
//! then (from the history's pre-images) and the transaction's own writes are put in
//! place; the command's events are captured, not recorded, and everything is put back
//! when it lets go. So its reads see its snapshot plus its own writes, nobody else sees
//! them, and no copy of a collection is made.
//!
//! A write checks at once that no one changed the document after the start and that no
//! other open transaction wrote it (else 112 WriteConflict, the transaction aborted).
//! `commitTransaction` checks again (writes outside transactions do not wait for open
//! ones here), then applies the final documents and the recorded events under one commit
//! cluster time, numbered by `txnOpIndex`, each carrying the session's `lsid` and the
//! `txnNumber`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document, Timestamp};

use crate::error::{CmdResult, CommandError};
use crate::oplog::{Event, EventKind, Pos, TxnId};
use crate::state::{lock, Inner, Shared};
use crate::store::{Collection, Key};

/// `TransientTransactionError`: the whole transaction may be retried.
pub const TRANSIENT: &str = "TransientTransactionError";

/// The SHA-256 digest of the empty string: the `uid` MongoDB puts in a session id when
/// no user is authenticated (change events show the session id with it).
const NO_AUTH_UID: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Commands MongoDB runs inside a transaction (the rest → 263).
pub const ALLOWED: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "find",
    "getMore",
    "aggregate",
    "distinct",
    "killCursors",
    "create",
    "createIndexes",
    "commitTransaction",
    "abortTransaction",
];

/// The transaction fields of a command that has `autocommit`.
#[derive(Debug, Clone)]
pub struct TxnFields {
    /// `lsid` as sent.
    pub lsid: Document,
    /// `lsid` encoded (the session's key).
    pub key: Vec<u8>,
    /// `txnNumber`.
    pub number: i64,
    /// `startTransaction: true`.
    pub start: bool,
}

impl TxnFields {
    /// The fields of a command carrying `autocommit` (`None` without it, so outside a
    /// transaction); `autocommit: true`, or a missing `lsid`/`txnNumber` → errors.
    pub fn parse(body: &Document) -> CmdResult<Option<TxnFields>> {
        let Some(autocommit) = body.get("autocommit") else {
            if body.contains_key("startTransaction") {
                return Err(CommandError::new(
                    72,
                    "'startTransaction' requires 'autocommit: false' and a txnNumber",
                ));
            }
            return Ok(None);
        };
        if autocommit != &Bson::Boolean(false) {
            return Err(CommandError::new(72, "autocommit must be false"));
        }
        let lsid = body
            .get_document("lsid")
            .map_err(|_| CommandError::new(72, "'autocommit' requires a session (lsid)"))?
            .clone();
        let number = match body.get("txnNumber") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            _ => {
                return Err(CommandError::new(
                    72,
                    "'autocommit' requires a txnNumber (long)",
                ))
            }
        };
        let start = match body.get("startTransaction") {
            None => false,
            Some(Bson::Boolean(true)) => true,
            Some(_) => return Err(CommandError::new(72, "startTransaction must be true")),
        };
        Ok(Some(TxnFields {
            key: session_key(&lsid),
            lsid,
            number,
            start,
        }))
    }
}

/// A session id encoded, as the key of its state.
pub fn session_key(lsid: &Document) -> Vec<u8> {
    let mut bytes = Vec::new();
    // A document from a decoded command always encodes.
    let _ = lsid.to_writer(&mut bytes);
    bytes
}

/// An open transaction.
#[derive(Debug)]
pub struct Txn {
    /// Unique among transactions (the owner of its write claims).
    id: u64,
    /// The session id and number, as events show them.
    ident: Arc<TxnId>,
    /// Its writes, shared with the commands running in it.
    work: Arc<Mutex<Work>>,
    /// Recorded events already checked for conflicts.
    checked: usize,
    /// Documents this transaction claimed by writing them.
    claims: HashSet<(String, String, DocKey)>,
    /// The server's switch for keeping document versions.
    tracking: Arc<AtomicBool>,
    /// When it started (for `transactionLifetimeLimitSeconds`).
    opened: Instant,
}

/// `transactionLifetimeLimitSeconds` (MongoDB's default).
const LIFETIME_LIMIT: Duration = Duration::from_secs(60);

/// A document of a collection: (db, coll, `_id`).
type NsKey = (String, String, Key);

/// What a transaction has done so far.
#[derive(Debug)]
pub struct Work {
    /// The server's last cluster time when it started (its snapshot).
    start: Timestamp,
    /// Final state of each document it wrote (`None`: deleted).
    delta: BTreeMap<NsKey, Option<Document>>,
    /// Collections it created (`create`, `createIndexes` or implicitly by a write),
    /// without documents.
    created: BTreeMap<(String, String), Collection>,
    /// UUID of each collection it touched when it first did (`None`: did not exist).
    uuids: HashMap<(String, String), Option<bson::Binary>>,
    /// Its change events, in order (cluster times to be replaced by the commit's).
    events: Vec<Event>,
}

/// A document's `_id` as a hashable key (its BSON encoding as a one-field document).
type DocKey = Vec<u8>;

fn doc_key(id: &Bson) -> DocKey {
    let mut bytes = Vec::new();
    let _ = doc! {"": id.clone()}.to_writer(&mut bytes);
    bytes
}

/// Where a session's latest transaction stands.
#[derive(Debug)]
enum State {
    /// No transaction at this number (a retryable write moved the number on).
    None,
    /// Open.
    InProgress(Box<Txn>),
    /// Committed (a repeated `commitTransaction` succeeds again).
    Committed,
    /// Aborted (explicitly, by an error, or by a newer number).
    Aborted,
}

/// A session's transaction state.
#[derive(Debug)]
struct Session {
    /// The highest transaction number used.
    number: i64,
    /// Its state.
    state: State,
}

/// Every session's transaction state, and which open transaction claimed which document.
#[derive(Debug, Default)]
pub struct Transactions {
    /// By encoded `lsid`.
    sessions: HashMap<Vec<u8>, Session>,
    /// Document (db, coll, encoded `_id`) → id of the open transaction that wrote it.
    claims: HashMap<(String, String, DocKey), u64>,
    /// Next transaction id.
    next_id: u64,
    /// How many transactions are open.
    open: usize,
}

/// What a command inside a transaction runs against.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The transaction's writes.
    work: Arc<Mutex<Work>>,
}

/// 251 NoSuchTransaction (labelled `TransientTransactionError`) for a command naming
/// transaction `number` of a session whose active number is `active`.
fn no_such_transaction(number: i64, active: i64) -> CommandError {
    let message = if number == active {
        format!("Transaction {number} has been aborted.")
    } else {
        format!(
            "Given transaction number {number} does not match any in-progress transactions. The active transaction number is {active}"
        )
    };
    let mut e = CommandError::new(251, message);
    e.labels.push(TRANSIENT.to_string());
    e
}

/// 112 WriteConflict, labelled `TransientTransactionError`.
pub fn write_conflict() -> CommandError {
    let mut e = CommandError::new(
        112,
        "Write conflict during plan execution and yielding is disabled. :: Please retry your operation or multi-document transaction.",
    );
    e.labels.push(TRANSIENT.to_string());
    e
}

fn too_old(number: i64, current: i64) -> CommandError {
    CommandError::new(
        225,
        format!(
            "Cannot start transaction {number} on session because a newer transaction with txnNumber {current} has already started on this session."
        ),
    )
}

impl Transactions {
    /// Start (with `startTransaction`) or continue the transaction `f` names, noting the
    /// UUID of the collection `ns` (db, name) the command reads or writes the first time
    /// (the commit checks it is still the same collection); the handle its command runs
    /// against.
    pub fn begin_or_continue(
        &mut self,
        shared: &Shared,
        f: &TxnFields,
        ns: Option<(&str, &str)>,
        read_concern: bool,
    ) -> CmdResult<Handle> {
        self.expire();
        let session = self.sessions.entry(f.key.clone()).or_insert(Session {
            number: -1,
            state: State::None,
        });
        if f.number < session.number {
            return Err(too_old(f.number, session.number));
        }
        if f.start {
            if f.number == session.number {
                return Err(CommandError::new(
                    117,
                    "Only servers in a sharded cluster can start a new transaction at the active transaction number",
                ));
            }
            let old = std::mem::replace(&mut session.state, State::Aborted);
            session.number = f.number;
            let mut lsid = f.lsid.clone();
            if !lsid.contains_key("uid") {
                lsid.insert(
                    "uid",
                    bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic,
                        bytes: NO_AUTH_UID.to_vec(),
                    },
                );
            }
            self.next_id += 1;
            let (start, tracking) = {
                let mut inner = shared.inner();
                // Versions are kept from now on (and those from before the last open
                // transaction ended are of no use).
                if self.open == 0 {
                    inner.versions.clear();
                }
                inner
                    .track_versions
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                (inner.oplog.last_write(), inner.track_versions.clone())
            };
            self.open += 1;
            let txn = Txn {
                id: self.next_id,
                ident: Arc::new(TxnId {
                    lsid,
                    txn_number: f.number,
                }),
                tracking,
                opened: Instant::now(),
                work: Arc::new(Mutex::new(Work {
                    start,
                    delta: BTreeMap::new(),
                    created: BTreeMap::new(),
                    uuids: HashMap::new(),
                    events: Vec::new(),
                })),
                checked: 0,
                claims: HashSet::new(),
            };
            if let State::InProgress(t) = old {
                self.release(&t);
            }
            if let Some(s) = self.sessions.get_mut(&f.key) {
                s.state = State::InProgress(Box::new(txn));
            }
        } else if f.number > session.number {
            return Err(no_such_transaction(f.number, session.number));
        } else if read_concern {
            return Err(CommandError::new(
                72,
                "Only the first command in a transaction may specify a readConcern",
            ));
        }
        let session = self
            .sessions
            .get_mut(&f.key)
            .ok_or_else(|| no_such_transaction(f.number, -1))?;
        match &mut session.state {
            State::InProgress(txn) => {
                if let Some((db, coll)) = ns {
                    let uuid = shared.inner().store.coll(db, coll).map(|c| c.uuid.clone());
                    lock(&txn.work)
                        .uuids
                        .entry((db.to_string(), coll.to_string()))
                        .or_insert(uuid);
                }
                Ok(Handle {
                    work: txn.work.clone(),
                })
            }
            State::Committed => Err(CommandError::new(
                256,
                format!("Transaction {} has been committed.", f.number),
            )),
            State::None | State::Aborted => Err(no_such_transaction(f.number, f.number)),
        }
    }

    /// After a command of transaction `f` ran: abort it when the command failed (an
    /// error or write errors, as MongoDB does), else claim the documents it wrote,
    /// failing with 112 when another transaction holds one or a document changed after
    /// the snapshot.
    pub fn after_command(&mut self, shared: &Shared, f: &TxnFields, failed: bool) -> CmdResult<()> {
        if failed {
            self.abort_open(f);
            return Ok(());
        }
        let Some(Session {
            state: State::InProgress(txn),
            ..
        }) = self.sessions.get_mut(&f.key)
        else {
            return Ok(());
        };
        let conflict = {
            let shared_inner = shared.inner();
            let work = lock(&txn.work);
            let mut conflict = false;
            for ev in work.events.iter().skip(txn.checked) {
                let (Some(coll), Some(id)) = (&ev.coll, &ev.id) else {
                    continue;
                };
                let changed = shared_inner
                    .version(&ev.db, coll, &Key(id.clone()))
                    .is_some_and(|v| ts_after(v, work.start));
                let claim = (ev.db.clone(), coll.clone(), doc_key(id));
                let holder = self.claims.get(&claim).copied();
                if changed || holder.is_some_and(|h| h != txn.id) {
                    conflict = true;
                    break;
                }
                self.claims.insert(claim.clone(), txn.id);
                txn.claims.insert(claim);
            }
            txn.checked = work.events.len();
            conflict
        };
        if conflict {
            self.abort_open(f);
            return Err(write_conflict());
        }
        Ok(())
    }

    /// The session of `f`, when `f` names its current transaction number.
    fn current(&mut self, f: &TxnFields) -> CmdResult<&mut Session> {
        let Some(session) = self.sessions.get_mut(&f.key) else {
            return Err(no_such_transaction(f.number, -1));
        };
        if f.number < session.number {
            return Err(too_old(f.number, session.number));
        }
        if f.number > session.number {
            return Err(no_such_transaction(f.number, session.number));
        }
        Ok(session)
    }

    /// `commitTransaction`.
    pub fn commit(&mut self, shared: &Shared, f: &TxnFields) -> CmdResult<()> {
        self.expire();
        let session = self.current(f)?;
        let txn = match std::mem::replace(&mut session.state, State::Aborted) {
            State::Committed => {
                session.state = State::Committed;
                return Ok(());
            }
            State::None | State::Aborted => return Err(no_such_transaction(f.number, f.number)),
            State::InProgress(txn) => txn,
        };
        let result = apply(shared, &txn);
        if result.is_ok() {
            session.state = State::Committed;
        }
        self.release(&txn);
        result
    }

    /// `abortTransaction`.
    pub fn abort(&mut self, f: &TxnFields) -> CmdResult<()> {
        let session = self.current(f)?;
        match session.state {
            State::InProgress(_) => {
                self.abort_open(f);
                Ok(())
            }
            State::Committed => Err(CommandError::new(
                256,
                format!("Transaction {} has been committed.", f.number),
            )),
            State::None | State::Aborted => Err(no_such_transaction(f.number, f.number)),
        }
    }

    /// A command outside a transaction with `txnNumber` (a retryable write) moves the
    /// session on: an open transaction with a lower number is aborted.
    pub fn observe_number(&mut self, key: &[u8], number: i64) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if number > session.number {
            session.number = number;
            if let State::InProgress(t) = std::mem::replace(&mut session.state, State::None) {
                self.release(&t);
            }
        }
    }

    /// The session ended (`endSessions`, `killSessions`): its open transaction is
    /// aborted.
    pub fn end_session(&mut self, key: &[u8]) {
        if let Some(Session {
            state: State::InProgress(t),
            ..
        }) = self.sessions.remove(key)
        {
            self.release(&t);
        }
    }

    /// A command of transaction `f` was refused: the transaction (if open) is aborted.
    pub fn abort_command(&mut self, f: &TxnFields) {
        self.abort_open(f);
    }

    /// Abort the transactions open for longer than `transactionLifetimeLimitSeconds`
    /// (MongoDB's default, 60 s), as the server's periodic reaper does.
    fn expire(&mut self) {
        let expired: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(&s.state, State::InProgress(t) if t.opened.elapsed() > LIFETIME_LIMIT)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            if let State::InProgress(t) = std::mem::replace(&mut session.state, State::Aborted) {
                self.release(&t);
            }
        }
    }

    /// `killAllSessions`: every open transaction is aborted.
    pub fn end_all(&mut self) {
        let keys: Vec<Vec<u8>> = self.sessions.keys().cloned().collect();
        for k in keys {
            self.end_session(&k);
        }
    }

    /// Abort the open transaction of `f`'s session, if any.
    fn abort_open(&mut self, f: &TxnFields) {
        let Some(session) = self.sessions.get_mut(&f.key) else {
            return;
        };
        if session.number != f.number || !matches!(session.state, State::InProgress(_)) {
            return;
        }
        if let State::InProgress(t) = std::mem::replace(&mut session.state, State::Aborted) {
            self.release(&t);
        }
    }

    /// Drop the claims of `txn`.
    fn release(&mut self, txn: &Txn) {
        self.open = self.open.saturating_sub(1);
        if self.open == 0 {
            txn.tracking
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        for c in &txn.claims {
            if self.claims.get(c) == Some(&txn.id) {
                self.claims.remove(c);
            }
        }
    }
}

/// Whether `a` is later than `b`.
fn ts_after(a: Timestamp, b: Timestamp) -> bool {
    crate::oplog::ts_key(a) > crate::oplog::ts_key(b)
}

/// Commit `txn` into the shared catalog: check every document it wrote once more, then
/// store the final documents and its events at one new cluster time.
fn apply(shared: &Shared, txn: &Txn) -> CmdResult<()> {
    let mut inner = shared.inner();
    let mut work = lock(&txn.work);
    if work.events.is_empty() {
        return Ok(());
    }
    // Checks first: nothing changes unless everything can.
    let mut touched: HashSet<(String, String)> = HashSet::new();
    for ev in &work.events {
        if let Some(coll) = &ev.coll {
            touched.insert((ev.db.clone(), coll.clone()));
        }
    }
    for ns in &touched {
        let now = inner.store.coll(&ns.0, &ns.1).map(|c| &c.uuid);
        let same = if work.created.contains_key(ns) {
            now.is_none()
        } else {
            now == work.uuids.get(ns).and_then(Option::as_ref)
        };
        if !same {
            return Err(write_conflict());
        }
    }
    for ((db, coll, key), doc) in &work.delta {
        let changed = inner
            .version(db, coll, key)
            .is_some_and(|v| ts_after(v, work.start));
        if changed {
            return Err(write_conflict());
        }
        let (Some(theirs), Some(doc)) = (inner.store.coll(db, coll), doc) else {
            continue;
        };
        let ns = format!("{db}.{coll}");
        let mine = |k: &Key| {
            work.delta
                .contains_key(&(db.clone(), coll.clone(), k.clone()))
        };
        if theirs.check_unique_except(&ns, doc, mine).is_err() {
            return Err(write_conflict());
        }
    }
    let ts = inner.oplog.tick();
    let wall = DateTime::now();
    for ((db, coll), c) in std::mem::take(&mut work.created) {
        inner.store.dbs.entry(db).or_default().insert(coll, c);
    }
    for ((db, coll, key), doc) in std::mem::take(&mut work.delta) {
        if let Some(c) = inner.store.coll_mut(&db, &coll) {
            match doc {
                Some(d) => c.docs.insert(key.clone(), d),
                None => c.docs.remove(&key),
            };
        }
        inner.set_version(&db, &coll, key, ts);
    }
    for (i, mut ev) in std::mem::take(&mut work.events).into_iter().enumerate() {
        ev.ts = ts;
        ev.wall = wall;
        ev.op_index = u32::try_from(i).unwrap_or(u32::MAX - 1);
        ev.txn = Some(txn.ident.clone());
        inner.oplog.push(ev);
    }
    drop(work);
    drop(inner);
    shared.notify_changes();
    Ok(())
}

/// The server's catalog as a command of a transaction sees it, for as long as the
/// command holds it (see the module documentation).
pub struct Overlay<'a> {
    /// The server's catalog, locked.
    inner: MutexGuard<'a, Inner>,
    /// The transaction's writes.
    work: MutexGuard<'a, Work>,
    /// What each document shown differently held, to put back.
    stash: BTreeMap<NsKey, Option<Document>>,
    /// Collections of the transaction's put in place, to take away again.
    shown: Vec<(String, String)>,
}

impl<'a> Overlay<'a> {
    /// Show the catalog as the transaction of `handle` sees it.
    pub fn new(shared: &'a Shared, handle: &'a Handle) -> Self {
        let mut inner = shared.inner();
        let work = lock(&handle.work);
        inner.capture = Some(Vec::new());
        let mut shown = Vec::new();
        for ((db, coll), c) in &work.created {
            if inner.store.coll(db, coll).is_none() {
                inner
                    .store
                    .dbs
                    .entry(db.clone())
                    .or_default()
                    .insert(coll.clone(), c.clone());
                shown.push((db.clone(), coll.clone()));
            }
        }
        // The snapshot: documents others wrote since the start, as they were then.
        let mut view: BTreeMap<NsKey, Option<Document>> = BTreeMap::new();
        for ev in inner.oplog.events_after(Pos::end_of(work.start)) {
            if let (Some(coll), Some(id)) = (&ev.coll, &ev.id) {
                view.entry((ev.db.clone(), coll.clone(), Key(id.clone())))
                    .or_insert_with(|| before_image(ev));
            }
        }
        for (k, v) in &work.delta {
            view.insert(k.clone(), v.clone());
        }
        let mut stash = BTreeMap::new();
        for ((db, coll, key), doc) in view {
            let Some(c) = inner.store.coll_mut(&db, &coll) else {
                continue;
            };
            let old = match doc {
                Some(d) => c.docs.insert(key.clone(), d),
                None => c.docs.remove(&key),
            };
            stash.insert((db, coll, key), old);
        }
        Overlay {
            inner,
            work,
            stash,
            shown,
        }
    }
}

/// A document as it was before the write of `ev` (`None` before an insert).
fn before_image(ev: &Event) -> Option<Document> {
    if matches!(ev.kind, EventKind::Insert) {
        return None;
    }
    ev.before
        .as_ref()
        .and_then(|b| Document::try_from(b.as_ref()).ok())
}

impl Drop for Overlay<'_> {
    /// Keep what the command did in the transaction, and put the catalog back.
    fn drop(&mut self) {
        let captured = self.inner.capture.take().unwrap_or_default();
        let mut written: Vec<NsKey> = Vec::new();
        for ev in &captured {
            let Some(coll) = &ev.coll else { continue };
            let ns = (ev.db.clone(), coll.clone());
            if matches!(ev.kind, EventKind::Create) {
                // Its metadata is kept when it is taken away below.
                self.work.uuids.entry(ns.clone()).or_insert(None);
                self.shown.push(ns);
                continue;
            }
            let Some(id) = &ev.id else { continue };
            let k = (ns.0, ns.1, Key(id.clone()));
            if !self.stash.contains_key(&k) {
                self.stash.insert(k.clone(), before_image(ev));
            }
            written.push(k);
        }
        for k in written {
            let now = self
                .inner
                .store
                .coll(&k.0, &k.1)
                .and_then(|c| c.docs.get(&k.2))
                .cloned();
            self.work.delta.insert(k, now);
        }
        self.work.events.extend(captured);
        for ((db, coll, key), doc) in std::mem::take(&mut self.stash) {
            if let Some(c) = self.inner.store.coll_mut(&db, &coll) {
                match doc {
                    Some(d) => c.docs.insert(key, d),
                    None => c.docs.remove(&key),
                };
            }
        }
        // The transaction's collections, with what the command changed of them
        // (indexes), are kept without their documents (those are in `delta`).
        for (db, coll) in std::mem::take(&mut self.shown) {
            if let Some(mut c) = self.inner.store.remove_coll(&db, &coll) {
                c.docs.clear();
                self.work.created.insert((db, coll), c);
            }
        }
    }
}

impl Deref for Overlay<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DerefMut for Overlay<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}
