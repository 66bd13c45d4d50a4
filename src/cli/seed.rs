//! `datasync seed`: insert dummy documents `{name, value, updatedAt}` (the original
//! system's `seed/seed.js`), in batches, with a progress bar on a terminal.

use anyhow::Context;
use bson::{doc, DateTime, Document};
use datasync::daemon::config::{Config, SideConfig};

use super::args::SeedSide;
use super::progress;

/// Documents per `insert` command.
const BATCH: u64 = 1000;

/// Insert `count` documents on the chosen side(s). With `both`, the same documents
/// (same `_id`s) go to each side, so they start identical.
pub async fn seed(config: &Config, count: u64, side: SeedSide) -> anyhow::Result<()> {
    let run = tag();
    let mut targets = Vec::new();
    if side != SeedSide::Cloud {
        targets.push(("local", &config.local));
    }
    if side != SeedSide::Local {
        targets.push(("cloud", &config.cloud));
    }
    for (name, target) in targets {
        insert(name, target, count, &run).await?;
        tracing::info!(side = name, count, "seeded");
    }
    Ok(())
}

fn tag() -> String {
    format!("{:x}", DateTime::now().timestamp_millis())
}

/// The `i`-th seed document of run `run`.
pub fn seed_doc(run: &str, i: u64) -> Document {
    doc! {
        "_id": format!("seed-{run}-{i}"),
        "name": format!("item {i}"),
        "value": i as i64,
        "updatedAt": DateTime::now(),
    }
}

async fn insert(name: &str, side: &SideConfig, count: u64, run: &str) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(&side.uri)
        .await
        .with_context(|| format!("cannot connect to {name}"))?;
    let coll = client
        .database(&side.database)
        .collection::<Document>(&side.collection);
    let bar = progress::bar(count, name);
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let docs: Vec<Document> = (done..done + n).map(|i| seed_doc(run, i)).collect();
        coll.insert_many(docs).await.with_context(|| {
            format!(
                "insert into {name} {}.{} failed",
                side.database, side.collection
            )
        })?;
        done += n;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    Ok(())
}
