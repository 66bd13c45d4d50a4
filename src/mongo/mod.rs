//! MongoDB adapter: implements the core store traits with the official `mongodb` crate.
//! Thin by design: each trait method is one or two MongoDB commands, and the only
//! logic here is translating between core types and MongoDB's (filters, statements,
//! change events, error codes).

pub mod batch;
pub mod collection;
pub mod error;
pub mod oplog;
pub mod own;
pub mod scan_filter;
pub mod sides;
pub mod source;
pub mod state;
pub mod stream;
pub mod uri;

pub use collection::MongoStore;
pub use error::map_error;
pub use sides::{Connected, MongoPair, MongoSides, Namespace};
pub use state::{pair_name, MongoState};
pub use stream::MongoChangeStream;
pub use uri::{connect, redact_text, redact_uri};
