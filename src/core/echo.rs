//! Echo memory: the engine's own recent writes, so that when a write comes back on the
//! target's change stream it is recognised and dropped without any store call. Bounded
//! (oldest entries evicted first) and in memory only: after a restart, echoes are caught
//! by the conditional writes instead (a byte-identical no-op, or a compare) and by the
//! tombstone rule for deletes.
//!
//! Deletes carry no content to compare, so an expected delete echo also remembers the
//! delete time it propagates (`DeleteIfNotNewer { deleted_at }`). The engine's delete
//! happens after that delete (it propagates it), so its echo's server time is not
//! before `deleted_at` minus the allowed clock skew between the two servers; an older
//! delete of the same key still unread in the stream is a client's, and is not taken
//! for the echo (which would leave the real echo to pass for a client delete stamped
//! later than the change it propagates, beating client writes made in between).
//! Nor is a delete made before the newest change already read from that side when the
//! write was recorded: the engine writes after reading it, and one server's clock does
//! not go back, so such a delete (say a client deleting the key again, still unread)
//! is a client's too.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bson::DateTime;

use crate::core::doc::content_hash;
use crate::core::types::{ChangeKind, Key, Side, Write};

/// Default number of remembered writes.
pub(crate) const ECHO_CAPACITY: usize = 100_000;

/// What the engine wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Echo {
    /// A document with this content hash.
    Doc(u64),
    /// A delete propagating one made at this time (`None`: unconditional, any time).
    Deleted(Option<DateTime>),
}

impl Echo {
    /// The echo `write` will produce if applied.
    pub(crate) fn of_write(write: &Write) -> Echo {
        match write {
            Write::UpsertIfNewer { doc, .. } | Write::Replace { doc, .. } => {
                Echo::Doc(content_hash(doc))
            }
            Write::DeleteIfNotNewer { deleted_at, .. } => Echo::Deleted(Some(*deleted_at)),
            Write::Delete { .. } => Echo::Deleted(None),
        }
    }
}

/// An expected echo.
#[derive(Debug, Clone, Copy)]
struct Expected {
    /// What the engine wrote.
    echo: Echo,
    /// Server time of the newest change read from the target side when the write was
    /// recorded: the write's own change is not older.
    not_before: Option<DateTime>,
}

impl Expected {
    /// Whether a change of `kind` made at server time `at` can be this write's echo,
    /// the servers' clocks differing by up to `skew`.
    fn matches(&self, kind: &ChangeKind, at: DateTime, skew: Duration) -> bool {
        match (self.echo, kind) {
            (Echo::Doc(h), ChangeKind::Upsert(d)) => h == content_hash(d),
            (Echo::Deleted(w), ChangeKind::Delete) => {
                let skew = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
                let after_propagated = w.is_none_or(|w| {
                    at.timestamp_millis() >= w.timestamp_millis().saturating_sub(skew)
                });
                after_propagated && self.not_before.is_none_or(|n| at >= n)
            }
            _ => false,
        }
    }
}

/// Writes remembered per (side, key): the engine may write a key twice in a row (a
/// delete, then the winner written back) and both come back on the stream.
const PER_KEY: usize = 4;

/// The engine's recent writes to one (side, key).
#[derive(Debug, Default)]
struct KeyEchoes {
    /// Writes whose echo has not come back yet, oldest first.
    pending: Vec<Expected>,
    /// The target side's read mark (gen, next seq) when the latest write that changed
    /// the document was recorded.
    applied: Option<(u64, u64)>,
}

/// Recent engine writes by (target side, key).
#[derive(Debug)]
pub(crate) struct EchoMemory {
    /// What is remembered per (side, key).
    entries: HashMap<(Side, Key), KeyEchoes>,
    /// Insertion order for eviction.
    order: VecDeque<(Side, Key)>,
    /// Maximum (side, key) entries.
    capacity: usize,
    /// Allowed clock difference between the two servers (see the module docs).
    skew: Duration,
    /// Per side (local, cloud): server time of the newest change read.
    last_read: [Option<DateTime>; 2],
    /// Whether a key was ever evicted (its echoes can no longer be recognised).
    evicted: bool,
}

fn side_ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Cloud => 1,
    }
}

impl EchoMemory {
    /// Empty memory holding up to `capacity` keys, for servers whose clocks differ by
    /// up to `skew`.
    pub(crate) fn new(capacity: usize, skew: Duration) -> Self {
        EchoMemory {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            skew,
            last_read: [None; 2],
            evicted: false,
        }
    }

    /// Remember that the engine is writing `echo` to `side` (call before the write, so
    /// the reader can recognise the echo whenever it arrives; [`Self::forget`] it if the
    /// write changed nothing).
    pub(crate) fn record(&mut self, side: Side, key: &Key, echo: Echo) {
        let id = (side, key.clone());
        let not_before = self.last_read[side_ix(side)];
        let list = &mut self.entries.entry(id.clone()).or_default().pending;
        if list.is_empty() {
            self.order.push_back(id);
        }
        list.push(Expected { echo, not_before });
        if list.len() > PER_KEY {
            list.remove(0);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                    self.evicted = true;
                }
                None => break,
            }
        }
    }

    /// Drop a remembered write that did not happen (one occurrence: another write of
    /// the same kind may have happened and still has its echo coming).
    pub(crate) fn forget(&mut self, side: Side, key: &Key, echo: Echo) {
        if let Some(k) = self.entries.get_mut(&(side, key.clone())) {
            if let Some(i) = k.pending.iter().rposition(|e| e.echo == echo) {
                k.pending.remove(i);
            }
        }
    }

    /// The engine's write to `side`'s `key`, recorded when `side`'s read mark was `mark`
    /// (see [`crate::core::checkpoint::Tracker::mark`]), changed the document.
    pub(crate) fn applied(&mut self, side: Side, key: &Key, mark: (u64, u64)) {
        if let Some(k) = self.entries.get_mut(&(side, key.clone())) {
            k.applied = k.applied.max(Some(mark));
        }
    }

    /// Whether a change of `side`'s `key` with read sequence `seq` (generation `gen`)
    /// was read before a write of the engine to that key changed the document: that
    /// conditional write then compared itself with the change (or a later state) and
    /// won.
    pub(crate) fn overwritten_after(&self, side: Side, key: &Key, gen: u64, seq: u64) -> bool {
        self.entries
            .get(&(side, key.clone()))
            .and_then(|k| k.applied)
            .is_some_and(|(g, next)| g == gen && seq < next)
    }

    /// Whether the memory has followed `side`'s `key` since the engine wrote it (an
    /// unknown key may still see echoes of writes from before a restart).
    pub(crate) fn knows(&self, side: Side, key: &Key) -> bool {
        self.entries.contains_key(&(side, key.clone()))
    }

    /// Whether a key was ever evicted: a change of a key the memory does not know may
    /// then be the echo of one of the engine's writes.
    pub(crate) fn evicted_any(&self) -> bool {
        self.evicted
    }

    /// Whether a change read from `side`, made at server time `at`, is the engine's own
    /// write. Called by the reader for every change, in stream order: a match consumes
    /// that write and the ones before it; a mismatch (a client change from before the
    /// write) leaves the memory alone.
    pub(crate) fn take_echo(
        &mut self,
        side: Side,
        key: &Key,
        kind: &ChangeKind,
        at: DateTime,
    ) -> bool {
        let last = &mut self.last_read[side_ix(side)];
        *last = (*last).max(Some(at));
        let Some(list) = self
            .entries
            .get_mut(&(side, key.clone()))
            .map(|k| &mut k.pending)
        else {
            return false;
        };
        let skew = self.skew;
        match list.iter().position(|e| e.matches(kind, at, skew)) {
            Some(i) => {
                list.drain(..=i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    const NO_SKEW: Duration = Duration::ZERO;

    fn t(ms: i64) -> DateTime {
        DateTime::from_millis(ms)
    }

    fn upsert(d: &bson::Document) -> Echo {
        Echo::Doc(content_hash(d))
    }

    #[test]
    fn matching_write_is_an_echo_once() {
        let mut m = EchoMemory::new(2, NO_SKEW);
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        let up = ChangeKind::Upsert(d.clone());
        m.record(Side::Cloud, &k, upsert(&d));
        m.record(Side::Cloud, &k, Echo::Deleted(None));
        assert!(!m.take_echo(Side::Local, &k, &up, t(0)));
        assert!(m.take_echo(Side::Cloud, &k, &up, t(0)));
        assert!(m.take_echo(Side::Cloud, &k, &ChangeKind::Delete, t(0)));
        assert!(
            !m.take_echo(Side::Cloud, &k, &ChangeKind::Delete, t(0)),
            "consumed"
        );
        assert!(!m.take_echo(Side::Cloud, &k, &up, t(0)));
    }

    #[test]
    fn a_write_that_did_not_happen_is_forgotten_once() {
        let mut m = EchoMemory::new(4, NO_SKEW);
        let k = Key(1.into());
        m.record(Side::Local, &k, Echo::Deleted(None));
        m.record(Side::Local, &k, Echo::Deleted(None));
        m.forget(Side::Local, &k, Echo::Deleted(None));
        assert!(
            m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(0)),
            "the applied one still echoes"
        );
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(0)));
    }

    #[test]
    fn an_older_client_delete_is_not_taken_for_a_propagated_delete() {
        let mut m = EchoMemory::new(4, Duration::from_millis(500));
        let k = Key(1.into());
        // The engine propagates a delete made at 10 s; a client delete of the same key
        // made at 9 s (before the propagated one) is still unread in the stream.
        m.record(Side::Local, &k, Echo::Deleted(Some(t(10_000))));
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(9_000)));
        // Within the allowed skew of the other server's clock, it is the echo.
        assert!(m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(9_600)));
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(12_000)));
    }

    #[test]
    fn a_delete_older_than_a_change_read_before_the_write_is_not_its_echo() {
        let mut m = EchoMemory::new(4, NO_SKEW);
        let k = Key(1.into());
        let other = Key(2.into());
        // A change stamped 10 s has been read from local when the engine records its
        // delete propagating one made at 6 s.
        assert!(!m.take_echo(Side::Local, &other, &ChangeKind::Delete, t(10_000)));
        m.record(Side::Local, &k, Echo::Deleted(Some(t(6_000))));
        // A client's delete at 7 s, made before that change, is read next: not the echo.
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(7_000)));
        assert!(m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(10_000)));
        // Changes read from the other side do not move this side's bound.
        m.record(Side::Local, &k, Echo::Deleted(None));
        assert!(!m.take_echo(Side::Cloud, &other, &ChangeKind::Delete, t(20_000)));
        assert!(m.take_echo(Side::Local, &k, &ChangeKind::Delete, t(10_000)));
    }

    #[test]
    fn a_change_read_before_an_applied_write_is_overwritten() {
        let mut m = EchoMemory::new(4, NO_SKEW);
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        m.record(Side::Cloud, &k, upsert(&d));
        // Recorded when cloud's next read sequence was 5 (generation 0).
        m.applied(Side::Cloud, &k, (0, 5));
        assert!(m.overwritten_after(Side::Cloud, &k, 0, 4));
        assert!(
            !m.overwritten_after(Side::Cloud, &k, 0, 5),
            "read after the write"
        );
        assert!(
            !m.overwritten_after(Side::Cloud, &k, 1, 4),
            "another generation"
        );
        assert!(!m.overwritten_after(Side::Local, &k, 0, 4), "another side");
        // Still known once the echo came back.
        assert!(m.take_echo(Side::Cloud, &k, &ChangeKind::Upsert(d), t(0)));
        assert!(m.overwritten_after(Side::Cloud, &k, 0, 4));
        // A key the memory does not follow has no mark.
        let other = Key(2.into());
        m.applied(Side::Cloud, &other, (0, 9));
        assert!(!m.overwritten_after(Side::Cloud, &other, 0, 1));
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = EchoMemory::new(2, NO_SKEW);
        for i in 0..5 {
            m.record(Side::Local, &Key(i.into()), Echo::Deleted(None));
        }
        assert_eq!(m.entries.len(), 2);
        assert!(m.evicted_any());
        assert!(m.take_echo(Side::Local, &Key(4.into()), &ChangeKind::Delete, t(0)));
        assert!(!m.take_echo(Side::Local, &Key(0.into()), &ChangeKind::Delete, t(0)));
    }
}
