//! Sync records: per key, the `updatedAt` version both sides last agreed on.
//!
//! The engine and the reconcile collect the record changes a batch (or a page) implies
//! in a [`SyncChanges`] and flush them in at most one `record_synced` and one
//! `remove_synced` call, *after* the writes that made the sides agree returned. A crash
//! in between only loses records, and a missing record is safe: the reconcile then
//! treats a one-sided document as created and copies it (the behaviour without records).
//! A record is only ever written for a version the *other* side is known to hold too,
//! since a record claiming an agreement that never happened would make the reconcile
//! delete a document the other side never saw.

use std::collections::{HashMap, HashSet};

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use crate::core::doc::updated_at;
use crate::core::engine::shared::{retry, Stop};
use crate::core::store::StateStore;
use crate::core::types::{Key, Write, WriteOutcome};

/// Sync-record changes of one batch or page; the last change of a key wins.
#[derive(Default)]
pub(crate) struct SyncChanges {
    /// `Some(v)`: both sides hold version `v`; `None`: forget the key's record.
    changes: HashMap<Key, Option<DateTime>>,
    /// Keys the caller just saw without a record (a reconcile reads them with its
    /// page): their agreement is created with an insert, and forgetting them is a no-op.
    absent: HashSet<Key>,
}

impl SyncChanges {
    /// `key` has no record now (see [`StateStore::create_synced`]).
    pub(crate) fn known_absent(&mut self, key: &Key) {
        self.absent.insert(key.clone());
    }

    /// Whether nothing is to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Both sides now hold version `v` of `key`.
    pub(crate) fn agreed(&mut self, key: &Key, v: DateTime) {
        self.changes.insert(key.clone(), Some(v));
    }

    /// `key` was deleted: its record no longer describes an agreement.
    pub(crate) fn gone(&mut self, key: &Key) {
        self.changes.insert(key.clone(), None);
    }

    /// Forget the keys `writes` delete, whatever the deletes' outcomes (forgetting is
    /// always safe), so this can be flushed alongside the deletes.
    pub(crate) fn note_deletes(&mut self, writes: &[Write]) {
        for w in writes {
            if let Write::DeleteIfNotNewer { key, .. } | Write::Delete { key } = w {
                self.gone(key);
            }
        }
    }

    /// Note the outcome of `writes` that *copied* documents between the sides: an
    /// applied upsert/replace means both sides hold its version; any delete forgets the
    /// key (also one that changed nothing: forgetting is always safe) unless `deletes`
    /// is false (noted already, see [`SyncChanges::note_deletes`]).
    pub(crate) fn note_copies(
        &mut self,
        writes: &[Write],
        outcomes: &[WriteOutcome],
        field: &str,
        deletes: bool,
    ) {
        for (w, o) in writes.iter().zip(outcomes) {
            match w {
                Write::UpsertIfNewer {
                    key, updated_at: u, ..
                } if *o == WriteOutcome::Applied => self.agreed(key, *u),
                Write::Replace { key, doc } if *o == WriteOutcome::Applied => {
                    match updated_at(doc, field) {
                        Some(u) => self.agreed(key, u),
                        None => self.gone(key),
                    }
                }
                Write::DeleteIfNotNewer { key, .. } | Write::Delete { key } if deletes => {
                    self.gone(key)
                }
                _ => {}
            }
        }
    }

    /// Write the changes: at most one `create_synced` (keys known absent), one
    /// `record_synced` and one `remove_synced` call, concurrently (their keys differ).
    pub(crate) async fn flush(
        self,
        state: &dyn StateStore,
        cancel: &CancellationToken,
        attempts: Option<u32>,
    ) -> Result<(), Stop> {
        let mut create = Vec::new();
        let mut record = Vec::new();
        let mut remove = Vec::new();
        for (k, v) in self.changes {
            let absent = self.absent.contains(&k);
            match v {
                Some(v) if absent => create.push((k, v)),
                Some(v) => record.push((k, v)),
                None if absent => {}
                None => remove.push(k),
            }
        }
        let create = async {
            if create.is_empty() {
                return Ok(());
            }
            retry("create_synced", cancel, attempts, || {
                state.create_synced(&create)
            })
            .await
        };
        let record = async {
            if record.is_empty() {
                return Ok(());
            }
            retry("record_synced", cancel, attempts, || {
                state.record_synced(&record)
            })
            .await
        };
        let remove = async {
            if remove.is_empty() {
                return Ok(());
            }
            retry("remove_synced", cancel, attempts, || {
                state.remove_synced(&remove)
            })
            .await
        };
        let (a, b, c) = tokio::join!(create, record, remove);
        a.and(b).and(c)
    }
}
