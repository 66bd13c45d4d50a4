//! [`MongoSides`]: everything the daemon needs to build the engine's [`Stores`] from the
//! configured URIs and namespaces, including the one rule the adapter enforces on the
//! config: the synced collections must not be the state collections.

use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;

use crate::core::error::StoreError;
use crate::core::types::Side;
use crate::core::{Stores, Streams};
use crate::mongo::collection::MongoStore;
use crate::mongo::own::{OwnSessions, OWN_SESSIONS};
use crate::mongo::state::{pair_name, MongoState, CHECKPOINTS};
use crate::mongo::uri::connect_sized;

/// A collection: database and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.database, self.collection)
    }
}

/// One synced pair of collections, as the adapter needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoPair {
    /// The pair's name (status, logs, `ctl sync --pair`).
    pub name: String,
    /// The local collection.
    pub local: Namespace,
    /// The cloud collection.
    pub cloud: Namespace,
    /// Last-modified field of the synced documents.
    pub updated_at_field: String,
    /// Only documents matching this query are synced (both sides); `None`: all.
    pub filter: Option<bson::Document>,
}

impl MongoPair {
    /// Name of the pair's state (tombstone and sync-record collection suffix,
    /// checkpoint ids): both namespaces, so renaming a pair keeps its state.
    pub fn state_name(&self) -> String {
        pair_name(
            &self.local.database,
            &self.local.collection,
            &self.cloud.database,
            &self.cloud.collection,
        )
    }
}

/// The two deployments, the synced pairs, the state database and the settings the
/// stores need.
#[derive(Debug, Clone)]
pub struct MongoSides {
    /// Connection string of the local deployment (may contain a password; never
    /// printed unredacted). The state database lives there.
    pub local_uri: String,
    /// Connection string of the cloud deployment.
    pub cloud_uri: String,
    /// The synced pairs (at least one).
    pub pairs: Vec<MongoPair>,
    /// Database for checkpoints and tombstones, on the local deployment.
    pub state_database: String,
    /// How long tombstones are kept (TTL index).
    pub tombstone_ttl: Duration,
    /// Application name sent to the servers.
    pub app_name: String,
}

/// Clients and stores built by [`MongoSides::connect`].
#[derive(Clone)]
pub struct Connected {
    /// Client of the local deployment (also used for state).
    pub local_client: Client,
    /// Client of the cloud deployment; the same client when both URIs are equal.
    pub cloud_client: Client,
    /// The stores of each pair, in the order of [`MongoSides::pairs`].
    pub pairs: Vec<Stores>,
    /// The one change stream per side all pairs share.
    pub streams: Streams,
}

/// Whether `ns` would be one of the daemon's own state collections.
fn is_state_collection(ns: &Namespace, state_database: &str) -> bool {
    let c = ns.collection.as_str();
    ns.database == state_database
        && (c == CHECKPOINTS
            || c == OWN_SESSIONS
            || c.starts_with(crate::mongo::state::TOMBSTONES_PREFIX)
            || c.starts_with(crate::mongo::state::SYNCED_PREFIX))
}

impl MongoSides {
    /// Refuses a config that would sync the daemon's own state collections, a
    /// collection with itself, or one collection in two pairs. The message names the
    /// pair and the config key involved.
    pub fn validate(&self) -> Result<(), String> {
        if self.pairs.is_empty() {
            return Err("no collection pair to sync".into());
        }
        let mut seen: [std::collections::HashMap<&Namespace, &str>; 2] = Default::default();
        for p in &self.pairs {
            for (i, (side, ns)) in [(Side::Local, &p.local), (Side::Cloud, &p.cloud)]
                .into_iter()
                .enumerate()
            {
                if i == 0 && is_state_collection(ns, &self.state_database) {
                    return Err(format!(
                        "pair {:?}: {side} collection {ns} is the daemon's own state \
                         collection in state.database = {:?}; choose another \
                         state.database or collection",
                        p.name, self.state_database
                    ));
                }
                if i == 1
                    && self.cloud_uri == self.local_uri
                    && is_state_collection(ns, &self.state_database)
                {
                    return Err(format!(
                        "pair {:?}: {side} collection {ns} is the daemon's own state \
                         collection in state.database = {:?}; choose another \
                         state.database or collection",
                        p.name, self.state_database
                    ));
                }
                if let Some(other) = seen[i].insert(ns, &p.name) {
                    return Err(format!(
                        "{side} collection {ns} is in two pairs ({other:?} and {:?}); a \
                         collection can be synced by one pair only",
                        p.name
                    ));
                }
            }
            if self.local_uri == self.cloud_uri && p.local == p.cloud {
                return Err(format!(
                    "pair {:?}: local and cloud are the same collection ({}) at the same \
                     local.uri and cloud.uri; nothing to sync",
                    p.name, p.local
                ));
            }
        }
        Ok(())
    }

    /// Validates, connects (one client when both URIs are identical), creates the
    /// tombstone TTL indexes, and returns the stores.
    pub async fn connect(&self) -> Result<Connected, StoreError> {
        self.validate()
            .map_err(|m| StoreError::new(crate::core::StoreErrorKind::Fatal, m))?;
        // Each pair's worker reads both sides, the records and the tombstones at once.
        let pool = Some(4 * self.pairs.len() as u32 + 6);
        let local_client = connect_sized(&self.local_uri, &self.app_name, pool).await?;
        let cloud_client = if self.cloud_uri == self.local_uri {
            local_client.clone()
        } else {
            connect_sized(&self.cloud_uri, &self.app_name, pool).await?
        };
        // The sessions of the daemon's transactions, in the state database.
        let own = Arc::new(OwnSessions::new(&local_client, &self.state_database));
        own.load().await?;
        let mut pairs = Vec::new();
        let mut collections: [Vec<Arc<MongoStore>>; 2] = Default::default();
        for p in &self.pairs {
            let store = |client: &Client, ns: &Namespace, side: Side| {
                let s = MongoStore::new(
                    client.clone(),
                    &ns.database,
                    &ns.collection,
                    &p.updated_at_field,
                )
                .with_side(side)
                .with_own_sessions(own.clone());
                Arc::new(match &p.filter {
                    Some(f) => s.with_filter(f.clone()),
                    None => s,
                })
            };
            let local = store(&local_client, &p.local, Side::Local);
            let cloud = store(&cloud_client, &p.cloud, Side::Cloud);
            collections[0].push(local.clone());
            collections[1].push(cloud.clone());
            let state =
                MongoState::new(local_client.clone(), &self.state_database, &p.state_name())
                    .with_filter(p.filter.clone());
            state.ensure_indexes(self.tombstone_ttl).await?;
            pairs.push(Stores {
                local,
                cloud,
                state: Arc::new(state),
            });
        }
        let [local, cloud] = collections;
        let streams = Streams {
            local: crate::mongo::source::stream_source(local)?,
            cloud: crate::mongo::source::stream_source(cloud)?,
        };
        Ok(Connected {
            local_client,
            cloud_client,
            pairs,
            streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(db: &str, coll: &str) -> Namespace {
        Namespace {
            database: db.into(),
            collection: coll.into(),
        }
    }

    fn pair(name: &str, local: &str, cloud: &str) -> MongoPair {
        MongoPair {
            name: name.into(),
            local: ns("app", local),
            cloud: ns("app", cloud),
            updated_at_field: "updatedAt".into(),
            filter: None,
        }
    }

    fn sides(pairs: Vec<MongoPair>, state_db: &str) -> MongoSides {
        MongoSides {
            local_uri: "mongodb://127.0.0.1:1/".into(),
            cloud_uri: "mongodb://127.0.0.1:1/".into(),
            pairs,
            state_database: state_db.into(),
            tombstone_ttl: Duration::from_secs(60),
            app_name: "test".into(),
        }
    }

    #[test]
    fn ordinary_config_is_accepted() {
        let one = vec![pair("p", "local_data", "cloud_data")];
        assert_eq!(sides(one.clone(), "datasync_state").validate(), Ok(()));
        // The state database may be a synced database as long as names do not collide.
        assert_eq!(sides(one, "app").validate(), Ok(()));
    }

    #[test]
    fn syncing_a_state_collection_is_refused() {
        for coll in ["checkpoints", "tombstones_x", "synced_x", "own_sessions"] {
            let err = sides(vec![pair("p", coll, "cloud_data")], "app")
                .validate()
                .unwrap_err();
            assert!(err.contains("state.database"), "{err}");
            assert!(err.contains("\"p\""), "{err}");
        }
    }

    #[test]
    fn syncing_a_collection_with_itself_is_refused() {
        assert!(sides(vec![pair("p", "same", "same")], "state")
            .validate()
            .is_err());
    }

    #[test]
    fn one_collection_in_two_pairs_is_refused() {
        let err = sides(
            vec![
                pair("a", "orders", "orders_a"),
                pair("b", "items", "orders_a"),
            ],
            "state",
        )
        .validate()
        .unwrap_err();
        assert!(err.contains("two pairs"), "{err}");
        assert!(err.contains("app.orders_a"), "{err}");
    }
}
