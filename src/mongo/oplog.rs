//! The oplog window of a deployment, read the way `db.getReplicationInfo()` documents it:
//! the first entry of `local.oplog.rs` in natural order is the oldest change the server
//! still keeps. With the cluster time inside a resume token it tells how much history is
//! left behind a saved checkpoint before a restart would need a full reconcile.

use bson::{doc, Document, Timestamp};
use mongodb::error::ErrorKind;
use mongodb::Client;

use crate::mongo::redact_text;

/// Why the oldest oplog entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The server refused or has nothing to show (no access to `local`, not a replica
    /// set member, an empty oplog): asking again will not help.
    #[error("{0}")]
    Unavailable(String),
    /// Network or selection trouble; the next attempt may work.
    #[error("{0}")]
    Transient(String),
}

impl WindowError {
    /// Whether retrying is pointless until the deployment changes.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, WindowError::Unavailable(_))
    }
}

/// The cluster time a resume token stands for. MongoDB's `_data` is a hex key string
/// whose first value is that timestamp: type byte `0x82`, then the seconds and the
/// increment as big-endian 32-bit integers. `None` for any other shape.
pub fn token_time(token: &Document) -> Option<Timestamp> {
    let hex = token.get_str("_data").ok()?;
    if hex.len() < 18 || !hex[..2].eq_ignore_ascii_case("82") {
        return None;
    }
    let time = u32::from_str_radix(hex.get(2..10)?, 16).ok()?;
    let increment = u32::from_str_radix(hex.get(10..18)?, 16).ok()?;
    Some(Timestamp { time, increment })
}

/// The timestamp of the oldest entry in `local.oplog.rs` (`uri` only to remove secrets
/// from error messages).
pub async fn oldest_entry(client: &Client, uri: &str) -> Result<Timestamp, WindowError> {
    let coll = client.database("local").collection::<Document>("oplog.rs");
    let first = coll
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1, "_id": 0})
        .await;
    match first {
        Ok(Some(entry)) => entry.get_timestamp("ts").map_err(|_| {
            WindowError::Unavailable("the first local.oplog.rs entry has no `ts` timestamp".into())
        }),
        Ok(None) => Err(WindowError::Unavailable(
            "local.oplog.rs is empty or absent (the server keeps no readable oplog)".into(),
        )),
        Err(e) => {
            let text = redact_text(&e.kind.to_string(), &[uri]);
            match *e.kind {
                ErrorKind::Command(ref c) => Err(WindowError::Unavailable(format!(
                    "reading local.oplog.rs was refused (code {} {}): {text}",
                    c.code, c.code_name
                ))),
                _ => Err(WindowError::Transient(format!(
                    "reading local.oplog.rs: {text}"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_time_reads_the_leading_timestamp() {
        // A real MongoDB 7.0 token: 0x82, then 0x65A1B2C3 seconds and increment 7.
        let t = doc! {"_data": "8265A1B2C3000000072B022C0100296E5A1004"};
        assert_eq!(
            token_time(&t),
            Some(Timestamp {
                time: 0x65A1_B2C3,
                increment: 7
            })
        );
        assert_eq!(token_time(&doc! {"_data": "8200"}), None);
        assert_eq!(token_time(&doc! {"_data": "11ABCDEF0000000001"}), None);
        assert_eq!(token_time(&doc! {"other": 1}), None);
    }
}
