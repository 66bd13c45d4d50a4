//! The debounced coalescing queue between the stream readers and the apply worker.
//!
//! One entry per (side, key). The *first* event of an entry sets its deadline
//! (now + debounce); later events for the same entry replace its content without
//! extending the deadline, so latency is bounded by the debounce window even for a key
//! written continuously. Expired entries are drained in batches of up to `max_batch`.
//!
//! **Full-queue policy: block.** At most `capacity` distinct entries are pending; a
//! reader pushing a *new* entry into a full queue waits until the worker drains some
//! (backpressure onto the change stream, whose server-side cursor simply stays put).
//! Pushing into an existing entry never waits (it does not grow the queue). Nothing is
//! ever dropped, so memory is bounded by `capacity` entries whatever the write rate.
//!
//! **Memory per entry.** Entries live in one ring in creation order (which is deadline
//! order), indexed by a hash table of ring positions (8 bytes each), so a key is stored
//! once. Documents are kept as their BSON bytes (a parsed `Document` costs several
//! times its encoded size) and parsed back when drained; the resume token is not kept
//! (the checkpoint tracker holds positions). An entry costs [`ENTRY_BYTES`] plus its
//! document's BSON size (twice when an older coalesced version may still win).
//! After the debounce is lowered live, entries created later may wait behind older
//! ones for at most the old window.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bson::{DateTime, Document, RawDocument, RawDocumentBuf};
use hashbrown::HashTable;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::doc::updated_at;
use crate::core::engine::shared::ix;
use crate::core::types::{ChangeEvent, ChangeKind, Key, ResumeToken, Side};

/// Bytes an entry costs beyond its document's BSON bytes: its ring slot (twice: the
/// ring grows by doubling), its hash-table slot at the lowest load, and allocator
/// overhead of the document and of an older coalesced version.
pub(crate) const ENTRY_BYTES: usize = 2 * std::mem::size_of::<Slot>() + 2 * 9 + 64;
// The bound stated in tests/reliability_resources.rs relies on it.
const _: () = assert!(ENTRY_BYTES <= 1024, "a queue entry costs over 1 KiB");

/// An event waiting in (or drained from) the queue, with its checkpoint bookkeeping.
/// A drained event carries no resume token (`event.token` is empty): the checkpoint
/// tracker holds the positions.
#[derive(Debug, Clone)]
pub(crate) struct QueuedEvent {
    /// The newest event of the entry.
    pub(crate) event: ChangeEvent,
    /// Read-sequence number of the entry's oldest pending change in its side's
    /// checkpoint tracker.
    pub(crate) seq: u64,
    /// Read-sequence number of `event` (the newest).
    pub(crate) last_seq: u64,
    /// Stream generation the sequence belongs to.
    pub(crate) gen: u64,
    /// The latest server time of the deletes coalesced into this entry before `event`
    /// (a delete followed by an upsert still counts: last-writer-wins compares it with
    /// the other side's version).
    pub(crate) max_delete: Option<DateTime>,
    /// The coalesced earlier upsert with the greatest valid `updatedAt` (ties: the
    /// later one), with that `updatedAt`. Last-writer-wins may prefer it to `event`
    /// when a side's own clock went backwards.
    pub(crate) best_upsert: Option<(Document, DateTime)>,
    /// Of a plain upsert (no delete or older upsert coalesced into the entry), its
    /// document's bytes as queued: what [`crate::core::own_copies`] fingerprints, and
    /// the side's state as of the event, which the worker may use instead of reading
    /// the side (see `engine::keyed`).
    pub(crate) raw: Option<RawDocumentBuf>,
}

impl QueuedEvent {
    /// The server time of the entry's latest delete (`event` or one coalesced before
    /// it), if it has any.
    pub(crate) fn latest_delete(&self) -> Option<DateTime> {
        let own = (self.event.kind == ChangeKind::Delete).then_some(self.event.server_time);
        own.max(self.max_delete)
    }

    /// A fresh entry for `event`.
    pub(crate) fn new(event: ChangeEvent, gen: u64, seq: u64) -> Self {
        QueuedEvent {
            event,
            seq,
            last_seq: seq,
            gen,
            max_delete: None,
            best_upsert: None,
            raw: None,
        }
    }
}

/// A document as the queue keeps it.
#[derive(Debug)]
enum Body {
    /// Its BSON bytes (always, in practice).
    Bytes(Box<[u8]>),
    /// A document that cannot be encoded (a key with a NUL byte); kept as it is, the
    /// store refuses it later.
    Parsed(Box<Document>),
}

impl Body {
    fn new(doc: Document) -> Body {
        match RawDocumentBuf::from_document(&doc) {
            Ok(raw) => Body::Bytes(raw.into_bytes().into_boxed_slice()),
            Err(_) => Body::Parsed(Box::new(doc)),
        }
    }

    fn into_document(self) -> Document {
        match self {
            Body::Bytes(b) => Body::parse(&b),
            Body::Parsed(d) => *d,
        }
    }

    /// The document of bytes `Body::new` encoded.
    fn parse(bytes: &[u8]) -> Document {
        // Justified: the bytes were encoded from a `Document` by `Body::new`.
        RawDocument::from_bytes(bytes)
            .and_then(Document::try_from)
            .expect("bytes encoded from a Document decode back")
    }
}

/// One pending entry.
#[derive(Debug)]
struct Slot {
    /// The entry's side.
    side: Side,
    /// The entry's key.
    key: Key,
    /// When the entry is due (set by its first event).
    deadline: Instant,
    /// The newest event's document (`None`: a delete).
    body: Option<Body>,
    /// `updatedAt` of `body`, when it has a valid one.
    updated_at: Option<DateTime>,
    /// Server time of the newest event.
    server_time: DateTime,
    /// See [`QueuedEvent::seq`].
    seq: u64,
    /// See [`QueuedEvent::last_seq`].
    last_seq: u64,
    /// See [`QueuedEvent::gen`].
    gen: u64,
    /// See [`QueuedEvent::max_delete`].
    max_delete: Option<DateTime>,
    /// See [`QueuedEvent::best_upsert`] (boxed: rare).
    best_upsert: Option<Box<(Body, DateTime)>>,
}

impl Slot {
    fn into_queued(self) -> QueuedEvent {
        let plain = self.max_delete.is_none() && self.best_upsert.is_none();
        let (kind, raw) = match self.body {
            Some(Body::Bytes(b)) if plain => {
                let doc = Body::parse(&b);
                // The bytes move, uncopied, into the document that was parsed from them.
                let raw = RawDocumentBuf::from_bytes(b.into_vec()).ok();
                (ChangeKind::Upsert(doc), raw)
            }
            Some(b) => (ChangeKind::Upsert(b.into_document()), None),
            None => (ChangeKind::Delete, None),
        };
        QueuedEvent {
            event: ChangeEvent {
                side: self.side,
                key: self.key,
                kind,
                token: ResumeToken(Document::new()),
                server_time: self.server_time,
                own: false,
                pair: 0,
            },
            seq: self.seq,
            last_seq: self.last_seq,
            gen: self.gen,
            max_delete: self.max_delete,
            best_upsert: self.best_upsert.map(|b| {
                let (body, u) = *b;
                (body.into_document(), u)
            }),
            raw,
        }
    }
}

/// Pending entries in creation (= deadline) order, indexed by (side, key).
struct Inner {
    /// The entries, oldest first.
    ring: VecDeque<Slot>,
    /// Absolute position of `ring[0]` (positions only grow).
    head: u64,
    /// Absolute ring positions, hashed by their entry's (side, key).
    index: HashTable<u64>,
    /// Pending entries per side.
    per_side: [usize; 2],
}

/// The bounded debounced queue (see the module docs for the policy).
pub(crate) struct Queue {
    /// Entries.
    inner: Mutex<Inner>,
    /// Hasher of (side, key) for the index.
    hasher: RandomState,
    /// Signalled when entries leave the queue (room for blocked readers).
    space: Notify,
    /// Signalled when an entry is created (wakes a worker waiting on an empty queue).
    added: Notify,
    /// Maximum distinct pending entries.
    capacity: usize,
    /// Debounce window in milliseconds (changeable live; applies to new entries).
    debounce_ms: AtomicU64,
    /// Name of the `updatedAt` field (to keep the newest coalesced upsert).
    field: String,
}

impl Inner {
    /// Ring position of (side, key), if pending.
    fn find(&self, hash: u64, side: Side, key: &Key) -> Option<u64> {
        let (ring, head) = (&self.ring, self.head);
        self.index
            .find(hash, |&p| {
                let s = &ring[(p - head) as usize];
                s.side == side && s.key == *key
            })
            .copied()
    }

    /// Take the oldest entry.
    fn pop_front(&mut self, hasher: &RandomState) -> Option<Slot> {
        let slot = self.ring.pop_front()?;
        let pos = self.head;
        self.head += 1;
        let hash = hasher.hash_one((slot.side, &slot.key));
        if let Ok(e) = self.index.find_entry(hash, |&p| p == pos) {
            e.remove();
        }
        self.per_side[ix(slot.side)] -= 1;
        Some(slot)
    }
}

impl Queue {
    /// An empty queue.
    pub(crate) fn new(capacity: usize, debounce: Duration, field: &str) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                head: 0,
                index: HashTable::new(),
                per_side: [0, 0],
            }),
            hasher: RandomState::new(),
            space: Notify::new(),
            added: Notify::new(),
            capacity: capacity.max(1),
            debounce_ms: AtomicU64::new(debounce.as_millis() as u64),
            field: field.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the debounce window for entries created from now on.
    pub(crate) fn set_debounce(&self, debounce: Duration) {
        self.debounce_ms
            .store(debounce.as_millis() as u64, Ordering::Relaxed);
    }

    /// Distinct pending entries.
    pub(crate) fn len(&self) -> usize {
        self.lock().ring.len()
    }

    /// Whether `side` has a pending entry for `key`.
    pub(crate) fn contains(&self, side: Side, key: &Key) -> bool {
        let hash = self.hasher.hash_one((side, key));
        self.lock().find(hash, side, key).is_some()
    }

    /// Whether at least `n` entries are due now.
    pub(crate) fn due_at_least(&self, n: usize) -> bool {
        let now = Instant::now();
        let inner = self.lock();
        inner.ring.len() >= n && inner.ring.iter().take(n).all(|s| s.deadline <= now)
    }

    /// Whether `side` has any pending entry.
    pub(crate) fn has_pending(&self, side: Side) -> bool {
        self.lock().per_side[ix(side)] > 0
    }

    /// Queue `ev`, waiting while the queue is full and `ev` would be a new entry.
    ///
    /// When `ev` joins an existing entry, the entry keeps the read-sequence of its
    /// *first* event (the resolution of a coalesced entry depends on every event in it,
    /// so a restart must re-read them all) and the (gen, seq) returned is done for
    /// checkpointing at once.
    pub(crate) async fn push(&self, ev: QueuedEvent) -> Option<(u64, u64)> {
        let side = ev.event.side;
        let hash = self.hasher.hash_one((side, &ev.event.key));
        let new_u = match &ev.event.kind {
            ChangeKind::Upsert(d) => updated_at(d, &self.field),
            ChangeKind::Delete => None,
        };
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some(pos) = inner.find(hash, side, &ev.event.key) {
                    let head = inner.head;
                    let slot = &mut inner.ring[(pos - head) as usize];
                    return Some(self.coalesce(slot, ev, new_u));
                }
                if inner.ring.len() < self.capacity {
                    let delay = Duration::from_millis(self.debounce_ms.load(Ordering::Relaxed));
                    let was_empty = inner.ring.is_empty();
                    let slot = self.fresh(ev, new_u, Instant::now() + delay);
                    let Inner {
                        ring,
                        head,
                        index,
                        per_side,
                    } = &mut *inner;
                    let pos = *head + ring.len() as u64;
                    ring.push_back(slot);
                    per_side[ix(side)] += 1;
                    let (ring, head) = (&*ring, *head);
                    index.insert_unique(hash, pos, |&p| {
                        let s = &ring[(p - head) as usize];
                        self.hasher.hash_one((s.side, &s.key))
                    });
                    drop(inner);
                    if was_empty {
                        self.added.notify_one();
                    }
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A new entry for `ev`, due at `deadline`.
    fn fresh(&self, ev: QueuedEvent, new_u: Option<DateTime>, deadline: Instant) -> Slot {
        let ChangeEvent {
            side,
            key,
            kind,
            server_time,
            ..
        } = ev.event;
        Slot {
            side,
            key,
            deadline,
            body: match kind {
                ChangeKind::Upsert(d) => Some(Body::new(d)),
                ChangeKind::Delete => None,
            },
            updated_at: new_u,
            server_time,
            seq: ev.seq,
            last_seq: ev.last_seq,
            gen: ev.gen,
            max_delete: ev.max_delete,
            best_upsert: ev.best_upsert.map(|(d, u)| Box::new((Body::new(d), u))),
        }
    }

    /// Fold `ev` (whose document's `updatedAt` is `new_u`) into the pending `slot`;
    /// returns the (gen, seq) that is done at once.
    fn coalesce(&self, slot: &mut Slot, ev: QueuedEvent, new_u: Option<DateTime>) -> (u64, u64) {
        let deadline = slot.deadline;
        let prev = std::mem::replace(slot, self.fresh(ev, new_u, deadline));
        let prev_delete = prev.body.is_none().then_some(prev.server_time);
        slot.max_delete = slot.max_delete.max(prev.max_delete).max(prev_delete);
        let prev_up = match (prev.body, prev.updated_at) {
            (Some(b), Some(u)) => Some(Box::new((b, u))),
            _ => None,
        };
        let best = match (prev.best_upsert, prev_up) {
            (Some(a), Some(b)) => Some(if b.1 >= a.1 { b } else { a }),
            (a, b) => a.or(b),
        };
        // Only a version newer than the entry's newest can still win.
        slot.best_upsert = best.filter(|b| new_u.is_none_or(|n| b.1 > n));
        if prev.gen == slot.gen {
            let own = slot.seq;
            slot.seq = prev.seq;
            (slot.gen, own)
        } else {
            (prev.gen, prev.seq)
        }
    }

    /// Take up to `max` entries from the front, only expired ones unless `all`.
    fn take(&self, max: usize, all: bool) -> (Vec<QueuedEvent>, Option<Instant>) {
        let now = Instant::now();
        let mut slots = Vec::new();
        let next = {
            let mut inner = self.lock();
            while slots.len() < max {
                match inner.ring.front() {
                    Some(s) if all || s.deadline <= now => {}
                    _ => break,
                }
                slots.extend(inner.pop_front(&self.hasher));
            }
            inner.ring.front().map(|s| s.deadline)
        };
        if !slots.is_empty() {
            self.space.notify_waiters();
        }
        // Decoding happens outside the lock.
        (slots.into_iter().map(Slot::into_queued).collect(), next)
    }

    /// Wait until at least one entry's debounce expired; return up to `max` of them.
    /// Cancel-safe: entries are only taken synchronously, after the wait.
    pub(crate) async fn next_batch(&self, max: usize) -> Vec<QueuedEvent> {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let (batch, next) = self.take(max.max(1), false);
            if !batch.is_empty() {
                return batch;
            }
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => added.await,
            }
        }
    }

    /// Take up to `max` entries whose debounce expired, without waiting.
    pub(crate) fn take_due(&self, max: usize) -> Vec<QueuedEvent> {
        self.take(max.max(1), false).0
    }

    /// Take up to `max` entries now, ignoring their deadlines (shutdown drain).
    pub(crate) fn drain_now(&self, max: usize) -> Vec<QueuedEvent> {
        self.take(max, true).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ev(key: i32, n: u64) -> QueuedEvent {
        let event = ChangeEvent {
            side: Side::Local,
            key: Key(key.into()),
            kind: ChangeKind::Upsert(doc! {"_id": key, "n": n as i64}),
            token: ResumeToken(doc! {"seq": n as i64}),
            server_time: DateTime::from_millis(0),
            own: false,
            pair: 0,
        };
        QueuedEvent::new(event, 0, n)
    }

    #[tokio::test(start_paused = true)]
    async fn first_event_sets_the_deadline_and_later_ones_replace_content() {
        let q = Queue::new(10, Duration::from_millis(50), "u");
        assert!(q.push(ev(1, 1)).await.is_none());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let done = q.push(ev(1, 2)).await.expect("coalesced");
        assert_eq!(done, (0, 2));
        let start = tokio::time::Instant::now();
        let batch = q.next_batch(10).await;
        // Deadline came from the first event (50 ms), not extended by the second.
        assert!(start.elapsed() <= Duration::from_millis(15));
        assert_eq!(batch.len(), 1);
        // Content is the newest event's; the checkpoint position is the first one's;
        // the token is not kept (the tracker has it).
        assert_eq!(
            batch[0].event.kind,
            ChangeKind::Upsert(doc! {"_id": 1, "n": 2_i64})
        );
        assert_eq!(batch[0].event.token, ResumeToken(Document::new()));
        assert_eq!(batch[0].seq, 1);
        assert!(batch[0].max_delete.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn queue_backpressure_bounds_pending_keys() {
        let q = std::sync::Arc::new(Queue::new(2, Duration::from_millis(10), "u"));
        q.push(ev(1, 1)).await;
        q.push(ev(2, 2)).await;
        let q2 = q.clone();
        let blocked = tokio::spawn(async move { q2.push(ev(3, 3)).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!blocked.is_finished());
        assert_eq!(q.len(), 2);
        // Pushing into an existing entry does not wait.
        assert!(q.push(ev(1, 4)).await.is_some());
        let batch = q.next_batch(1).await;
        assert_eq!(batch.len(), 1);
        blocked.await.expect("reader resumes once there is room");
        assert_eq!(q.len(), 2);
    }
}
