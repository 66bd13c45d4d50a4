//! Conflict resolution and batched apply of one drained batch.
//!
//! The batch is split by source side and each group is resolved on its own, one after
//! the other (so a local and a cloud event for the same key in one batch see each
//! other's effects). Per group, in round trips: one tombstone lookup, one tombstone
//! record, one `apply` per target side, then — only for conditional writes that lost —
//! one `fetch` of the winners and one `apply` writing them back (last writer wins on
//! both sides). Events are reported done only after every write for them returned.
//!
//! Deletes: a delete from S at server time W records a tombstone (key, W, S) *before*
//! any write, then sends `DeleteIfNotNewer{W}` to the other side; if the other side
//! holds a newer version it is written back to S and the tombstone dropped. An upsert
//! whose `updatedAt` is not after a tombstone is not propagated: the delete wins and is
//! re-applied to the upsert's own side. A delete event for a key that already has a
//! tombstone, whose queue entry saw no upsert, is the echo of a delete the engine made
//! (unless it is the same delete re-delivered after a restart, recognised by its own
//! origin and time) and is dropped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bson::{DateTime, Document};
use tokio_util::sync::CancellationToken;

use super::shared::{ix, lock, retry, Shared, Stop};
use crate::core::doc::{key_of, same_content, updated_at};
use crate::core::echo::Echo;
use crate::core::queue::QueuedEvent;
use crate::core::types::{ChangeKind, Key, Mode, Side, Tombstone, Write, WriteOutcome};

/// Why a write is made (drives what its outcome means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Propagating an upsert to the other side.
    Upsert,
    /// Propagating a delete to the other side.
    Delete,
    /// Correcting the event's own side (the delete or an older version is the last writer).
    OwnSide,
    /// Making local identical to cloud (`overwrite-local`).
    Overwrite,
}

/// One planned write.
struct Planned {
    /// Side written.
    target: Side,
    /// The write.
    write: Write,
    /// Why.
    why: Why,
    /// For propagated upserts: the document sent (to compare with the winner).
    sent: Option<Document>,
}

/// What a queue entry amounts to under last-writer-wins: the greatest of its
/// coalesced changes (a delete wins a tie with an upsert).
enum Effective {
    /// An upsert wins; `latest` when it is also the side's current state.
    Upsert {
        /// The winning document.
        doc: Document,
        /// Its `updatedAt`.
        u: DateTime,
        /// Whether it is the entry's newest event.
        latest: bool,
    },
    /// A delete at `at` wins.
    Delete {
        /// Delete time.
        at: DateTime,
        /// The side still holds a (losing) document.
        src_has_doc: bool,
    },
}

impl Effective {
    fn is_latest(&self) -> bool {
        match self {
            Effective::Upsert { latest, .. } => *latest,
            Effective::Delete { src_has_doc, .. } => !src_has_doc,
        }
    }
}

/// The winner of `q`'s coalesced changes; `None` when the newest is malformed. One-way
/// modes mirror the source's newest state, so only both-ways looks at older ones.
fn effective(q: &QueuedEvent, field: &str, both: bool) -> Option<Effective> {
    let mut best = match &q.event.kind {
        ChangeKind::Upsert(d) => Effective::Upsert { doc: d.clone(), u: updated_at(d, field)?, latest: true },
        ChangeKind::Delete => Effective::Delete { at: q.event.server_time, src_has_doc: false },
    };
    if !both {
        return Some(best);
    }
    let rank = |e: &Effective| match e {
        Effective::Upsert { u, .. } => (*u, 0),
        Effective::Delete { at, .. } => (*at, 1),
    };
    let latest_is_doc = matches!(q.event.kind, ChangeKind::Upsert(_));
    if let Some((d, u)) = &q.best_upsert {
        let cand = Effective::Upsert { doc: d.clone(), u: *u, latest: false };
        if rank(&cand) > rank(&best) {
            best = cand;
        }
    }
    if let Some(w) = q.max_delete {
        let cand = Effective::Delete { at: w, src_has_doc: latest_is_doc };
        if rank(&cand) > rank(&best) {
            best = cand;
        }
    }
    if let Effective::Delete { src_has_doc, .. } = &mut best {
        *src_has_doc = latest_is_doc;
    }
    Some(best)
}

/// Resolve and apply `batch`, then mark its events done for checkpointing.
pub(crate) async fn apply_batch(
    sh: &Shared,
    batch: &[QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    for side in Side::BOTH {
        let group: Vec<&QueuedEvent> = batch.iter().filter(|q| q.event.side == side).collect();
        if group.is_empty() {
            continue;
        }
        if sh.config.mode == Mode::OverwriteLocal {
            overwrite_group(sh, side, &group, cancel).await?;
        } else {
            lww_group(sh, side, &group, cancel).await?;
        }
    }
    let now_applied: [Option<DateTime>; 2] = Side::BOTH.map(|s| {
        batch.iter().filter(|q| q.event.side == s).map(|q| q.event.server_time).max()
    });
    {
        let mut t = lock(&sh.applied_time);
        for i in 0..2 {
            t[i] = t[i].max(now_applied[i]);
        }
    }
    for q in batch {
        lock(&sh.trackers[ix(q.event.side)]).done(q.gen, q.seq);
    }
    Ok(())
}

/// Remember the writes about to be made, so their echoes are recognised even by the
/// reader (which may see them before `apply` returns).
fn expect_echoes(sh: &Shared, plans: &[Planned]) {
    let mut echo = lock(&sh.echo);
    for p in plans {
        echo.record(p.target, p.write.key(), Echo::of_write(&p.write));
    }
}

/// Forget the expected echoes of writes that changed nothing: no change event comes,
/// and a stale entry would hide the next genuine change.
fn remember(sh: &Shared, plans: &[Planned], outcomes: &[WriteOutcome]) {
    let mut echo = lock(&sh.echo);
    for (p, o) in plans.iter().zip(outcomes) {
        if *o != WriteOutcome::Applied {
            echo.forget(p.target, p.write.key(), Echo::of_write(&p.write));
        }
    }
}

fn skip(sh: &Shared, key: &Key, side: Side, reason: &str) {
    sh.counters.skipped.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%key, %side, reason, "document skipped");
}

async fn apply_writes(
    sh: &Shared,
    target: Side,
    plans: &[&Planned],
    cancel: &CancellationToken,
) -> Result<Vec<WriteOutcome>, Stop> {
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let writes: Vec<Write> = plans.iter().map(|p| p.write.clone()).collect();
    let store = sh.store(target);
    let out = retry("apply", cancel, None, || store.apply(&writes)).await?;
    for (p, o) in plans.iter().zip(&out) {
        match o {
            WriteOutcome::Applied => sh.counters.applied(target),
            WriteOutcome::NotApplied => {}
            WriteOutcome::Failed(msg) => skip(sh, p.write.key(), target, msg),
        }
    }
    Ok(out)
}

/// Apply `plans` to both sides; returns the outcome of each plan (same order).
async fn apply_plans(
    sh: &Shared,
    plans: &[Planned],
    cancel: &CancellationToken,
) -> Result<Vec<WriteOutcome>, Stop> {
    let mut out = vec![WriteOutcome::NotApplied; plans.len()];
    for side in Side::BOTH {
        let idx: Vec<usize> = (0..plans.len()).filter(|&i| plans[i].target == side).collect();
        let refs: Vec<&Planned> = idx.iter().map(|&i| &plans[i]).collect();
        let res = apply_writes(sh, side, &refs, cancel).await?;
        for (i, o) in idx.into_iter().zip(res) {
            out[i] = o;
        }
    }
    Ok(out)
}

/// Last-writer-wins resolution of events read from `src` (both-ways and one-way modes).
async fn lww_group(
    sh: &Shared,
    src: Side,
    group: &[&QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let cfg = &sh.config;
    if !cfg.mode.propagates(src) {
        return Ok(());
    }
    let both = cfg.mode == Mode::BothWays;
    let dst = src.other();
    let field = cfg.updated_at_field.as_str();

    // 1. Echoes and malformed documents cost nothing.
    let mut live: Vec<(&QueuedEvent, Effective, bool)> = Vec::new(); // (.., engine wrote a doc to src)
    {
        let mut echo = lock(&sh.echo);
        for q in group {
            let e = &q.event;
            let Some(eff) = effective(q, field, both) else {
                skip(sh, &e.key, src, "updatedAt missing or not a DateTime");
                continue;
            };
            let wrote_doc = echo.wrote_doc(src, &e.key);
            if eff.is_latest() && echo.is_echo(src, &e.key, &e.kind) {
                continue;
            }
            live.push((q, eff, wrote_doc));
        }
    }
    if live.is_empty() {
        return Ok(());
    }

    // 2. Tombstones of the group's keys, in one call.
    let keys: Vec<Key> = live.iter().map(|(q, ..)| q.event.key.clone()).collect();
    let state = sh.stores.state.as_ref();
    let tombs: HashMap<Key, Tombstone> = retry("tombstones", cancel, None, || state.tombstones(&keys))
        .await?
        .into_iter()
        .map(|t| (t.key.clone(), t))
        .collect();

    // 3. Decide.
    let mut plans: Vec<Planned> = Vec::new();
    let mut record: Vec<Tombstone> = Vec::new();
    let mut remove: Vec<Key> = Vec::new();
    for (q, eff, wrote_doc) in live {
        let key = &q.event.key;
        match eff {
            Effective::Upsert { doc: d, u, latest } => {
                let tomb = tombs.get(key).filter(|_| both);
                if let Some(t) = tomb.filter(|t| t.deleted_at >= u) {
                    plans.push(Planned {
                        target: src,
                        write: Write::DeleteIfNotNewer { key: key.clone(), deleted_at: t.deleted_at },
                        why: Why::OwnSide,
                        sent: None,
                    });
                    continue;
                }
                if tomb.is_some() {
                    remove.push(key.clone());
                }
                let upsert = |or_equal: bool| Write::UpsertIfNewer { key: key.clone(), doc: d.clone(), updated_at: u, or_equal };
                plans.push(Planned { target: dst, write: upsert(src == cfg.tie_break), why: Why::Upsert, sent: Some(d.clone()) });
                if !latest {
                    // The side's newest change is older than a version it had: that
                    // version wins on this side too.
                    plans.push(Planned { target: src, write: upsert(false), why: Why::OwnSide, sent: None });
                }
            }
            Effective::Delete { at: w, src_has_doc } => {
                let plain = !q.after_upsert && q.max_delete.is_none() && q.event.kind == ChangeKind::Delete;
                if both && plain {
                    if let Some(t) = tombs.get(key) {
                        if !(t.origin == src && t.deleted_at == w) {
                            continue; // echo of the engine's own delete
                        }
                    }
                }
                record.push(Tombstone { key: key.clone(), deleted_at: w, origin: src });
                plans.push(Planned {
                    target: dst,
                    write: Write::DeleteIfNotNewer { key: key.clone(), deleted_at: w },
                    why: Why::Delete,
                    sent: None,
                });
                // The engine may have re-created an older version on `src` after this
                // delete happened (it had not seen it yet): the delete wins there too.
                if both && (wrote_doc || src_has_doc) {
                    plans.push(Planned {
                        target: src,
                        write: Write::DeleteIfNotNewer { key: key.clone(), deleted_at: w },
                        why: Why::OwnSide,
                        sent: None,
                    });
                }
            }
        }
    }

    // 4. Tombstones first (a crash after a delete must still know about it), then writes.
    if !record.is_empty() {
        retry("record_tombstones", cancel, None, || state.record_tombstones(&record)).await?;
    }
    if !remove.is_empty() {
        retry("remove_tombstones", cancel, None, || state.remove_tombstones(&remove)).await?;
    }
    expect_echoes(sh, &plans);
    let outcomes = apply_plans(sh, &plans, cancel).await?;
    remember(sh, &plans, &outcomes);

    // 5. Lost conditional writes: the other side holds a newer (or tie-winning) version.
    let lost: Vec<&Planned> = plans
        .iter()
        .zip(&outcomes)
        .filter(|(p, o)| **o == WriteOutcome::NotApplied && matches!(p.why, Why::Upsert | Why::Delete))
        .map(|(p, _)| p)
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    if !both {
        sh.counters.conflicts.fetch_add(lost.iter().filter(|p| p.why == Why::Upsert).count() as u64, Ordering::Relaxed);
        return Ok(());
    }
    let keys: Vec<Key> = lost.iter().map(|p| p.write.key().clone()).collect();
    let store = sh.store(dst);
    let winners: HashMap<Key, Document> = retry("fetch", cancel, None, || store.fetch(&keys))
        .await?
        .into_iter()
        .map(|d| (key_of(&d), d))
        .collect();
    let mut back: Vec<Planned> = Vec::new();
    let mut superseded: Vec<Key> = Vec::new();
    let recorded: HashMap<&Key, DateTime> = record.iter().map(|t| (&t.key, t.deleted_at)).collect();
    for p in lost {
        let key = p.write.key();
        let Some(w) = winners.get(key) else { continue };
        if p.sent.as_ref().is_some_and(|s| same_content(s, w)) {
            continue; // the target already has exactly this document
        }
        sh.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        let Some(u) = updated_at(w, field) else {
            skip(sh, key, dst, "updatedAt missing or not a DateTime");
            continue;
        };
        // The newest known delete of the key (recorded before, or by this batch).
        let tomb = tombs.get(key).map(|t| t.deleted_at).max(recorded.get(key).copied());
        if tomb.is_some_and(|t| t >= u) {
            // The winner is itself older than a delete: its own event deletes it.
            continue;
        }
        if tomb.is_some() {
            superseded.push(key.clone());
        }
        back.push(Planned {
            target: src,
            write: Write::UpsertIfNewer { key: key.clone(), doc: w.clone(), updated_at: u, or_equal: dst == cfg.tie_break },
            why: Why::Upsert,
            sent: None,
        });
    }
    if !superseded.is_empty() {
        retry("remove_tombstones", cancel, None, || state.remove_tombstones(&superseded)).await?;
    }
    expect_echoes(sh, &back);
    let outcomes = apply_plans(sh, &back, cancel).await?;
    remember(sh, &back, &outcomes);
    Ok(())
}

/// `overwrite-local`: make local identical to cloud for the group's keys.
async fn overwrite_group(
    sh: &Shared,
    src: Side,
    group: &[&QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let mut plans: Vec<Planned> = Vec::new();
    if src == Side::Cloud {
        for q in group {
            let key = q.event.key.clone();
            let write = match &q.event.kind {
                ChangeKind::Upsert(d) => Write::Replace { key, doc: d.clone() },
                ChangeKind::Delete => Write::Delete { key },
            };
            plans.push(Planned { target: Side::Local, write, why: Why::Overwrite, sent: None });
        }
    } else {
        let live: Vec<&QueuedEvent> = {
            let mut echo = lock(&sh.echo);
            group.iter().copied().filter(|q| !echo.is_echo(Side::Local, &q.event.key, &q.event.kind)).collect()
        };
        if live.is_empty() {
            return Ok(());
        }
        let keys: Vec<Key> = live.iter().map(|q| q.event.key.clone()).collect();
        let cloud = sh.store(Side::Cloud);
        let truth: HashMap<Key, Document> = retry("fetch", cancel, None, || cloud.fetch(&keys))
            .await?
            .into_iter()
            .map(|d| (key_of(&d), d))
            .collect();
        for q in live {
            let key = q.event.key.clone();
            let write = match (truth.get(&key), &q.event.kind) {
                (Some(c), ChangeKind::Upsert(d)) if same_content(c, d) => continue,
                (None, ChangeKind::Delete) => continue,
                (Some(c), _) => Write::Replace { key, doc: c.clone() },
                (None, ChangeKind::Upsert(_)) => Write::Delete { key },
            };
            plans.push(Planned { target: Side::Local, write, why: Why::Overwrite, sent: None });
        }
    }
    debug_assert!(plans.iter().all(|p| p.why == Why::Overwrite));
    expect_echoes(sh, &plans);
    let outcomes = apply_plans(sh, &plans, cancel).await?;
    remember(sh, &plans, &outcomes);
    Ok(())
}
