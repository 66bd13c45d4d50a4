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

    /// Drop a remembered write that did not happen (one occurrence: another write of
    /// the same kind may have happened and still has its echo coming).
    pub(crate) fn forget(&mut self, side: Side, key: &Key, echo: Echo) {
        if let Some(list) = self.entries.get_mut(&(side, key.clone())) {
            if let Some(i) = list.iter().rposition(|e| *e == echo) {
                list.remove(i);
            }
        }
    }

    /// Whether the memory has followed `side`'s `key` since the engine wrote it (an
    /// unknown key may still see echoes of writes from before a restart).
    pub(crate) fn knows(&self, side: Side, key: &Key) -> bool {
        self.entries.contains_key(&(side, key.clone()))
    }

    /// Whether a change read from `side` is the engine's own write. Called by the reader
    /// in stream order: a match consumes that write and the ones before it; a mismatch
    /// (a client change from before the write) leaves the memory alone.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn matching_write_is_an_echo_once() {
        let mut m = EchoMemory::new(2);
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        m.record(Side::Cloud, &k, Echo::of(&ChangeKind::Upsert(d.clone())));
        m.record(Side::Cloud, &k, Echo::Deleted);
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Upsert(d.clone())));
        assert!(m.take_echo(Side::Cloud, &k, &ChangeKind::Upsert(d.clone())));
        assert!(m.take_echo(Side::Cloud, &k, &ChangeKind::Delete));
        assert!(
            !m.take_echo(Side::Cloud, &k, &ChangeKind::Delete),
            "consumed"
        );
        assert!(!m.take_echo(Side::Cloud, &k, &ChangeKind::Upsert(d)));
    }

    #[test]
    fn a_write_that_did_not_happen_is_forgotten_once() {
        let mut m = EchoMemory::new(4);
        let k = Key(1.into());
        m.record(Side::Local, &k, Echo::Deleted);
        m.record(Side::Local, &k, Echo::Deleted);
        m.forget(Side::Local, &k, Echo::Deleted);
        assert!(
            m.take_echo(Side::Local, &k, &ChangeKind::Delete),
            "the applied one still echoes"
        );
        assert!(!m.take_echo(Side::Local, &k, &ChangeKind::Delete));
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = EchoMemory::new(2);
        for i in 0..5 {
            m.record(Side::Local, &Key(i.into()), Echo::Deleted);
        }
        assert_eq!(m.entries.len(), 2);
        assert!(m.take_echo(Side::Local, &Key(4.into()), &ChangeKind::Delete));
        assert!(!m.take_echo(Side::Local, &Key(0.into()), &ChangeKind::Delete));
    }
}
