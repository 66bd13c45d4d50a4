//! The live path of every mode, decided from state alone: a batch of client changes
//! becomes the set of keys it touched, which [`crate::core::reconcile::decide_keys`]
//! decides with the full reconcile's rules (one decision function for stream and
//! reconcile) and [`crate::core::reconcile::apply_decided`] writes; the worker may read
//! and decide the next batch while one is written (see `worker`). A delete is recorded
//! as a tombstone first, with the event's server time. The engine's own deletes never
//! get here (the store marks them and the reader drops them); the echo of one of its
//! copies is a key whose sides already agree, which costs one read unless
//! [`crate::core::own_copies`] knows it.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::shared::{ix, lock, Shared, Stop};
use crate::core::own_copies::fingerprint;
use crate::core::queue::QueuedEvent;
use crate::core::reconcile::{apply_decided, decide_keys, run_keys, Decided, Job, Known};
use crate::core::types::{ChangeKind, Key, Mode, ScanEntry, Side, Tombstone, Write};

/// A batch decided from state, not yet written.
pub(crate) struct DecidedBatch {
    /// The distinct keys decided.
    keys: usize,
    /// The decisions (`None`: nothing to decide, every entry was an own copy).
    decided: Option<Decided>,
}

/// The job the live path decides and writes with.
fn job<'a>(sh: &'a Shared, cancel: &'a CancellationToken) -> Job<'a> {
    Job {
        config: &sh.config,
        stores: &sh.stores,
        mode: sh.config.mode,
        dry_run: false,
        cancel,
        attempts: None,
        // The worker holds the apply lock already.
        apply_lock: None,
        progress: None,
        quarantine: Some(&sh.quarantine),
        clocks: Some(&sh.hub.clocks),
        queued: None,
        own_copies: sh.config.fast_paths.then_some(&sh.own_copies),
    }
}

/// Read the state of the keys of `batch` and decide them (writes nothing to the
/// collections but the versions a delete lost to, and the batch's tombstones).
pub(crate) async fn decide_batch(
    sh: &Shared,
    batch: &[QueuedEvent],
    cancel: &CancellationToken,
) -> Result<DecidedBatch, Stop> {
    let mode = sh.config.mode;
    let batch = undecided(sh, batch);
    if batch.is_empty() {
        return Ok(DecidedBatch {
            keys: 0,
            decided: None,
        });
    }
    let batch = &batch[..];
    let mut keys: Vec<Key> = batch.iter().map(|q| q.event.key.clone()).collect();
    keys.sort();
    keys.dedup();
    // A delete may remove the other side's copy of what it deleted: the tombstone says
    // so (and keeps a later reconcile from copying it back once history is lost).
    // `overwrite-local` needs none: cloud is the truth.
    if mode == Mode::BothWays {
        restore_beaten_deletes(sh, batch, cancel).await?;
    }
    let (tombstones, leaves) = match mode {
        Mode::OverwriteLocal => (Vec::new(), Vec::new()),
        // A filtered pair's change may be a document leaving the view (or one that was
        // never in it): decided once both sides were read, see `decide_keys`.
        _ if sh.config.filtered => (Vec::new(), view_leaves(batch, mode)),
        _ => (client_deletes(batch, mode), Vec::new()),
    };
    let known = known_states(sh, batch);
    let decided = decide_keys(&job(sh, cancel), &keys, known, &tombstones, &leaves).await?;
    Ok(DecidedBatch {
        keys: keys.len(),
        decided: Some(decided),
    })
}

/// Write what [`decide_batch`] decided for `batch`, count it, and mark the batch's
/// changes done for checkpointing.
pub(crate) async fn finish_batch(
    sh: &Shared,
    batch: &[QueuedEvent],
    decided: DecidedBatch,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    if let Some(d) = decided.decided {
        let out = apply_decided(&job(sh, cancel), d).await?;
        count_applied(sh, out.applied);
        let c = &sh.counters;
        // A conflict: both sides changed the key since they last agreed, and the losing
        // side's change was overwritten (decided from state, so it counts whichever
        // side's event brought the key).
        let lost = out.winners.len();
        for (_, winner) in &out.winners {
            sh.hub.stats.conflicts(winner.other(), 1);
        }
        c.conflicts.fetch_add(lost as u64, Ordering::Relaxed);
        c.skipped.fetch_add(out.report.skipped, Ordering::Relaxed);
        tracing::debug!(keys = decided.keys, report = ?out.report, "batch decided from state");
    }
    for side in Side::BOTH {
        let newest = batch
            .iter()
            .filter(|q| q.event.side == side)
            .map(|q| q.event.server_time)
            .max();
        let mut t = lock(&sh.applied_time);
        t[ix(side)] = t[ix(side)].max(newest);
    }
    let mut trackers = [lock(&sh.hub.trackers[0]), lock(&sh.hub.trackers[1])];
    for q in batch {
        trackers[ix(q.event.side)].done(q.gen, q.seq);
    }
    Ok(())
}

/// The entries of `batch` to decide: all but the engine's own copies coming back, as
/// far as [`crate::core::own_copies`] tells them (with the fast paths; every entry
/// otherwise). Every entry decided forgets its side's note of the key.
fn undecided<'a>(sh: &Shared, batch: &'a [QueuedEvent]) -> Vec<&'a QueuedEvent> {
    if !sh.config.fast_paths {
        return batch.iter().collect();
    }
    let mut notes = lock(&sh.own_copies);
    let kept: Vec<&QueuedEvent> = batch
        .iter()
        .filter(|q| {
            let (side, key) = (q.event.side, &q.event.key);
            match q.raw.as_ref().map(|r| fingerprint(r.as_bytes())) {
                Some(fp) => !notes.take_match(side, key, fp),
                None => {
                    notes.forget(side, key);
                    true
                }
            }
        })
        .collect();
    let echoes = batch.len() - kept.len();
    if echoes > 0 {
        tracing::debug!(echoes, "own copies come back: not decided again");
    }
    kept
}

/// What `batch` tells its sides hold (a fast path, see [`Known`]): a plain upsert's
/// document as its stream read it, or none after a delete, of a side the engine never
/// writes in its mode (the source of `local-to-cloud`, `cloud-to-local` and
/// `overwrite-local`), where every later change is a client's, whose own event brings
/// it. A side the engine writes may hold the engine's copy over the event's version
/// (the copy's echo is not decided again), and a version that lost to it must not be
/// copied: both-ways reads both sides. Nothing of a filtered pair either: its decision
/// needs to know whether the document is in the side's view, which only a read tells.
fn known_states(sh: &Shared, batch: &[&QueuedEvent]) -> Known {
    let mut known = Known::default();
    let mode = sh.config.mode;
    if !sh.config.fast_paths || sh.config.filtered {
        return known;
    }
    let field = sh.config.updated_at_field.as_str();
    for q in batch
        .iter()
        .filter(|q| !mode.propagates(q.event.side.other()))
    {
        let state = match (&q.event.kind, &q.raw) {
            (ChangeKind::Delete, _) if q.best_upsert.is_none() => None,
            (ChangeKind::Upsert(_), Some(raw)) => Some(ScanEntry {
                key: q.event.key.clone(),
                updated_at: raw
                    .get(field)
                    .ok()
                    .flatten()
                    .and_then(|v| v.to_raw_bson().try_into().ok()),
                doc: raw.clone(),
            }),
            _ => continue,
        };
        known[ix(q.event.side)].push((q.event.key.clone(), state));
    }
    known
}

/// Add the writes applied per target side (local, cloud) to the engine's counters.
fn count_applied(sh: &Shared, applied: [u64; 2]) {
    let c = &sh.counters;
    c.cloud_to_local
        .fetch_add(applied[ix(Side::Local)], Ordering::Relaxed);
    c.local_to_cloud
        .fetch_add(applied[ix(Side::Cloud)], Ordering::Relaxed);
}

/// Under last-writer-wins a delete older than a version its own side wrote before it
/// (a client clock ahead of the server's) loses to that version, which only the queue
/// entry still holds: it is written back to its side before the batch is decided, so
/// the state holds it again (its echo is a key whose sides agree).
async fn restore_beaten_deletes(
    sh: &Shared,
    batch: &[&QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let mut writes: [Vec<Write>; 2] = Default::default();
    for q in batch {
        if q.event.kind != ChangeKind::Delete {
            continue;
        }
        let Some((doc, u)) = &q.best_upsert else {
            continue;
        };
        if q.latest_delete().is_some_and(|d| *u > d) {
            writes[ix(q.event.side)].push(Write::UpsertIfNewer {
                key: q.event.key.clone(),
                doc: doc.clone(),
                updated_at: *u,
                or_equal: false,
            });
        }
    }
    for side in Side::BOTH {
        let w = &writes[ix(side)];
        if w.is_empty() {
            continue;
        }
        tracing::debug!(%side, keys = w.len(), "deletes older than a version of their side: version restored");
        let store = sh.store(side);
        super::shared::retry("apply", cancel, None, || store.apply(w)).await?;
    }
    Ok(())
}

/// The tombstones of the deletes a batch read from the sides `mode` propagates: every
/// change queued is a client's (the engine's own writes are not queued), so each delete
/// counts with its server time, the latest of an entry's deletes included (a later
/// tombstone of the key is kept: it beats more).
fn client_deletes(batch: &[&QueuedEvent], mode: Mode) -> Vec<Tombstone> {
    let mut out = Vec::new();
    for q in batch.iter().filter(|q| mode.propagates(q.event.side)) {
        if let Some(deleted_at) = q.latest_delete() {
            out.push(Tombstone {
                key: q.event.key.clone(),
                deleted_at,
                origin: q.event.side,
            });
        }
    }
    out
}

/// Of a filtered pair, every change a batch read from the sides `mode` propagates, as
/// the tombstone it is if the document is no longer in its side's view: a delete at
/// its time, or a change at the time of the entry's newest event (the document moved
/// out of the filter, or was never in it).
fn view_leaves(batch: &[&QueuedEvent], mode: Mode) -> Vec<Tombstone> {
    batch
        .iter()
        .filter(|q| mode.propagates(q.event.side))
        .map(|q| Tombstone {
            key: q.event.key.clone(),
            deleted_at: q
                .latest_delete()
                .map_or(q.event.server_time, |d| d.max(q.event.server_time)),
            origin: q.event.side,
        })
        .collect()
}

/// How often the keys held back by the future-timestamp guard are checked.
const HELD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the servers' clocks are measured between reconciles.
const CLOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Decide again, from state and in the engine's mode, the keys held back by the
/// future-timestamp guard whose version the clock has reached (a held key whose
/// document changed meanwhile came back through its stream already). Also measures the
/// servers' clocks at start and every [`CLOCK_CHECK`] when `measure` (one pair does
/// it for all). Runs until `stop`.
pub(crate) async fn release_due(sh: &Shared, stop: &CancellationToken, measure: bool) {
    let mut measured: Option<tokio::time::Instant> = None;
    loop {
        if measure && measured.is_none_or(|t| t.elapsed() >= CLOCK_CHECK) {
            let clocks = Some(&sh.hub.clocks);
            match crate::core::clock::measure(&sh.stores, clocks, stop, Some(3)).await {
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
        let offsets = *lock(&sh.hub.clocks);
        let now = bson::DateTime::from_millis(
            bson::DateTime::now().timestamp_millis() + offsets[0].min(offsets[1]),
        );
        let due = lock(&sh.quarantine).due(now, sh.config.max_future);
        if due.is_empty() {
            continue;
        }
        let _guard = sh.apply_lock.lock().await;
        let job = job(sh, stop);
        match run_keys(&job, &due, &[], &[]).await {
            Ok(out) => {
                tracing::info!(keys = due.len(), report = ?out.report, "held-back versions decided again");
                count_applied(sh, out.applied);
            }
            Err(Stop::Cancelled) => return,
            Err(Stop::Failed(e)) => {
                tracing::warn!(error = %e, "held-back versions: decision failed; retried");
            }
        }
    }
}
