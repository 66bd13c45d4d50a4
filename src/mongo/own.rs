//! [`OwnSessions`]: how the daemon recognises its own deletes when they come back on a
//! change stream. A delete event carries nothing but the key, so the engine could not
//! tell its own delete from a client's (whose time is the delete's last-writer-wins
//! time) from state alone. Its deletes are therefore made inside multi-document
//! transactions, whose change events carry the session id (`lsid`) and `txnNumber`
//! (MongoDB shows them only for transactions). Every session id used is recorded in
//! the state database *before* its first transaction, so a daemon restarting from a
//! saved checkpoint still recognises the events its previous run caused. Upserts are
//! not marked: their echoes are recognised from state (both sides already agree).

use std::collections::HashSet;
use std::sync::Mutex;

use bson::{doc, Bson, DateTime, Document, RawDocument};
use futures::TryStreamExt;
use mongodb::{Client, ClientSession, Collection};

use crate::core::error::StoreError;
use crate::mongo::error::map_error;

/// Collection of the state database listing the sessions of the daemon's transactions.
pub const OWN_SESSIONS: &str = "own_sessions";

/// The session ids of the daemon's transactions (the driver reuses a small pool of
/// them, so the set stays small).
#[derive(Debug)]
pub struct OwnSessions {
    /// `<state database>.own_sessions`: `{_id: <lsid.id>, since}`.
    coll: Collection<Document>,
    /// Ids recorded in `coll` (loaded at start, grown before each first use).
    known: Mutex<HashSet<Vec<u8>>>,
}

/// The bytes identifying a session id (`lsid.id`, a UUID), if it has one.
fn id_bytes(lsid: &RawDocument) -> Option<Vec<u8>> {
    match lsid.get("id").ok()?? {
        bson::RawBsonRef::Binary(b) => Some(b.bytes.to_vec()),
        _ => None,
    }
}

impl OwnSessions {
    /// The set kept in `state_db` through `client` (nothing is read yet: see
    /// [`OwnSessions::load`]).
    pub fn new(client: &Client, state_db: &str) -> Self {
        OwnSessions {
            coll: client.database(state_db).collection(OWN_SESSIONS),
            known: Mutex::new(HashSet::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the recorded session ids.
    pub async fn load(&self) -> Result<(), StoreError> {
        let err = |e: mongodb::error::Error| map_error(&e, "read own sessions", &[]);
        let docs: Vec<Document> = self
            .coll
            .find(doc! {})
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        let mut known = self.known();
        for d in docs {
            if let Some(Bson::Binary(b)) = d.get("_id") {
                known.insert(b.bytes.clone());
            }
        }
        Ok(())
    }

    /// Record `session`'s id unless it is recorded already: called before the session
    /// runs a transaction of the daemon's.
    pub async fn remember(&self, session: &ClientSession) -> Result<(), StoreError> {
        let Some(Bson::Binary(id)) = session.id().get("id").cloned() else {
            return Err(StoreError::new(
                crate::core::StoreErrorKind::Fatal,
                format!("session id without a binary id: {}", session.id()),
            ));
        };
        if self.known().contains(&id.bytes) {
            return Ok(());
        }
        self.coll
            .update_one(
                doc! {"_id": Bson::Binary(id.clone())},
                doc! {"$setOnInsert": {"since": DateTime::now()}},
            )
            .upsert(true)
            .await
            .map_err(|e| map_error(&e, "record own session", &[]))?;
        self.known().insert(id.bytes);
        Ok(())
    }

    /// Whether a change event's `lsid` (absent outside transactions) is one of the
    /// daemon's sessions.
    pub fn is_own(&self, lsid: Option<&RawDocument>) -> bool {
        lsid.and_then(id_bytes)
            .is_some_and(|id| self.known().contains(&id))
    }
}
