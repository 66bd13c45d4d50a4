//! In-memory [`StateStore`]: checkpoints, tombstones and sync records in a mutex, shared by clones so
//! a test can "restart" an engine on the same state.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bson::DateTime;

use super::FaultOp;
use crate::core::error::StoreError;
use crate::core::store::StateStore;
use crate::core::types::{Key, ResumeToken, Side, Tombstone};

/// Mutable state behind the lock.
#[derive(Default)]
struct Inner {
    /// Saved checkpoint per side.
    checkpoints: HashMap<Side, ResumeToken>,
    /// Tombstones by key.
    tombstones: HashMap<Key, Tombstone>,
    /// Sync records: the version both sides last agreed on, by key (ordered: scanned).
    synced: BTreeMap<Key, DateTime>,
    /// Remaining injected failures.
    failures: u32,
    /// Number of successful checkpoint saves.
    saves: u64,
}

/// In-memory checkpoints and tombstones. Clones share the same state.
#[derive(Clone, Default)]
pub struct MemoryState {
    /// The shared state.
    inner: Arc<Mutex<Inner>>,
}

impl MemoryState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut g = self.lock();
        if g.failures > 0 {
            g.failures -= 1;
            return Err(StoreError::transient(format!(
                "injected {:?} failure",
                FaultOp::State
            )));
        }
        Ok(g)
    }

    /// Make the next `n` state calls fail with a transient error.
    pub fn fail_next(&self, n: u32) {
        self.lock().failures += n;
    }

    /// The saved checkpoint of `side` (without going through the trait).
    pub fn checkpoint(&self, side: Side) -> Option<ResumeToken> {
        self.lock().checkpoints.get(&side).cloned()
    }

    /// All tombstones.
    pub fn all_tombstones(&self) -> Vec<Tombstone> {
        self.lock().tombstones.values().cloned().collect()
    }

    /// The sync record of `key` (without going through the trait).
    pub fn synced(&self, key: &Key) -> Option<DateTime> {
        self.lock().synced.get(key).copied()
    }

    /// Number of successful checkpoint saves.
    pub fn saves(&self) -> u64 {
        self.lock().saves
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn load_checkpoint(&self, side: Side) -> Result<Option<ResumeToken>, StoreError> {
        Ok(self.check()?.checkpoints.get(&side).cloned())
    }

    async fn save_checkpoint(&self, side: Side, token: &ResumeToken) -> Result<(), StoreError> {
        let mut g = self.check()?;
        g.checkpoints.insert(side, token.clone());
        g.saves += 1;
        Ok(())
    }

    async fn clear_checkpoint(&self, side: Side) -> Result<(), StoreError> {
        let mut g = self.check()?;
        g.checkpoints.remove(&side);
        Ok(())
    }

    async fn tombstones(&self, keys: &[Key]) -> Result<Vec<Tombstone>, StoreError> {
        let g = self.check()?;
        Ok(keys
            .iter()
            .filter_map(|k| g.tombstones.get(k).cloned())
            .collect())
    }

    async fn record_tombstones(&self, tombstones: &[Tombstone]) -> Result<(), StoreError> {
        let mut g = self.check()?;
        for t in tombstones {
            if g.tombstones
                .get(&t.key)
                .is_none_or(|old| old.deleted_at <= t.deleted_at)
            {
                g.tombstones.insert(t.key.clone(), t.clone());
            }
        }
        Ok(())
    }

    async fn remove_tombstones(&self, keys: &[Key]) -> Result<(), StoreError> {
        let mut g = self.check()?;
        for k in keys {
            g.tombstones.remove(k);
        }
        Ok(())
    }

    async fn expire_tombstones(&self, before: DateTime) -> Result<u64, StoreError> {
        let mut g = self.check()?;
        let n = g.tombstones.len();
        g.tombstones.retain(|_, t| t.deleted_at >= before);
        Ok((n - g.tombstones.len()) as u64)
    }

    async fn synced_versions(&self, keys: &[Key]) -> Result<Vec<(Key, DateTime)>, StoreError> {
        let g = self.check()?;
        Ok(keys
            .iter()
            .filter_map(|k| g.synced.get(k).map(|v| (k.clone(), *v)))
            .collect())
    }

    async fn scan_synced(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<DateTime>)>, StoreError> {
        let g = self.check()?;
        let lower = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        Ok(g.synced
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), Some(*v)))
            .collect())
    }

    async fn record_synced(&self, versions: &[(Key, DateTime)]) -> Result<(), StoreError> {
        let mut g = self.check()?;
        for (k, v) in versions {
            g.synced.insert(k.clone(), *v);
        }
        Ok(())
    }

    async fn remove_synced(&self, keys: &[Key]) -> Result<(), StoreError> {
        let mut g = self.check()?;
        for k in keys {
            g.synced.remove(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn tomb(key: i32, at: i64, origin: Side) -> Tombstone {
        Tombstone {
            key: Key(key.into()),
            deleted_at: DateTime::from_millis(at),
            origin,
        }
    }

    #[test]
    fn recording_keeps_the_later_delete_of_a_key() {
        let s = MemoryState::new();
        block_on(s.record_tombstones(&[tomb(1, 10, Side::Cloud), tomb(2, 10, Side::Cloud)]))
            .unwrap();
        block_on(s.record_tombstones(&[tomb(1, 5, Side::Local), tomb(2, 12, Side::Local)]))
            .unwrap();
        let mut got = block_on(s.tombstones(&[Key(1.into()), Key(2.into())])).unwrap();
        got.sort_by_key(|t| t.deleted_at);
        assert_eq!(
            got,
            vec![tomb(1, 10, Side::Cloud), tomb(2, 12, Side::Local)]
        );
    }
}
