//! The engine: reads both change streams into the coalescing queue, resolves and applies
//! batches, saves checkpoints only behind applied work, reconciles on start, on history
//! loss and on request. PUBLIC API FROZEN (the daemon depends on it); internals are the
//! core's to shape (split into submodules as it grows).

mod keyed;
mod reader;
pub(crate) mod shared;
mod stats;
mod status;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::core::error::EngineError;
use crate::core::reconcile;
use crate::core::store::{CollectionStore, CollectionStream, StateStore, StreamSource};
use crate::core::types::{Mode, ReconcileReport, Side};
use shared::{lock, CheckpointTarget, Hub, Shared, Stop};
pub use stats::{EngineStats, HistogramSnapshot};
use status::{pair_status, stream_status};
pub use status::{EngineStatus, PairStatus, StreamState, StreamStatus};

/// Validated engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Direction(s) of sync.
    pub mode: Mode,
    /// Name of the last-modified field (BSON DateTime) used by last-writer-wins.
    pub updated_at_field: String,
    /// Events for one key within this window collapse into the latest one.
    pub debounce: Duration,
    /// Maximum writes per batch sent to a store.
    pub max_batch: usize,
    /// Maximum distinct keys pending in the queue; stream readers wait beyond it.
    pub queue_capacity: usize,
    /// Side whose version wins when `updatedAt` is equal and contents differ.
    pub tie_break: Side,
    /// Documents per scan page during a full reconcile (bounds its memory).
    pub reconcile_batch: usize,
    /// Tombstones older than this are expired.
    pub tombstone_ttl: Duration,
    /// Versions whose `updatedAt` is further ahead of the clock than this are held back
    /// until it reaches them (see [`crate::core::quarantine`]); `None`: no limit.
    pub max_future: Option<Duration>,
    /// Fewer and cheaper round trips (default): the live path records and reads a
    /// batch's tombstones alongside its fetches of both sides and of the sync records,
    /// and creates the records of keys it read none for with plain inserts; the sync
    /// records of deleted keys are removed alongside the deletes. `false`: each step
    /// after the other, records upserted; the decisions and writes are the same.
    pub fast_paths: bool,
    /// The pair's stores are filtered views (a query on each side): a change whose
    /// document is then not in its side's view left the view, like a delete at the
    /// change's time, when the pair knew the key (see [`crate::core::reconcile`]).
    pub filtered: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mode: Mode::BothWays,
            updated_at_field: "updatedAt".into(),
            debounce: Duration::from_millis(50),
            max_batch: 1000,
            queue_capacity: 100_000,
            tie_break: Side::Cloud,
            reconcile_batch: 1000,
            tombstone_ttl: Duration::from_secs(30 * 86_400),
            max_future: Some(Duration::from_secs(300)),
            fast_paths: true,
            filtered: false,
        }
    }
}

/// The stores the engine works on.
#[derive(Clone)]
pub struct Stores {
    /// The local collection.
    pub local: Arc<dyn CollectionStore>,
    /// The cloud collection.
    pub cloud: Arc<dyn CollectionStore>,
    /// Checkpoints and tombstones (on the local deployment).
    pub state: Arc<dyn StateStore>,
}

/// One collection pair of a multi-pair engine ([`Engine::with_pairs`]).
#[derive(Clone)]
pub struct PairSpec {
    /// Unique name (status, `ctl sync --pair`, logs).
    pub name: String,
    /// The pair's settings (each pair has its own queue and worker; `mode`,
    /// `updated_at_field` and `filtered` may differ between pairs).
    pub config: EngineConfig,
    /// The pair's collections (filtered views when `config.filtered`) and state.
    pub stores: Stores,
}

/// The one change stream per side that all pairs share.
#[derive(Clone)]
pub struct Streams {
    /// Local side: events of every pair's local collection.
    pub local: Arc<dyn StreamSource>,
    /// Cloud side.
    pub cloud: Arc<dyn StreamSource>,
}

/// Cheap, cloneable control handle on a running (or not yet running) engine.
#[derive(Clone)]
pub struct EngineHandle {
    /// What the pairs share.
    hub: Arc<Hub>,
    /// Each pair's state, by index.
    pairs: Arc<[Arc<Shared>]>,
}

impl EngineHandle {
    /// Current status snapshot: totals over the pairs, and each pair.
    pub fn status(&self) -> EngineStatus {
        let hub = &self.hub;
        let [conflicts_local_to_cloud, conflicts_cloud_to_local] = hub.stats.conflict_counts();
        let pairs: Vec<PairStatus> = self.pairs.iter().map(|p| pair_status(p)).collect();
        let sum = |f: fn(&PairStatus) -> u64| pairs.iter().map(f).sum::<u64>();
        let last_reconcile = pairs
            .iter()
            .filter_map(|p| p.last_reconcile.clone())
            .max_by_key(|(t, _)| *t);
        EngineStatus {
            mode: self.pairs[0].config.mode,
            paused: hub.is_paused(),
            queue_depth: sum(|p| p.queue_depth),
            local: stream_status(hub, &self.pairs, Side::Local),
            cloud: stream_status(hub, &self.pairs, Side::Cloud),
            applied_local_to_cloud: sum(|p| p.applied_local_to_cloud),
            applied_cloud_to_local: sum(|p| p.applied_cloud_to_local),
            conflicts: sum(|p| p.conflicts),
            conflicts_local_to_cloud,
            conflicts_cloud_to_local,
            skipped: sum(|p| p.skipped),
            quarantined: sum(|p| p.quarantined),
            last_reconcile,
            pairs,
        }
    }
    /// Cumulative batch-size and per-event lag histograms, and conflicts per direction,
    /// over all pairs (see `stats.rs` in the engine for what they measure).
    pub fn stats(&self) -> EngineStats {
        self.hub.stats.snapshot()
    }
    /// The pairs' names, in order.
    pub fn pair_names(&self) -> Vec<String> {
        self.pairs.iter().map(|p| p.name.clone()).collect()
    }
    /// Stop applying events (they are still read and queued, up to the queue capacity).
    pub fn pause(&self) {
        self.hub.paused.send_replace(true);
    }
    /// Resume applying events.
    pub fn resume(&self) {
        self.hub.paused.send_replace(false);
    }
    /// Change the debounce window live (SIGHUP), of every pair.
    pub fn set_debounce(&self, debounce: Duration) {
        for p in self.pairs.iter() {
            p.queue.set_debounce(debounce);
        }
    }
    /// Run one full reconcile of every pair, one after the other, in `mode` (default:
    /// each pair's own); the report adds theirs up. If one is already running, waits
    /// for it to finish and then runs. Applies even while paused.
    pub async fn reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Result<ReconcileReport, EngineError> {
        let mut total: Option<ReconcileReport> = None;
        for p in self.pairs.iter() {
            let r = run_reconcile(p, mode, dry_run, None, &self.hub.hard_stop)
                .await
                .map_err(engine_error)?;
            total = Some(match total {
                None => r,
                Some(t) => t.plus(&r),
            });
        }
        Ok(total.expect("an engine has at least one pair"))
    }
    /// [`Self::reconcile`] of the pair named `name` only; `None` when there is none.
    pub async fn reconcile_pair(
        &self,
        name: &str,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Option<Result<ReconcileReport, EngineError>> {
        let p = self.pairs.iter().find(|p| p.name == name)?;
        Some(
            run_reconcile(p, mode, dry_run, None, &self.hub.hard_stop)
                .await
                .map_err(engine_error),
        )
    }
}

fn engine_error(stop: Stop) -> EngineError {
    match stop {
        Stop::Cancelled => EngineError::ShuttingDown,
        Stop::Failed(source) => EngineError::Store {
            side: Side::Local,
            source,
        },
    }
}

/// How long a requested full reconcile waits for the running streams to catch up.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// Wait (at most [`CATCH_UP`]) until every stream not stopped has read all it held
/// when called: each change made before a full reconcile then waits in the queue, where the
/// reconcile sees it and leaves its key to the live path (a delete read from a stream
/// brings its real time; a reconcile could only infer one from the sync record).
async fn streams_caught_up(hub: &Hub, cancel: &CancellationToken) -> Result<(), Stop> {
    // A stream starting or reopening (after a restart, say) replays from its checkpoint
    // first: it is waited for too.
    let running: Vec<(Side, u64)> = Side::BOTH
        .into_iter()
        .filter(|s| lock(&hub.streams)[shared::ix(*s)].state != StreamState::Stopped)
        .map(|s| (s, hub.caught_up[shared::ix(s)].load(Ordering::SeqCst)))
        .collect();
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    // The first report may answer a read sent before this call: two are awaited.
    while running
        .iter()
        .any(|(s, n)| hub.caught_up[shared::ix(*s)].load(Ordering::SeqCst) < n + 2)
    {
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                "full reconcile: streams not caught up after {CATCH_UP:?}; reconciling anyway"
            );
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
    }
    Ok(())
}

/// Run one reconcile inside the engine, serialised with other reconciles and (per page)
/// with batch application. With `ticket`, a reconcile that started after the ticket
/// was taken and has completed makes this one unnecessary. Without (a
/// requested reconcile, not a reader's), the running streams catch up first.
pub(crate) async fn run_reconcile(
    sh: &Shared,
    mode: Option<Mode>,
    dry_run: bool,
    ticket: Option<u64>,
    cancel: &CancellationToken,
) -> Result<ReconcileReport, Stop> {
    if ticket.is_none() && !dry_run {
        streams_caught_up(&sh.hub, cancel).await?;
    }
    if ticket.is_some() && !dry_run {
        // A reconcile the engine starts itself (lost history) writes nothing while
        // applying is paused; one a user asks for (`ctl sync`) runs.
        let mut paused = sh.hub.paused.subscribe();
        while *paused.borrow_and_update() {
            tracing::info!("reconcile waits: applying is paused");
            tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                _ = paused.changed() => {}
            }
        }
    }
    let mut last_done = sh.reconcile_lock.lock().await;
    if let Some(t) = ticket {
        if *last_done > t {
            if let Some((_, r)) = lock(&sh.last_reconcile).clone() {
                return Ok(r);
            }
        }
    }
    let id = sh.reconcile_started.fetch_add(1, Ordering::SeqCst) + 1;
    let mode = mode.unwrap_or(sh.config.mode);
    let job = reconcile::Job {
        config: &sh.config,
        stores: &sh.stores,
        mode,
        dry_run,
        cancel,
        attempts: None,
        apply_lock: Some(&sh.apply_lock),
        progress: None,
        quarantine: Some(&sh.quarantine),
        clocks: Some(&sh.hub.clocks),
        queued: Some(&sh.queue),
        own_copies: sh.config.fast_paths.then_some(&sh.own_copies),
    };
    let span = tracing::info_span!("reconcile", pair = %sh.name, %mode, dry_run);
    let report = reconcile::run(&job).instrument(span).await?;
    tracing::info!(?report, "reconcile finished");
    if !dry_run {
        sh.counters
            .skipped
            .fetch_add(report.skipped, Ordering::Relaxed);
    }
    if !dry_run && mode == sh.config.mode {
        *last_done = id;
    }
    *lock(&sh.last_reconcile) = Some((DateTime::now(), report.clone()));
    Ok(report)
}

/// Aborts the engine's tasks when `run` is dropped (a simulated `kill -9`).
struct AbortOnDrop(Vec<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn validate(config: &EngineConfig) -> Result<(), EngineError> {
    if config.max_batch == 0 || config.queue_capacity == 0 || config.reconcile_batch == 0 {
        return Err(EngineError::Config(
            "max_batch, queue_capacity and reconcile_batch must be at least 1".into(),
        ));
    }
    if config.updated_at_field.is_empty() {
        return Err(EngineError::Config(
            "updated_at_field must not be empty".into(),
        ));
    }
    Ok(())
}

/// The sync engine: one or more collection pairs sharing one change stream per side.
pub struct Engine {
    /// What the pairs share.
    hub: Arc<Hub>,
    /// Each pair's state, by index (the `pair` of the streams' events).
    pairs: Arc<[Arc<Shared>]>,
}

impl Engine {
    /// A one-pair engine over `stores`, reading each collection's own stream.
    pub fn new(config: EngineConfig, stores: Stores) -> Self {
        let streams = Streams {
            local: Arc::new(CollectionStream(stores.local.clone())),
            cloud: Arc::new(CollectionStream(stores.cloud.clone())),
        };
        let pair = PairSpec {
            name: "default".into(),
            config,
            stores,
        };
        Self::with_pairs(vec![pair], streams)
    }

    /// An engine syncing every pair of `pairs` (at least one, names unique), whose
    /// changes come from `streams`: an event's `pair` is its index in `pairs`.
    pub fn with_pairs(pairs: Vec<PairSpec>, streams: Streams) -> Self {
        assert!(!pairs.is_empty(), "an engine syncs at least one pair");
        let targets = pairs
            .iter()
            .map(|p| CheckpointTarget {
                state: p.stores.state.clone(),
                watches: Side::BOTH.map(|s| p.config.mode.watches(s)),
                current: [AtomicBool::new(true), AtomicBool::new(true)],
            })
            .collect();
        let hub = Arc::new(Hub::new([streams.local, streams.cloud], targets));
        let pairs = pairs
            .into_iter()
            .map(|p| Arc::new(Shared::new(hub.clone(), p.name, p.config, p.stores)))
            .collect();
        Engine { hub, pairs }
    }

    /// A control handle (clone freely).
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            hub: self.hub.clone(),
            pairs: self.pairs.clone(),
        }
    }

    /// Run until `shutdown` is cancelled: reconcile first when there is no checkpoint,
    /// when `reconcile_on_start`, or when history was lost; then stream. On shutdown:
    /// stop reading, apply what is queued (bounded by `drain_deadline`), save
    /// checkpoints, return. Never returns early on transient store errors.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        reconcile_on_start: bool,
        drain_deadline: Duration,
    ) -> Result<(), EngineError> {
        let mut names = std::collections::HashSet::new();
        for p in self.pairs.iter() {
            validate(&p.config)?;
            if !names.insert(p.name.as_str()) {
                return Err(EngineError::Config(format!(
                    "two pairs are named {:?}",
                    p.name
                )));
            }
        }
        let (hub, pairs) = (self.hub, self.pairs);
        hub.running.store(true, Ordering::SeqCst);
        let tasks = TaskTracker::new();
        let mut aborts = AbortOnDrop(Vec::new());
        let readers_stop = shutdown.child_token();
        let drain = CancellationToken::new();
        let hard = hub.hard_stop.clone();
        let mut readers = Vec::new();
        for side in Side::BOTH {
            if !hub.watches(side) {
                continue;
            }
            let span = tracing::info_span!("reader", %side);
            let h = tasks.spawn(
                reader::run(hub.clone(), pairs.clone(), side, readers_stop.clone())
                    .instrument(span),
            );
            aborts.0.push(h.abort_handle());
            readers.push(h);
        }
        let mut workers = Vec::new();
        for (i, sh) in pairs.iter().enumerate() {
            let worker = {
                let (sh, drain, hard) = (sh.clone(), drain.clone(), hard.clone());
                let span = tracing::info_span!("worker", pair = %sh.name);
                tasks.spawn(async move { worker::run(&sh, drain, hard).await }.instrument(span))
            };
            aborts.0.push(worker.abort_handle());
            workers.push(worker);
            let expiry = {
                let (sh, stop) = (sh.clone(), readers_stop.clone());
                tasks.spawn(async move { expire_tombstones(&sh, &stop).await })
            };
            aborts.0.push(expiry.abort_handle());
            let held = {
                let (sh, stop) = (sh.clone(), readers_stop.clone());
                // The first pair measures the servers' clocks for all.
                tasks.spawn(async move { keyed::release_due(&sh, &stop, i == 0).await })
            };
            aborts.0.push(held.abort_handle());
            if reconcile_on_start {
                let (sh, stop) = (sh.clone(), readers_stop.clone());
                let h = tasks.spawn(async move {
                    if let Err(Stop::Failed(e)) = run_reconcile(&sh, None, false, None, &stop).await
                    {
                        tracing::error!(pair = %sh.name, error = %e, "reconcile on start failed");
                    }
                });
                aborts.0.push(h.abort_handle());
            }
        }
        tasks.close();

        shutdown.cancelled().await;
        tracing::info!("shutting down: stopping readers, draining the queue");
        for r in readers {
            let _ = r.await;
        }
        drain.cancel();
        let drained = tokio::time::timeout(drain_deadline, futures::future::join_all(workers))
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                ?drain_deadline,
                "drain deadline passed; unapplied events stay behind the checkpoint"
            );
            hard.cancel();
            for h in &aborts.0 {
                h.abort();
            }
            let fresh = CancellationToken::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                worker::save_checkpoints(&hub, &fresh),
            )
            .await;
        }
        hard.cancel();
        tasks.wait().await;
        hub.running.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// One full reconcile without a running engine (`datasync reconcile`). `progress` is
/// called with the number of keys examined so far, now and then.
pub async fn reconcile_once(
    config: &EngineConfig,
    stores: &Stores,
    mode: Mode,
    dry_run: bool,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Result<ReconcileReport, EngineError> {
    validate(config)?;
    let cancel = CancellationToken::new();
    let job = reconcile::Job {
        config,
        stores,
        mode,
        dry_run,
        cancel: &cancel,
        attempts: Some(5),
        apply_lock: None,
        progress,
        quarantine: None,
        clocks: None,
        queued: None,
        own_copies: None,
    };
    reconcile::run(&job).await.map_err(engine_error)
}

/// Hourly: drop tombstones older than the TTL (reconciles do it too).
async fn expire_tombstones(sh: &Shared, stop: &CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        let ttl =
            chrono::Duration::from_std(sh.config.tombstone_ttl).unwrap_or(chrono::Duration::MAX);
        let before = DateTime::from_chrono(chrono::Utc::now() - ttl);
        let state = sh.stores.state.as_ref();
        match shared::retry("expire_tombstones", stop, Some(3), || {
            state.expire_tombstones(before)
        })
        .await
        {
            Ok(n) if n > 0 => tracing::info!(expired = n, "tombstones expired"),
            Ok(_) => {}
            Err(Stop::Cancelled) => return,
            Err(Stop::Failed(e)) => tracing::warn!(error = %e, "tombstone expiry failed"),
        }
    }
}
