//! Full reconcile: a streaming merge-join of both sides' `_id`-sorted scans, one page of
//! at most `reconcile_batch` keys at a time (memory is bounded by the page, never by the
//! collection). Per page: one scan per side (when its buffer ran dry), one tombstone
//! lookup, one fetch per side for the documents it must compare or copy, one `apply`
//! per target side, and at most one sync-record lookup, record and removal. The apply
//! lock (when given) is held per page so unconditional writes cannot race a stream batch.
//!
//! A document only on side A, both-ways: a tombstone at or after A's version means B
//! deleted it (the delete wins). Without one, the key's sync record (the version both
//! sides last agreed on, see [`crate::core::synced`]) decides, as in a 3-way merge:
//! - A's version ≤ the record: A's copy was synced, so B deleted it since (its event
//!   was lost, e.g. with the stream history): A's copy is deleted (`DeleteIfNotNewer`
//!   at the record's version), a tombstone (origin B, `deleted_at` = the record's
//!   version, the latest time the delete is known not to precede) is recorded and the
//!   record removed;
//! - A's version > the record: **an edit made after the last sync wins over a delete
//!   whose time is unknown**: copied to B;
//! - no record: created on A, copied to B.
//!
//! One-way modes and `overwrite-local` never infer deletes: the target mirrors the
//! source, so a source-only key is copied (a delete on the target is undone) and a
//! target-only key is deleted. All modes keep the records up to date (documents equal
//! on both sides, copies and deletes made), so switching to both-ways later finds them.
//! A dry run counts the same decisions and writes nothing, records included.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{Bson, DateTime, Document};
use tokio_util::sync::CancellationToken;

use crate::core::doc::{key_of, same_content};
use crate::core::echo::{Echo, EchoMemory};
use crate::core::engine::shared::{lock, retry, Stop};
use crate::core::engine::{EngineConfig, Stores};
use crate::core::store::CollectionStore;
use crate::core::synced::SyncChanges;
use crate::core::types::{
    DirectionReport, Key, Mode, ReconcileReport, ScanEntry, Side, Tombstone, Write, WriteOutcome,
};

/// What a reconcile needs besides the stores.
pub(crate) struct Job<'a> {
    /// Engine settings (field, tie-break, page size, tombstone TTL).
    pub(crate) config: &'a EngineConfig,
    /// The stores.
    pub(crate) stores: &'a Stores,
    /// Mode to reconcile in.
    pub(crate) mode: Mode,
    /// Count without writing.
    pub(crate) dry_run: bool,
    /// Stops retries.
    pub(crate) cancel: &'a CancellationToken,
    /// Attempts per store call (`None`: forever).
    pub(crate) attempts: Option<u32>,
    /// Held per page, shared with the engine's apply worker.
    pub(crate) apply_lock: Option<&'a tokio::sync::Mutex<()>>,
    /// The engine's echo memory, so reconcile writes are not re-propagated.
    pub(crate) echo: Option<&'a Mutex<EchoMemory>>,
    /// Called with the number of keys examined so far.
    pub(crate) progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// One side's sorted scan, read a page at a time.
struct Cursor<'a> {
    /// The side's collection.
    store: &'a dyn CollectionStore,
    /// Entries read and not yet joined.
    buf: VecDeque<ScanEntry>,
    /// Last key read.
    last: Option<Key>,
    /// The scan reached the end.
    done: bool,
}

impl Cursor<'_> {
    async fn fill(&mut self, job: &Job<'_>) -> Result<(), Stop> {
        if !self.buf.is_empty() || self.done {
            return Ok(());
        }
        let limit = job.config.reconcile_batch.max(1);
        let store = self.store;
        let after = self.last.clone();
        let page = retry("scan", job.cancel, job.attempts, || {
            store.scan(after.as_ref(), limit)
        })
        .await?;
        self.done = page.len() < limit;
        self.last = page.last().map(|e| e.key.clone());
        self.buf.extend(page);
        Ok(())
    }
}

/// A key of the page: its raw `updatedAt` on each side where present.
struct Item {
    /// The key.
    key: Key,
    /// Local presence and raw `updatedAt`.
    local: Option<Option<Bson>>,
    /// Cloud presence and raw `updatedAt`.
    cloud: Option<Option<Bson>>,
}

fn as_date(v: &Option<Bson>) -> Option<DateTime> {
    match v {
        Some(Bson::DateTime(d)) => Some(*d),
        _ => None,
    }
}

/// Run one full reconcile.
pub(crate) async fn run(job: &Job<'_>) -> Result<ReconcileReport, Stop> {
    let started = Instant::now();
    let mut report = ReconcileReport {
        mode: job.mode,
        dry_run: job.dry_run,
        ..Default::default()
    };
    let mut local = Cursor {
        store: job.stores.local.as_ref(),
        buf: VecDeque::new(),
        last: None,
        done: false,
    };
    let mut cloud = Cursor {
        store: job.stores.cloud.as_ref(),
        buf: VecDeque::new(),
        last: None,
        done: false,
    };
    let batch = job.config.reconcile_batch.max(1);
    let mut examined = 0u64;
    loop {
        let _guard = match job.apply_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let mut items = Vec::with_capacity(batch);
        while items.len() < batch {
            local.fill(job).await?;
            cloud.fill(job).await?;
            let ord = match (local.buf.front(), cloud.buf.front()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(l), Some(c)) => l.key.cmp(&c.key),
            };
            let (l, c) = match ord {
                std::cmp::Ordering::Less => (local.buf.pop_front(), None),
                std::cmp::Ordering::Greater => (None, cloud.buf.pop_front()),
                std::cmp::Ordering::Equal => (local.buf.pop_front(), cloud.buf.pop_front()),
            };
            let key = l
                .as_ref()
                .or(c.as_ref())
                .map(|e| e.key.clone())
                .unwrap_or(Key(Bson::Null));
            items.push(Item {
                key,
                local: l.map(|e| e.updated_at),
                cloud: c.map(|e| e.updated_at),
            });
        }
        if items.is_empty() {
            break;
        }
        examined += items.len() as u64;
        page(job, &items, &mut report).await?;
        drop(_guard);
        if let Some(p) = &job.progress {
            p(examined);
        }
    }
    if !job.dry_run {
        let ttl =
            chrono::Duration::from_std(job.config.tombstone_ttl).unwrap_or(chrono::Duration::MAX);
        let before = DateTime::from_chrono(chrono::Utc::now() - ttl);
        let state = job.stores.state.as_ref();
        retry("expire_tombstones", job.cancel, job.attempts, || {
            state.expire_tombstones(before)
        })
        .await?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Per-page decision state.
#[derive(Default)]
struct Plan {
    /// Writes per target side (local, cloud).
    writes: [Vec<Write>; 2],
    /// Tombstones superseded by a copy.
    remove: Vec<Key>,
    /// Tombstones of deletes inferred from sync records.
    record: Vec<Tombstone>,
    /// Keys found equal on both sides whose sync record is missing or different.
    agree: Vec<(Key, DateTime)>,
}

fn ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Cloud => 1,
    }
}

fn dir(report: &mut ReconcileReport, target: Side) -> &mut DirectionReport {
    match target {
        Side::Cloud => &mut report.local_to_cloud,
        Side::Local => &mut report.cloud_to_local,
    }
}

async fn fetch_map(
    job: &Job<'_>,
    side: Side,
    keys: &[Key],
) -> Result<HashMap<Key, Document>, Stop> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let store = match side {
        Side::Local => job.stores.local.as_ref(),
        Side::Cloud => job.stores.cloud.as_ref(),
    };
    Ok(
        retry("fetch", job.cancel, job.attempts, || store.fetch(keys))
            .await?
            .into_iter()
            .map(|d| (key_of(&d), d))
            .collect(),
    )
}

async fn page(job: &Job<'_>, items: &[Item], report: &mut ReconcileReport) -> Result<(), Stop> {
    let mode = job.mode;
    // What to fetch: both sides when the versions must be compared, else the one copied.
    let mut need: [Vec<Key>; 2] = Default::default();
    let mut one_sided: Vec<Key> = Vec::new();
    for it in items {
        match (&it.local, &it.cloud) {
            (Some(l), Some(c)) => {
                let (dl, dc) = (as_date(l), as_date(c));
                if mode == Mode::OverwriteLocal {
                    if dl.is_none() || dl == dc {
                        need[ix(Side::Local)].push(it.key.clone());
                    }
                    need[ix(Side::Cloud)].push(it.key.clone());
                } else if let (Some(a), Some(b)) = (dl, dc) {
                    if a == b {
                        need[0].push(it.key.clone());
                        need[1].push(it.key.clone());
                    } else {
                        let w = if a > b { Side::Local } else { Side::Cloud };
                        need[ix(w)].push(it.key.clone());
                    }
                }
            }
            (Some(_), None) => {
                need[ix(Side::Local)].push(it.key.clone());
                one_sided.push(it.key.clone());
            }
            (None, Some(_)) => {
                need[ix(Side::Cloud)].push(it.key.clone());
                one_sided.push(it.key.clone());
            }
            (None, None) => {}
        }
    }
    let docs = [
        fetch_map(job, Side::Local, &need[0]).await?,
        fetch_map(job, Side::Cloud, &need[1]).await?,
    ];
    let tombs: HashMap<Key, Tombstone> = if mode == Mode::OverwriteLocal || one_sided.is_empty() {
        HashMap::new()
    } else {
        let state = job.stores.state.as_ref();
        retry("tombstones", job.cancel, job.attempts, || {
            state.tombstones(&one_sided)
        })
        .await?
        .into_iter()
        .map(|t| (t.key.clone(), t))
        .collect()
    };

    let all: Vec<Key> = items.iter().map(|it| it.key.clone()).collect();
    let state = job.stores.state.as_ref();
    let synced: HashMap<Key, DateTime> = retry("synced_versions", job.cancel, job.attempts, || {
        state.synced_versions(&all)
    })
    .await?
    .into_iter()
    .collect();

    let moved = stale_absences(job, items, &tombs, &synced).await?;
    let mut plan = Plan::default();
    for it in items {
        if moved.contains(&it.key) {
            // Written to the side that seemed to lack it after that side's scan went
            // past it (by the engine or a client): not a delete. The stream has it.
            tracing::debug!(key = %it.key, "reconcile: key appeared during the scan; left to the stream");
            continue;
        }
        if mode == Mode::OverwriteLocal {
            overwrite_item(it, &docs, &synced, &mut plan, report);
        } else {
            lww_item(job, it, &docs, &tombs, &synced, &mut plan, report);
        }
    }
    if job.dry_run {
        return Ok(());
    }
    // Tombstones first (as in the engine): a crash after the deletes still knows them.
    if !plan.record.is_empty() {
        retry("record_tombstones", job.cancel, job.attempts, || {
            state.record_tombstones(&plan.record)
        })
        .await?;
    }
    if !plan.remove.is_empty() {
        retry("remove_tombstones", job.cancel, job.attempts, || {
            state.remove_tombstones(&plan.remove)
        })
        .await?;
    }
    let mut sync = SyncChanges::default();
    for (key, v) in &plan.agree {
        sync.agreed(key, *v);
    }
    for side in Side::BOTH {
        let writes = &plan.writes[ix(side)];
        if writes.is_empty() {
            continue;
        }
        let store = match side {
            Side::Local => job.stores.local.as_ref(),
            Side::Cloud => job.stores.cloud.as_ref(),
        };
        if let Some(echo) = job.echo {
            let mut echo = lock(echo);
            for w in writes {
                echo.record(side, w.key(), Echo::of_write(w));
            }
        }
        let outcomes = retry("apply", job.cancel, job.attempts, || store.apply(writes)).await?;
        if let Some(echo) = job.echo {
            let mut echo = lock(echo);
            for (w, o) in writes.iter().zip(&outcomes) {
                if *o != WriteOutcome::Applied {
                    echo.forget(side, w.key(), Echo::of_write(w));
                }
            }
        }
        // Every upsert of a reconcile copies the other side's document.
        sync.note_copies(writes, &outcomes, &job.config.updated_at_field);
    }
    sync.flush(state, job.cancel, job.attempts).await
}

/// Keys the page would delete *because* one side lacks them, which that side holds
/// after all. The two scans run at different times, so a key written after one side's
/// scan passed its position (a new key at the end of the collection, typically) looks
/// one-sided, and — once the engine has synced it, leaving a sync record — like a
/// delete. Before deleting on such evidence, the missing side is asked again (under the
/// apply lock, so the engine cannot write it in between). Deletes decided by a
/// tombstone need no check: the tombstone's time is a real delete's.
async fn stale_absences(
    job: &Job<'_>,
    items: &[Item],
    tombs: &HashMap<Key, Tombstone>,
    synced: &HashMap<Key, DateTime>,
) -> Result<std::collections::HashSet<Key>, Stop> {
    let mode = job.mode;
    // Keys to look up, per side that lacks them.
    let mut check: [Vec<Key>; 2] = Default::default();
    for it in items {
        let (present, raw) = match (&it.local, &it.cloud) {
            (Some(l), None) => (Side::Local, l),
            (None, Some(c)) => (Side::Cloud, c),
            _ => continue,
        };
        let deletes = match mode {
            Mode::OverwriteLocal => present == Side::Local,
            Mode::BothWays => as_date(raw).is_some_and(|u| {
                tombs.get(&it.key).is_none_or(|t| t.deleted_at < u)
                    && synced.get(&it.key).is_some_and(|r| u <= *r)
            }),
            _ => !mode.propagates(present),
        };
        if deletes {
            check[ix(present.other())].push(it.key.clone());
        }
    }
    let mut found = std::collections::HashSet::new();
    for side in Side::BOTH {
        found.extend(fetch_map(job, side, &check[ix(side)]).await?.into_keys());
    }
    Ok(found)
}

/// Plan recording `v` as the agreed version of `key` unless that is already recorded.
fn agree(plan: &mut Plan, synced: &HashMap<Key, DateTime>, key: &Key, v: Option<DateTime>) {
    if let Some(v) = v {
        if synced.get(key) != Some(&v) {
            plan.agree.push((key.clone(), v));
        }
    }
}

fn overwrite_item(
    it: &Item,
    docs: &[HashMap<Key, Document>; 2],
    synced: &HashMap<Key, DateTime>,
    plan: &mut Plan,
    report: &mut ReconcileReport,
) {
    let key = it.key.clone();
    let (l, c) = (docs[0].get(&key), docs[1].get(&key));
    match (&it.local, &it.cloud) {
        (Some(_), None) => {
            report.cloud_to_local.deleted += 1;
            plan.writes[0].push(Write::Delete { key });
        }
        (None, Some(_)) => {
            if let Some(c) = c {
                report.cloud_to_local.inserted += 1;
                plan.writes[0].push(Write::Replace {
                    key,
                    doc: c.clone(),
                });
            }
        }
        (Some(_), Some(_)) => {
            let Some(c) = c else { return };
            if l.is_some_and(|l| same_content(l, c)) {
                report.cloud_to_local.unchanged += 1;
                agree(plan, synced, &key, it.cloud.as_ref().and_then(as_date));
            } else {
                report.conflicts += 1;
                report.cloud_to_local.updated += 1;
                plan.writes[0].push(Write::Replace {
                    key,
                    doc: c.clone(),
                });
            }
        }
        (None, None) => {}
    }
}

fn lww_item(
    job: &Job<'_>,
    it: &Item,
    docs: &[HashMap<Key, Document>; 2],
    tombs: &HashMap<Key, Tombstone>,
    synced: &HashMap<Key, DateTime>,
    plan: &mut Plan,
    report: &mut ReconcileReport,
) {
    let mode = job.mode;
    let tie = job.config.tie_break;
    let key = &it.key;
    let upsert = |doc: &Document, u: DateTime, from: Side| Write::UpsertIfNewer {
        key: key.clone(),
        doc: doc.clone(),
        updated_at: u,
        or_equal: from == tie,
    };
    match (&it.local, &it.cloud) {
        (Some(l), Some(c)) => {
            let (Some(a), Some(b)) = (as_date(l), as_date(c)) else {
                report.skipped += 1;
                tracing::warn!(%key, "reconcile: updatedAt missing or not a DateTime; skipped");
                return;
            };
            if a == b {
                let (Some(dl), Some(dc)) = (docs[0].get(key), docs[1].get(key)) else {
                    return;
                };
                if same_content(dl, dc) {
                    for s in Side::BOTH {
                        if mode.propagates(s) {
                            dir(report, s.other()).unchanged += 1;
                        }
                    }
                    agree(plan, synced, key, Some(a));
                    return;
                }
            }
            report.conflicts += 1;
            let winner = if a > b {
                Side::Local
            } else if b > a {
                Side::Cloud
            } else {
                tie
            };
            if !mode.propagates(winner) {
                return;
            }
            let Some(doc) = docs[ix(winner)].get(key) else {
                return;
            };
            dir(report, winner.other()).updated += 1;
            plan.writes[ix(winner.other())].push(upsert(doc, a.max(b), winner));
        }
        (Some(_), None) | (None, Some(_)) => {
            let (side, raw) = match (&it.local, &it.cloud) {
                (Some(l), None) => (Side::Local, l),
                (None, Some(c)) => (Side::Cloud, c),
                _ => return,
            };
            let source = mode.propagates(side);
            if mode != Mode::BothWays && !source {
                // One-way, only on the target: the source no longer has it (its delete
                // may be lost with the stream history): the target mirrors the source.
                dir(report, side).deleted += 1;
                plan.writes[ix(side)].push(Write::Delete { key: key.clone() });
                return;
            }
            let Some(u) = as_date(raw) else {
                report.skipped += 1;
                tracing::warn!(%key, %side, "reconcile: updatedAt missing or not a DateTime; skipped");
                return;
            };
            let both = mode == Mode::BothWays;
            let tomb = tombs.get(key).filter(|t| t.deleted_at >= u);
            // This version (or a newer one) was synced: the other side deleted it since.
            let was_synced = synced.get(key).copied().filter(|r| u <= *r);
            if let Some(t) = tomb.filter(|_| both) {
                // The other side deleted it after this version: the delete wins.
                dir(report, side).deleted += 1;
                plan.writes[ix(side)].push(Write::DeleteIfNotNewer {
                    key: key.clone(),
                    deleted_at: t.deleted_at,
                });
            } else if let Some(r) = was_synced.filter(|_| both) {
                dir(report, side).deleted += 1;
                plan.record.push(Tombstone {
                    key: key.clone(),
                    deleted_at: r,
                    origin: side.other(),
                });
                plan.writes[ix(side)].push(Write::DeleteIfNotNewer {
                    key: key.clone(),
                    deleted_at: r,
                });
            } else if source {
                let Some(doc) = docs[ix(side)].get(key) else {
                    return;
                };
                if tombs.contains_key(key) {
                    plan.remove.push(key.clone());
                }
                dir(report, side.other()).inserted += 1;
                plan.writes[ix(side.other())].push(upsert(doc, u, side));
            }
        }
        (None, None) => {}
    }
}
