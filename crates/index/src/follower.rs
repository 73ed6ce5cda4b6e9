//! The journal follower: keeps one feature's BM25 and vector indexes
//! derived from the journal.
//!
//! A feature writes its rows and logs each change (`WriteTx::record`) in
//! one transaction; the follower then reads the change log from its lower
//! watermark, asks the feature's [`Source`] for the current documents of
//! the changed ids, and applies them:
//! - **the last change of an id wins** within a batch;
//! - **a missing row means delete**, whatever the log says (a row deleted
//!   after its upsert was logged is never resurrected);
//! - **vectors commit before text**: the vector watermark is never behind
//!   BM25's, so after a crash between the two commits the lower (BM25)
//!   watermark replays the batch into both; upserts and deletes are
//!   idempotent, so the replay is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use engram_store::{Entity, Op, Seq, Store};

use crate::IndexError;
use crate::bm25::Bm25;
use crate::document::{Document, Filter, Schema};
use crate::embeddings::{Embed, EmbeddingCache};
use crate::vector::{Point, VectorIndex};

/// Changes applied to the indexes per commit while catching up.
const BATCH: usize = 2048;

/// Where a follower gets the current documents of one kind.
pub trait Source: Send + Sync {
    /// The journal entity whose changes it follows.
    fn entity(&self) -> Entity;
    /// The documents of `ids` as they are now, in any order; an id without
    /// a row (deleted since) is left out.
    fn load(&self, store: &Store, ids: &[u64]) -> Result<Vec<Document>, IndexError>;
}

/// How far each index has applied the journal, and how many documents each
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Documents in the BM25 index.
    pub bm25_documents: u64,
    /// Points in the vector index.
    pub vector_documents: u64,
    /// The lower of the two watermarks: everything up to it is applied.
    pub applied_seq: u64,
}

/// One feature's indexes, kept caught up with the journal.
pub struct Follower {
    store: Store,
    source: Box<dyn Source>,
    cache: EmbeddingCache,
    bm25: Bm25,
    vectors: Box<dyn VectorIndex>,
    // One catch-up at a time; searches do not wait on it.
    applying: Mutex<()>,
}

impl Follower {
    /// Follows `source`'s changes in `store` into `bm25` and `vectors`
    /// (opened with the same schema), embedding with `embed`. Call
    /// [`Follower::catch_up`] to apply what they missed.
    pub fn new(
        store: Store,
        source: Box<dyn Source>,
        embed: Arc<dyn Embed>,
        bm25: Bm25,
        vectors: Box<dyn VectorIndex>,
    ) -> Result<Self, IndexError> {
        if bm25.schema() != vectors.schema() {
            return Err(IndexError::Schema("the BM25 and vector indexes were opened with different schemas".into()));
        }
        let cache = EmbeddingCache::new(store.clone(), embed);
        Ok(Self { store, source, cache, bm25, vectors, applying: Mutex::new(()) })
    }

    /// The fields of the documents it indexes.
    pub fn schema(&self) -> &Schema {
        self.bm25.schema()
    }

    /// The BM25 index.
    pub fn bm25(&self) -> &Bm25 {
        &self.bm25
    }

    /// The vector index.
    pub fn vectors(&self) -> &dyn VectorIndex {
        self.vectors.as_ref()
    }

    /// The embedding cache (and through it, the embedder).
    pub fn embeddings(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// The lower watermark: every change up to it is in both indexes.
    pub fn applied_seq(&self) -> Result<u64, IndexError> {
        Ok(self.bm25.applied_seq()?.min(self.vectors.applied_seq()?))
    }

    /// Document counts and the watermark.
    pub fn progress(&self) -> Result<Progress, IndexError> {
        Ok(Progress {
            bm25_documents: self.bm25.len(),
            vector_documents: self.vectors.len()?,
            applied_seq: self.applied_seq()?,
        })
    }

    /// Applies every change the indexes have not seen; returns how many
    /// journal changes it read. Idempotent; call it on open and after every
    /// write.
    pub fn catch_up(&self) -> Result<u64, IndexError> {
        let _one = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let entity = self.source.entity();
        let mut applied = self.applied_seq()?;
        let mut total = 0;
        loop {
            let changes = self.store.changes_since(Seq(applied as i64), BATCH)?;
            let Some(last) = changes.last() else { break };
            let last = last.seq.0 as u64;
            // The last change of each id decides.
            let mut latest: HashMap<u64, Op> = HashMap::new();
            for change in changes.iter().filter(|c| c.entity == entity) {
                if let Ok(id) = change.key.parse::<u64>() {
                    latest.insert(id, change.op);
                }
            }
            let mut upserts: Vec<u64> = latest.iter().filter(|(_, op)| **op == Op::Upsert).map(|(id, _)| *id).collect();
            upserts.sort_unstable();
            let documents = if upserts.is_empty() { Vec::new() } else { self.source.load(&self.store, &upserts)? };
            let present: HashSet<u64> = documents.iter().map(|d| d.id).collect();
            // Deleted since, or deleted now.
            let deletes: Vec<u64> = latest.keys().copied().filter(|id| !present.contains(id)).collect();
            self.bm25.delete(&deletes);
            self.vectors.delete(&deletes)?;
            if !documents.is_empty() {
                // BM25 first: tantivy indexes on its own thread, which then
                // overlaps with the embeddings and the vector upsert.
                self.bm25.upsert(&documents)?;
                let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
                let vectors = self.cache.vectors(&texts)?;
                let points: Vec<Point> = documents.iter().zip(vectors).map(|(d, v)| Point::new(d, v)).collect();
                self.vectors.upsert(&points)?;
            }
            // Vectors first: if the process dies between the two commits,
            // BM25's older watermark makes the next start replay the batch.
            self.vectors.commit(last)?;
            self.bm25.commit(last)?;
            total += changes.len() as u64;
            applied = last;
        }
        Ok(total)
    }

    /// The ids each index holds within `filter`, up to `limit` (for
    /// consistency checks).
    pub fn ids(&self, filter: &Filter, limit: usize) -> Result<(HashSet<u64>, HashSet<u64>), IndexError> {
        let bm25 = self.bm25.all_ids(filter, limit)?.into_iter().collect();
        let probe = vec![1.0_f32; self.cache.embedder().dimension()];
        let dense = self.vectors.search(&probe, filter, limit)?.into_iter().map(|(id, _)| id).collect();
        Ok((bm25, dense))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use engram_store::StoreOptions;
    use engram_store::rusqlite::params;

    use super::*;
    use crate::document::sample::{self, SCHEMA};
    use crate::vector::EdgeIndex;

    /// A model-free embedder: each text's letters counted into 8 buckets.
    /// Counts its calls' texts, so tests see what the cache saved.
    #[derive(Default)]
    struct Letters {
        embedded: AtomicUsize,
    }

    impl Embed for Letters {
        fn model(&self) -> &str {
            "letters-8"
        }
        fn dimension(&self) -> usize {
            8
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
            self.embedded.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts
                .iter()
                .map(|text| {
                    let mut v = vec![0.01_f32; 8];
                    for b in text.bytes().filter(u8::is_ascii_alphabetic) {
                        v[usize::from(b.to_ascii_lowercase() - b'a') % 8] += 1.0;
                    }
                    v
                })
                .collect())
        }
    }

    /// Notes in a table of the test's own, logged as `Turn` changes.
    struct Notes;

    impl Source for Notes {
        fn entity(&self) -> Entity {
            Entity::Turn
        }
        fn load(&self, store: &Store, ids: &[u64]) -> Result<Vec<Document>, IndexError> {
            Ok(store.read(|conn| {
                let mut stmt = conn.prepare("SELECT collection, path, time, text FROM notes WHERE id = ?1")?;
                let mut documents = Vec::new();
                for id in ids {
                    let mut rows = stmt.query(params![*id as i64])?;
                    if let Some(row) = rows.next()? {
                        let path: String = row.get(1)?;
                        let text: String = row.get(3)?;
                        documents.push(sample::doc(*id, &row.get::<_, String>(0)?, &path, &[], row.get(2)?, &text));
                    }
                }
                Ok(documents)
            })?)
        }
    }

    fn sqlite(source: engram_store::rusqlite::Error) -> IndexError {
        IndexError::Store(engram_store::StoreError::Sqlite { path: "notes".into(), source })
    }

    struct World {
        dir: tempfile::TempDir,
        store: Store,
        embed: Arc<Letters>,
    }

    impl World {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("journal.db"), &StoreOptions::default()).unwrap();
            store
                .write(|tx| {
                    tx.sql()
                        .execute_batch(
                            "CREATE TABLE notes (id INTEGER PRIMARY KEY, collection TEXT, path TEXT, time INTEGER, text TEXT)",
                        )
                        .map_err(sqlite)
                })
                .unwrap();
            Self { dir, store, embed: Arc::new(Letters::default()) }
        }

        fn follower(&self) -> Follower {
            let bm25 = Bm25::open(&self.dir.path().join("bm25"), SCHEMA).unwrap();
            let vectors = EdgeIndex::open(&self.dir.path().join("vectors"), SCHEMA, 8).unwrap();
            Follower::new(self.store.clone(), Box::new(Notes), self.embed.clone(), bm25, Box::new(vectors)).unwrap()
        }

        /// Writes (or, with `None`, deletes) a note and logs it.
        fn note(&self, id: u64, text: Option<&str>) {
            self.store
                .write(|tx| -> Result<(), IndexError> {
                    match text {
                        Some(text) => tx.sql().execute(
                            "INSERT OR REPLACE INTO notes VALUES (?1, 'docs', ?2, ?3, ?4)",
                            params![id as i64, format!("/n/{id}"), id as i64 * 10, text],
                        ),
                        None => tx.sql().execute("DELETE FROM notes WHERE id = ?1", params![id as i64]),
                    }
                    .map_err(sqlite)?;
                    tx.record(Entity::Turn, &id.to_string(), if text.is_some() { Op::Upsert } else { Op::Delete })?;
                    Ok(())
                })
                .unwrap();
        }

        /// Deletes a note's row without logging it.
        fn drop_row(&self, id: u64) {
            self.store
                .write(|tx| tx.sql().execute("DELETE FROM notes WHERE id = ?1", params![id as i64]).map_err(sqlite))
                .unwrap();
        }
    }

    fn sorted(ids: HashSet<u64>) -> Vec<u64> {
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn both_indexes_follow_upserts_deletes_and_the_last_change_of_each_id() {
        let world = World::new();
        let follower = world.follower();
        world.note(1, Some("the daemon remembers everything"));
        world.note(2, Some("cats chase the red dot"));
        world.note(3, Some("written then deleted"));
        world.note(3, None);
        world.note(4, Some("first words"));
        world.note(4, Some("second thoughts about dogs"));
        assert_eq!(follower.catch_up().unwrap(), 6);
        let (bm25, dense) = follower.ids(&Filter::all(), 100).unwrap();
        assert_eq!((sorted(bm25), sorted(dense)), (vec![1, 2, 4], vec![1, 2, 4]));
        // The last version of 4 is the one indexed, in both.
        assert!(follower.bm25().search("first", &Filter::all(), 5).unwrap().is_empty());
        assert_eq!(follower.bm25().search("dogs", &Filter::all(), 5).unwrap()[0].0, 4);
        let query = world.embed.embed(&["cats chase the red dot"]).unwrap().remove(0);
        assert_eq!(follower.vectors().search(&query, &Filter::all(), 1).unwrap()[0].0, 2);
        // Filters reach both indexes.
        let late = Filter::all().range("time", 20..100);
        let (bm25, dense) = follower.ids(&late, 100).unwrap();
        assert_eq!((sorted(bm25), sorted(dense)), (vec![2, 4], vec![2, 4]));
        let progress = follower.progress().unwrap();
        assert_eq!(progress, Progress { bm25_documents: 3, vector_documents: 3, applied_seq: 6 });
        // Nothing new: nothing read.
        assert_eq!(follower.catch_up().unwrap(), 0);
    }

    #[test]
    fn a_missing_row_means_delete_even_when_the_log_says_upsert() {
        let world = World::new();
        let follower = world.follower();
        world.note(1, Some("kept"));
        world.note(2, Some("gone before the follower looked"));
        world.drop_row(2);
        follower.catch_up().unwrap();
        let (bm25, dense) = follower.ids(&Filter::all(), 100).unwrap();
        assert_eq!((sorted(bm25), sorted(dense)), (vec![1], vec![1]));
        // Indexed earlier, then its row vanished and a later change of it was logged.
        world.note(1, Some("kept, then edited"));
        world.drop_row(1);
        follower.catch_up().unwrap();
        let (bm25, dense) = follower.ids(&Filter::all(), 100).unwrap();
        assert!(bm25.is_empty() && dense.is_empty());
    }

    #[test]
    fn a_crash_between_the_commits_replays_from_the_lower_watermark() {
        let world = World::new();
        {
            let follower = world.follower();
            world.note(1, Some("alpha"));
            world.note(2, Some("beta"));
            follower.catch_up().unwrap();
        }
        world.note(2, None);
        world.note(3, Some("gamma"));
        // The crash: the vector index applied and committed the batch, the
        // BM25 index did not.
        {
            let vectors = EdgeIndex::open(&world.dir.path().join("vectors"), SCHEMA, 8).unwrap();
            vectors.delete(&[2]).unwrap();
            let gamma = world.embed.embed(&["gamma"]).unwrap().remove(0);
            vectors.upsert(&[Point::new(&sample::doc(3, "docs", "/n/3", &[], 30, "gamma"), gamma)]).unwrap();
            vectors.commit(4).unwrap();
        }
        let follower = world.follower();
        assert_eq!((follower.bm25().applied_seq().unwrap(), follower.vectors().applied_seq().unwrap()), (2, 4));
        assert_eq!(follower.applied_seq().unwrap(), 2);
        assert_eq!(follower.catch_up().unwrap(), 2);
        let (bm25, dense) = follower.ids(&Filter::all(), 100).unwrap();
        assert_eq!((sorted(bm25), sorted(dense)), (vec![1, 3], vec![1, 3]));
        assert_eq!(follower.progress().unwrap().applied_seq, 4);
    }

    #[test]
    fn the_embedding_cache_embeds_each_text_once_per_model() {
        let world = World::new();
        let follower = world.follower();
        world.note(1, Some("same words"));
        world.note(2, Some("same words"));
        follower.catch_up().unwrap();
        assert_eq!(world.embed.embedded.load(Ordering::SeqCst), 1);
        // A rebuild from scratch reads the cache instead of embedding.
        drop(follower);
        std::fs::remove_dir_all(world.dir.path().join("bm25")).unwrap();
        std::fs::remove_dir_all(world.dir.path().join("vectors")).unwrap();
        let follower = world.follower();
        follower.catch_up().unwrap();
        assert_eq!(world.embed.embedded.load(Ordering::SeqCst), 1);
        assert_eq!(follower.progress().unwrap().vector_documents, 2);
        // A vector of the wrong size is refused before it reaches the table.
        let err = follower.embeddings().put(&[("h".into(), vec![1.0; 3])]).unwrap_err().to_string();
        assert!(err.contains("3-dimensional"), "{err}");
    }

    #[test]
    fn a_cached_vector_of_another_size_is_embedded_again() {
        let world = World::new();
        let follower = world.follower();
        let hash = crate::text_hash("resized words");
        // What a model folder replaced under the same name would have left.
        world
            .store
            .write(|tx| {
                tx.sql()
                    .execute(
                        "INSERT INTO embeddings (hash, model, vector) VALUES (?1, 'letters-8', ?2)",
                        params![hash, vec![0_u8; 12]],
                    )
                    .map_err(sqlite)
            })
            .unwrap();
        assert_eq!(follower.embeddings().contains(&[&hash]).unwrap(), [false]);
        world.note(1, Some("resized words"));
        follower.catch_up().unwrap();
        assert_eq!(world.embed.embedded.load(Ordering::SeqCst), 1);
        assert_eq!(follower.embeddings().get(&[&hash]).unwrap()[&hash].len(), 8);
        assert_eq!(follower.progress().unwrap().vector_documents, 1);
    }

    #[test]
    fn indexes_of_different_schemas_are_refused() {
        let world = World::new();
        let bm25 = Bm25::in_memory(Schema { fields: &[] }).unwrap();
        let vectors = EdgeIndex::open(&world.dir.path().join("v"), SCHEMA, 8).unwrap();
        let refused = Follower::new(world.store.clone(), Box::new(Notes), world.embed.clone(), bm25, Box::new(vectors));
        assert!(refused.is_err());
    }
}
