//! The change history: a logical clock handing out strictly increasing cluster times,
//! the retained change events (bounded by `history_limit`), and what has been lost
//! (trimmed or forgotten), which decides 286 ChangeStreamHistoryLost.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{Bson, DateTime, Document, RawDocumentBuf, Timestamp};

/// What a change event records.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// A document was inserted.
    Insert,
    /// Update operators / pipeline changed a document: its `updateDescription`.
    Update(Box<crate::query::UpdateDescription>),
    /// A document was replaced.
    Replace,
    /// A document was deleted.
    Delete,
    /// A collection was dropped.
    Drop,
    /// A database was dropped (after its collections' drop events).
    DropDatabase,
    /// A collection was renamed to (db, coll).
    Rename(String, String),
    /// A collection was created (explicitly or by a first write); expanded events only.
    Create,
    /// Indexes were created; expanded events only.
    CreateIndexes,
    /// Indexes were dropped; expanded events only.
    DropIndexes,
    /// `collMod`; expanded events only.
    Modify,
}

impl EventKind {
    /// Shown only to streams opened with `showExpandedEvents`.
    pub fn is_expanded(&self) -> bool {
        matches!(
            self,
            EventKind::Create
                | EventKind::CreateIndexes
                | EventKind::DropIndexes
                | EventKind::Modify
        )
    }
}

/// One change event as stored.
#[derive(Debug, Clone)]
pub struct Event {
    /// Cluster time of the write (unique, strictly increasing).
    pub ts: Timestamp,
    /// Wall clock time of the write.
    pub wall: DateTime,
    /// Database.
    pub db: String,
    /// Collection (`None` for dropDatabase).
    pub coll: Option<String>,
    /// Operation.
    pub kind: EventKind,
    /// `_id` of the document (document events).
    pub id: Option<Bson>,
    /// Document before the write (update/replace/delete), encoded once when the write
    /// happens: change events are rendered from these bytes.
    pub before: Option<RawDocumentBuf>,
    /// Document after the write (insert/update/replace), encoded.
    pub after: Option<RawDocumentBuf>,
    /// UUID of the collection when the event happened (`collectionUUID`).
    pub uuid: Option<bson::Binary>,
    /// The collection had `changeStreamPreAndPostImages` enabled at the write: `before`
    /// and `after` may serve as pre- and post-images.
    pub images: bool,
    /// `operationDescription` of a DDL event (expanded events).
    pub description: Option<Document>,
    /// Position within its multi-document transaction (`txnOpIndex`); 0 outside one.
    pub op_index: u32,
    /// The transaction that wrote it (`lsid`, `txnNumber`); `None` outside one.
    pub txn: Option<Arc<TxnId>>,
}

/// Identifies a multi-document transaction in its change events.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnId {
    /// The session id as change events show it (`{id, uid}`).
    pub lsid: Document,
    /// The transaction number.
    pub txn_number: i64,
}

impl Event {
    /// The event's position in the history.
    pub fn pos(&self) -> Pos {
        Pos {
            ts: self.ts,
            op: self.op_index,
        }
    }
}

/// A position in the history: a cluster time and, since the events of one transaction
/// share their commit's cluster time, the index within it. `op: u32::MAX` is the end
/// of everything at `ts` (a high-water mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Cluster time.
    pub ts: Timestamp,
    /// Index within the transaction (`txnOpIndex`), or `u32::MAX` for "all of `ts`".
    pub op: u32,
}

impl Pos {
    /// After every event at `ts`.
    pub fn end_of(ts: Timestamp) -> Pos {
        Pos { ts, op: u32::MAX }
    }
    /// Sort key.
    pub fn key(self) -> (u32, u32, u32) {
        (self.ts.time, self.ts.increment, self.op)
    }
    /// The position just before this one.
    pub fn before(self) -> Pos {
        if self.op > 0 {
            Pos {
                ts: self.ts,
                op: self.op - 1,
            }
        } else {
            Pos::end_of(ts_before(self.ts))
        }
    }
}

/// Order of cluster times.
pub fn ts_key(ts: Timestamp) -> (u32, u32) {
    (ts.time, ts.increment)
}

/// The timestamp just before `ts`.
pub fn ts_before(ts: Timestamp) -> Timestamp {
    if ts.increment > 0 {
        Timestamp {
            time: ts.time,
            increment: ts.increment - 1,
        }
    } else if ts.time > 0 {
        Timestamp {
            time: ts.time - 1,
            increment: u32::MAX,
        }
    } else {
        ts
    }
}

/// Clock plus retained history.
#[derive(Debug)]
pub struct Oplog {
    /// Retained events, oldest first.
    events: VecDeque<Arc<Event>>,
    /// Maximum retained events.
    limit: usize,
    /// Last cluster time handed out.
    last: Timestamp,
    /// Resume points at or before this are lost (a token's own position must be newer).
    lost_through: Option<Pos>,
    /// Newest event dropped from history; a live stream behind it has lost events.
    last_dropped_event: Option<Pos>,
}

fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Oplog {
    /// Empty history keeping at most `limit` events.
    pub fn new(limit: usize) -> Self {
        let start = Timestamp {
            time: unix_secs(),
            increment: 0,
        };
        let mut log = Oplog {
            events: VecDeque::new(),
            limit: limit.max(1),
            last: start,
            // Nothing before this server started is known: tokens from an earlier
            // server (or times before the start) cannot be resumed, as with a new oplog.
            lost_through: Some(Pos::end_of(start)),
            last_dropped_event: None,
        };
        // Positions handed out from now on are strictly after `start`.
        log.tick();
        log
    }

    /// Allocate the next cluster time (a write happened).
    pub fn tick(&mut self) -> Timestamp {
        let now = unix_secs();
        self.last = if now > self.last.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else {
            Timestamp {
                time: self.last.time,
                increment: self.last.increment + 1,
            }
        };
        self.last
    }

    /// The cluster time of the last write (`operationTime`).
    pub fn last_write(&self) -> Timestamp {
        self.last
    }

    /// "Now" for high-water marks: the last write or the current second.
    pub fn now(&self) -> Timestamp {
        let now = unix_secs();
        if now > self.last.time {
            Timestamp {
                time: now,
                increment: 0,
            }
        } else {
            self.last
        }
    }

    /// Record an event (its `ts` must come from [`Oplog::tick`]; the events of one
    /// transaction share it and number themselves with `op_index`).
    pub fn push(&mut self, ev: Event) {
        self.events.push_back(Arc::new(ev));
        while self.events.len() > self.limit {
            if let Some(old) = self.events.pop_front() {
                self.lost_through = Some(old.pos());
                self.last_dropped_event = Some(old.pos());
            }
        }
    }

    /// Forget everything before now: resuming from any earlier point → 286.
    pub fn forget(&mut self) {
        if let Some(last) = self.events.back() {
            self.last_dropped_event = Some(last.pos());
        }
        self.events.clear();
        self.lost_through = Some(Pos::end_of(self.now()));
        // A fresh no-op tick so positions taken after this are newer than the loss.
        self.tick();
    }

    /// The retained history as `local.oplog.rs` shows it, in natural order (oldest
    /// first) or, with `reverse`, newest first (`{$natural: -1}`): one entry per
    /// retained event (`ts`, `t`, `op`, `ns`, `wall`, `o2._id`), except that the events
    /// of one transaction make one `applyOps` command entry (with `lsid`, `txnNumber`
    /// and the operations in `o.applyOps`), as MongoDB logs a committed transaction;
    /// with nothing retained, one no-op at the current time, since a replica set's
    /// oplog is never empty. What `db.getReplicationInfo()` reads: the first entry's
    /// `ts` is the oldest point a change stream can resume from.
    ///
    /// Entries are built as the iterator is advanced: the caller holds the server's
    /// lock meanwhile, so a reader of the first entry must not pay for the whole
    /// history (that froze every command, change streams included, for as long).
    pub fn entries(&self, reverse: bool) -> impl Iterator<Item = Document> + '_ {
        let (mut front, mut back) = (0, self.events.len());
        let groups = std::iter::from_fn(move || {
            if front >= back {
                return None;
            }
            let group = if reverse {
                self.group_ending(back)
            } else {
                self.group_starting(front)
            };
            if reverse {
                back = group.start;
            } else {
                front = group.end;
            }
            Some(group)
        });
        let noop = self.events.is_empty().then(|| {
            bson::doc! {
                "ts": self.now(), "t": 1_i64, "op": "n", "ns": "",
                "wall": DateTime::now(), "o": {"msg": "periodic noop"},
            }
        });
        groups.map(|g| self.group_entry(g)).chain(noop)
    }

    /// Whether the events at `i` and `j` belong to one transaction's entry.
    fn same_txn(&self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.events[i], &self.events[j]);
        a.txn.is_some() && b.txn.is_some() && a.ts == b.ts
    }

    /// The indexes of the entry whose first event is at `start`.
    fn group_starting(&self, start: usize) -> std::ops::Range<usize> {
        let mut end = start + 1;
        while end < self.events.len() && self.same_txn(start, end) {
            end += 1;
        }
        start..end
    }

    /// The indexes of the entry whose last event is just before `end`.
    fn group_ending(&self, end: usize) -> std::ops::Range<usize> {
        let mut start = end - 1;
        while start > 0 && self.same_txn(start - 1, end - 1) {
            start -= 1;
        }
        start..end
    }

    /// The oplog entry of the events at `group`: the event's own, or a transaction's
    /// `applyOps`.
    fn group_entry(&self, group: std::ops::Range<usize>) -> Document {
        let first = &self.events[group.start];
        let Some(txn) = &first.txn else {
            return entry(first);
        };
        let ops: Vec<Bson> = self
            .events
            .range(group)
            .map(|e| {
                let mut d = entry(e);
                strip_entry(&mut d);
                Bson::Document(d)
            })
            .collect();
        bson::doc! {
            "ts": first.ts, "t": 1_i64, "op": "c", "ns": "admin.$cmd", "wall": first.wall,
            "lsid": txn.lsid.clone(), "txnNumber": txn.txn_number,
            "o": {"applyOps": ops},
        }
    }

    /// Whether resuming at a point `after` (exclusive; a token's position) is
    /// impossible.
    pub fn resume_lost(&self, after: Pos) -> bool {
        matches!(self.lost_through, Some(l) if after.key() <= l.key())
    }

    /// Whether a live stream positioned at `after` missed trimmed events.
    pub fn stream_lost(&self, after: Pos) -> bool {
        matches!(self.last_dropped_event, Some(l) if l.key() > after.key())
    }

    /// Events strictly after `after`, oldest first.
    pub fn events_after(&self, after: Pos) -> impl Iterator<Item = &Arc<Event>> {
        let start = self
            .events
            .partition_point(|e| e.pos().key() <= after.key());
        self.events.range(start..)
    }

    /// The event at exactly `at`, if retained.
    pub fn event_at(&self, at: Pos) -> Option<&Arc<Event>> {
        let i = self.events.partition_point(|e| e.pos().key() < at.key());
        self.events.get(i).filter(|e| e.pos() == at)
    }
}

/// The `local.oplog.rs` entry of one event.
fn entry(e: &Event) -> Document {
    let op = match &e.kind {
        EventKind::Insert => "i",
        EventKind::Update(_) | EventKind::Replace => "u",
        EventKind::Delete => "d",
        _ => "c",
    };
    let ns = match &e.coll {
        Some(c) => format!("{}.{c}", e.db),
        None => format!("{}.$cmd", e.db),
    };
    let mut d = bson::doc! {"ts": e.ts, "t": 1_i64, "op": op, "ns": ns, "wall": e.wall};
    if let Some(id) = &e.id {
        d.insert("o2", bson::doc! {"_id": id.clone()});
    }
    d
}

/// An operation inside an `applyOps` entry carries no time of its own.
fn strip_entry(d: &mut Document) {
    for f in ["ts", "t", "wall"] {
        d.remove(f);
    }
}
