//! `datasync reconcile`: one full reconcile without a daemon.

use std::sync::Arc;

use anyhow::Context;
use datasync::core::{reconcile_once, Mode};
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
    let stores = stores::connect(config).await?;
    let mode = mode.unwrap_or(config.mode);
    let local = stores.local.count().await.unwrap_or(0);
    let cloud = stores.cloud.count().await.unwrap_or(0);
    let bar = progress::bar(local.max(cloud), "reconcile");
    let tick = bar.clone();
    let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
        if n > tick.length().unwrap_or(0) {
            tick.set_length(n);
        }
        tick.set_position(n);
    });
    tracing::info!(%mode, dry_run, "reconcile starting");
    let report = reconcile_once(
        &config.engine_config(),
        &stores,
        mode,
        dry_run,
        Some(progress),
    )
    .await
    .context("reconcile failed")?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report_text(&report));
    }
    Ok(())
}
