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
use crate::core::types::{DeleteLedger, Key, ResumeToken, Side, Tombstone};

/// Mutable state behind the lock.
#[derive(Default)]
struct Inner {
    /// Saved checkpoint per side.
    checkpoints: HashMap<Side, ResumeToken>,
    /// Pending deletes saved per side.
    pending: HashMap<Side, DeleteLedger>,
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

    async fn save_checkpoint(
        &self,
        side: Side,
        token: &ResumeToken,
        pending: &DeleteLedger,
    ) -> Result<(), StoreError> {
        let mut g = self.check()?;
        g.checkpoints.insert(side, token.clone());
        g.pending.insert(side, pending.clone());
        g.saves += 1;
        Ok(())
    }

    async fn save_pending_deletes(
        &self,
        side: Side,
        pending: &DeleteLedger,
    ) -> Result<(), StoreError> {
        self.check()?.pending.insert(side, pending.clone());
        Ok(())
    }

    async fn load_pending_deletes(&self, side: Side) -> Result<DeleteLedger, StoreError> {
        Ok(self
            .check()?
            .pending
            .get(&side)
            .cloned()
            .unwrap_or_default())
    }

    async fn clear_checkpoint(&self, side: Side) -> Result<(), StoreError> {
        let mut g = self.check()?;
        g.checkpoints.remove(&side);
        g.pending.remove(&side);
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
            match g.tombstones.get_mut(&t.key) {
                Some(old) if old.deleted_at > t.deleted_at => old.quiet = false,
                _ => {
                    let t = Tombstone {
                        quiet: false,
                        ..t.clone()
                    };
                    g.tombstones.insert(t.key.clone(), t);
                }
            }
        }
        Ok(())
    }

    async fn quiet_tombstones(&self, keys: &[(Key, DateTime)]) -> Result<(), StoreError> {
        let mut g = self.check()?;
        for (k, at) in keys {
            if let Some(t) = g.tombstones.get_mut(k).filter(|t| t.deleted_at == *at) {
                t.quiet = true;
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

    fn tomb(key: i32, at: i64) -> Tombstone {
        Tombstone {
            key: Key(key.into()),
            deleted_at: DateTime::from_millis(at),
            origin: Side::Cloud,
            quiet: true,
        }
    }

    fn quiet_of(s: &MemoryState, key: i32) -> Option<(i64, bool)> {
        let t = block_on(s.tombstones(&[Key(key.into())])).unwrap();
        t.first()
            .map(|t| (t.deleted_at.timestamp_millis(), t.quiet))
    }

    #[test]
    fn tombstones_are_quiet_until_recorded_again() {
        let s = MemoryState::new();
        block_on(s.record_tombstones(&[tomb(1, 10), tomb(2, 10)])).unwrap();
        assert_eq!(
            quiet_of(&s, 1),
            Some((10, false)),
            "recording is never quiet"
        );
        let quiet = |k: i32, at: i64| (Key(k.into()), DateTime::from_millis(at));
        block_on(s.quiet_tombstones(&[quiet(1, 10), quiet(2, 9), quiet(3, 10)])).unwrap();
        assert_eq!(quiet_of(&s, 1), Some((10, true)));
        assert_eq!(quiet_of(&s, 2), Some((10, false)), "another delete time");
        assert_eq!(quiet_of(&s, 3), None);
        // Recording an older delete keeps the later time but is no longer quiet.
        block_on(s.record_tombstones(&[tomb(1, 5)])).unwrap();
        assert_eq!(quiet_of(&s, 1), Some((10, false)));
    }
}
