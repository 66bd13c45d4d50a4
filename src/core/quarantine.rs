//! The future-timestamp guard. Under last-writer-wins a document whose `updatedAt` is far
//! ahead (a client clock set years forward) would win every conflict until that time
//! comes. A version further ahead of the clock than `max_future` is therefore held back:
//! not copied, counted, logged once per key, and decided again once the clock reaches
//! it (or when the document changes, which brings a new event or reconcile decision).

use std::collections::HashMap;
use std::time::Duration;

use bson::DateTime;

use crate::core::types::{Key, Side};

/// Keys held back, with the side and version that is too far ahead.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// Per key: the side holding the future version and its `updatedAt`.
    held: HashMap<Key, (Side, DateTime)>,
}

/// Whether version `u` is further ahead of `now` than `max_future` allows.
pub(crate) fn too_far_ahead(u: DateTime, now: DateTime, max_future: Option<Duration>) -> bool {
    let Some(max) = max_future else {
        return false;
    };
    let max = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    u.timestamp_millis() > now.timestamp_millis().saturating_add(max)
}

impl Quarantine {
    /// Hold `key` back (`side` holds version `u`); logs the first time per key and version.
    pub(crate) fn hold(&mut self, key: &Key, side: Side, u: DateTime) {
        let new = self.held.get(key) != Some(&(side, u));
        if new {
            tracing::warn!(%key, %side, updated_at = %u, "updatedAt too far in the future: not propagated until the clock reaches it");
            self.held.insert(key.clone(), (side, u));
        }
    }

    /// `key` was decided without being held back (it changed, or its time came).
    pub(crate) fn release(&mut self, key: &Key) {
        self.held.remove(key);
    }

    /// Keys whose held version is no longer too far ahead of `now` (they stay held until
    /// decided again).
    pub(crate) fn due(&self, now: DateTime, max_future: Option<Duration>) -> Vec<Key> {
        self.held
            .iter()
            .filter(|(_, (_, u))| !too_far_ahead(*u, now, max_future))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How many keys are held back.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no key is held back.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_held_until_the_clock_is_within_max_future() {
        let max = Some(Duration::from_secs(300));
        let now = DateTime::from_millis(1_000_000);
        let ahead = DateTime::from_millis(1_000_000 + 300_001);
        assert!(too_far_ahead(ahead, now, max));
        assert!(!too_far_ahead(DateTime::from_millis(1_300_000), now, max));
        assert!(!too_far_ahead(ahead, now, None), "0 disables the guard");
        let mut q = Quarantine::default();
        let k = Key(bson::Bson::Int32(1));
        q.hold(&k, Side::Local, ahead);
        assert!(q.due(now, max).is_empty());
        assert_eq!(
            q.due(DateTime::from_millis(1_000_001), max),
            vec![k.clone()]
        );
        q.release(&k);
        assert!(q.is_empty());
    }
}
