//! [`MongoSides`]: everything the daemon needs to build the engine's [`Stores`] from the
//! configured URIs and namespaces, including the one rule the adapter enforces on the
//! config: the synced collections must not be the state collections.

use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;

use crate::core::error::StoreError;
use crate::core::types::Side;
use crate::core::Stores;
use crate::mongo::collection::MongoStore;
use crate::mongo::own::{OwnSessions, OWN_SESSIONS};
use crate::mongo::state::{pair_name, tombstones_collection, MongoState, CHECKPOINTS};
use crate::mongo::uri::connect;

/// Where one side's collection lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideConfig {
    /// Connection string (may contain a password; never printed unredacted).
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
}

/// The two sides, the state database and the sync settings the stores need.
#[derive(Debug, Clone)]
pub struct MongoSides {
    /// The local collection; the state database lives on this deployment.
    pub local: SideConfig,
    /// The cloud collection.
    pub cloud: SideConfig,
    /// Database for checkpoints and tombstones, on the local deployment.
    pub state_database: String,
    /// Last-modified field of the synced documents.
    pub updated_at_field: String,
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
    /// The stores for the engine.
    pub stores: Stores,
}

impl MongoSides {
    /// Name of the synced pair (tombstone collection suffix, checkpoint ids).
    pub fn pair_name(&self) -> String {
        pair_name(
            &self.local.database,
            &self.local.collection,
            &self.cloud.database,
            &self.cloud.collection,
        )
    }

    /// Refuses a config that would sync the daemon's own state collections, or a
    /// collection with itself. The message names the config keys involved.
    pub fn validate(&self) -> Result<(), String> {
        let tombstones = tombstones_collection(&self.pair_name());
        for (side, cfg) in [(Side::Local, &self.local), (Side::Cloud, &self.cloud)] {
            let is_state_coll = cfg.collection == CHECKPOINTS
                || cfg.collection == OWN_SESSIONS
                || cfg.collection == tombstones
                || cfg
                    .collection
                    .starts_with(crate::mongo::state::TOMBSTONES_PREFIX)
                || cfg
                    .collection
                    .starts_with(crate::mongo::state::SYNCED_PREFIX);
            if cfg.database == self.state_database && is_state_coll {
                return Err(format!(
                    "{side}.database = {:?} with {side}.collection = {:?} is the daemon's own \
                     state collection in state.database = {:?}; choose another state.database \
                     or collection",
                    cfg.database, cfg.collection, self.state_database
                ));
            }
        }
        if self.local == self.cloud {
            return Err(format!(
                "local and cloud are the same collection ({}.{} at the same local.uri and \
                 cloud.uri); nothing to sync",
                self.local.database, self.local.collection
            ));
        }
        Ok(())
    }

    /// Validates, connects (one client when both URIs are identical), creates the
    /// tombstone TTL index, and returns the stores.
    pub async fn connect(&self) -> Result<Connected, StoreError> {
        self.validate()
            .map_err(|m| StoreError::new(crate::core::StoreErrorKind::Fatal, m))?;
        let local_client = connect(&self.local.uri, &self.app_name).await?;
        let cloud_client = if self.cloud.uri == self.local.uri {
            local_client.clone()
        } else {
            connect(&self.cloud.uri, &self.app_name).await?
        };
        // The sessions of the daemon's transactions, in the state database.
        let own = Arc::new(OwnSessions::new(&local_client, &self.state_database));
        own.load().await?;
        let store = |client: &Client, cfg: &SideConfig, side: Side| {
            MongoStore::new(
                client.clone(),
                &cfg.database,
                &cfg.collection,
                &self.updated_at_field,
            )
            .with_side(side)
            .with_own_sessions(own.clone())
        };
        let state = MongoState::new(
            local_client.clone(),
            &self.state_database,
            &self.pair_name(),
        );
        state.ensure_indexes(self.tombstone_ttl).await?;
        let stores = Stores {
            local: Arc::new(store(&local_client, &self.local, Side::Local)),
            cloud: Arc::new(store(&cloud_client, &self.cloud, Side::Cloud)),
            state: Arc::new(state),
        };
        Ok(Connected {
            local_client,
            cloud_client,
            stores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(local_coll: &str, cloud_coll: &str, state_db: &str) -> MongoSides {
        let side = |coll: &str| SideConfig {
            uri: "mongodb://127.0.0.1:1/".into(),
            database: "app".into(),
            collection: coll.into(),
        };
        MongoSides {
            local: side(local_coll),
            cloud: side(cloud_coll),
            state_database: state_db.into(),
            updated_at_field: "updatedAt".into(),
            tombstone_ttl: Duration::from_secs(60),
            app_name: "test".into(),
        }
    }

    #[test]
    fn ordinary_config_is_accepted() {
        assert_eq!(
            sides("local_data", "cloud_data", "datasync_state").validate(),
            Ok(())
        );
        // The state database may be a synced database as long as names do not collide.
        assert_eq!(sides("local_data", "cloud_data", "app").validate(), Ok(()));
    }

    #[test]
    fn syncing_the_checkpoints_collection_is_refused() {
        let err = sides("checkpoints", "cloud_data", "app")
            .validate()
            .unwrap_err();
        assert!(err.contains("local.collection"), "{err}");
        assert!(err.contains("state.database"), "{err}");
    }

    #[test]
    fn syncing_a_tombstones_collection_is_refused() {
        let err = sides("local_data", "tombstones_x", "app")
            .validate()
            .unwrap_err();
        assert!(err.contains("cloud.collection"), "{err}");
    }

    #[test]
    fn syncing_a_sync_record_collection_is_refused() {
        let err = sides("synced_x", "cloud_data", "app")
            .validate()
            .unwrap_err();
        assert!(err.contains("local.collection"), "{err}");
    }

    #[test]
    fn syncing_a_collection_with_itself_is_refused() {
        assert!(sides("same", "same", "state").validate().is_err());
    }
}
