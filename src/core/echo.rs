//! Echo memory: the engine's own recent writes, so that when a write comes back on the
//! target's change stream it is recognised and dropped without any store call. Bounded
//! (oldest entries evicted first) and in memory only: after a restart, echoes are caught
//! by the conditional writes instead (a byte-identical no-op, or a compare) and by the
//! tombstone rule for deletes.

use std::collections::{HashMap, VecDeque};

use crate::core::doc::content_hash;
use crate::core::types::{ChangeKind, Key, Side, Write};

/// Default number of remembered writes.
pub(crate) const ECHO_CAPACITY: usize = 100_000;

/// What the engine wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Echo {
    /// A document with this content hash.
    Doc(u64),
    /// A delete.
    Deleted,
}

impl Echo {
    /// The echo a change of `kind` would be.
    pub(crate) fn of(kind: &ChangeKind) -> Echo {
        match kind {
            ChangeKind::Upsert(d) => Echo::Doc(content_hash(d)),
            ChangeKind::Delete => Echo::Deleted,
        }
    }

    /// The echo `write` will produce if applied.
    pub(crate) fn of_write(write: &Write) -> Echo {
        match write {
            Write::UpsertIfNewer { doc, .. } | Write::Replace { doc, .. } => {
                Echo::Doc(content_hash(doc))
            }
            Write::DeleteIfNotNewer { .. } | Write::Delete { .. } => Echo::Deleted,
        }
    }
}

/// Writes remembered per (side, key): the engine may write a key twice in a row (a
/// delete, then the winner written back) and both come back on the stream.
const PER_KEY: usize = 4;

/// Recent engine writes by (target side, key).
#[derive(Debug)]
pub(crate) struct EchoMemory {
    /// Latest writes per (side, key), oldest first.
    entries: HashMap<(Side, Key), Vec<Echo>>,
    /// Insertion order for eviction.
    order: VecDeque<(Side, Key)>,
    /// Maximum (side, key) entries.
    capacity: usize,
}

impl EchoMemory {
    /// Empty memory holding up to `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        EchoMemory {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remember that the engine is writing `echo` to `side` (call before the write, so
    /// the reader can recognise the echo whenever it arrives; [`Self::forget`] it if the
    /// write changed nothing).
    pub(crate) fn record(&mut self, side: Side, key: &Key, echo: Echo) {
        let id = (side, key.clone());
        let list = self.entries.entry(id.clone()).or_default();
        if list.is_empty() {
            self.order.push_back(id);
        }
        list.retain(|e| *e != echo);
        list.push(echo);
        if list.len() > PER_KEY {
            list.remove(0);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Drop a remembered write that did not happen.
    pub(crate) fn forget(&mut self, side: Side, key: &Key, echo: Echo) {
        if let Some(list) = self.entries.get_mut(&(side, key.clone())) {
            list.retain(|e| *e != echo);
        }
    }

    /// Whether the memory has followed `side`'s `key` since the engine wrote it (an
    /// unknown key may still see echoes of writes from before a restart).
    pub(crate) fn knows(&self, side: Side, key: &Key) -> bool {
        self.entries.contains_key(&(side, key.clone()))
    }

    /// Whether the engine recently wrote a document (not a delete) to `side` for `key`.
    pub(crate) fn wrote_doc(&self, side: Side, key: &Key) -> bool {
        self.entries
            .get(&(side, key.clone()))
            .is_some_and(|l| l.iter().any(|e| matches!(e, Echo::Doc(_))))
    }

    /// Whether a delete read from `side` may be the engine's own (without consuming).
    pub(crate) fn deleted(&self, side: Side, key: &Key) -> bool {
        self.entries
            .get(&(side, key.clone()))
            .is_some_and(|l| l.contains(&Echo::Deleted))
    }

    /// Like [`Self::is_echo`], but a mismatch leaves the memory alone (the reader's early
    /// check; the worker's check decides what a mismatch means).
    pub(crate) fn take_echo(&mut self, side: Side, key: &Key, kind: &ChangeKind) -> bool {
        let Some(list) = self.entries.get_mut(&(side, key.clone())) else {
            return false;
        };
        match list.iter().position(|e| *e == Echo::of(kind)) {
            Some(i) => {
                list.drain(..=i);
                true
            }
            None => false,
        }
    }

    /// Whether a change read from `side` is the engine's own write. A match consumes
    /// that write and the ones before it (the stream reports writes in order); a change
    /// that does not match forgets the key (it moved on; a later identical write by a
    /// client must not be mistaken for an echo).
    pub(crate) fn is_echo(&mut self, side: Side, key: &Key, kind: &ChangeKind) -> bool {
        let id = (side, key.clone());
        let Some(list) = self.entries.get_mut(&id) else {
            return false;
        };
        match list.iter().position(|e| *e == Echo::of(kind)) {
            Some(i) => {
                list.drain(..=i);
                true
            }
            None => {
                list.clear();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn matching_write_is_an_echo_and_a_different_one_forgets_it() {
        let mut m = EchoMemory::new(2);
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        m.record(Side::Cloud, &k, Echo::of(&ChangeKind::Upsert(d.clone())));
        m.record(Side::Cloud, &k, Echo::Deleted);
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Upsert(d.clone())));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Upsert(d.clone())));
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Delete));
        // Consumed: the same change again is not an echo.
        assert!(!m.is_echo(Side::Cloud, &k, &ChangeKind::Delete));
        m.record(Side::Cloud, &k, Echo::Deleted);
        assert!(!m.is_echo(Side::Cloud, &k, &ChangeKind::Upsert(d)));
        assert!(
            !m.is_echo(Side::Cloud, &k, &ChangeKind::Delete),
            "a mismatch forgets the key"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = EchoMemory::new(2);
        for i in 0..5 {
            m.record(Side::Local, &Key(i.into()), Echo::Deleted);
        }
        assert_eq!(m.entries.len(), 2);
        m.record(Side::Local, &Key(7.into()), Echo::Doc(1));
        m.forget(Side::Local, &Key(7.into()), Echo::Doc(1));
        assert!(!m.wrote_doc(Side::Local, &Key(7.into())));
        assert!(m.is_echo(Side::Local, &Key(4.into()), &ChangeKind::Delete));
        assert!(!m.is_echo(Side::Local, &Key(0.into()), &ChangeKind::Delete));
    }
}
