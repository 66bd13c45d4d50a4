//! Figure 1, replication lag: a writer inserts and updates documents on local at a
//! fixed rate (`updatedAt: now`, a unique `seq`); a change stream on cloud timestamps
//! each `seq` as it arrives. Lag = arrival − the instant the write was sent.

use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use futures::StreamExt;
use mongodb::change_stream::event::ChangeStreamEvent;
use mongodb::Collection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ctx::Ctx;
use crate::daemon::{Daemon, DaemonSpec};

/// Result of one rate.
pub struct LagRun {
    /// Offered writes per second.
    pub rate: u32,
    /// `(seconds since the writer started, lag ms)` of each write that arrived.
    pub samples: Vec<(f64, f64)>,
    /// Writes sent.
    pub sent: usize,
    /// Writes that never arrived within the grace period.
    pub missing: usize,
    /// The daemon's peak RSS (KiB).
    pub daemon_rss_kib: u64,
}

/// The `seq` a cloud change event carries (inserts/replaces: the document; updates: the
/// changed fields).
fn seq_of(ev: &ChangeStreamEvent<Document>) -> Option<i64> {
    if let Some(d) = &ev.full_document {
        return d.get_i64("seq").ok();
    }
    ev.update_description
        .as_ref()
        .and_then(|u| u.updated_fields.get_i64("seq").ok())
}

/// One write: every fourth is an update of a document inserted about one second earlier
/// (`seq − back − 1`, always an insert: beyond the debounce, so the two are not
/// coalesced), the rest are inserts.
async fn write(coll: Collection<Document>, seq: i64, back: i64) -> mongodb::error::Result<()> {
    let now = DateTime::now();
    if seq % 4 == 3 && seq > back {
        coll.update_one(
            doc! { "_id": seq - back - 1 },
            doc! { "$set": { "seq": seq, "value": seq, "updatedAt": now } },
        )
        .await
        .map(drop)
    } else {
        coll.insert_one(doc! { "_id": seq, "seq": seq, "name": format!("item-{seq}"), "value": seq, "updatedAt": now })
            .await
            .map(drop)
    }
}

/// Runs the daemon and the writer at `rate` writes/s for `secs`.
pub async fn run_rate(ctx: &Ctx, rate: u32, secs: f64, debounce_ms: u64) -> anyhow::Result<LagRun> {
    let db_name = ctx.db(&format!("lag{rate}"));
    let spec = DaemonSpec {
        db: db_name.clone(),
        debounce_ms,
        max_batch: 1000,
        mode: "both-ways",
        split: false,
        pairs: 0,
    };
    let daemon = Daemon::start(ctx, &spec).await?;
    let db = ctx.client.database(&db_name);
    let local = db.collection::<Document>("local_data");
    let cloud = db.collection::<Document>("cloud_data");

    let mut stream = cloud.watch().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { break };
            let at = Instant::now();
            if let Some(seq) = seq_of(&ev) {
                if tx.send((seq, at)).is_err() {
                    break;
                }
            }
        }
    });

    let n = (f64::from(rate) * secs) as usize;
    let back = i64::from(rate.max(100));
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
            inflight.spawn(write(local.clone(), seq, back));
        }
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }

    let mut arrived: Vec<Option<Instant>> = vec![None; n];
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((seq, at))) => {
                if let Some(slot) = usize::try_from(seq).ok().and_then(|s| arrived.get_mut(s)) {
                    if slot.is_none() {
                        *slot = Some(at);
                        count += 1;
                    }
                }
            }
            _ => break,
        }
    }
    watcher.abort();
    let daemon_rss_kib = daemon.stop().await?;
    ctx.drop_db(&db_name).await;
    ctx.drop_db(&format!("{db_name}_state")).await;

    let samples = sends
        .iter()
        .zip(&arrived)
        .filter_map(|(s, a)| {
            a.map(|a| {
                let lag = a.saturating_duration_since(*s).as_secs_f64() * 1000.0;
                (s.duration_since(start).as_secs_f64(), lag)
            })
        })
        .collect();
    Ok(LagRun {
        rate,
        samples,
        sent: n,
        missing: n - count,
        daemon_rss_kib,
    })
}
