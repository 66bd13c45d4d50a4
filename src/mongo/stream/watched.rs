//! What one change stream watches: one collection (the collection-level stream a
//! one-pair side always used), or the collections of several pairs on one deployment,
//! watched by ONE database-level stream (all in one database) or cluster-level stream
//! (several databases) whose first stage keeps only their namespaces. MongoDB invalidates
//! neither on the drop or rename of one collection (manual: "invalidate Event"), so that
//! event must reach the stream, which ends itself as a collection-level stream would.

use bson::{doc, Bson, Document, RawDocument};
use mongodb::action::Watch;
use mongodb::{Client, Collection};

/// How the driver stream is opened.
#[derive(Clone, Debug)]
enum Target {
    /// `Collection::watch` on the only collection.
    Collection,
    /// `Database::watch` on the database of every collection.
    Database(mongodb::Database),
    /// `Client::watch` (`allChangesForCluster`).
    Cluster(Client),
}

/// The collections one change stream reports on, in pair order.
#[derive(Clone, Debug)]
pub struct Watched {
    /// How the stream is opened.
    target: Target,
    /// The collections: an event's pair is its namespace's index here.
    collections: Vec<Collection<Document>>,
}

impl Watched {
    /// The collection-level stream of `coll` (every event is pair 0's).
    pub fn collection(coll: Collection<Document>) -> Self {
        Watched {
            target: Target::Collection,
            collections: vec![coll],
        }
    }

    /// One stream over `collections` (at least two, distinct, all reached through
    /// `client`): database-level when they share a database, else cluster-level.
    pub fn shared(client: &Client, collections: Vec<Collection<Document>>) -> Self {
        let first_db = collections.first().map(|c| c.namespace().db);
        let one_db = collections
            .iter()
            .all(|c| Some(c.namespace().db) == first_db);
        let target = match first_db {
            Some(db) if one_db => Target::Database(client.database(&db)),
            _ => Target::Cluster(client.clone()),
        };
        Watched {
            target,
            collections,
        }
    }

    /// The watched collection of `pair`.
    pub fn collection_of(&self, pair: usize) -> Option<&Collection<Document>> {
        self.collections.get(pair)
    }

    /// What is watched, for messages: `db.coll`, or the namespaces in braces.
    pub fn describe(&self) -> String {
        match (&self.target, self.collections.as_slice()) {
            (Target::Collection, [one]) => one.namespace().to_string(),
            _ => {
                let names: Vec<String> = self
                    .collections
                    .iter()
                    .map(|c| c.namespace().to_string())
                    .collect();
                format!("{{{}}}", names.join(", "))
            }
        }
    }

    /// The driver's change stream builder for this target.
    pub fn watch(&self) -> Watch<'_> {
        match &self.target {
            Target::Collection => self.collections[0].watch(),
            Target::Database(db) => db.watch(),
            Target::Cluster(client) => client.watch(),
        }
    }

    /// The first stage of a shared stream: the events of the watched namespaces (and
    /// renames onto one of them), plus what ends a database (`dropDatabase` of one of
    /// theirs, `invalidate`). `None` for a collection-level stream, which sees only its
    /// collection anyway.
    pub fn ns_match(&self) -> Option<Document> {
        if let Target::Collection = self.target {
            return None;
        }
        let mut by_db: Vec<(String, Vec<Bson>)> = Vec::new();
        for c in &self.collections {
            let ns = c.namespace();
            match by_db.iter_mut().find(|(db, _)| *db == ns.db) {
                Some((_, colls)) => colls.push(Bson::String(ns.coll)),
                None => by_db.push((ns.db, vec![Bson::String(ns.coll)])),
            }
        }
        let mut any: Vec<Bson> = Vec::new();
        for (db, colls) in &by_db {
            for field in ["ns", "to"] {
                any.push(Bson::Document(doc! {
                    format!("{field}.db"): db.as_str(),
                    format!("{field}.coll"): {"$in": colls.clone()},
                }));
            }
        }
        let dbs: Vec<Bson> = by_db.into_iter().map(|(db, _)| Bson::String(db)).collect();
        any.push(Bson::Document(
            doc! {"operationType": "dropDatabase", "ns.db": {"$in": dbs}},
        ));
        any.push(Bson::Document(doc! {"operationType": "invalidate"}));
        Some(doc! {"$match": {"$or": any}})
    }

    /// The pair a raw event belongs to: the index of its namespace (`ns`), always 0 on
    /// a collection-level stream. `None` for an event of another namespace (which the
    /// first stage keeps out) or without one (`invalidate`, `dropDatabase`).
    pub fn pair_of(&self, event: &RawDocument) -> Option<usize> {
        if let Target::Collection = self.target {
            return Some(0);
        }
        let ns = event.get_document("ns").ok()?;
        let (db, coll) = (ns.get_str("db").ok()?, ns.get_str("coll").ok()?);
        self.collections.iter().position(|c| {
            let n = c.namespace();
            n.db == db && n.coll == coll
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collections_of_one_database_share_a_database_stream() {
        // Building a client does not connect.
        let client = Client::with_uri_str("mongodb://127.0.0.1:1/")
            .await
            .unwrap();
        let c = |db: &str, coll: &str| client.database(db).collection::<Document>(coll);
        let one_db = Watched::shared(&client, vec![c("app", "a"), c("app", "b")]);
        assert!(matches!(one_db.target, Target::Database(ref d) if d.name() == "app"));
        assert_eq!(
            one_db.ns_match().unwrap(),
            doc! {"$match": {"$or": [
                {"ns.db": "app", "ns.coll": {"$in": ["a", "b"]}},
                {"to.db": "app", "to.coll": {"$in": ["a", "b"]}},
                {"operationType": "dropDatabase", "ns.db": {"$in": ["app"]}},
                {"operationType": "invalidate"},
            ]}}
        );
        let two_dbs = Watched::shared(&client, vec![c("app", "a"), c("other", "a")]);
        assert!(matches!(two_dbs.target, Target::Cluster(_)));
        assert_eq!(two_dbs.describe(), "{app.a, other.a}");
        let event = |db: &str, coll: &str| {
            bson::RawDocumentBuf::from_document(&doc! {"ns": {"db": db, "coll": coll}}).unwrap()
        };
        assert_eq!(two_dbs.pair_of(&event("other", "a")), Some(1));
        assert_eq!(two_dbs.pair_of(&event("other", "b")), None);
        let single = Watched::collection(c("app", "a"));
        assert!(single.ns_match().is_none());
        assert_eq!(single.pair_of(&event("x", "y")), Some(0));
        assert_eq!(single.describe(), "app.a");
    }
}
