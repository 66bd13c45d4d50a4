//! The comparison programs, run by the harness as child processes so their wall time
//! and peak RSS are measured exactly like `datasync reconcile`'s:
//! - `copy`: the plain streaming copy (find → batched inserts), the yardstick of a
//!   full reconcile;
//! - `naive`: the original system's algorithm (load both collections into memory,
//!   compare, write one document per round trip), the baseline to beat;
//! - `relay`: the bare change-stream relay of figure 2 ([`crate::relay`]), until killed.

use std::collections::HashMap;

use bson::{doc, Document};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use mongodb::options::ReplaceOptions;
use mongodb::{Client, Collection};

use crate::data::updated_ms;

/// A comparison program.
#[derive(Subcommand, Debug)]
pub enum ChildCmd {
    /// Streaming copy of `db.from` into `db.to` on the target server (internal).
    #[command(hide = true)]
    Copy {
        /// Source server.
        #[arg(long)]
        uri: String,
        /// Target server.
        #[arg(long)]
        to_uri: String,
        /// Database.
        #[arg(long)]
        db: String,
        /// Source collection.
        #[arg(long)]
        from: String,
        /// Target collection.
        #[arg(long)]
        to: String,
        /// Documents per insert (and per cursor batch).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The naive full sync of `db.local_data` and `db.cloud_data` (internal).
    #[command(hide = true)]
    Naive(Pair),
    /// The bare change-stream relay `db.local_data` → `db.cloud_data` (internal).
    #[command(hide = true)]
    Relay(Pair),
}

/// Where the synced pair of collections is.
#[derive(Args, Debug)]
pub struct Pair {
    /// Local server.
    #[arg(long)]
    uri: String,
    /// Cloud server.
    #[arg(long)]
    cloud_uri: String,
    /// Database.
    #[arg(long)]
    db: String,
}

/// Runs a comparison program; prints a one-line JSON summary.
pub async fn run(cmd: ChildCmd) -> anyhow::Result<()> {
    match cmd {
        ChildCmd::Copy {
            uri,
            to_uri,
            db,
            from,
            to,
            batch,
        } => {
            let source = Client::with_uri_str(&uri).await?.database(&db);
            let target = Client::with_uri_str(&to_uri).await?.database(&db);
            let copied = copy(&source.collection(&from), &target.collection(&to), batch).await?;
            println!("{}", serde_json::json!({ "copied": copied }));
        }
        ChildCmd::Naive(Pair { uri, cloud_uri, db }) => {
            let local = Client::with_uri_str(&uri).await?.database(&db);
            let cloud = Client::with_uri_str(&cloud_uri).await?.database(&db);
            let written = naive(
                &local.collection("local_data"),
                &cloud.collection("cloud_data"),
            )
            .await?;
            println!("{}", serde_json::json!({ "written": written }));
        }
        ChildCmd::Relay(Pair { uri, cloud_uri, db }) => {
            crate::relay::relay(&uri, &cloud_uri, &db).await?
        }
    }
    Ok(())
}

/// find → batched inserts.
async fn copy(
    from: &Collection<Document>,
    to: &Collection<Document>,
    batch: usize,
) -> anyhow::Result<u64> {
    let mut cursor = from.find(doc! {}).batch_size(batch as u32).await?;
    let mut buf = Vec::with_capacity(batch);
    let mut n = 0;
    while let Some(d) = cursor.try_next().await? {
        buf.push(d);
        if buf.len() == batch {
            n += buf.len() as u64;
            to.insert_many(std::mem::take(&mut buf)).await?;
        }
    }
    if !buf.is_empty() {
        n += buf.len() as u64;
        to.insert_many(buf).await?;
    }
    Ok(n)
}

/// Loads a whole collection keyed by `_id` (as text, like the original's `toString()`).
async fn load(coll: &Collection<Document>) -> anyhow::Result<HashMap<String, Document>> {
    let mut map = HashMap::new();
    let mut cursor = coll.find(doc! {}).await?;
    while let Some(d) = cursor.try_next().await? {
        let key = d.get("_id").map(ToString::to_string).unwrap_or_default();
        map.insert(key, d);
    }
    Ok(map)
}

/// Upserts one document, one round trip.
async fn put(coll: &Collection<Document>, d: &Document) -> anyhow::Result<()> {
    let id = d.get("_id").cloned().unwrap_or(bson::Bson::Null);
    coll.replace_one(doc! { "_id": id }, d.clone())
        .with_options(ReplaceOptions::builder().upsert(true).build())
        .await?;
    Ok(())
}

/// The original algorithm: newer `updatedAt` wins, missing documents are copied (so a
/// deletion is undone: it has no tombstones), one write per round trip.
async fn naive(local: &Collection<Document>, cloud: &Collection<Document>) -> anyhow::Result<u64> {
    let l = load(local).await?;
    let c = load(cloud).await?;
    let mut written = 0;
    for (k, ld) in &l {
        match c.get(k) {
            None => put(cloud, ld).await?,
            Some(cd) if updated_ms(ld) > updated_ms(cd) => put(cloud, ld).await?,
            Some(cd) if updated_ms(cd) > updated_ms(ld) => put(local, cd).await?,
            Some(_) => continue,
        }
        written += 1;
    }
    for (k, cd) in &c {
        if !l.contains_key(k) {
            put(local, cd).await?;
            written += 1;
        }
    }
    Ok(written)
}
