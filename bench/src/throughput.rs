//! Figure 2, sustained throughput, of two paths from local to cloud measured alike: the
//! daemon and the bare change-stream relay of issue 17 ([`crate::relay`], the baseline
//! showing what correctness costs), each on its own database laid out as the daemon's
//! (both collections on the first server). For each: the drain rate under saturation
//! (all writes at once), then confirmations at fixed offered rates below it, stepping
//! down, until one where the backlog does not grow. Before them, the raw batched upsert
//! rate a plain client gets from the same server: the ceiling.
//! Ratio = daemon's confirmed sustained rate ÷ the relay's (raw shown for context).
//!
//! Figure 2d (information): the same for deletes, saturated only: the raw batched
//! delete rate of a plain client, and the rate at which the relay and the daemon drain
//! deletes of the documents they copied (each batch of deletes costs the engine more
//! than plain deletes: it reads the state of the keys, records tombstones and deletes
//! in a transaction).
//!
//! Figure 2w (information, emulator only): the server's work per synced document in
//! each path, from the emulator's counters: data commands and write statements, the
//! writer's own left out. The emulator runs one command at a time (one lock over its
//! catalog), so a path that needs more of them per document drains slower on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};
use mongodb::{Collection, Database};

use crate::ctx::Ctx;
use crate::daemon::{Daemon, DaemonSpec};
use crate::data::document;
use crate::relay::Relay;

/// Documents per batch, for the raw client and the daemon (`sync.max_batch`).
pub const BATCH: usize = 1000;
/// Confirmation runs at most, each offering [`CONFIRM_STEP`] times the last rate: 0.9,
/// 0.77, 0.65, 0.55, 0.47 and 0.40 times the saturated drain rate. The accepted rate is
/// a lower bound of the sustainable one, within one step.
const CONFIRM_TRIES: usize = 6;
/// Factor between two confirmation rates.
const CONFIRM_STEP: f64 = 0.85;

/// Commands the benchmark's writer sent (inserts and deletes), so the server work of
/// the path under test can be told from the writer's.
static WRITER_COMMANDS: AtomicU64 = AtomicU64::new(0);

/// The commands a path's data work consists of (not the writer's `count` polls, nor
/// the drivers' monitoring).
const DATA_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "find",
    "getMore",
    "aggregate",
    "findAndModify",
    "commitTransaction",
    "abortTransaction",
];

/// The server's work for a path, from the emulator's counters (figure 2w).
pub struct ServerWork {
    /// Data commands served, the writer's left out.
    pub commands: u64,
    /// Write statements executed outside the writer's collection.
    pub statements: u64,
    /// Documents the writer inserted or deleted (each one synced).
    pub documents: u64,
}

impl ServerWork {
    /// Of `counters` of a phase on database `db` whose writer wrote `db.local_data`.
    fn of(counters: &mongo_emulator::Counters, db: &str, writer_commands: u64) -> ServerWork {
        let commands: u64 = DATA_COMMANDS
            .iter()
            .filter_map(|c| counters.commands.get(*c))
            .sum();
        let local = format!("{db}.local_data");
        let documents = counters.write_statements.get(&local).copied().unwrap_or(0);
        let statements = counters.write_statements.values().sum::<u64>() - documents;
        ServerWork {
            commands: commands.saturating_sub(writer_commands),
            statements,
            documents,
        }
    }

    /// Data commands per 1000 synced documents.
    pub fn commands_per_1000(&self) -> f64 {
        self.commands as f64 * 1000.0 / self.documents.max(1) as f64
    }

    /// Write statements per synced document.
    pub fn statements_per_doc(&self) -> f64 {
        self.statements as f64 / self.documents.max(1) as f64
    }
}

/// What figure 2 measures of one path from local to cloud (the daemon, the relay).
pub struct Drain {
    /// Documents per second drained when saturated.
    pub saturated: f64,
    /// Highest offered rate at which the backlog did not grow (0: none).
    pub sustained: f64,
    /// Backlog samples of the accepted confirmation run: `(s, documents behind)`.
    pub backlog: Vec<(f64, f64)>,
    /// Deletes per second drained when saturated.
    pub saturated_deletes: f64,
    /// The server's work (emulator only).
    pub server: Option<ServerWork>,
}

/// Result of figure 2.
pub struct Throughput {
    /// Raw batched upserts per second (plain client).
    pub raw: f64,
    /// Raw batched deletes per second (plain client, the documents of `raw`).
    pub raw_deletes: f64,
    /// The bare change-stream relay.
    pub relay: Drain,
    /// The daemon.
    pub daemon: Drain,
    /// The daemon in `local-to-cloud` mode (the relay's direction only).
    pub one_way: Drain,
}

/// Upserts `n` documents in batches of [`BATCH`] with one plain client; returns docs/s.
pub async fn raw_upsert_rate(db: &Database, n: usize) -> anyhow::Result<f64> {
    let coll = db.collection::<Document>("raw_upserts");
    let now = DateTime::now().timestamp_millis();
    let start = Instant::now();
    for chunk in (0..n as i64).collect::<Vec<_>>().chunks(BATCH) {
        let updates: Vec<Bson> = chunk
            .iter()
            .map(|&i| {
                let mut d = document(i, 0, now);
                d.remove("_id");
                Bson::Document(doc! { "q": { "_id": i }, "u": { "$set": d }, "upsert": true })
            })
            .collect();
        db.run_command(doc! { "update": coll.name(), "updates": updates, "ordered": false })
            .await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Deletes the `n` documents [`raw_upsert_rate`] wrote, in batches of [`BATCH`] with
/// one plain client; returns docs/s.
pub async fn raw_delete_rate(db: &Database, n: usize) -> anyhow::Result<f64> {
    let coll = db.collection::<Document>("raw_upserts");
    let start = Instant::now();
    for chunk in (0..n as i64).collect::<Vec<_>>().chunks(BATCH) {
        let deletes: Vec<Bson> = chunk
            .iter()
            .map(|&i| Bson::Document(doc! { "q": { "_id": i }, "limit": 1 }))
            .collect();
        db.run_command(doc! { "delete": coll.name(), "deletes": deletes, "ordered": false })
            .await?;
    }
    anyhow::ensure!(
        coll.estimated_document_count().await? == 0,
        "raw deletes left documents behind"
    );
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Number of documents on cloud.
async fn cloud_count(cloud: &Collection<Document>) -> anyhow::Result<u64> {
    Ok(cloud.estimated_document_count().await?)
}

/// Inserts documents `from..to` on local in batches of [`BATCH`].
async fn write_batch(local: &Collection<Document>, from: i64, to: i64) -> anyhow::Result<()> {
    let now = DateTime::now().timestamp_millis();
    let docs: Vec<Document> = (from..to).map(|i| document(i, 0, now)).collect();
    if !docs.is_empty() {
        WRITER_COMMANDS.fetch_add(1, Ordering::Relaxed);
        local.insert_many(docs).await?;
    }
    Ok(())
}

/// Waits until cloud holds `n` documents; returns when (or `None` after `limit`).
async fn wait_count(
    cloud: &Collection<Document>,
    n: u64,
    limit: Duration,
) -> anyhow::Result<Option<Instant>> {
    wait_until_count(cloud, |c| c >= n, limit).await
}

/// Waits until cloud's document count satisfies `done`; returns when (or `None` after
/// `limit`).
async fn wait_until_count(
    cloud: &Collection<Document>,
    done: impl Fn(u64) -> bool,
    limit: Duration,
) -> anyhow::Result<Option<Instant>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done(cloud_count(cloud).await?) {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(None)
}

/// Offers `rate` docs/s for `secs` starting at key `base`; returns whether the daemon
/// kept up (backlog not growing, drained within a second after) and the backlog trace.
async fn offer(
    local: &Collection<Document>,
    cloud: &Collection<Document>,
    base: i64,
    rate: f64,
    secs: f64,
) -> anyhow::Result<(bool, Vec<(f64, f64)>)> {
    let n = (rate * secs) as i64;
    let start = Instant::now();
    let mut written = 0i64;
    let mut trace = Vec::new();
    let mut next_sample = 0.0;
    while written < n {
        let t = start.elapsed().as_secs_f64();
        let due = ((t * rate) as i64).min(n);
        if due > written {
            let to = due.min(written + BATCH as i64);
            write_batch(local, base + written, base + to).await?;
            written = to;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if t >= next_sample {
            let behind = (base + written) as f64 - cloud_count(cloud).await? as f64;
            trace.push((t, behind.max(0.0)));
            next_sample += 0.1;
        }
    }
    let drained = wait_count(cloud, (base + n) as u64, Duration::from_secs(1)).await?;
    let q = trace.len() / 4;
    let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len().max(1) as f64;
    let early = mean(&trace[q..2 * q]);
    let late = mean(&trace[3 * q..]);
    // Growing: the last quarter is behind by more than the early one plus 0.2 s of work.
    let grows = late > early * 1.5 + rate * 0.2;
    Ok((drained.is_some() && !grows, trace))
}

/// Measures the path already running from `db.local_data` to `db.cloud_data`: `n`
/// inserts as fast as the writer can (saturated drain), confirmation runs of
/// `confirm_secs` from 0.9 × that rate down, then deletes of the
/// first `n` documents as fast as the writer can.
async fn measure(db: &Database, n: usize, confirm_secs: f64) -> anyhow::Result<Drain> {
    let local = db.collection::<Document>("local_data");
    let cloud = db.collection::<Document>("cloud_data");

    let start = Instant::now();
    let mut from = 0;
    while from < n as i64 {
        let to = (from + BATCH as i64).min(n as i64);
        write_batch(&local, from, to).await?;
        from = to;
    }
    let done = wait_count(&cloud, n as u64, Duration::from_secs(300))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{n} documents not copied within 300 s"))?;
    let saturated = n as f64 / done.duration_since(start).as_secs_f64();

    // Not capped at the raw rate: the relay, whose reads and writes overlap the writer's,
    // can drain faster than one sequential client's batched upserts.
    let mut rate = saturated * 0.9;
    let mut base = n as i64;
    let mut accepted = None;
    for _ in 0..CONFIRM_TRIES {
        let (ok, trace) = offer(&local, &cloud, base, rate, confirm_secs).await?;
        base += (rate * confirm_secs) as i64;
        wait_count(&cloud, base as u64, Duration::from_secs(30)).await?;
        if ok {
            accepted = Some(trace);
            break;
        }
        rate *= CONFIRM_STEP;
    }

    // Deletes: the first `n` documents, as fast as the client can, on local.
    let start = Instant::now();
    for from in (0..n as i64).step_by(BATCH) {
        let ids: Vec<i64> = (from..(from + BATCH as i64).min(n as i64)).collect();
        WRITER_COMMANDS.fetch_add(1, Ordering::Relaxed);
        local.delete_many(doc! { "_id": { "$in": ids } }).await?;
    }
    let left = (base - n as i64).max(0) as u64;
    let done = wait_until_count(&cloud, |c| c <= left, Duration::from_secs(300))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{n} deletes not propagated within 300 s"))?;
    let saturated_deletes = n as f64 / done.duration_since(start).as_secs_f64();
    let (sustained, backlog) = match accepted {
        Some(t) => (rate, t),
        None => (0.0, Vec::new()),
    };
    Ok(Drain {
        saturated,
        sustained,
        backlog,
        saturated_deletes,
        server: None,
    })
}

/// The path from local to cloud under test.
#[derive(Clone, Copy)]
enum Under {
    /// The bare change-stream relay.
    Relay,
    /// The daemon.
    Daemon,
    /// The daemon in `local-to-cloud` mode.
    OneWay,
}

/// Starts `under` on a database of its own, laid out as the daemon's of figure 2
/// (`local_data` and `cloud_data` side by side), [`measure`]s it, stops it and drops its
/// databases.
async fn measure_path(
    ctx: &Ctx,
    under: Under,
    n: usize,
    confirm_secs: f64,
    debounce_ms: u64,
) -> anyhow::Result<Drain> {
    let (tag, what) = match under {
        Under::Relay => ("relay", "bare relay"),
        Under::Daemon => ("tp", "daemon"),
        Under::OneWay => ("tp1", "daemon (local-to-cloud)"),
    };
    let spec = DaemonSpec {
        db: ctx.db(tag),
        debounce_ms,
        max_batch: BATCH as u64,
        mode: match under {
            Under::OneWay => "local-to-cloud",
            Under::Relay | Under::Daemon => "both-ways",
        },
        split: false,
        pairs: 0,
    };
    let db = ctx.client.database(&spec.db);
    let counted = |ctx: &Ctx| ctx.emulator.as_ref().map(|e| e.handle().counters());
    let before = (counted(ctx), WRITER_COMMANDS.load(Ordering::Relaxed));
    let drain = match under {
        Under::Relay => {
            let relay = Relay::start(ctx, &spec).await?;
            let drain = measure(&db, n, confirm_secs).await;
            relay.stop().await?;
            drain
        }
        Under::Daemon | Under::OneWay => {
            let daemon = Daemon::start(ctx, &spec).await?;
            let drain = measure(&db, n, confirm_secs).await;
            daemon.stop().await?;
            drain
        }
    };
    let mut drain = drain.map_err(|e| e.context(what))?;
    // Each path runs on a fresh emulator, so its counters are the phase's.
    if let (Some(after), (Some(_), writer_before)) = (counted(ctx), before) {
        let writer = WRITER_COMMANDS.load(Ordering::Relaxed) - writer_before;
        if std::env::var_os("BENCH_SERVER_WORK").is_some() {
            eprintln!(
                "{what}: writer {writer} commands; {:?}; {:?}",
                after.commands, after.write_statements
            );
        }
        drain.server = Some(ServerWork::of(&after, &spec.db, writer));
    }
    ctx.drop_db(&spec.db).await;
    ctx.drop_db(&format!("{}_state", spec.db)).await;
    Ok(drain)
}

/// Runs figure 2 with `n` documents for the raw and saturation phases: raw, then the
/// relay, then the daemon (both-ways, then local-to-cloud), each on a fresh local
/// server ([`Ctx::fresh_local`]; a no-op with `--uri`): on one emulator every phase ran slower than the one before (the
/// daemon measured three times in a row: 9.2k, 2.8k, 1.7k docs/s), which made the
/// order decide the ratio.
pub async fn run(
    ctx: &mut Ctx,
    n: usize,
    confirm_secs: f64,
    debounce_ms: u64,
) -> anyhow::Result<Throughput> {
    ctx.fresh_local().await?;
    let raw_db_name = ctx.db("raw");
    let raw = raw_upsert_rate(&ctx.client.database(&raw_db_name), n).await?;
    let raw_deletes = raw_delete_rate(&ctx.client.database(&raw_db_name), n).await?;
    ctx.drop_db(&raw_db_name).await;

    ctx.fresh_local().await?;
    let relay = measure_path(ctx, Under::Relay, n, confirm_secs, debounce_ms).await?;
    ctx.fresh_local().await?;
    let daemon = measure_path(ctx, Under::Daemon, n, confirm_secs, debounce_ms).await?;
    ctx.fresh_local().await?;
    let one_way = measure_path(ctx, Under::OneWay, n, confirm_secs, debounce_ms).await?;
    Ok(Throughput {
        raw,
        raw_deletes,
        relay,
        daemon,
        one_way,
    })
}
