//! The one change stream per side that every pair shares: a [`StreamSource`] over the
//! pairs' collections on one deployment.

use std::sync::Arc;

use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::store::{CollectionStream, StreamSource};
use crate::mongo::collection::MongoStore;

/// The stream source of `collections` (one per pair, in pair order, all on one
/// deployment): an event's `pair` is its collection's index.
pub fn stream_source(
    collections: Vec<Arc<MongoStore>>,
) -> Result<Arc<dyn StreamSource>, StoreError> {
    match collections.as_slice() {
        [one] => Ok(Arc::new(CollectionStream(one.clone()))),
        _ => Err(StoreError::new(
            StoreErrorKind::Fatal,
            "several pairs: the shared database-level stream is not built yet",
        )),
    }
}
