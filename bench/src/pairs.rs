//! Figure 6, several pairs (issue 18): the same daemon syncing one pair and twenty
//! (`[[pairs]]` `local_i` ↔ `cloud_i`, both-ways; one change stream per side either
//! way) at the same total write rate, the cloud collections on the cloud server (as
//! in production: a side's stream never carries the other side's writes; no modelled
//! round trip). A writer inserts at a fixed rate, round-robin
//! over the pairs' local collections; a database-level change stream on cloud
//! timestamps each arrival (lag = arrival − send). Then a burst of inserts (1000 per
//! command, round-robin over the collections) drains: documents ÷ time until all have
//! arrived. The daemon's peak RSS is read as it stops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use futures::StreamExt;
use mongodb::Collection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ctx::Ctx;
use crate::daemon::{pair_collections, Daemon, DaemonSpec};

/// One daemon's run.
pub struct PairsRun {
    /// Lag percentiles at the fixed rate, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Writes of the fixed-rate phase that never arrived.
    pub missing: usize,
    /// Burst drain rate, documents per second.
    pub drain_rate: f64,
    /// The daemon's peak RSS, KiB.
    pub rss_kib: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Waits until every `seq` in `from..to` arrived (or `limit` passes); returns the
/// arrival instants by `seq`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    arrived: &mut HashMap<i64, Instant>,
    from: i64,
    to: i64,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut missing = (from..to).filter(|s| !arrived.contains_key(s)).count();
    while missing > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((seq, at))) => {
                if arrived.insert(seq, at).is_none() && (from..to).contains(&seq) {
                    missing -= 1;
                }
            }
            _ => break,
        }
    }
}

/// Runs a daemon over `pairs` pairs: `rate` writes/s for `secs`, then a burst of
/// `burst` documents.
pub async fn run(
    ctx: &Ctx,
    pairs: usize,
    rate: u32,
    secs: f64,
    burst: usize,
    debounce_ms: u64,
) -> anyhow::Result<PairsRun> {
    let db_name = ctx.db(&format!("pairs{pairs}"));
    let spec = DaemonSpec {
        db: db_name.clone(),
        debounce_ms,
        max_batch: 1000,
        mode: "both-ways",
        split: true,
        pairs,
    };
    ctx.model_rtt(false);
    let db = ctx.client.database(&db_name);
    let cloud_db = ctx.cloud_client.database(&db_name);
    let locals: Vec<Collection<Document>> = (0..pairs)
        .map(|i| db.collection(&pair_collections(i).0))
        .collect();
    let daemon = Daemon::start(ctx, &spec).await?;

    let mut stream = cloud_db.watch().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { break };
            let at = Instant::now();
            let cloud = ev
                .ns
                .as_ref()
                .and_then(|ns| ns.coll.as_deref())
                .is_some_and(|c| c.starts_with("cloud_"));
            let seq = ev
                .full_document
                .as_ref()
                .and_then(|d| d.get_i64("seq").ok());
            if let (true, Some(seq)) = (cloud, seq) {
                if tx.send((seq, at)).is_err() {
                    break;
                }
            }
        }
    });

    // Fixed rate, one insert per write, round-robin over the pairs.
    let n = (f64::from(rate) * secs) as usize;
    let mut sends: Vec<Instant> = Vec::with_capacity(n);
    let mut inflight = JoinSet::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sends.len() < n {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(n);
        while sends.len() < due {
            let seq = sends.len() as i64;
            sends.push(Instant::now());
            let coll = locals[sends.len() % pairs].clone();
            inflight.spawn(async move {
                coll.insert_one(doc! { "_id": seq, "seq": seq, "updatedAt": DateTime::now() })
                    .await
                    .map(drop)
            });
        }
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    let mut arrived = HashMap::new();
    collect(&mut rx, &mut arrived, 0, n as i64, Duration::from_secs(15)).await;
    let mut lags: Vec<f64> = sends
        .iter()
        .enumerate()
        .filter_map(|(seq, s)| {
            let a = arrived.get(&(seq as i64))?;
            Some(a.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    if std::env::var_os("BENCH_PAIRS_DEBUG").is_some() {
        let mut worst: Vec<(f64, f64)> = sends
            .iter()
            .enumerate()
            .filter_map(|(seq, s)| {
                let a = arrived.get(&(seq as i64))?;
                Some((
                    s.duration_since(start).as_secs_f64(),
                    a.saturating_duration_since(*s).as_secs_f64() * 1000.0,
                ))
            })
            .collect();
        worst.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!(
            "{pairs} pairs, worst (sent at s, lag ms): {:?}",
            &worst[..worst.len().min(15)]
        );
    }
    lags.sort_by(f64::total_cmp);
    let missing = n - lags.len();

    // The burst: 1000 documents per insert command, round-robin over the pairs.
    let first = n as i64;
    let last = first + burst as i64;
    let t0 = Instant::now();
    let mut writes = JoinSet::new();
    for (c, chunk) in (first..last).collect::<Vec<_>>().chunks(1000).enumerate() {
        let coll = locals[c % pairs].clone();
        let docs: Vec<Document> = chunk
            .iter()
            .map(|&seq| doc! { "_id": seq, "seq": seq, "updatedAt": DateTime::now() })
            .collect();
        writes.spawn(async move { coll.insert_many(docs).await.map(drop) });
    }
    while let Some(r) = writes.join_next().await {
        r??;
    }
    collect(&mut rx, &mut arrived, first, last, Duration::from_secs(120)).await;
    let done = (first..last).filter_map(|s| arrived.get(&s)).max();
    let drain_rate = match done {
        Some(t) => burst as f64 / t.saturating_duration_since(t0).as_secs_f64(),
        None => 0.0,
    };
    let all = (first..last).all(|s| arrived.contains_key(&s));
    watcher.abort();
    let rss_kib = daemon.stop().await?;
    ctx.drop_db(&db_name).await;
    ctx.drop_db(&format!("{db_name}_state")).await;
    anyhow::ensure!(all, "{pairs} pairs: the burst did not arrive within 120 s");
    Ok(PairsRun {
        p50_ms: percentile(&lags, 0.5),
        p99_ms: percentile(&lags, 0.99),
        missing,
        drain_rate,
        rss_kib,
    })
}
