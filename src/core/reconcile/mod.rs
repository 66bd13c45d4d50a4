//! Full reconcile: a streaming merge-join of both sides' `_id`-sorted scans of whole
//! documents and of the sync records, one page of at most `reconcile_batch` keys at a
//! time (memory is bounded by a few pages, never by the collection). Per page: one scan
//! per side and of the records (each when its buffer ran dry, concurrently), one
//! tombstone lookup (only for keys on one side), one `apply` per target side, and at
//! most one insert, update and removal of sync records. The apply lock (when given) is
//! held per page so unconditional writes cannot race a stream batch; without it (a
//! standalone reconcile) the next page is read while the current one is written.
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
//! One-way modes copy a source-only key (a delete on the target is undone) and delete a
//! target-only key only when it provably came from the source: its sync record covers
//! its version (the source deleted it since) or a tombstone of the source's delete does.
//! Any other target-only key is the target's own (another client's, in a hub): it is
//! left alone and counted as `kept`. `overwrite-local` makes local a mirror of cloud.
//! All modes keep the records up to date (documents equal
//! on both sides, copies and deletes made), so switching to both-ways later finds them.
//! A dry run counts the same decisions and writes nothing, records included.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use crate::core::clock;
use crate::core::engine::shared::{ix, lock, retry, Stop};
use crate::core::engine::{EngineConfig, Stores};
use crate::core::own_copies::{fingerprint, Fingerprint, OwnCopies};
use crate::core::quarantine::Quarantine;
use crate::core::store::CollectionStore;
use crate::core::synced::SyncChanges;
use crate::core::types::{
    Key, Mode, ReconcileReport, ScanEntry, Side, Tombstone, Write, WriteOutcome,
};

mod decide;
mod keys;

use decide::{Item, Plan, Rules};
pub(crate) use keys::{apply_decided, decide_keys, run_keys, Decided, Known};

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
    /// Called with the number of keys examined so far.
    pub(crate) progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// The engine's keys held back by the future-timestamp guard, kept up to date.
    pub(crate) quarantine: Option<&'a std::sync::Mutex<Quarantine>>,
    /// The engine's last measured server clock offsets (a full reconcile measures them
    /// again and stores them here).
    pub(crate) clocks: Option<&'a std::sync::Mutex<clock::Offsets>>,
    /// The running engine's queue: a key with a change waiting there is left to the
    /// live path rather than deleted on a sync record's word (the change may be the
    /// very delete, which brings its real time).
    pub(crate) queued: Option<&'a crate::core::queue::Queue>,
    /// The running engine's notes of its copies, kept up to date with every write
    /// (see [`crate::core::own_copies`]).
    pub(crate) own_copies: Option<&'a std::sync::Mutex<OwnCopies>>,
}

impl Rules {
    /// The rules `job` decides with, against the servers' clocks now.
    fn of(job: &Job<'_>, offsets: clock::Offsets) -> Rules {
        Rules {
            mode: job.mode,
            tie: job.config.tie_break,
            now: clock::server_now(offsets),
            max_future: job.config.max_future,
            live: false,
        }
    }
}

/// Keep the engine's quarantine up to date with a page's decisions: held keys are
/// held, every other key of the page was decided and is released. A dry run changes
/// nothing.
fn note_held(job: &Job<'_>, items: &[Item], plan: &Plan) {
    let Some(q) = job.quarantine.filter(|_| !job.dry_run) else {
        return;
    };
    let mut q = lock(q);
    if q.is_empty() && plan.held.is_empty() {
        return;
    }
    for it in items {
        q.release(&it.key);
    }
    for (key, side, u) in &plan.held {
        q.hold(key, *side, *u);
    }
}

impl Job<'_> {
    fn store(&self, side: Side) -> &dyn CollectionStore {
        match side {
            Side::Local => self.stores.local.as_ref(),
            Side::Cloud => self.stores.cloud.as_ref(),
        }
    }

    fn page_size(&self) -> usize {
        self.config.reconcile_batch.max(1)
    }
}

/// One sorted keyset scan, read a page at a time.
struct Paged<E> {
    /// Entries read and not yet joined.
    buf: VecDeque<E>,
    /// Last key read.
    last: Option<Key>,
    /// The scan reached the end.
    done: bool,
}

impl<E> Paged<E> {
    fn new() -> Self {
        Paged {
            buf: VecDeque::new(),
            last: None,
            done: false,
        }
    }

    /// The buffer ran dry and the scan has more.
    fn dry(&self) -> bool {
        self.buf.is_empty() && !self.done
    }

    fn take(&mut self, page: Vec<E>, limit: usize, key: impl Fn(&E) -> &Key) {
        self.done = page.len() < limit;
        if let Some(e) = page.last() {
            self.last = Some(key(e).clone());
        }
        self.buf.extend(page);
    }
}

/// Reads the next page of one side's documents when its buffer ran dry.
async fn fill_side(job: &Job<'_>, side: Side, paged: &mut Paged<ScanEntry>) -> Result<(), Stop> {
    if !paged.dry() {
        return Ok(());
    }
    let limit = job.page_size();
    let store = job.store(side);
    let after = paged.last.clone();
    let page = retry("scan", job.cancel, job.attempts, || {
        store.scan(after.as_ref(), limit)
    })
    .await?;
    paged.take(page, limit, |e| &e.key);
    Ok(())
}

/// Reads the next page of sync records when their buffer ran dry.
async fn fill_records(
    job: &Job<'_>,
    paged: &mut Paged<(Key, Option<DateTime>)>,
) -> Result<(), Stop> {
    if !paged.dry() {
        return Ok(());
    }
    let limit = job.page_size();
    let state = job.stores.state.as_ref();
    let after = paged.last.clone();
    let page = retry("scan_synced", job.cancel, job.attempts, || {
        state.scan_synced(after.as_ref(), limit)
    })
    .await?;
    paged.take(page, limit, |e| &e.0);
    Ok(())
}

/// A page of keys with everything the decisions need.
struct Page {
    /// The keys in `_id` order.
    items: Vec<Item>,
    /// Tombstones of the page's one-sided keys.
    tombs: HashMap<Key, Tombstone>,
}

/// The merge-join of both sides' scans and the sync records.
struct Reader<'j, 'a> {
    /// The job.
    job: &'j Job<'a>,
    /// Local documents.
    local: Paged<ScanEntry>,
    /// Cloud documents.
    cloud: Paged<ScanEntry>,
    /// Sync records.
    records: Paged<(Key, Option<DateTime>)>,
}

impl Reader<'_, '_> {
    /// Refills every dry buffer, concurrently.
    async fn fill(&mut self) -> Result<(), Stop> {
        let job = self.job;
        let (l, c, r) = tokio::join!(
            fill_side(job, Side::Local, &mut self.local),
            fill_side(job, Side::Cloud, &mut self.cloud),
            fill_records(job, &mut self.records),
        );
        l.and(c).and(r)
    }

    /// The sync record of `key` (`Some(None)`: a malformed one), skipping records of
    /// keys before it (on neither side any more).
    async fn record_of(&mut self, key: &Key) -> Result<Option<Option<DateTime>>, Stop> {
        loop {
            fill_records(self.job, &mut self.records).await?;
            match self.records.buf.front() {
                Some((k, _)) if k < key => {
                    self.records.buf.pop_front();
                }
                Some((k, v)) if k == key => {
                    let v = *v;
                    self.records.buf.pop_front();
                    return Ok(Some(v));
                }
                _ => return Ok(None),
            }
        }
    }

    /// The next page (empty at the end).
    async fn next_page(&mut self) -> Result<Page, Stop> {
        let batch = self.job.page_size();
        let mut items = Vec::with_capacity(batch);
        while items.len() < batch {
            if self.local.dry() || self.cloud.dry() {
                self.fill().await?;
            }
            let ord = match (self.local.buf.front(), self.cloud.buf.front()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(l), Some(c)) => l.key.cmp(&c.key),
            };
            let (l, c) = match ord {
                std::cmp::Ordering::Less => (self.local.buf.pop_front(), None),
                std::cmp::Ordering::Greater => (None, self.cloud.buf.pop_front()),
                std::cmp::Ordering::Equal => {
                    (self.local.buf.pop_front(), self.cloud.buf.pop_front())
                }
            };
            let Some(key) = l.as_ref().or(c.as_ref()).map(|e| e.key.clone()) else {
                break;
            };
            let record = self.record_of(&key).await?;
            items.push(Item {
                queued: self.job.queued.is_some_and(|q| {
                    q.contains(Side::Local, &key) || q.contains(Side::Cloud, &key)
                }),
                key,
                local: l,
                cloud: c,
                synced: record.flatten(),
                no_record: record.is_none(),
            });
        }
        let one_sided: Vec<Key> = items
            .iter()
            .filter(|it| it.local.is_none() || it.cloud.is_none())
            .map(|it| it.key.clone())
            .collect();
        let tombs = if self.job.mode == Mode::OverwriteLocal || one_sided.is_empty() {
            HashMap::new()
        } else {
            let state = self.job.stores.state.as_ref();
            retry("tombstones", self.job.cancel, self.job.attempts, || {
                state.tombstones(&one_sided)
            })
            .await?
            .into_iter()
            .map(|t| (t.key.clone(), t))
            .collect()
        };
        let moved = stale_absences(self.job, &items, &tombs).await?;
        let items = if moved.is_empty() {
            items
        } else {
            items
                .into_iter()
                .filter(|it| {
                    let found = moved.contains(&it.key);
                    if found {
                        tracing::debug!(key = %it.key, "reconcile: key appeared during the scan; left to the stream");
                    }
                    !found
                })
                .collect()
        };
        Ok(Page { items, tombs })
    }
}

/// Keys the page would delete *because* one side lacks them, which that side holds
/// after all. The two scans run at different times, so a key written after one side's
/// scan passed its position (a new key at the end of the collection, typically) looks
/// one-sided, and — once the engine has synced it, leaving a sync record — like a
/// delete. Before deleting on such evidence, the missing side is asked again (under the
/// apply lock when the engine runs, so it cannot write in between); keys found there
/// are left to the stream. Deletes decided by a tombstone need no check: the
/// tombstone's time is a real delete's.
async fn stale_absences(
    job: &Job<'_>,
    items: &[Item],
    tombs: &HashMap<Key, Tombstone>,
) -> Result<std::collections::HashSet<Key>, Stop> {
    let mode = job.mode;
    let mut check: [Vec<Key>; 2] = Default::default();
    for it in items {
        let (present, entry) = match (&it.local, &it.cloud) {
            (Some(l), None) => (Side::Local, l),
            (None, Some(c)) => (Side::Cloud, c),
            _ => continue,
        };
        // Deletes decided by a tombstone need no check (see above).
        let deletes = match (mode, &entry.updated_at) {
            (Mode::OverwriteLocal, _) => present == Side::Local,
            (_, Some(bson::Bson::DateTime(u))) => matches!(
                decide::one_sided(mode, present, *u, it.synced, tombs.get(&it.key), false),
                decide::OneSided::Delete { infer: true, .. }
            ),
            _ => false,
        };
        if deletes {
            check[ix(present.other())].push(it.key.clone());
        }
    }
    let mut found = std::collections::HashSet::new();
    for side in Side::BOTH {
        let keys = &check[ix(side)];
        if keys.is_empty() {
            continue;
        }
        let store = job.store(side);
        let docs = retry("fetch", job.cancel, job.attempts, || store.fetch(keys)).await?;
        found.extend(docs.iter().map(crate::core::doc::key_of));
    }
    Ok(found)
}

/// Run one full reconcile.
pub(crate) async fn run(job: &Job<'_>) -> Result<ReconcileReport, Stop> {
    let started = Instant::now();
    let mut report = ReconcileReport {
        mode: job.mode,
        dry_run: job.dry_run,
        ..Default::default()
    };
    let offsets = clock::measure(job.stores, job.clocks, job.cancel, job.attempts).await?;
    let rules = Rules::of(job, offsets);
    let mut reader = Reader {
        job,
        local: Paged::new(),
        cloud: Paged::new(),
        records: Paged::new(),
    };
    let mut examined = 0u64;
    let mut progress = |n: usize| {
        examined += n as u64;
        if let Some(p) = &job.progress {
            p(examined);
        }
    };
    if let Some(apply_lock) = job.apply_lock {
        // Read, decide and write each page under the lock.
        loop {
            let _guard = apply_lock.lock().await;
            let page = reader.next_page().await?;
            if page.items.is_empty() {
                break;
            }
            let plan = rules.decide(&page.items, &page.tombs, &mut report);
            note_held(job, &page.items, &plan);
            write(job, &page.items, plan).await?;
            drop(_guard);
            progress(page.items.len());
        }
    } else {
        // Pipelined: the next page is read while this one is written. Its keys all sort
        // after this page's, so the reads never see (or miss) this page's writes.
        let mut page = reader.next_page().await?;
        while !page.items.is_empty() {
            let plan = rules.decide(&page.items, &page.tombs, &mut report);
            note_held(job, &page.items, &plan);
            let (written, next) = tokio::join!(write(job, &page.items, plan), reader.next_page());
            written?;
            progress(page.items.len());
            page = next?;
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

/// Writes one target side's share of a page; returns the outcomes.
async fn apply_side(
    job: &Job<'_>,
    side: Side,
    writes: &[crate::core::types::Write],
) -> Result<Vec<WriteOutcome>, Stop> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let store = job.store(side);
    retry("apply", job.cancel, job.attempts, || store.apply(writes)).await
}

/// Per target side, the fingerprint of each write's document if it is a copy: the
/// bytes of the source's document it was parsed from (see [`crate::core::own_copies`]).
fn copy_prints(items: &[Item], writes: &[Vec<Write>; 2]) -> [Vec<Option<Fingerprint>>; 2] {
    let by_key: HashMap<&Key, &Item> = items.iter().map(|it| (&it.key, it)).collect();
    let prints = |target: Side| -> Vec<Option<Fingerprint>> {
        writes[ix(target)]
            .iter()
            .map(|w| {
                let (Write::UpsertIfNewer { key, .. } | Write::Replace { key, .. }) = w else {
                    return None;
                };
                let it = by_key.get(key)?;
                let source = match target {
                    Side::Local => it.cloud.as_ref(),
                    Side::Cloud => it.local.as_ref(),
                }?;
                Some(fingerprint(source.doc.as_bytes()))
            })
            .collect()
    };
    [prints(Side::Local), prints(Side::Cloud)]
}

/// What a page's writes did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Writes applied per target side (local, cloud).
    pub(crate) applied: [u64; 2],
}

/// Carries out a page's plan: tombstones first (as in the engine: a crash after the
/// deletes still knows them), then both sides' writes concurrently with the records of
/// keys found equal (and, with the fast paths, the removal of the deleted keys'
/// records), then the records of the copies made.
async fn write(job: &Job<'_>, items: &[Item], plan: Plan) -> Result<Written, Stop> {
    if job.dry_run {
        return Ok(Written::default());
    }
    let state = job.stores.state.as_ref();
    let (recorded, removed) = tokio::join!(
        async {
            if plan.record.is_empty() {
                return Ok(());
            }
            retry("record_tombstones", job.cancel, job.attempts, || {
                state.record_tombstones(&plan.record)
            })
            .await
        },
        async {
            if plan.remove.is_empty() {
                return Ok(());
            }
            retry("remove_tombstones", job.cancel, job.attempts, || {
                state.remove_tombstones(&plan.remove)
            })
            .await
        },
    );
    recorded.and(removed)?;
    let absent = |sync: &mut SyncChanges| {
        for it in items.iter().filter(|it| it.no_record) {
            sync.known_absent(&it.key);
        }
    };
    let mut agreed = SyncChanges::default();
    for (key, v) in &plan.agree {
        agreed.agreed(key, *v);
    }
    let [to_local, to_cloud] = &plan.writes;
    // Forgetting a deleted key's record needs no outcome: it goes with the deletes.
    let early = job.config.fast_paths;
    if early {
        agreed.note_deletes(to_local);
        agreed.note_deletes(to_cloud);
    }
    absent(&mut agreed);
    let prints = job.own_copies.map(|_| copy_prints(items, &plan.writes));
    let (agreed, local, cloud) = tokio::join!(
        agreed.flush(state, job.cancel, job.attempts),
        apply_side(job, Side::Local, to_local),
        apply_side(job, Side::Cloud, to_cloud),
    );
    let (local, cloud) = (local?, cloud?);
    if let (Some(notes), Some(prints)) = (job.own_copies, prints) {
        let mut notes = lock(notes);
        for (side, outcomes) in [(Side::Local, &local), (Side::Cloud, &cloud)] {
            let watched = job.config.mode.watches(side);
            let writes = &plan.writes[ix(side)];
            for ((w, fp), outcome) in writes.iter().zip(&prints[ix(side)]).zip(outcomes) {
                match fp {
                    Some(fp) if watched && *outcome == WriteOutcome::Applied => {
                        notes.note(side, w.key(), *fp)
                    }
                    _ => notes.forget(side, w.key()),
                }
            }
        }
    }
    agreed?;
    let count =
        |o: &[WriteOutcome]| o.iter().filter(|o| **o == WriteOutcome::Applied).count() as u64;
    let done = Written {
        applied: [count(&local), count(&cloud)],
    };
    // Every upsert of a reconcile copies the other side's document.
    let mut copies = SyncChanges::default();
    let field = &job.config.updated_at_field;
    copies.note_copies(to_local, &local, field, !early);
    copies.note_copies(to_cloud, &cloud, field, !early);
    if copies.is_empty() {
        return Ok(done);
    }
    absent(&mut copies);
    copies.flush(state, job.cancel, job.attempts).await?;
    Ok(done)
}
