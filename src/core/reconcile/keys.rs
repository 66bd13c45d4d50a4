//! Incremental reconcile of the keys a batch of change events touched: the live path of
//! the one-way modes and `overwrite-local`. It reads both sides' current documents, the
//! sync records and tombstones of just those keys (one `$in` read each), and decides
//! them with the same rules as the full reconcile, so a replay after a crash simply
//! decides them again.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use bson::{DateTime, Document, RawDocumentBuf};

use super::decide::{Item, Plan, Rules};
use super::{note_held, write, Job};
use crate::core::doc::key_of;
use crate::core::engine::shared::{ix, lock, retry, Stop};
use crate::core::types::{Key, Mode, ReconcileReport, ScanEntry, Side, Tombstone};

/// What an incremental reconcile did.
#[derive(Debug, Default)]
pub(crate) struct KeysOutcome {
    /// The decisions, counted like a full reconcile's.
    pub(crate) report: ReconcileReport,
    /// Writes applied per target side (local, cloud).
    pub(crate) applied: [u64; 2],
    /// Contested keys (both sides changed since they last agreed, see
    /// `decide::Plan::winners`), and the side whose version won (last writer wins, or
    /// the tie-break).
    pub(crate) winners: Vec<(Key, Side)>,
}

/// A fetched document as a scan would have returned it.
fn entry(doc: &Document, field: &str) -> Option<ScanEntry> {
    Some(ScanEntry {
        key: key_of(doc),
        updated_at: doc.get(field).cloned(),
        doc: RawDocumentBuf::from_document(doc).ok()?,
    })
}

/// A batch of keys decided from state and not yet written (see [`decide_keys`]).
pub(crate) struct Decided {
    /// The keys read, with both sides' documents and sync records.
    items: Vec<Item>,
    /// What to write.
    plan: Plan,
    /// The decisions, counted.
    report: ReconcileReport,
}

/// What the caller knows some sides hold for some of the keys to decide, per side
/// (local, cloud): a document (an upsert's, read from the side's stream) or none (a
/// delete's): such a key is not read from that side. A state older than the side's
/// current one only delays the decision on the newer one, which its own change event
/// brings.
pub(crate) type Known = [Vec<(Key, Option<ScanEntry>)>; 2];

/// Decide and apply `keys`: [`decide_keys`], then [`apply_decided`].
pub(crate) async fn run_keys(
    job: &Job<'_>,
    keys: &[Key],
    tombstones: &[Tombstone],
    leaves: &[Tombstone],
) -> Result<KeysOutcome, Stop> {
    let decided = decide_keys(job, keys, Known::default(), tombstones, leaves).await?;
    apply_decided(job, decided).await
}

/// Write what [`decide_keys`] decided (as the full reconcile writes a page).
pub(crate) async fn apply_decided(job: &Job<'_>, decided: Decided) -> Result<KeysOutcome, Stop> {
    let Decided {
        items,
        plan,
        report,
    } = decided;
    let winners = plan.winners.clone();
    let written = write(job, &items, plan).await?;
    Ok(KeysOutcome {
        report,
        applied: written.applied,
        winners,
    })
}

/// Decide `keys` from state (`known`: documents not to read again, see [`Known`];
/// `tombstones`: deletes the caller read from the source's
/// stream, recorded before anything is decided; `leaves`: of a filtered pair, changes
/// read from a source, each a tombstone only if the key is then absent from its
/// origin's view while the pair knows it, i.e. it has a sync record or the other
/// side's view holds it: the document left the view (a key neither knows is another
/// filter's business, and gets no tombstone)).
pub(crate) async fn decide_keys(
    job: &Job<'_>,
    keys: &[Key],
    known: Known,
    tombstones: &[Tombstone],
    leaves: &[Tombstone],
) -> Result<Decided, Stop> {
    let mut report = ReconcileReport {
        mode: job.mode,
        ..ReconcileReport::default()
    };
    if keys.is_empty() {
        return Ok(Decided {
            items: Vec::new(),
            plan: Plan::default(),
            report,
        });
    }
    let state = job.stores.state.as_ref();
    let record = async {
        if tombstones.is_empty() {
            return Ok(());
        }
        retry("record_tombstones", job.cancel, job.attempts, || {
            state.record_tombstones(tombstones)
        })
        .await
    };
    // Per side, the keys whose document is not known (all of them, uncopied, usually).
    let unknown: [Cow<[Key]>; 2] = std::array::from_fn(|i| {
        if known[i].is_empty() {
            return Cow::Borrowed(keys);
        }
        let held: HashSet<&Key> = known[i].iter().map(|(k, _)| k).collect();
        Cow::Owned(keys.iter().filter(|k| !held.contains(k)).cloned().collect())
    });
    let fetch = |side: Side| {
        let keys = &unknown[ix(side)];
        async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            retry("fetch", job.cancel, job.attempts, || {
                job.store(side).fetch(keys)
            })
            .await
        }
    };
    let fetches = async {
        tokio::join!(
            fetch(Side::Local),
            fetch(Side::Cloud),
            retry("synced_versions", job.cancel, job.attempts, || state
                .synced_versions(keys)),
        )
    };
    // The tombstones of every key, read alongside the fetches (the one-sided keys are
    // picked below); the batch's own, recorded meanwhile, are merged in as the record
    // leaves them (the later `deletedAt` wins), so the read need not wait for it.
    let read_tombs = async {
        if job.mode == Mode::OverwriteLocal {
            return Ok(Vec::new());
        }
        retry("tombstones", job.cancel, job.attempts, || {
            state.tombstones(keys)
        })
        .await
    };
    let ((local, cloud, synced), stored) = if job.config.fast_paths {
        let (recorded, fetched, stored) = tokio::join!(record, fetches, read_tombs);
        recorded?;
        (fetched, stored)
    } else {
        record.await?;
        let fetched = fetches.await;
        (fetched, read_tombs.await)
    };
    let mut stored: HashMap<Key, Tombstone> =
        stored?.into_iter().map(|t| (t.key.clone(), t)).collect();
    if job.mode != Mode::OverwriteLocal {
        for t in tombstones {
            match stored.get(&t.key) {
                Some(old) if old.deleted_at >= t.deleted_at => {}
                _ => {
                    stored.insert(t.key.clone(), t.clone());
                }
            }
        }
    }
    let field = job.config.updated_at_field.as_str();
    let synced: HashMap<Key, DateTime> = synced?.into_iter().collect();
    let mut by_key: BTreeMap<Key, (Option<ScanEntry>, Option<ScanEntry>)> =
        keys.iter().map(|k| (k.clone(), (None, None))).collect();
    // Each side's known states first, then what was read of the others.
    let fetched = [local?, cloud?];
    for (i, (known, docs)) in known.into_iter().zip(fetched).enumerate() {
        let read = docs.iter().filter_map(|d| entry(d, field));
        for e in known.into_iter().filter_map(|(_, e)| e).chain(read) {
            if let Some(slot) = by_key.get_mut(&e.key) {
                if i == 0 {
                    slot.0 = Some(e);
                } else {
                    slot.1 = Some(e);
                }
            }
        }
    }
    let left: Vec<Tombstone> = leaves
        .iter()
        .filter(|t| {
            let Some((l, c)) = by_key.get(&t.key) else {
                return false;
            };
            let (here, there) = match t.origin {
                Side::Local => (l, c),
                Side::Cloud => (c, l),
            };
            here.is_none() && (there.is_some() || synced.contains_key(&t.key))
        })
        .cloned()
        .collect();
    if !left.is_empty() && !job.dry_run {
        retry("record_tombstones", job.cancel, job.attempts, || {
            state.record_tombstones(&left)
        })
        .await?;
        for t in left {
            match stored.get(&t.key) {
                Some(old) if old.deleted_at >= t.deleted_at => {}
                _ => {
                    stored.insert(t.key.clone(), t);
                }
            }
        }
    }
    let items: Vec<Item> = by_key
        .into_iter()
        .filter(|(_, (l, c))| l.is_some() || c.is_some())
        .map(|(key, (local, cloud))| Item {
            synced: synced.get(&key).copied(),
            // A key read without a record gets it inserted (a malformed record may
            // exist: the insert then fails and the record is upserted).
            no_record: job.config.fast_paths && !synced.contains_key(&key),
            queued: false,
            key,
            local,
            cloud,
        })
        .collect();
    // Both-ways: a delete newer than both sides' versions wins over them too; the other
    // modes look at the tombstones of one-sided keys only.
    let tombs: HashMap<Key, Tombstone> = if job.mode == Mode::BothWays {
        stored
    } else {
        let one_sided: HashSet<&Key> = items
            .iter()
            .filter(|it| it.local.is_none() || it.cloud.is_none())
            .map(|it| &it.key)
            .collect();
        stored.retain(|k, _| one_sided.contains(k));
        stored
    };
    let offsets = job.clocks.map(|c| *lock(c)).unwrap_or_default();
    let rules = Rules {
        live: true,
        ..Rules::of(job, offsets)
    };
    let plan = rules.decide(&items, &tombs, &mut report);
    note_held(job, &items, &plan);
    Ok(Decided {
        items,
        plan,
        report,
    })
}
