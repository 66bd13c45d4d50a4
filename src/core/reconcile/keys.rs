//! Incremental reconcile of the keys a batch of change events touched: the live path of
//! the one-way modes and `overwrite-local`. It reads both sides' current documents, the
//! sync records and tombstones of just those keys (one `$in` read each), and decides
//! them with the same rules as the full reconcile, so a replay after a crash simply
//! decides them again.

use std::collections::{BTreeMap, HashMap};

use bson::{DateTime, Document, RawDocumentBuf};

use super::decide::{Item, Rules};
use super::{note_held, write, Job};
use crate::core::doc::key_of;
use crate::core::engine::shared::{lock, retry, Stop};
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

/// Decide and apply `keys` (`tombstones`: deletes the caller read from the source's
/// stream, recorded before anything is decided).
pub(crate) async fn run_keys(
    job: &Job<'_>,
    keys: &[Key],
    tombstones: &[Tombstone],
) -> Result<KeysOutcome, Stop> {
    let mut out = KeysOutcome::default();
    out.report.mode = job.mode;
    if keys.is_empty() {
        return Ok(out);
    }
    let state = job.stores.state.as_ref();
    if !tombstones.is_empty() {
        retry("record_tombstones", job.cancel, job.attempts, || {
            state.record_tombstones(tombstones)
        })
        .await?;
    }
    let field = job.config.updated_at_field.as_str();
    let (local, cloud, synced) = tokio::join!(
        retry("fetch", job.cancel, job.attempts, || job
            .store(Side::Local)
            .fetch(keys)),
        retry("fetch", job.cancel, job.attempts, || job
            .store(Side::Cloud)
            .fetch(keys)),
        retry("synced_versions", job.cancel, job.attempts, || state
            .synced_versions(keys)),
    );
    let synced: HashMap<Key, DateTime> = synced?.into_iter().collect();
    let mut by_key: BTreeMap<Key, (Option<ScanEntry>, Option<ScanEntry>)> =
        keys.iter().map(|k| (k.clone(), (None, None))).collect();
    for (i, docs) in [local?, cloud?].into_iter().enumerate() {
        for d in &docs {
            let Some(e) = entry(d, field) else { continue };
            if let Some(slot) = by_key.get_mut(&e.key) {
                if i == 0 {
                    slot.0 = Some(e);
                } else {
                    slot.1 = Some(e);
                }
            }
        }
    }
    let items: Vec<Item> = by_key
        .into_iter()
        .filter(|(_, (l, c))| l.is_some() || c.is_some())
        .map(|(key, (local, cloud))| Item {
            synced: synced.get(&key).copied(),
            // A malformed record may exist: always upsert records.
            no_record: false,
            queued: false,
            key,
            local,
            cloud,
        })
        .collect();
    // Both-ways: a delete newer than both sides' versions wins over them too.
    // (and a key on neither side may have a tombstone to quiet, see below).
    let both = job.mode == Mode::BothWays;
    let one_sided: Vec<Key> = if both {
        keys.to_vec()
    } else {
        items
            .iter()
            .filter(|it| it.local.is_none() || it.cloud.is_none())
            .map(|it| it.key.clone())
            .collect()
    };
    let tombs: HashMap<Key, Tombstone> = if job.mode == Mode::OverwriteLocal || one_sided.is_empty()
    {
        HashMap::new()
    } else {
        retry("tombstones", job.cancel, job.attempts, || {
            state.tombstones(&one_sided)
        })
        .await?
        .into_iter()
        .map(|t| (t.key.clone(), t))
        .collect()
    };
    let offsets = job.clocks.map(|c| *lock(c)).unwrap_or_default();
    let rules = Rules {
        live: true,
        ..Rules::of(job, offsets)
    };
    let plan = rules.decide(&items, &tombs, &mut out.report);
    out.winners = plan.winners.clone();
    note_held(job, &items, &plan);
    let written = write(job, &items, plan).await?;
    out.applied = written.applied;
    Ok(out)
}
