//! Figures 3 and 4: `datasync reconcile` (a child process, timed and its peak RSS read
//! from `/proc`) against a plain streaming copy of the same data in the same run, and
//! against the naive baseline on an identical copy of the data set. Local (with the
//! state database) and cloud are two servers; a modelled WAN round trip (`--rtt-ms`,
//! when `wan`) delays the cloud server's replies for all three programs alike, never
//! while loading data.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use crate::ctx::Ctx;
use crate::daemon::{write_config, DaemonSpec};
use crate::data::load_reconcile_set;
use crate::proc::{run_measured, Measured};

/// Result of one reconcile size.
pub struct ReconcileRun {
    /// Documents on local.
    pub n: i64,
    /// Seconds spent loading the data set (not measured against anything).
    pub load_secs: f64,
    /// The plain streaming copy.
    pub copy: Measured,
    /// `datasync reconcile`.
    pub reconcile: Measured,
    /// Its JSON report.
    pub report: serde_json::Value,
}

/// Loads the data set of `n` documents into a fresh database; returns its name.
async fn fresh_set(ctx: &Ctx, tag: &str, n: i64) -> anyhow::Result<(String, f64)> {
    let db = ctx.db(tag);
    let start = Instant::now();
    let state = ctx.client.database(&format!("{db}_state"));
    load_reconcile_set(
        &ctx.client.database(&db),
        &ctx.cloud_client.database(&db),
        &state,
        n,
    )
    .await?;
    Ok((db, start.elapsed().as_secs_f64()))
}

/// Figure 3 at `n` documents: the copy (local → cloud) and the reconcile, with the
/// modelled WAN round trip when `wan`.
pub async fn run(ctx: &Ctx, n: i64, wan: bool) -> anyhow::Result<ReconcileRun> {
    let tag = if wan { "rw" } else { "rc" };
    let (db, load_secs) = fresh_set(ctx, &format!("{tag}{n}"), n).await?;
    let dir = tempfile::tempdir()?;

    let mut copy = Command::new(&ctx.me);
    copy.args([
        "copy",
        "--uri",
        &ctx.uri,
        "--to-uri",
        &ctx.cloud_uri,
        "--db",
        &db,
        "--from",
        "local_data",
        "--to",
        "copy_data",
    ]);
    ctx.model_rtt(wan);
    let copy = run_measured(copy, &dir.path().join("copy.log"))
        .await
        .context("streaming copy");
    ctx.model_rtt(false);
    let copy = copy?;
    let _ = ctx
        .cloud_client
        .database(&db)
        .collection::<bson::Document>("copy_data")
        .drop()
        .await;

    let spec = DaemonSpec {
        db: db.clone(),
        debounce_ms: 50,
        max_batch: 1000,
        mode: "both-ways",
        split: true,
        pairs: 0,
    };
    let (config, _) = write_config(ctx, &spec, dir.path())?;
    let mut rec = Command::new(&ctx.datasync);
    rec.arg("reconcile")
        .arg("--config")
        .arg(&config)
        .arg("--json");
    ctx.model_rtt(wan);
    let reconcile = run_measured(rec, &dir.path().join("reconcile.log"))
        .await
        .context("datasync reconcile");
    ctx.model_rtt(false);
    let reconcile = reconcile?;
    let report = serde_json::from_str(reconcile.stdout.trim()).unwrap_or(serde_json::Value::Null);

    ctx.drop_db(&db).await;
    ctx.drop_db(&format!("{db}_state")).await;
    Ok(ReconcileRun {
        n,
        load_secs,
        copy,
        reconcile,
        report,
    })
}

/// Figure 4: the naive baseline on a fresh copy of the `n`-document data set, with the
/// modelled WAN round trip when `wan`.
pub async fn naive(ctx: &Ctx, n: i64, wan: bool) -> anyhow::Result<Measured> {
    let tag = if wan { "nw" } else { "nv" };
    let (db, _) = fresh_set(ctx, &format!("{tag}{n}"), n).await?;
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(&ctx.me);
    cmd.args([
        "naive",
        "--uri",
        &ctx.uri,
        "--cloud-uri",
        &ctx.cloud_uri,
        "--db",
        &db,
    ]);
    ctx.model_rtt(wan);
    let m = run_measured(cmd, &dir.path().join("naive.log"))
        .await
        .context("naive baseline");
    ctx.model_rtt(false);
    let m = m?;
    ctx.drop_db(&db).await;
    ctx.drop_db(&format!("{db}_state")).await;
    Ok(m)
}
