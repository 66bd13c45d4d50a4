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

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::time::{delay_queue, DelayQueue};

use bson::{DateTime, Document};

use crate::core::doc::updated_at;

use crate::core::types::{ChangeEvent, ChangeKind, Key, Side};

/// An event waiting in (or drained from) the queue, with its checkpoint bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct QueuedEvent {
    /// The newest event of the entry.
    pub(crate) event: ChangeEvent,
    /// Read-sequence number of `event` in its side's checkpoint tracker.
    pub(crate) seq: u64,
    /// Stream generation the sequence belongs to.
    pub(crate) gen: u64,
    /// An upsert from the same side was coalesced into this entry before `event`
    /// (so a delete here is a genuine client delete, not only an echo).
    pub(crate) after_upsert: bool,
    /// Latest server time of deletes from the same side coalesced into this entry
    /// before `event` (a delete followed by an upsert must not be forgotten: the upsert
    /// may be an older version re-created by the engine itself).
    pub(crate) max_delete: Option<DateTime>,
    /// The coalesced earlier upsert with the greatest valid `updatedAt` (ties: the
    /// later one), with that `updatedAt`. Last-writer-wins may prefer it to `event`
    /// when a side's own clock went backwards.
    pub(crate) best_upsert: Option<(Document, DateTime)>,
    /// `event` is the engine's own write coming back (recognised by the reader from the
    /// echo memory, in stream order); an engine delete's server time says nothing
    /// about last-writer-wins.
    pub(crate) engine_write: bool,
}

impl QueuedEvent {
    /// A fresh entry for `event`.
    pub(crate) fn new(event: ChangeEvent, gen: u64, seq: u64) -> Self {
        QueuedEvent {
            event,
            seq,
            gen,
            after_upsert: false,
            max_delete: None,
            best_upsert: None,
            engine_write: false,
        }
    }
}

/// Entries by (side, key) plus their timers.
struct Inner {
    /// Timers; each carries its entry's identity.
    timers: DelayQueue<(Side, Key)>,
    /// Pending entries and their timer keys.
    pending: HashMap<(Side, Key), (QueuedEvent, delay_queue::Key)>,
}

/// The bounded debounced queue (see the module docs for the policy).
pub(crate) struct Queue {
    /// Entries and timers.
    inner: Mutex<Inner>,
    /// Signalled when entries leave the queue (room for blocked readers).
    space: Notify,
    /// Maximum distinct pending entries.
    capacity: usize,
    /// Debounce window in milliseconds (changeable live; applies to new entries).
    debounce_ms: AtomicU64,
    /// Name of the `updatedAt` field (to keep the newest coalesced upsert).
    field: String,
}

impl Queue {
    /// An empty queue.
    pub(crate) fn new(capacity: usize, debounce: Duration, field: &str) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                timers: DelayQueue::new(),
                pending: HashMap::new(),
            }),
            space: Notify::new(),
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
        self.lock().pending.len()
    }

    /// Whether `side` has a pending entry for `key`.
    pub(crate) fn contains(&self, side: Side, key: &Key) -> bool {
        self.lock().pending.contains_key(&(side, key.clone()))
    }

    /// Whether `side` has any pending entry.
    pub(crate) fn has_pending(&self, side: Side) -> bool {
        self.lock().pending.keys().any(|(s, _)| *s == side)
    }

    /// Queue `ev`, waiting while the queue is full and `ev` would be a new entry.
    ///
    /// When `ev` joins an existing entry, the entry keeps the read-sequence of its
    /// *first* event (the resolution of a coalesced entry depends on every event in it,
    /// so a restart must re-read them all) and the (gen, seq) returned is done for
    /// checkpointing at once.
    pub(crate) async fn push(&self, ev: QueuedEvent) -> Option<(u64, u64)> {
        let id = (ev.event.side, ev.event.key.clone());
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some((slot, _)) = inner.pending.get_mut(&id) {
                    let new_u = match &ev.event.kind {
                        ChangeKind::Upsert(d) => updated_at(d, &self.field),
                        ChangeKind::Delete => None,
                    };
                    let prev = std::mem::replace(slot, ev);
                    slot.after_upsert =
                        prev.after_upsert || matches!(prev.event.kind, ChangeKind::Upsert(_));
                    let prev_delete = match prev.event.kind {
                        ChangeKind::Delete if !prev.engine_write => Some(prev.event.server_time),
                        _ => None,
                    };
                    slot.max_delete = prev.max_delete.max(prev_delete);
                    let prev_up = match prev.event.kind {
                        ChangeKind::Upsert(d) => updated_at(&d, &self.field).map(|u| (d, u)),
                        ChangeKind::Delete => None,
                    };
                    let best = match (prev.best_upsert, prev_up) {
                        (Some(a), Some(b)) => Some(if b.1 >= a.1 { b } else { a }),
                        (a, b) => a.or(b),
                    };
                    // Only a version newer than the entry's newest can still win.
                    slot.best_upsert = best.filter(|(_, u)| new_u.is_none_or(|n| *u > n));
                    let done = if prev.gen == slot.gen {
                        let own = slot.seq;
                        slot.seq = prev.seq;
                        (slot.gen, own)
                    } else {
                        (prev.gen, prev.seq)
                    };
                    return Some(done);
                }
                if inner.pending.len() < self.capacity {
                    let delay = Duration::from_millis(self.debounce_ms.load(Ordering::Relaxed));
                    let tk = inner.timers.insert(id.clone(), delay);
                    inner.pending.insert(id, (ev, tk));
                    return None;
                }
            }
            notified.await;
        }
    }

    fn poll_ready(&self, cx: &mut Context<'_>, max: usize) -> Poll<Vec<QueuedEvent>> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            match inner.timers.poll_expired(cx) {
                Poll::Ready(Some(exp)) => {
                    if let Some((ev, _)) = inner.pending.remove(exp.get_ref()) {
                        out.push(ev);
                    }
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        drop(inner);
        if out.is_empty() {
            Poll::Pending
        } else {
            self.space.notify_waiters();
            Poll::Ready(out)
        }
    }

    /// Wait until at least one entry's debounce expired; return up to `max` of them.
    pub(crate) async fn next_batch(&self, max: usize) -> Vec<QueuedEvent> {
        poll_fn(|cx| self.poll_ready(cx, max.max(1))).await
    }

    /// Take up to `max` entries now, ignoring their deadlines (shutdown drain).
    pub(crate) fn drain_now(&self, max: usize) -> Vec<QueuedEvent> {
        let mut inner = self.lock();
        let ids: Vec<(Side, Key)> = inner.pending.keys().take(max).cloned().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((ev, tk)) = inner.pending.remove(&id) {
                inner.timers.remove(&tk);
                out.push(ev);
            }
        }
        drop(inner);
        self.space.notify_waiters();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    use crate::core::types::ResumeToken;

    fn ev(key: i32, n: u64) -> QueuedEvent {
        let event = ChangeEvent {
            side: Side::Local,
            key: Key(key.into()),
            kind: ChangeKind::Upsert(doc! {"_id": key, "n": n as i64}),
            token: ResumeToken(doc! {"seq": n as i64}),
            server_time: DateTime::from_millis(0),
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
        // Content is the newest event's; the checkpoint position is the first one's.
        assert_eq!(batch[0].event.token, ResumeToken(doc! {"seq": 2_i64}));
        assert_eq!(batch[0].seq, 1);
        assert!(batch[0].after_upsert);
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
