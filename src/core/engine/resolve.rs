//! Conflict resolution and batched apply of one drained batch in `both-ways` (the other
//! modes are decided from state: see [`super::keyed`]).
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
//! re-applied to the upsert's own side.
//!
//! Sync records (see [`crate::core::synced`]): an upsert applied on the other side, a
//! winner written back, or a lost upsert whose target already holds the same document
//! records the version both sides now hold; a propagated delete forgets the key's
//! record. The whole batch's changes go out in at most one `record_synced` and one
//! `remove_synced` call, after its writes.
//!
//! Echoes: the engine's own writes are expected in the echo memory before they are
//! made (and forgotten if they changed nothing); a change matching one is dropped.
//! After a restart the memory holds only the previous run's ledgered deletes: for a
//! key the saved ledger leaves it unsure of (see [`crate::core::echo`]), a delete event
//! of a key that already has a tombstone, whose queue entry saw no upsert, is taken for
//! the echo of a delete the engine made (unless it is the same delete re-delivered,
//! recognised by its own origin and time). An echoed upsert costs one no-op conditional
//! write or a compare.
//!
//! A queue entry may hide several changes of one side; its verdict is the greatest of
//! them under last-writer-wins (see [`Effective`]), and the side itself is corrected
//! when its newest change is not the winner.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use bson::{DateTime, Document};
use tokio_util::sync::CancellationToken;

use super::shared::{ix, lock, retry, save_ledger, save_ledger_changes, Shared, Stop};
use crate::core::doc::{content_hash, key_of, same_content, updated_at};
use crate::core::echo::Echo;
use crate::core::quarantine::too_far_ahead;
use crate::core::queue::QueuedEvent;
use crate::core::store::StateStore;
use crate::core::synced::SyncChanges;
use crate::core::types::{
    ChangeKind, Key, Mode, RemovedVersion, Side, Tombstone, Write, WriteOutcome,
};

/// Why a write is made (drives what its outcome means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Propagating an upsert to the other side.
    Upsert,
    /// Checking a version the engine wrote over client changes against the other side
    /// (see [`own_write_over_client`]).
    Recheck,
    /// Propagating a delete to the other side.
    Delete,
    /// Correcting the event's own side (the delete or an older version is the last writer).
    OwnSide,
}

/// Why a planned write is made, and what it carried.
struct Meta<'a> {
    /// Why.
    why: Why,
    /// For propagated upserts: the document sent (to compare with the winner).
    sent: Option<&'a Document>,
}

/// Planned writes per target side (index: [`ix`]), kept as plain write lists so each
/// side's list goes to `apply` as is.
#[derive(Default)]
struct Plans<'a> {
    /// Writes per target side.
    writes: [Vec<Write>; 2],
    /// What each write is for (same order).
    meta: [Vec<Meta<'a>>; 2],
}

impl<'a> Plans<'a> {
    fn push(&mut self, target: Side, write: Write, why: Why, sent: Option<&'a Document>) {
        self.writes[ix(target)].push(write);
        self.meta[ix(target)].push(Meta { why, sent });
    }

    fn is_empty(&self) -> bool {
        self.writes.iter().all(Vec::is_empty)
    }
}

/// Outcomes per target side, in plan order.
type Outcomes = [Vec<WriteOutcome>; 2];

/// What a queue entry amounts to under last-writer-wins: the greatest of its
/// coalesced changes (a delete wins a tie with an upsert).
enum Effective<'a> {
    /// An upsert wins; `latest` when it is also the side's current state.
    Upsert {
        /// The winning document.
        doc: &'a Document,
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

impl Effective<'_> {
    fn is_latest(&self) -> bool {
        match self {
            Effective::Upsert { latest, .. } => *latest,
            Effective::Delete { src_has_doc, .. } => !src_has_doc,
        }
    }
}

/// The winner of `q`'s coalesced changes; `None` when the newest is malformed.
/// Without `with_max_delete`, the entry's earlier deletes are left out (taken for
/// echoes).
fn effective<'a>(q: &'a QueuedEvent, field: &str, with_max_delete: bool) -> Option<Effective<'a>> {
    let mut best = match &q.event.kind {
        ChangeKind::Upsert(d) => Effective::Upsert {
            doc: d,
            u: updated_at(d, field)?,
            latest: true,
        },
        ChangeKind::Delete => Effective::Delete {
            at: q.event.server_time,
            src_has_doc: false,
        },
    };
    let rank = |e: &Effective| match e {
        Effective::Upsert { u, .. } => (*u, 0),
        Effective::Delete { at, .. } => (*at, 1),
    };
    let latest_is_doc = matches!(q.event.kind, ChangeKind::Upsert(_));
    if let Some((d, u)) = &q.best_upsert {
        let cand = Effective::Upsert {
            doc: d,
            u: *u,
            latest: false,
        };
        if rank(&cand) > rank(&best) {
            best = cand;
        }
    }
    if let Some(w) = q.max_delete.filter(|_| with_max_delete) {
        let cand = Effective::Delete {
            at: w.at,
            src_has_doc: latest_is_doc,
        };
        if rank(&cand) > rank(&best) {
            best = cand;
        }
    }
    if let Effective::Delete { src_has_doc, .. } = &mut best {
        *src_has_doc = latest_is_doc;
    }
    Some(best)
}

/// The verdict of an entry whose newest change is the engine's own write (`eff`, its
/// verdict, being that write), when client changes of its side coalesced before it
/// still need one; `None`: nothing to do.
/// - An upsert written over client changes: the engine wrote a version it had read
///   from the other side, which that side may have replaced since (a change replayed
///   after a restart, or read before a newer one that turned out to be an echo). It is
///   checked against the other side like a client upsert; a newer one there is
///   written back.
/// - A delete after a client delete: the engine's delete propagated another one
///   (`DeleteIfNotNewer`, whose echo carries only the server's time of the write), so
///   the client's delete is propagated with its own time. Client upserts before it
///   lost to the engine's delete, which removed them.
fn own_write_over_client<'a>(q: &'a QueuedEvent, eff: Effective<'a>) -> Option<Effective<'a>> {
    if !q.client_before {
        return None;
    }
    match eff {
        Effective::Upsert { .. } => Some(eff),
        Effective::Delete { .. } => {
            let d = q.max_delete?;
            let upsert_newer = q.best_upsert.as_ref().is_some_and(|(_, u)| *u > d.at);
            (!upsert_newer).then_some(Effective::Delete {
                at: d.at,
                src_has_doc: false,
            })
        }
    }
}

/// What [`recheck_echo_deletes`] found.
enum Recheck<'a> {
    /// Nothing taken for an echo.
    Same,
    /// The entry's newest change (a delete) is an echo, and nothing before it matters.
    Echo,
    /// The entry's earlier deletes are echoes; its verdict without them.
    Without(Effective<'a>),
}

/// After a restart the echo memory does not follow the key, and the echo of a delete
/// the engine propagated comes back looking like a client delete, stamped with the
/// server time of that write — later than the delete it propagated, so taken for a
/// client delete it would beat client writes made just after it. With the key's
/// tombstone at `W`, a delete of the entry made no earlier than `W` (less the allowed
/// clock `skew`) that removed a version not newer than `W` (or one the entry does not
/// show, as the existing rule for plain deletes assumes) is taken for such an echo:
/// the engine's `DeleteIfNotNewer { W }` can have made it, and if a client made it
/// instead, leaving it out loses nothing, the tombstone beating the version it removed.
/// The delete that made the tombstone (same side, same time) is never an echo: after
/// a crash it may not have been propagated yet.
fn recheck_echo_deletes<'a>(
    q: &'a QueuedEvent,
    field: &str,
    tomb: &Tombstone,
    skew: std::time::Duration,
) -> Recheck<'a> {
    let w = tomb.deleted_at.timestamp_millis();
    let skew = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
    let src = q.event.side;
    let echo_like = |at: DateTime, removed: Option<DateTime>| {
        let made_the_tombstone = tomb.origin == src && at == tomb.deleted_at;
        !made_the_tombstone
            && removed.is_none_or(|r| r.timestamp_millis() <= w)
            && at.timestamp_millis() >= w.saturating_sub(skew)
    };
    let earlier_echo = q.max_delete.map(|d| echo_like(d.at, d.removed));
    match &q.event.kind {
        ChangeKind::Delete => {
            let older_upserts_lose = q
                .best_upsert
                .as_ref()
                .is_none_or(|(_, u)| u.timestamp_millis() <= w);
            if echo_like(q.event.server_time, q.removed)
                && older_upserts_lose
                && earlier_echo != Some(false)
            {
                Recheck::Echo
            } else {
                Recheck::Same
            }
        }
        ChangeKind::Upsert(_) if earlier_echo == Some(true) => {
            effective(q, field, false).map_or(Recheck::Same, Recheck::Without)
        }
        ChangeKind::Upsert(_) => Recheck::Same,
    }
}

/// Resolve and apply `batch`, then mark its events done for checkpointing.
pub(crate) async fn apply_batch(
    sh: &Shared,
    batch: &[QueuedEvent],
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    if sh.config.mode == Mode::BothWays && !sh.config.state_decided_both_ways {
        let mut sync = SyncChanges::default();
        // Tombstones as they were before this batch, for keys whose tombstone an earlier
        // group of it recorded or dropped: whether a delete is the echo of one the
        // engine made before is judged on them (a tombstone recorded in this batch
        // explains no echo read before it; one dropped in it may still explain one).
        let mut before: HashMap<Key, Option<Tombstone>> = HashMap::new();
        for side in Side::BOTH {
            let group: Vec<&QueuedEvent> = batch.iter().filter(|q| q.event.side == side).collect();
            if group.is_empty() {
                continue;
            }
            lww_group(sh, side, &group, &mut sync, &mut before, cancel).await?;
        }
        sync.flush(sh.stores.state.as_ref(), cancel, None).await?;
    } else {
        // The other modes are decided from state, like a reconcile of the batch's keys.
        super::keyed::apply_keys(sh, batch, cancel).await?;
    }
    let now_applied: [Option<DateTime>; 2] = Side::BOTH.map(|s| {
        batch
            .iter()
            .filter(|q| q.event.side == s)
            .map(|q| q.event.server_time)
            .max()
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

/// Each target side's read mark when writes were recorded (see [`expect_echoes`]).
type Marks = [(u64, u64); 2];

/// The documents the planned conditional deletes find, per target side, read just
/// before they are sent (one fetch per side with any): what each is about to remove
/// (see `removes` in [`crate::core::echo`]'s expected echoes), or the newer version it
/// will lose to.
type Found = [HashMap<Key, Document>; 2];

async fn found_by_deletes(
    sh: &Shared,
    plans: &Plans<'_>,
    cancel: &CancellationToken,
) -> Result<Found, Stop> {
    let mut out: Found = Default::default();
    for side in Side::BOTH {
        let keys: Vec<Key> = plans.writes[ix(side)]
            .iter()
            .filter(|w| matches!(w, Write::DeleteIfNotNewer { .. }))
            .map(|w| w.key().clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        out[ix(side)] = fetch_by_key(sh, side, &keys, cancel).await?;
    }
    Ok(out)
}

/// Remember the writes about to be made, so their echoes are recognised even by the
/// reader (which may see them before `apply` returns); returns each side's read mark
/// (every change read so far was made before these writes). `found`: what the
/// conditional deletes find, when known.
fn expect_echoes(sh: &Shared, plans: &Plans<'_>, found: Option<&Found>) -> Marks {
    let field = sh.config.updated_at_field.as_str();
    let marks = Side::BOTH.map(|side| lock(&sh.trackers[ix(side)]).mark());
    let mut echo = lock(&sh.echo);
    for side in Side::BOTH {
        for w in &plans.writes[ix(side)] {
            let removes = match (w, found) {
                (Write::DeleteIfNotNewer { key, deleted_at }, Some(f)) => f[ix(side)]
                    .get(key)
                    .and_then(|d| {
                        Some(RemovedVersion {
                            updated_at: updated_at(d, field)?,
                            hash: content_hash(d),
                        })
                    })
                    .filter(|r| r.updated_at <= *deleted_at),
                _ => None,
            };
            echo.expect_write_removing(side, w, removes);
        }
    }
    marks
}

/// Forget the expected echoes of writes that changed nothing (no change event comes,
/// and a stale entry would hide the next genuine change); note the others as having
/// overwritten the changes read before them.
fn remember(sh: &Shared, plans: &Plans<'_>, outcomes: &Outcomes, marks: Marks) {
    let mut echo = lock(&sh.echo);
    for side in Side::BOTH {
        for (w, o) in plans.writes[ix(side)].iter().zip(&outcomes[ix(side)]) {
            if *o == WriteOutcome::Applied {
                echo.applied(side, w.key(), marks[ix(side)]);
            } else {
                echo.forget(side, w.key(), Echo::of_write(w));
            }
        }
    }
}

/// The documents `side` holds for `keys`, by key (one fetch).
async fn fetch_by_key(
    sh: &Shared,
    side: Side,
    keys: &[Key],
    cancel: &CancellationToken,
) -> Result<HashMap<Key, Document>, Stop> {
    let store = sh.store(side);
    Ok(retry("fetch", cancel, None, || store.fetch(keys))
        .await?
        .into_iter()
        .map(|d| (key_of(&d), d))
        .collect())
}

fn skip(sh: &Shared, key: &Key, side: Side, reason: &str) {
    sh.counters.skipped.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%key, %side, reason, "document skipped");
}

/// Apply each side's planned writes in one call; returns the outcomes per side.
async fn apply_plans(
    sh: &Shared,
    plans: &Plans<'_>,
    cancel: &CancellationToken,
) -> Result<Outcomes, Stop> {
    let mut out: Outcomes = Default::default();
    for side in Side::BOTH {
        let writes = &plans.writes[ix(side)];
        if writes.is_empty() {
            continue;
        }
        let store = sh.store(side);
        let res = retry("apply", cancel, None, || store.apply(writes)).await?;
        for (w, o) in writes.iter().zip(&res) {
            tracing::debug!(%side, key = %w.key(), write = w.name(), outcome = ?o, "write");
            match o {
                WriteOutcome::Applied => sh.counters.applied(side),
                WriteOutcome::NotApplied => {}
                WriteOutcome::Failed(msg) => skip(sh, w.key(), side, msg),
            }
        }
        out[ix(side)] = res;
    }
    Ok(out)
}

/// Last-writer-wins resolution of events read from `src` (both-ways).
async fn lww_group(
    sh: &Shared,
    src: Side,
    group: &[&QueuedEvent],
    sync: &mut SyncChanges,
    before: &mut HashMap<Key, Option<Tombstone>>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let cfg = &sh.config;
    if !cfg.mode.propagates(src) {
        return Ok(());
    }
    let dst = src.other();
    let field = cfg.updated_at_field.as_str();

    // 1. Echoes and malformed documents cost nothing.
    // (event, its verdict, echo memory follows the key)
    let mut live: Vec<(&QueuedEvent, Effective<'_>, bool)> = Vec::new();
    {
        let echo = lock(&sh.echo);
        for q in group {
            let e = &q.event;
            let Some(eff) = effective(q, field, true) else {
                skip(sh, &e.key, src, "updatedAt missing or not a DateTime");
                continue;
            };
            // Whether the echo memory can have recognised every echo among the
            // entry's changes (see `QueuedEvent::echo_unknown`).
            let known = !q.echo_unknown;
            // A client upsert read before one of the engine's writes to the key
            // changed it lost to that conditional write; what the engine wrote came
            // from the other side, which needs nothing from this change. (Read from a
            // stream that was down, it would otherwise be copied over there later,
            // e.g. into a key a client deleted meanwhile.)
            let overwritten = matches!(eff, Effective::Upsert { latest: true, .. })
                && !q.engine_write
                && echo.overwritten_after(src, &e.key, q.gen, q.last_seq);
            if overwritten {
                continue;
            }
            let eff = if q.engine_write && eff.is_latest() {
                // The engine's own write came back; client changes of this side
                // coalesced before it still count.
                match own_write_over_client(q, eff) {
                    Some(eff) => eff,
                    None => continue,
                }
            } else {
                eff
            };
            live.push((q, eff, known));
        }
    }
    if live.is_empty() {
        return Ok(());
    }
    drop_overwritten_replays(sh, src, &mut live, cancel).await?;
    if live.is_empty() {
        return Ok(());
    }

    // 2. Tombstones of the group's keys, in one call.
    let keys: Vec<Key> = live.iter().map(|(q, ..)| q.event.key.clone()).collect();
    let state = sh.stores.state.as_ref();
    let tombs: HashMap<Key, Tombstone> =
        retry("tombstones", cancel, None, || state.tombstones(&keys))
            .await?
            .into_iter()
            .map(|t| (t.key.clone(), t))
            .collect();

    // 3. Decide.
    // The future-timestamp guard compares with the source server's clock.
    let now = crate::core::clock::server_now(*lock(&sh.clocks))[ix(src)];
    let mut plans = Plans::default();
    let mut record: Vec<Tombstone> = Vec::new();
    let mut remove: Vec<Key> = Vec::new();
    // Copies to `dst` of versions `src`'s clients wrote (read live, not replayed).
    let mut client_copies: Vec<(Key, DateTime)> = Vec::new();
    for (q, mut eff, known) in live {
        let key = &q.event.key;
        // A quiet tombstone explains no echo: none of the engine's deletes for it
        // removed anything.
        let echo_tomb: Option<Tombstone> = match before.get(key) {
            Some(b) => b.clone(),
            None => tombs.get(key).cloned(),
        }
        .filter(|t| !t.quiet);
        if !known {
            if let Some(t) = &echo_tomb {
                match recheck_echo_deletes(q, field, t, cfg.server_clock_skew) {
                    Recheck::Echo => continue,
                    Recheck::Without(e) => eff = e,
                    Recheck::Same => {}
                }
            }
        }
        match eff {
            Effective::Upsert { doc: d, u, latest } => {
                if too_far_ahead(u, now, cfg.max_future) {
                    lock(&sh.quarantine).hold(key, src, u);
                    continue;
                }
                lock(&sh.quarantine).release(key);
                let tomb = tombs.get(key);
                if let Some(t) = tomb.filter(|t| t.deleted_at >= u) {
                    if t.quiet {
                        // This delete may remove the upsert: its echo needs the
                        // tombstone to explain it after a restart.
                        record.push(t.clone());
                    }
                    let write = Write::DeleteIfNotNewer {
                        key: key.clone(),
                        deleted_at: t.deleted_at,
                    };
                    plans.push(src, write, Why::OwnSide, None);
                    continue;
                }
                if let Some(t) = tomb {
                    remove.push(key.clone());
                    before.entry(key.clone()).or_insert_with(|| Some(t.clone()));
                }
                let upsert = |or_equal: bool| Write::UpsertIfNewer {
                    key: key.clone(),
                    doc: d.clone(),
                    updated_at: u,
                    or_equal,
                };
                if q.engine_write && latest {
                    // A version the engine wrote here from the other side: a different
                    // one with the same `updatedAt` there replaced it since, and wins.
                    plans.push(dst, upsert(false), Why::Recheck, Some(d));
                } else {
                    plans.push(dst, upsert(src == cfg.tie_break), Why::Upsert, Some(d));
                    if !q.replayed && !q.engine_write {
                        client_copies.push((key.clone(), u));
                    }
                }
                if !latest {
                    // The side's newest change is older than a version it had: that
                    // version wins on this side too.
                    plans.push(src, upsert(false), Why::OwnSide, None);
                }
            }
            Effective::Delete { at: w, .. } => {
                // Echo memory said this is not the engine's delete when it follows the
                // key; otherwise (after a restart) an existing tombstone means the key
                // was already deleted through the engine and this is its echo.
                let plain =
                    !q.after_upsert && q.max_delete.is_none() && q.event.kind == ChangeKind::Delete;
                if plain && !known {
                    if let Some(t) = &echo_tomb {
                        if !(t.origin == src && t.deleted_at == w) {
                            continue; // echo of the engine's own delete
                        }
                    }
                }
                before
                    .entry(key.clone())
                    .or_insert_with(|| tombs.get(key).cloned());
                record.push(Tombstone {
                    key: key.clone(),
                    deleted_at: w,
                    origin: src,
                    quiet: false,
                });
                plans.push(
                    dst,
                    Write::DeleteIfNotNewer {
                        key: key.clone(),
                        deleted_at: w,
                    },
                    Why::Delete,
                    None,
                );
                // The engine may have re-created an older version on `src` after this
                // delete happened (it had not seen it yet), or a losing client write
                // follows it in the entry: the delete wins there too. Always sent: the
                // echo of such a re-creation may already have been read (and consumed)
                // while this batch was being resolved, so the echo memory cannot tell.
                // On a side where the key is absent it costs no write.
                plans.push(
                    src,
                    Write::DeleteIfNotNewer {
                        key: key.clone(),
                        deleted_at: w,
                    },
                    Why::OwnSide,
                    None,
                );
            }
        }
    }

    // 4. Tombstones first (a crash after a delete must still know about it), then writes.
    if !record.is_empty() {
        retry("record_tombstones", cancel, None, || {
            state.record_tombstones(&record)
        })
        .await?;
    }
    if !remove.is_empty() {
        retry("remove_tombstones", cancel, None, || {
            state.remove_tombstones(&remove)
        })
        .await?;
    }
    // Deletes are ledgered too: after a crash, the echoes of those that removed a
    // document, replayed from the checkpoint, are still recognised, even once a newer
    // version superseded the tombstone.
    let found = found_by_deletes(sh, &plans, cancel).await?;
    let marks = expect_echoes(sh, &plans, Some(&found));
    if !client_copies.is_empty() {
        let mut echo = lock(&sh.echo);
        for (key, u) in &client_copies {
            echo.copied_client_version(dst, key, *u);
        }
    }
    for side in Side::BOTH {
        save_ledger_changes((&sh.echo, &sh.ledger_io), state, side, cancel, None).await?;
    }
    let outcomes = apply_plans(sh, &plans, cancel).await?;
    remember(sh, &plans, &outcomes, marks);
    for side in Side::BOTH {
        let i = ix(side);
        let (writes, done) = (&plans.writes[i], &outcomes[i]);
        save_ledger(
            (&sh.echo, &sh.ledger_io),
            state,
            side,
            writes,
            done,
            cancel,
            None,
        )
        .await?;
    }
    quiet_tombstones(state, &record, &tombs, &plans, &outcomes, cancel).await?;
    for side in Side::BOTH {
        let i = ix(side);
        for ((w, m), o) in plans.writes[i].iter().zip(&plans.meta[i]).zip(&outcomes[i]) {
            match (w, m.why) {
                // Only a propagated upsert proves the other side holds the version.
                (Write::UpsertIfNewer { updated_at: u, .. }, Why::Upsert | Why::Recheck)
                    if *o == WriteOutcome::Applied =>
                {
                    sync.agreed(w.key(), *u)
                }
                (Write::DeleteIfNotNewer { .. }, _) => sync.gone(w.key()),
                _ => {}
            }
        }
    }
    let beaten = Beaten {
        plans: &plans,
        outcomes: &outcomes,
        found: &found,
        tombs: &tombs,
    };
    forward_beaten_deletes(sh, src, beaten, sync, cancel).await?;

    // 5. Lost conditional writes: the other side holds a newer (or tie-winning) version.
    let lost: Vec<(&Key, &Meta<'_>)> = plans.writes[ix(dst)]
        .iter()
        .zip(&plans.meta[ix(dst)])
        .zip(&outcomes[ix(dst)])
        .filter(|((_, m), o)| {
            **o == WriteOutcome::NotApplied
                && matches!(m.why, Why::Upsert | Why::Recheck | Why::Delete)
        })
        .map(|((w, m), _)| (w.key(), m))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let keys: Vec<Key> = lost.iter().map(|(k, _)| (*k).clone()).collect();
    let winners = fetch_by_key(sh, dst, &keys, cancel).await?;
    let mut back = Plans::default();
    let mut superseded: Vec<Key> = Vec::new();
    let recorded: HashMap<&Key, DateTime> = record.iter().map(|t| (&t.key, t.deleted_at)).collect();
    for (key, m) in lost {
        let Some(w) = winners.get(key) else { continue };
        if m.sent.is_some_and(|s| same_content(s, w)) {
            // The target already has exactly this document: both sides agree on it.
            if let Some(u) = updated_at(w, field) {
                sync.agreed(key, u);
            }
            continue;
        }
        sh.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        sh.stats.conflicts(src, 1);
        let Some(u) = updated_at(w, field) else {
            skip(sh, key, dst, "updatedAt missing or not a DateTime");
            continue;
        };
        // The newest known delete of the key (recorded before, or by this batch).
        let tomb = tombs
            .get(key)
            .map(|t| t.deleted_at)
            .max(recorded.get(key).copied());
        if tomb.is_some_and(|t| t >= u) {
            // The winner is itself older than a delete: its own event deletes it.
            continue;
        }
        if tomb.is_some() {
            superseded.push(key.clone());
        }
        // A re-checked copy that lost a tie to a different version with its own
        // `updatedAt` is replaced by it on its side. A newer winner meets the side's
        // current version under the tie-break rule: a client of that side may have
        // written one with the winner's `updatedAt` since.
        // Only a copy of a version `dst`'s client wrote, read live: any other copy (made
        // from a replayed change, a winner written back, a re-check's) may be this
        // side's own version (see `EchoMemory::copied_client_version`), and the usual
        // rule applies.
        let replaces_copy = m.why == Why::Recheck
            && m.sent.and_then(|s| updated_at(s, field)) == Some(u)
            && lock(&sh.echo).copy_of_client_version(src, key, u);
        let write = Write::UpsertIfNewer {
            key: key.clone(),
            doc: w.clone(),
            updated_at: u,
            or_equal: dst == cfg.tie_break || replaces_copy,
        };
        back.push(src, write, Why::Upsert, None);
    }
    if !superseded.is_empty() {
        retry("remove_tombstones", cancel, None, || {
            state.remove_tombstones(&superseded)
        })
        .await?;
    }
    // Winners written back: `dst` holds them already.
    apply_copies(sh, &back, src, sync, cancel).await
}

/// Apply `plans`, copies of documents from the other side to `target`, and note the
/// versions both sides now hold.
async fn apply_copies(
    sh: &Shared,
    plans: &Plans<'_>,
    target: Side,
    sync: &mut SyncChanges,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let marks = expect_echoes(sh, plans, None);
    let outcomes = apply_plans(sh, plans, cancel).await?;
    remember(sh, plans, &outcomes, marks);
    let field = sh.config.updated_at_field.as_str();
    sync.note_copies(&plans.writes[ix(target)], &outcomes[ix(target)], field);
    Ok(())
}

/// A group's applied plan, as [`forward_beaten_deletes`] reads it.
struct Beaten<'a, 'b> {
    /// The planned writes.
    plans: &'a Plans<'b>,
    /// Their outcomes.
    outcomes: &'a Outcomes,
    /// What the conditional deletes found before they were sent.
    found: &'a Found,
    /// The group's tombstones before it.
    tombs: &'a HashMap<Key, Tombstone>,
}

/// A delete of `src` whose own-side write lost to a newer version there (found before
/// it was sent, and newer than any earlier tombstone of the key): that version beats
/// the delete, which went to the other side, so it is copied there. It is usually one
/// the engine wrote after the client's delete (read late), whose echo brings nothing;
/// a client's own newer version is also propagated by its event, and the copy is a
/// no-op then. The key's tombstone is superseded.
async fn forward_beaten_deletes(
    sh: &Shared,
    src: Side,
    b: Beaten<'_, '_>,
    sync: &mut SyncChanges,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let Beaten {
        plans,
        outcomes,
        found,
        tombs,
    } = b;
    let field = sh.config.updated_at_field.as_str();
    let dst = src.other();
    let mut fwd = Plans::default();
    let i = ix(src);
    for ((w, m), o) in plans.writes[i].iter().zip(&plans.meta[i]).zip(&outcomes[i]) {
        let Write::DeleteIfNotNewer { key, deleted_at } = w else {
            continue;
        };
        if m.why != Why::OwnSide || *o != WriteOutcome::NotApplied {
            continue;
        }
        let Some(doc) = found[i].get(key) else {
            continue;
        };
        let newest_delete = tombs
            .get(key)
            .map_or(*deleted_at, |t| t.deleted_at.max(*deleted_at));
        let Some(u) = updated_at(doc, field).filter(|u| *u > newest_delete) else {
            continue;
        };
        let write = Write::UpsertIfNewer {
            key: key.clone(),
            doc: doc.clone(),
            updated_at: u,
            or_equal: src == sh.config.tie_break,
        };
        fwd.push(dst, write, Why::Upsert, None);
    }
    if fwd.is_empty() {
        return Ok(());
    }
    let keys: Vec<Key> = fwd.writes[ix(dst)]
        .iter()
        .map(|w| w.key().clone())
        .collect();
    tracing::debug!(side = %src, keys = keys.len(), "deletes beaten by a newer version on their side; copying it");
    let state = sh.stores.state.as_ref();
    retry("remove_tombstones", cancel, None, || {
        state.remove_tombstones(&keys)
    })
    .await?;
    apply_copies(sh, &fwd, dst, sync, cancel).await
}

/// Whether `q` is a client upsert replayed after a restart (see
/// [`drop_overwritten_replays`]), and its document.
fn replayed_upsert<'a>(q: &QueuedEvent, eff: &Effective<'a>) -> Option<&'a Document> {
    match eff {
        Effective::Upsert {
            doc, latest: true, ..
        } if q.replayed && !q.engine_write => Some(doc),
        _ => None,
    }
}

/// Leave out of `live` the client upserts replayed after a restart (for keys the echo
/// memory did not follow) whose document `src` no longer holds. The previous run may
/// have overwritten them with a conditional write that beat them (its read marks, see
/// [`crate::core::echo::EchoMemory::overwritten_after`], died with it); either way a
/// later change of the key follows in the stream and is resolved on its own, so
/// nothing is lost. One fetch per group that has any.
async fn drop_overwritten_replays(
    sh: &Shared,
    src: Side,
    live: &mut Vec<(&QueuedEvent, Effective<'_>, bool)>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let keys: Vec<Key> = live
        .iter()
        .filter(|(q, eff, _)| replayed_upsert(q, eff).is_some())
        .map(|(q, ..)| q.event.key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let current = fetch_by_key(sh, src, &keys, cancel).await?;
    live.retain(|(q, eff, _)| {
        let Some(doc) = replayed_upsert(q, eff) else {
            return true;
        };
        let held = current.get(&q.event.key).is_some_and(|c| same_content(c, doc));
        if !held {
            tracing::debug!(side = %src, key = %q.event.key, "replayed upsert overwritten since; left to the later change");
        }
        held
    });
    Ok(())
}

/// Mark quiet the tombstones just `record`ed whose delete writes all found nothing to
/// delete, unless the key's tombstone before them (`tombs`) was not quiet (a delete of
/// an earlier attempt, before a crash, may have removed the document; its echo may
/// still be unread).
async fn quiet_tombstones(
    state: &dyn StateStore,
    record: &[Tombstone],
    tombs: &HashMap<Key, Tombstone>,
    plans: &Plans<'_>,
    outcomes: &Outcomes,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let removed_some: HashSet<&Key> = Side::BOTH
        .iter()
        .flat_map(|s| plans.writes[ix(*s)].iter().zip(&outcomes[ix(*s)]))
        .filter(|(w, o)| {
            matches!(w, Write::DeleteIfNotNewer { .. }) && **o != WriteOutcome::NotApplied
        })
        .map(|(w, _)| w.key())
        .collect();
    let quiet: Vec<(Key, DateTime)> = record
        .iter()
        .filter(|t| !removed_some.contains(&t.key))
        .filter_map(|t| match tombs.get(&t.key) {
            None => Some((t.key.clone(), t.deleted_at)),
            Some(old) if old.quiet => Some((t.key.clone(), old.deleted_at.max(t.deleted_at))),
            Some(_) => None,
        })
        .collect();
    if quiet.is_empty() {
        return Ok(());
    }
    retry("quiet_tombstones", cancel, None, || {
        state.quiet_tombstones(&quiet)
    })
    .await
}
