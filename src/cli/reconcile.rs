//! `datasync reconcile`: one full reconcile without a daemon.

use std::sync::Arc;

use anyhow::Context;
use datasync::core::{reconcile_once, Mode, ReconcileReport};
use datasync::daemon::config::Config;
use datasync::daemon::stores;

use super::progress;
use super::report::report_text;

/// Run the reconcile and print its report.
pub async fn reconcile(
    config: &Config,
    mode: Option<Mode>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let connected = stores::connect(config).await?;
    let specs = config.pair_specs(connected.pairs);
    let mut total_docs = 0;
    for p in &specs {
        let local = p.stores.local.count().await.unwrap_or(0);
        let cloud = p.stores.cloud.count().await.unwrap_or(0);
        total_docs += local.max(cloud);
    }
    let bar = progress::bar(total_docs, "reconcile");
    let mut report: Option<ReconcileReport> = None;
    let mut done_before = 0u64;
    for p in &specs {
        let tick = bar.clone();
        let base = done_before;
        let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
            if base + n > tick.length().unwrap_or(0) {
                tick.set_length(base + n);
            }
            tick.set_position(base + n);
        });
        let pair_mode = mode.unwrap_or(p.config.mode);
        tracing::info!(pair = %p.name, mode = %pair_mode, dry_run, "reconcile starting");
        let r = reconcile_once(&p.config, &p.stores, pair_mode, dry_run, Some(progress))
            .await
            .with_context(|| format!("reconcile of pair {:?} failed", p.name))?;
        done_before = bar.position();
        report = Some(match report {
            None => r,
            Some(t) => t.plus(&r),
        });
    }
    let report = report.context("no pair to reconcile")?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report_text(&report));
    }
    Ok(())
}
