//! Figure 5, engine only (issue 3's benchmark, in process): `n` change events already
//! in an in-memory local store are pushed through the engine (stream → debounced queue
//! → resolution → batched conditional apply) into an in-memory cloud store; the same
//! events are then applied by a bare loop (read the stream, put each post-image
//! straight into a fresh store). Ratio = engine events/s ÷ bare-loop events/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, DateTime};
use datasync::core::memory::{MemoryState, MemoryStore};
use datasync::core::{
    ChangeKind, CollectionStore, Engine, EngineConfig, Mode, Side, StateStore, Stores, StreamItem,
};
use tokio_util::sync::CancellationToken;

/// Result of figure 5.
pub struct EngineOnly {
    /// Events.
    pub n: usize,
    /// Engine events/s.
    pub engine: f64,
    /// Bare-loop events/s.
    pub bare: f64,
}

/// A local store already holding `n` inserts in its history, and the token before them.
fn loaded_local(n: usize) -> (MemoryStore, datasync::core::ResumeToken) {
    let local = MemoryStore::new(Side::Local, "updatedAt", n + 16);
    let before = local.latest_token();
    for i in 0..n as i64 {
        local.put(doc! { "_id": i, "name": format!("item-{i}"), "value": i, "updatedAt": DateTime::from_millis(1_000_000 + i) });
    }
    (local, before)
}

/// Runs figure 5 with `n` events.
pub async fn run(n: usize) -> anyhow::Result<EngineOnly> {
    // Engine.
    let (local, before) = loaded_local(n);
    let cloud = MemoryStore::new(Side::Cloud, "updatedAt", 1_000_000);
    let state = MemoryState::new();
    state.save_checkpoint(Side::Local, &before).await?;
    state
        .save_checkpoint(Side::Cloud, &cloud.latest_token())
        .await?;
    let config = EngineConfig {
        mode: Mode::LocalToCloud,
        ..EngineConfig::default()
    };
    let stores = Stores {
        local: Arc::new(local.clone()),
        cloud: Arc::new(cloud.clone()),
        state: Arc::new(state),
    };
    let engine = Engine::new(config, stores);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(engine.run(stop.clone(), false, Duration::from_secs(5)));
    while cloud.count().await? < n as u64 {
        if start.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("engine did not apply {n} events in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let engine_secs = start.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;

    // Bare loop over the same events.
    let (local, before) = loaded_local(n);
    let target = MemoryStore::new(Side::Cloud, "updatedAt", 1_000_000);
    let start = Instant::now();
    let mut stream = local.open_stream(Some(before)).await?;
    let mut seen = 0;
    while seen < n {
        if let StreamItem::Event(e) = stream.next().await? {
            if let ChangeKind::Upsert(d) = e.kind {
                target.put(d);
            }
            seen += 1;
        }
    }
    let bare_secs = start.elapsed().as_secs_f64();
    Ok(EngineOnly {
        n,
        engine: n as f64 / engine_secs,
        bare: n as f64 / bare_secs,
    })
}

/// Runs the core's own benchmark (`cargo bench --bench engine`, issue 3) from the
/// workspace root and returns its ratio line and ratio; `None` when cargo or the bench
/// is not available.
pub async fn cargo_bench(quick: bool) -> Option<(String, f64)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    if !root.join("benches/engine.rs").is_file() {
        return None;
    }
    let out = tokio::process::Command::new("cargo")
        .args(["bench", "--bench", "engine"])
        .env("BENCH_ROUNDS", if quick { "1" } else { "3" })
        .current_dir(root)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("ratio:"))?
        .trim()
        .to_string();
    let ratio = line
        .split("ratio:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((line, ratio))
}
