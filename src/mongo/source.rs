//! The one change stream per side that every pair shares: a [`StreamSource`] over the
//! pairs' collections on one deployment. One pair keeps its collection-level stream;
//! several share one database- or cluster-level stream (see [`Watched`]), so 50 pairs
//! cost one stream per side, not 50.

use std::sync::Arc;

use async_trait::async_trait;

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::{ChangeStream, CollectionStream, StreamSource};
use crate::core::types::{ResumeToken, Side};
use crate::mongo::collection::MongoStore;
use crate::mongo::own::OwnSessions;
use crate::mongo::stream::{self, Watched};

/// The stream source of `collections` (one per pair, in pair order, all on one
/// deployment and side): an event's `pair` is its collection's index.
pub fn stream_source(
    collections: Vec<Arc<MongoStore>>,
) -> Result<Arc<dyn StreamSource>, StoreError> {
    match collections.as_slice() {
        [] => Err(StoreError::new(
            StoreErrorKind::Fatal,
            "no collection to watch: a side needs at least one pair",
        )),
        [one] => Ok(Arc::new(CollectionStream(one.clone()))),
        [first, ..] => Ok(Arc::new(SharedStream {
            watched: Watched::shared(
                first.client(),
                collections.iter().map(|c| c.collection().clone()).collect(),
            ),
            side: first.side(),
            own: first.own_sessions().cloned(),
        })),
    }
}

/// Several pairs' collections watched by one change stream.
pub struct SharedStream {
    /// The collections, in pair order, and how they are watched.
    watched: Watched,
    /// Side stamped on events.
    side: Side,
    /// The daemon's transaction sessions: events of their transactions are its own.
    own: Option<Arc<OwnSessions>>,
}

#[async_trait]
impl StreamSource for SharedStream {
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError> {
        let watched = self.watched.clone();
        stream::open_for_core(watched, resume_after.as_ref(), self.side, self.own.clone()).await
    }
}
