//! One change stream over several in-memory collections, as MongoDB's database-level
//! stream serves several pairs: each collection's stream is read from its own position,
//! and every item carries the positions of all of them (`{"seqs": {collection: seq}}`),
//! so a stream resumed from any item's token continues each collection exactly after
//! it. A collection the token does not name (a pair added since) is read from now on,
//! as a database-level stream would.

use std::sync::Arc;

use async_trait::async_trait;
use bson::{doc, Bson};

use super::{token, token_seq, MemoryStore};
use crate::core::error::StoreError;
use crate::core::store::{ChangeStream, CollectionStore, StreamSource};
use crate::core::types::{ResumeToken, StreamItem};

/// The source over `stores` (in pair order): an event's `pair` is its store's index.
pub fn merged_streams(stores: Vec<MemoryStore>) -> Arc<dyn StreamSource> {
    Arc::new(Merged { stores })
}

struct Merged {
    stores: Vec<MemoryStore>,
}

fn compound(ids: &[String], seqs: &[u64]) -> ResumeToken {
    let mut d = bson::Document::new();
    for (id, s) in ids.iter().zip(seqs) {
        d.insert(id.clone(), Bson::Int64(*s as i64));
    }
    ResumeToken(doc! { "seqs": d })
}

/// The position of each of `ids` in token `t` (`None`: not in it).
fn parts(t: &ResumeToken, ids: &[String]) -> Option<Vec<Option<u64>>> {
    let seqs = t.0.get_document("seqs").ok()?;
    Some(
        ids.iter()
            .map(|id| seqs.get_i64(id).ok().map(|s| s as u64))
            .collect(),
    )
}

#[async_trait]
impl StreamSource for Merged {
    async fn open_stream(
        &self,
        resume_after: Option<ResumeToken>,
    ) -> Result<Box<dyn ChangeStream>, StoreError> {
        let ids: Vec<String> = self.stores.iter().map(|s| s.collection_id()).collect();
        let given = match &resume_after {
            Some(t) => parts(t, &ids)
                .ok_or_else(|| StoreError::history_lost("unrecognised resume token"))?,
            None => vec![None; ids.len()],
        };
        let seqs: Vec<u64> = self
            .stores
            .iter()
            .zip(given)
            .map(|(s, g)| g.unwrap_or_else(|| token_seq(&s.latest_token()).unwrap_or(0)))
            .collect();
        let mut streams = Vec::with_capacity(ids.len());
        for (s, seq) in self.stores.iter().zip(&seqs) {
            streams.push(s.open_stream(Some(token(*seq))).await?);
        }
        Ok(Box::new(MergedStream { streams, ids, seqs }))
    }
}

struct MergedStream {
    streams: Vec<Box<dyn ChangeStream>>,
    ids: Vec<String>,
    seqs: Vec<u64>,
}

#[async_trait]
impl ChangeStream for MergedStream {
    async fn next(&mut self) -> Result<StreamItem, StoreError> {
        // Each collection's `next` is cancel-safe: the ones not chosen lose nothing.
        let (item, i) = {
            let nexts = self.streams.iter_mut().map(|s| s.next());
            let (item, i, _) = futures::future::select_all(nexts).await;
            (item?, i)
        };
        let seq_of = |t: &ResumeToken| token_seq(t).unwrap_or(0);
        Ok(match item {
            StreamItem::Event(mut ev) => {
                self.seqs[i] = seq_of(&ev.token);
                ev.token = compound(&self.ids, &self.seqs);
                ev.pair = i;
                StreamItem::Event(ev)
            }
            StreamItem::Progress(t) => {
                self.seqs[i] = seq_of(&t);
                StreamItem::Progress(compound(&self.ids, &self.seqs))
            }
        })
    }
}
