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
    /// Resume points at or before this are lost (token's own time must be newer).
    lost_through: Option<Timestamp>,
    /// Newest event dropped from history; a live stream behind it has lost events.
    last_dropped_event: Option<Timestamp>,
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
            lost_through: Some(start),
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

    /// Record an event (its `ts` must come from [`Oplog::tick`]).
    pub fn push(&mut self, ev: Event) {
        self.events.push_back(Arc::new(ev));
        while self.events.len() > self.limit {
            if let Some(old) = self.events.pop_front() {
                self.lost_through = Some(old.ts);
                self.last_dropped_event = Some(old.ts);
            }
        }
    }

    /// Forget everything before now: resuming from any earlier point → 286.
    pub fn forget(&mut self) {
        if let Some(last) = self.events.back() {
            self.last_dropped_event = Some(last.ts);
        }
        self.events.clear();
        self.lost_through = Some(self.now());
        // A fresh no-op tick so positions taken after this are newer than the loss.
        self.tick();
    }

    /// The retained history as `local.oplog.rs` shows it, oldest first (natural
    /// order): one entry per retained event (`ts`, `t`, `op`, `ns`, `wall`, `o2._id`);
    /// with nothing retained, one no-op at the current time, since a replica set's
    /// oplog is never empty. What `db.getReplicationInfo()` reads: the first entry's
    /// `ts` is the oldest point a change stream can still resume from.
    pub fn entries(&self) -> Vec<bson::Document> {
        let mut out: Vec<bson::Document> = self
            .events
            .iter()
            .map(|e| {
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
            })
            .collect();
        if out.is_empty() {
            out.push(bson::doc! {
                "ts": self.now(), "t": 1_i64, "op": "n", "ns": "",
                "wall": DateTime::now(), "o": {"msg": "periodic noop"},
            });
        }
        out
    }

    /// Whether resuming at a point `after` (exclusive; a token's time) is impossible.
    pub fn resume_lost(&self, after: Timestamp) -> bool {
        matches!(self.lost_through, Some(l) if ts_key(after) <= ts_key(l))
    }

    /// Whether a live stream positioned at `after` missed trimmed events.
    pub fn stream_lost(&self, after: Timestamp) -> bool {
        matches!(self.last_dropped_event, Some(l) if ts_key(l) > ts_key(after))
    }

    /// Events with cluster time strictly after `after`, oldest first.
    pub fn events_after(&self, after: Timestamp) -> impl Iterator<Item = &Arc<Event>> {
        let start = self
            .events
            .partition_point(|e| ts_key(e.ts) <= ts_key(after));
        self.events.range(start..)
    }

    /// The event at exactly `ts`, if retained.
    pub fn event_at(&self, ts: Timestamp) -> Option<&Arc<Event>> {
        let i = self.events.partition_point(|e| ts_key(e.ts) < ts_key(ts));
        self.events.get(i).filter(|e| e.ts == ts)
    }
}
