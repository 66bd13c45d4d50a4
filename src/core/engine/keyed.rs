//! The live path of the modes decided from state alone (`local-to-cloud`,
//! `cloud-to-local`, `overwrite-local`): a batch of change events becomes the set of keys
//! it touched, and [`crate::core::reconcile::run_keys`] decides and applies them with
//! the full reconcile's rules (one decision function for stream and reconcile). A
//! source's delete is recorded as a tombstone first, with the event's server time. No
//! echo memory is consulted: the engine's own writes come back (in `overwrite-local`,
//! whose local side is watched) as keys whose sides already agree, which cost one read.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::shared::{ix, Shared, Stop};
use crate::core::queue::QueuedEvent;
use crate::core::reconcile::{run_keys, Job};
use crate::core::types::{ChangeKind, Key, Mode, Side, Tombstone};

/// Decide and apply the keys of `batch` from state.
pub(crate) async fn apply_keys(
    sh: &Shared,
    batch: &[QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let mode = sh.config.mode;
    let mut keys: Vec<Key> = batch.iter().map(|q| q.event.key.clone()).collect();
    keys.sort();
    keys.dedup();
    // In a one-way mode a source's delete may remove the target's copy of what it
    // deleted: the tombstone says so (and keeps a later reconcile from copying it back
    // once history is lost). `overwrite-local` needs none: cloud is the truth.
    let tombstones: Vec<Tombstone> = if mode == Mode::OverwriteLocal {
        Vec::new()
    } else {
        batch
            .iter()
            .filter(|q| mode.propagates(q.event.side) && q.event.kind == ChangeKind::Delete)
            .map(|q| Tombstone {
                key: q.event.key.clone(),
                deleted_at: q.event.server_time,
                origin: q.event.side,
                quiet: false,
            })
            .collect()
    };
    let job = Job {
        config: &sh.config,
        stores: &sh.stores,
        mode,
        dry_run: false,
        cancel,
        attempts: None,
        // The worker holds the apply lock already.
        apply_lock: None,
        echo: None,
        progress: None,
    };
    let out = run_keys(&job, &keys, &tombstones).await?;
    let c = &sh.counters;
    for side in Side::BOTH {
        let n = out.applied[ix(side)];
        match side {
            Side::Cloud => c.local_to_cloud.fetch_add(n, Ordering::Relaxed),
            Side::Local => c.cloud_to_local.fetch_add(n, Ordering::Relaxed),
        };
    }
    c.conflicts.fetch_add(out.target_won, Ordering::Relaxed);
    c.skipped.fetch_add(out.report.skipped, Ordering::Relaxed);
    tracing::debug!(keys = keys.len(), report = ?out.report, "batch decided from state");
    Ok(())
}
