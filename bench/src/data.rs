//! Generated documents, the same shape as `datasync seed` writes (`{name, value,
//! updatedAt}`) plus a payload of typical size, and the reconcile data set: local
//! holds N documents, cloud the same with 10% differing (half newer on each side) and
//! 1% deleted on cloud with a tombstone, stored as the adapter stores it.

use bson::{doc, Bson, DateTime, Document};
use mongodb::{Collection, Database};

/// Documents per `insert` command while loading data.
const LOAD_BATCH: usize = 10_000;
/// Base time of the generated `updatedAt` values.
const BASE_MS: i64 = 1_700_000_000_000;

/// A generated document `i`, version `version` (differing versions differ in content).
pub fn document(i: i64, version: i64, updated_ms: i64) -> Document {
    doc! {
        "_id": i,
        "name": format!("item-{i}"),
        "value": i * 7 + version,
        "tags": ["bench", if i % 2 == 0 { "even" } else { "odd" }],
        "payload": format!("{:0>96}", i * 31 + version),
        "updatedAt": DateTime::from_millis(updated_ms),
    }
}

/// What document `i` of the reconcile data set looks like on each side.
pub enum Pair {
    /// Identical on both sides.
    Same,
    /// Cloud holds a newer version.
    CloudNewer,
    /// Local holds a newer version.
    LocalNewer,
    /// Deleted on cloud after its last local update; the tombstone says so.
    DeletedOnCloud,
}

/// The fate of document `i`: 10% differ, 1% deleted with a tombstone.
pub fn pair(i: i64) -> Pair {
    match i % 100 {
        0..=4 => Pair::CloudNewer,
        5..=9 => Pair::LocalNewer,
        10 => Pair::DeletedOnCloud,
        _ => Pair::Same,
    }
}

/// Inserts `docs` in batches.
pub async fn insert_all(
    coll: &Collection<Document>,
    docs: &mut Vec<Document>,
    force: bool,
) -> anyhow::Result<()> {
    if docs.len() >= LOAD_BATCH || (force && !docs.is_empty()) {
        coll.insert_many(std::mem::take(docs)).await?;
    }
    Ok(())
}

/// Loads the reconcile data set of `n` documents into `local_db.local_data`,
/// `cloud_db.cloud_data` (two databases of the same name, on the local and the cloud
/// server) and the tombstone collection of that pair in `state_db` (on local).
pub async fn load_reconcile_set(
    local_db: &Database,
    cloud_db: &Database,
    state_db: &Database,
    n: i64,
) -> anyhow::Result<()> {
    let local = local_db.collection::<Document>("local_data");
    let cloud = cloud_db.collection::<Document>("cloud_data");
    let pair_name =
        datasync::mongo::pair_name(local_db.name(), "local_data", cloud_db.name(), "cloud_data");
    let tombs =
        state_db.collection::<Document>(&datasync::mongo::state::tombstones_collection(&pair_name));
    let (mut l, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let at = BASE_MS + i;
        match pair(i) {
            Pair::Same => {
                l.push(document(i, 0, at));
                c.push(document(i, 0, at));
            }
            Pair::CloudNewer => {
                l.push(document(i, 0, at));
                c.push(document(i, 1, at + 60_000));
            }
            Pair::LocalNewer => {
                l.push(document(i, 1, at + 60_000));
                c.push(document(i, 0, at));
            }
            Pair::DeletedOnCloud => {
                l.push(document(i, 0, at));
                t.push(doc! {
                    "_id": i,
                    "deletedAt": DateTime::from_millis(at + 120_000),
                    "origin": "cloud",
                });
            }
        }
        insert_all(&local, &mut l, false).await?;
        insert_all(&cloud, &mut c, false).await?;
        insert_all(&tombs, &mut t, false).await?;
    }
    insert_all(&local, &mut l, true).await?;
    insert_all(&cloud, &mut c, true).await?;
    insert_all(&tombs, &mut t, true).await?;
    Ok(())
}

/// The `updatedAt` of `d` in milliseconds (0 when missing).
pub fn updated_ms(d: &Document) -> i64 {
    match d.get("updatedAt") {
        Some(Bson::DateTime(t)) => t.timestamp_millis(),
        _ => 0,
    }
}
