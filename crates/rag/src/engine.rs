//! The retrieval engine: a journal of documents and chunks, the two
//! indexes derived from it ([`engram_index::Follower`]), and hybrid search.
//! Writes are in [`crate::write`]; the chunks' index schema in
//! [`crate::chunks`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use engram_index::{Bm25, Embed, EmbedFn, Follower, Fusion, IndexError, QdrantIndex, VectorBackend, fuse};
use engram_models::Embedder;
use engram_ops::TenantId;
use engram_store::Store;
use engram_store::rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkOptions;
#[cfg(doc)]
use crate::chunks::chunk_hash;
use crate::chunks::{ChunkSource, INDEX_NAME, SCHEMA};
use crate::error::RagError;
use crate::{ChunkId, Filter};

/// Tunables of ingestion and search.
#[derive(Debug, Clone)]
pub struct RagOptions {
    /// Chunk size and overlap in the embedder's tokens.
    pub chunk: ChunkOptions,
    /// Files larger than this are skipped.
    pub max_file_bytes: u64,
    /// How hybrid search fuses BM25 and dense lists.
    pub fusion: Fusion,
    /// Candidates each list contributes to a hybrid search (and to a
    /// conformal set).
    pub candidates: usize,
    /// Write the journal only and leave the indexes to the next
    /// [`Rag::catch_up`] (or open): one index commit for a bulk load.
    pub defer_indexing: bool,
    /// Where chunk embeddings live.
    pub vectors: VectorBackend,
    /// Share of a stratum's chunks that may change before its certificates
    /// go stale (`approximate` until then, exact only with no change).
    pub stale_share: f64,
    /// `δ` of each certificate's PAC statement: the coverage it states
    /// holds with probability `1 − δ` over its calibration questions.
    pub pac_delta: f64,
}

impl Default for RagOptions {
    fn default() -> Self {
        Self {
            chunk: ChunkOptions::default(),
            max_file_bytes: crate::ingest::MAX_FILE_BYTES,
            fusion: Fusion::default(),
            candidates: 100,
            defer_indexing: false,
            vectors: VectorBackend::Edge,
            stale_share: crate::certify::STALE_SHARE,
            pac_delta: crate::certify::PAC_DELTA,
        }
    }
}

/// Which lists a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl Mode {
    /// Parses `bm25`, `dense` or `hybrid`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "bm25" => Some(Self::Bm25),
            "dense" => Some(Self::Dense),
            "hybrid" => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// A search result: the chunk, where it comes from, and its score.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Hit {
    /// The chunk's id.
    pub chunk_id: ChunkId,
    /// Its score under the search's mode (higher is better).
    pub score: f64,
    /// Its collection.
    pub collection: String,
    /// Its document's path (the citation).
    pub path: String,
    /// Character offsets of the chunk in the document text.
    pub chars: [u64; 2],
    /// Headings above the chunk, outermost first.
    pub headings: Vec<String>,
    /// The chunk's text.
    pub text: String,
}

/// Counts for `engram doctor` and status routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RagStats {
    /// Documents in the journal.
    pub documents: u64,
    /// Chunks in the journal.
    pub chunks: u64,
    /// Chunks in the BM25 index.
    pub bm25_chunks: u64,
    /// Points in the vector store.
    pub vector_chunks: u64,
    /// The journal sequence both indexes have applied.
    pub applied_seq: u64,
}

/// A collection and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// Documents in it.
    pub documents: u64,
    /// Chunks in it.
    pub chunks: u64,
    /// Chunk writes plus removals since it was created: certificates use
    /// the growth of this count to decide they are stale.
    pub changes: u64,
}

/// The retrieval engine over one journal and one index directory.
pub struct Rag {
    pub(crate) store: Store,
    /// The chunks' BM25 and vector indexes, following the journal.
    pub(crate) index: Follower,
    pub(crate) embedder: Arc<Embedder>,
    pub(crate) options: RagOptions,
}

impl Rag {
    /// Opens the indexes under `index_dir` for `store`'s journal and catches
    /// them up with it.
    pub fn open(
        store: Store,
        index_dir: &Path,
        embedder: Arc<Embedder>,
        options: RagOptions,
    ) -> Result<Self, RagError> {
        let vectors = options.vectors.open(index_dir, INDEX_NAME, SCHEMA, &embedder.name, embedder.dim())?;
        let bm25 = Bm25::open(&index_dir.join("bm25"), SCHEMA)?;
        let model = embedder.clone();
        let model: Arc<dyn Embed> = Arc::new(EmbedFn::new(
            embedder.name.clone(),
            embedder.dim(),
            move |texts: &[&str]| Ok(model.embed(texts)?),
        ));
        let index = Follower::new(store.clone(), Box::new(ChunkSource), model, bm25, vectors)?;
        let rag = Self { store, index, embedder, options };
        rag.catch_up()?;
        Ok(rag)
    }

    /// Removes the derived indexes (those under `index_dir` and, with the
    /// server backend, `embedder`'s collection), so the next [`Rag::open`]
    /// rebuilds them from the journal (`engram reindex`).
    pub fn wipe_indexes(index_dir: &Path, embedder: &str, options: &RagOptions) -> Result<(), RagError> {
        for part in ["bm25", "vectors"] {
            let dir = index_dir.join(part);
            match std::fs::remove_dir_all(&dir) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RagError::Io { context: format!("cannot remove {}", dir.display()), source: err });
                }
                _ => {}
            }
        }
        if let VectorBackend::Qdrant(server) = &options.vectors {
            // Also the collection's name from before each index had its own.
            for collection in [server.collection(INDEX_NAME, embedder), server.legacy_collection(embedder)] {
                QdrantIndex::drop_collection(server, &collection).map_err(IndexError::from)?;
            }
        }
        Ok(())
    }

    /// The journal.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// The options in force.
    pub fn options(&self) -> &RagOptions {
        &self.options
    }

    /// Applies every journal change the indexes have not seen. Idempotent;
    /// called on open and after every write.
    pub fn catch_up(&self) -> Result<u64, RagError> {
        Ok(self.index.catch_up()?)
    }

    /// Raw ranked lists: (chunk id, score) best first, up to `k` each.
    pub fn ranked(&self, query: &str, filter: &Filter, mode: Mode, k: usize) -> Result<Vec<(ChunkId, f64)>, RagError> {
        let lists = self.lists(query, filter, mode, k.max(self.options.candidates), false)?;
        let fused = match mode {
            Mode::Bm25 | Mode::Dense => {
                lists.into_iter().next().unwrap_or_default().into_iter().map(|(id, s)| (id, f64::from(s))).collect()
            }
            Mode::Hybrid => {
                let refs: Vec<&[(ChunkId, f32)]> = lists.iter().map(Vec::as_slice).collect();
                fuse(&refs, self.options.fusion)
            }
        };
        Ok(fused.into_iter().take(k).collect())
    }

    /// The BM25 and/or dense candidate lists for `query`. BM25 scores with
    /// the statistics of the chunks within `filter` (so one tenant's or
    /// collection's documents never move another's scores); `exact`
    /// compares the query with every vector within `filter` even where the
    /// vector engine has an approximate index (certified scores).
    pub fn lists(
        &self,
        query: &str,
        filter: &Filter,
        mode: Mode,
        k: usize,
        exact: bool,
    ) -> Result<Vec<Vec<(ChunkId, f32)>>, RagError> {
        let filter = filter.to_index();
        let mut lists = Vec::with_capacity(2);
        if mode != Mode::Dense {
            lists.push(chunk_ids(self.index.bm25().search_within(query, &filter, k)?));
        }
        if mode != Mode::Bm25 {
            let vector = self.embedder.embed(&[query])?.pop().unwrap_or_default();
            let vectors = self.index.vectors();
            let hits =
                if exact { vectors.search_exact(&vector, &filter, k) } else { vectors.search(&vector, &filter, k) };
            lists.push(chunk_ids(hits.map_err(IndexError::from)?));
        }
        Ok(lists)
    }

    /// The `k` best chunks for `query` within `filter`, with their text and
    /// citations.
    pub fn search(&self, query: &str, filter: &Filter, mode: Mode, k: usize) -> Result<Vec<Hit>, RagError> {
        let ranked = self.ranked(query, filter, mode, k)?;
        self.hydrate(&ranked)
    }

    /// Turns (chunk id, score) pairs into hits, in order; ids no longer in
    /// the journal are dropped.
    pub fn hydrate(&self, ranked: &[(ChunkId, f64)]) -> Result<Vec<Hit>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.collection, d.path, c.char_start, c.char_end, c.headings, c.text \
                 FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1",
            )?;
            let mut hits = Vec::with_capacity(ranked.len());
            for &(id, score) in ranked {
                let hit = stmt
                    .query_row(params![id.row()], |row| {
                        let headings: String = row.get(4)?;
                        Ok(Hit {
                            chunk_id: id,
                            score,
                            collection: row.get(0)?,
                            path: row.get(1)?,
                            chars: [row.get::<_, i64>(2)? as u64, row.get::<_, i64>(3)? as u64],
                            headings: serde_json::from_str(&headings).unwrap_or_default(),
                            text: row.get(5)?,
                        })
                    })
                    .optional()?;
                hits.extend(hit);
            }
            Ok(hits)
        })?)
    }

    /// Document path of each chunk id (for document-level evaluation).
    pub fn chunk_paths(&self, ids: &[ChunkId]) -> Result<HashMap<ChunkId, String>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT d.path FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1")?;
            let mut out = HashMap::with_capacity(ids.len());
            for id in ids {
                if let Some(path) = stmt.query_row(params![id.row()], |row| row.get(0)).optional()? {
                    out.insert(*id, path);
                }
            }
            Ok(out)
        })?)
    }

    /// Every collection with its sizes.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>, RagError> {
        self.collections_of(None)
    }

    /// The collections `tenant` has documents in, with its own document
    /// and chunk counts (`changes` stays the whole collection's: it is
    /// what certificates follow); every collection when `tenant` is `None`.
    pub fn collections_of(&self, tenant: Option<&TenantId>) -> Result<Vec<CollectionInfo>, RagError> {
        // `?1 IS NULL` keeps every document: the operator's view.
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.name, c.chunks_added + c.chunks_removed, \
                   (SELECT count(*) FROM documents d WHERE d.collection = c.name AND (?1 IS NULL OR d.tenant = ?1)), \
                   (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document \
                      WHERE d.collection = c.name AND (?1 IS NULL OR d.tenant = ?1)) \
                 FROM collections c \
                 WHERE ?1 IS NULL OR EXISTS (SELECT 1 FROM documents d WHERE d.collection = c.name AND d.tenant = ?1) \
                 ORDER BY c.name",
            )?;
            let rows = stmt.query_map([tenant.map(TenantId::as_str)], |row| {
                Ok(CollectionInfo {
                    name: row.get(0)?,
                    changes: row.get::<_, i64>(1)? as u64,
                    documents: row.get::<_, i64>(2)? as u64,
                    chunks: row.get::<_, i64>(3)? as u64,
                })
            })?;
            rows.collect()
        })?)
    }

    /// One collection's sizes, or an error naming the known ones.
    pub fn collection(&self, name: &str) -> Result<CollectionInfo, RagError> {
        let all = self.collections()?;
        let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
        all.into_iter().find(|c| c.name == name).ok_or_else(|| {
            RagError::Invalid(if names.is_empty() {
                format!("there is no collection {name:?}: nothing has been ingested yet (engram ingest PATH --collection {name})")
            } else {
                format!("there is no collection {name:?}; the collections are: {}", names.join(", "))
            })
        })
    }

    /// Journal and index counts.
    pub fn stats(&self) -> Result<RagStats, RagError> {
        let (documents, chunks) = self.store.read(|conn| {
            let documents: i64 = conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?;
            let chunks: i64 = conn.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
            Ok((documents as u64, chunks as u64))
        })?;
        let progress = self.index.progress()?;
        Ok(RagStats {
            documents,
            chunks,
            bm25_chunks: progress.bm25_documents,
            vector_chunks: progress.vector_documents,
            applied_seq: progress.applied_seq,
        })
    }

    /// Stores embeddings computed elsewhere, by [`chunk_hash`], for the
    /// current embedder: ingesting a chunk with that hash then embeds
    /// nothing (bulk loads with precomputed vectors, benchmarks).
    pub fn put_embeddings(&self, items: &[(String, Vec<f32>)]) -> Result<(), RagError> {
        self.index.embeddings().put(items).map_err(|err| match err {
            IndexError::Embed(message) => RagError::Invalid(message),
            other => other.into(),
        })
    }

    /// Chunk ids per document path of a collection (for calibration data
    /// and tests).
    pub fn chunk_ids(&self, collection: &str) -> Result<Vec<(ChunkId, String)>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, d.path FROM chunks c JOIN documents d ON d.id = c.document \
                 WHERE d.collection = ?1 ORDER BY c.id",
            )?;
            let rows =
                stmt.query_map(params![collection], |row| Ok((ChunkId(row.get::<_, i64>(0)? as u64), row.get(1)?)))?;
            rows.collect()
        })?)
    }

    /// The ids in each index (for consistency checks).
    pub fn index_ids(&self, filter: &Filter) -> Result<(HashSet<ChunkId>, HashSet<ChunkId>), RagError> {
        let n = self.stats()?.chunks as usize + 16;
        let (bm25, dense) = self.index.ids(&filter.to_index(), n)?;
        let chunks = |ids: HashSet<u64>| ids.into_iter().map(ChunkId).collect();
        Ok((chunks(bm25), chunks(dense)))
    }
}

/// An engine's (document id, score) list as chunk ids.
fn chunk_ids(hits: Vec<(u64, f32)>) -> Vec<(ChunkId, f32)> {
    hits.into_iter().map(|(id, score)| (ChunkId(id), score)).collect()
}
