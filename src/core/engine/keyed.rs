//! The live path of the modes decided from state alone (`local-to-cloud`,
//! `cloud-to-local`, `overwrite-local`): a batch of change events becomes the set of keys
//! it touched, and [`crate::core::reconcile::run_keys`] decides and applies them with
//! the full reconcile's rules (one decision function for stream and reconcile). A
//! source's delete is recorded as a tombstone first, with the event's server time. No
//! echo memory is consulted: the engine's own writes come back (in `overwrite-local`,
//! whose local side is watched) as keys whose sides already agree, which cost one read.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::shared::{ix, lock, Shared, Stop};
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
        quarantine: Some(&sh.quarantine),
        clocks: Some(&sh.clocks),
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

/// How often the keys held back by the future-timestamp guard are checked.
const HELD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the servers' clocks are measured between reconciles.
const CLOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Decide again, from state and in the engine's mode, the keys held back by the
/// future-timestamp guard whose version the clock has reached (a held key whose
/// document changed meanwhile came back through its stream already). Also measures the
/// servers' clocks at start and every [`CLOCK_CHECK`]. Runs until `stop`.
pub(crate) async fn release_due(sh: &Shared, stop: &CancellationToken) {
    let mut measured: Option<tokio::time::Instant> = None;
    loop {
        if measured.is_none_or(|t| t.elapsed() >= CLOCK_CHECK) {
            match crate::core::clock::measure(&sh.stores, Some(&sh.clocks), stop, Some(3)).await {
                Err(Stop::Cancelled) => return,
                Err(Stop::Failed(e)) => tracing::debug!(error = %e, "server clocks not measured"),
                Ok(_) => {}
            }
            measured = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HELD_CHECK) => {}
        }
        // Held versions are compared with the earlier of the two servers' clocks.
        let offsets = *lock(&sh.clocks);
        let now = bson::DateTime::from_millis(
            bson::DateTime::now().timestamp_millis() + offsets[0].min(offsets[1]),
        );
        let due = lock(&sh.quarantine).due(now, sh.config.max_future);
        if due.is_empty() {
            continue;
        }
        let _guard = sh.apply_lock.lock().await;
        let job = Job {
            config: &sh.config,
            stores: &sh.stores,
            mode: sh.config.mode,
            dry_run: false,
            cancel: stop,
            attempts: None,
            apply_lock: None,
            // Both-ways: the echo memory expects these writes like a reconcile's.
            echo: (sh.config.mode == Mode::BothWays).then_some((&sh.echo, &sh.ledger_io)),
            progress: None,
            quarantine: Some(&sh.quarantine),
            clocks: Some(&sh.clocks),
        };
        match run_keys(&job, &due, &[]).await {
            Ok(out) => {
                tracing::info!(keys = due.len(), report = ?out.report, "held-back versions decided again");
                let c = &sh.counters;
                c.local_to_cloud
                    .fetch_add(out.applied[ix(Side::Cloud)], Ordering::Relaxed);
                c.cloud_to_local
                    .fetch_add(out.applied[ix(Side::Local)], Ordering::Relaxed);
            }
            Err(Stop::Cancelled) => return,
            Err(Stop::Failed(e)) => {
                tracing::warn!(error = %e, "held-back versions: decision failed; retried");
            }
        }
    }
}
