//! The retrieval engine: ingestion into the journal, the two derived indexes
//! kept caught up with it, and hybrid search.
//!
//! Every write goes to the journal first (documents, chunks and their
//! embeddings, in one transaction, each chunk change logged with a
//! sequence number); the indexes then apply the logged changes and record
//! how far they got. After a crash, [`Rag::open`] replays what they missed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use engram_models::Embedder;
use engram_store::rusqlite::{self, OptionalExtension, params};
use engram_store::{Entity, Op, Seq, Store, StoreError, WriteTx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Filter;
use crate::bm25::{Bm25, Bm25Error, IndexedChunk};
use crate::chunk::{ChunkOptions, Format, chunk};
use crate::fusion::{Fusion, fuse};
use crate::ingest::{Skipped, discover, load};
use crate::qdrant_server::{QdrantOptions, QdrantStore};
use crate::vector::{EdgeStore, VectorError, VectorPoint, VectorStore};

/// Changes applied to the indexes per commit while catching up.
const CATCH_UP_BATCH: usize = 2048;
/// Documents chunked, embedded and journaled per transaction.
const INGEST_BATCH: usize = 32;

/// A retrieval failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The BM25 index failed.
    #[error(transparent)]
    Bm25(#[from] Bm25Error),
    /// The vector store failed.
    #[error(transparent)]
    Vector(#[from] VectorError),
    /// The embedder failed.
    #[error("embedding: {0}")]
    Embed(#[from] engram_models::ModelError),
    /// The request itself is wrong (unknown collection, bad name...).
    #[error("{0}")]
    Invalid(String),
    /// What the request names (a certificate) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A file operation on the index directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl RagError {
    /// What kind of failure this is, for every surface.
    pub fn kind(&self) -> engram_ops::ErrorKind {
        use engram_ops::ErrorKind;
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Store(StoreError::Corrupt { .. } | StoreError::NotADatabase { .. }) => ErrorKind::Corrupt,
            Self::Store(_) | Self::Bm25(_) | Self::Vector(_) | Self::Embed(_) | Self::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn sql_error(store: &Store, source: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite { path: store.path().to_path_buf(), source })
    }
}

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
}

/// The vector store [`Rag::open`] uses.
#[derive(Debug, Clone, Default)]
pub enum VectorBackend {
    /// qdrant-edge under the index directory.
    #[default]
    Edge,
    /// A collection on a Qdrant server or cluster.
    Qdrant(QdrantOptions),
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
        }
    }
}

/// A document handed to [`Rag::ingest_documents`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    /// Its identity within the collection: a file path, or any id.
    pub path: String,
    /// Its text.
    pub text: String,
    /// How the text is structured.
    pub format: Format,
    /// Content hash: an unchanged hash means nothing to do.
    pub hash: String,
    /// Size of the original in bytes.
    pub bytes: u64,
    /// Tags searches can filter on.
    pub tags: Vec<String>,
}

impl NewDocument {
    /// A document from text, hashed here.
    pub fn from_text(path: impl Into<String>, text: impl Into<String>, format: Format) -> Self {
        let text = text.into();
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        Self { path: path.into(), bytes: text.len() as u64, text, format, hash, tags: Vec::new() }
    }
}

/// Where ingested documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The collection (created on first use).
    pub collection: String,
    /// The tenant ("" for none).
    pub tenant: String,
}

impl Target {
    /// A collection without a tenant.
    pub fn collection(name: &str) -> Self {
        Self { collection: name.to_owned(), tenant: String::new() }
    }
}

/// What ingestion is doing, for progress bars and API events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// Sources found: this many files (or documents) to look at.
    Started {
        /// Documents to look at.
        total: usize,
    },
    /// This many documents are done (written or found unchanged).
    Documents {
        /// Documents done so far.
        done: usize,
        /// Documents in all.
        total: usize,
    },
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct IngestReport {
    /// The collection.
    pub collection: String,
    /// New documents.
    pub added: usize,
    /// Documents whose content changed.
    pub updated: usize,
    /// Documents with the same content hash as before.
    pub unchanged: usize,
    /// Documents gone from the sources, deleted from the journal and every index.
    pub deleted: usize,
    /// Chunks written.
    pub chunks_written: usize,
    /// Chunks removed.
    pub chunks_removed: usize,
    /// Texts embedded (chunks whose embedding was not already stored).
    pub embedded: usize,
    /// Files left out, with reasons.
    pub skipped: Vec<SkippedFile>,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl IngestReport {
    /// Adds another ingest's counts (and skips) into this one.
    pub fn merge(&mut self, other: IngestReport) {
        self.collection = other.collection;
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.chunks_written += other.chunks_written;
        self.chunks_removed += other.chunks_removed;
        self.embedded += other.embedded;
        self.skipped.extend(other.skipped);
        self.seconds += other.seconds;
    }
}

/// A file left out of an ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SkippedFile {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<RagError> for engram_ops::Error {
    fn from(err: RagError) -> Self {
        Self::new(err.kind(), err.to_string())
    }
}

impl From<Skipped> for SkippedFile {
    fn from(skipped: Skipped) -> Self {
        Self { path: skipped.path.display().to_string(), reason: skipped.reason }
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
    pub chunk_id: u64,
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
    store: Store,
    bm25: Bm25,
    vectors: Box<dyn VectorStore>,
    embedder: Arc<Embedder>,
    options: RagOptions,
    // One catch-up at a time; searches do not wait on it.
    applying: Mutex<()>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks a target's names (see [`engram_ops::CollectionName`] and
/// [`engram_ops::TenantId`]); the tenant may be empty (none).
fn check_target(target: &Target) -> Result<(), RagError> {
    let invalid = |err: engram_ops::InvalidId| RagError::Invalid(err.to_string());
    engram_ops::CollectionName::new(target.collection.as_str()).map_err(invalid)?;
    if !target.tenant.is_empty() {
        engram_ops::TenantId::new(target.tenant.as_str()).map_err(invalid)?;
    }
    Ok(())
}

/// The text a chunk is indexed and embedded as: its headings, then its text.
fn indexed_text(headings: &[String], text: &str) -> String {
    if headings.is_empty() { text.to_owned() } else { format!("{}\n\n{text}", headings.join(" > ")) }
}

/// The content hash of a chunk as embedded (headings and text): the key of
/// its stored embedding.
pub fn chunk_hash(headings: &[String], text: &str) -> String {
    embedded_hash(&indexed_text(headings, text))
}

fn embedded_hash(embedded: &str) -> String {
    format!("{:x}", Sha256::digest(embedded.as_bytes()))
}

fn vector_to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn blob_to_vector(blob: &[u8]) -> Vec<f32> {
    blob.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect()
}

/// A chunk prepared for the journal.
struct Prepared {
    ordinal: usize,
    chars: [usize; 2],
    headings: String,
    tokens: usize,
    hash: String,
    text: String,
    /// Headings and text, as embedded (the hash is of this).
    embedded: String,
}

/// A chunk row as the indexes need it.
struct ChunkRow {
    id: u64,
    collection: String,
    tenant: String,
    path: String,
    tags: Vec<String>,
    time: i64,
    headings: Vec<String>,
    hash: String,
    text: String,
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
        let vectors: Box<dyn VectorStore> = match &options.vectors {
            VectorBackend::Edge => {
                Box::new(EdgeStore::open(&index_dir.join("vectors").join(&embedder.name), embedder.dim())?)
            }
            VectorBackend::Qdrant(server) => {
                Box::new(QdrantStore::open(server, &server.collection(&embedder.name), embedder.dim())?)
            }
        };
        Self::with_vector_store(store, index_dir, embedder, vectors, options)
    }

    /// Like [`Rag::open`], with a vector store of the caller's choosing.
    pub fn with_vector_store(
        store: Store,
        index_dir: &Path,
        embedder: Arc<Embedder>,
        vectors: Box<dyn VectorStore>,
        options: RagOptions,
    ) -> Result<Self, RagError> {
        let bm25 = Bm25::open(&index_dir.join("bm25"))?;
        let rag = Self { store, bm25, vectors, embedder, options, applying: Mutex::new(()) };
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
            QdrantStore::drop_collection(server, &server.collection(embedder))?;
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

    /// Ingests files and folders into `target`: new and changed files are
    /// chunked, embedded and journaled; unchanged ones skipped; files that
    /// were ingested from under these roots before and are gone now are
    /// deleted from the journal and every index. Unreadable, binary and
    /// oversized files are skipped with a reason.
    pub fn ingest_paths(
        &self,
        target: &Target,
        roots: &[PathBuf],
        tags: &[String],
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<IngestReport, RagError> {
        let roots: Vec<PathBuf> =
            roots.iter().map(|root| std::path::absolute(root).unwrap_or_else(|_| root.clone())).collect();
        let started = Instant::now();
        let found = discover(&roots, self.options.max_file_bytes);
        let mut skipped: Vec<SkippedFile> = found.skipped.into_iter().map(SkippedFile::from).collect();
        let mut present: HashSet<String> = skipped.iter().map(|s| s.path.clone()).collect();
        progress(&Progress::Started { total: found.sources.len() });
        let mut report = IngestReport::default();
        let total = found.sources.len();
        for (index, batch) in found.sources.chunks(INGEST_BATCH).enumerate() {
            let mut documents = Vec::with_capacity(batch.len());
            for source in batch {
                let path = source.path.display().to_string();
                present.insert(path.clone());
                match load(source, self.options.max_file_bytes) {
                    Ok(loaded) => documents.push(NewDocument {
                        path,
                        text: loaded.text,
                        format: source.format,
                        hash: loaded.hash,
                        bytes: loaded.bytes,
                        tags: tags.to_vec(),
                    }),
                    Err(reason) => skipped.push(SkippedFile { path, reason }),
                }
            }
            self.write_documents(target, documents, &mut report)?;
            progress(&Progress::Documents { done: (index * INGEST_BATCH + batch.len()).min(total), total });
        }
        // Vanished: under one of the roots, and neither found nor skipped.
        let known = self.document_paths(target)?;
        let vanished: Vec<String> = known
            .into_iter()
            .filter(|path| !present.contains(path))
            .filter(|path| roots.iter().any(|root| Path::new(path).starts_with(root)))
            .collect();
        self.delete_documents(target, &vanished, &mut report)?;
        self.index_now()?;
        report.collection = target.collection.clone();
        report.skipped = skipped;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Ingests documents given as text (an API call, a BEIR corpus). With
    /// `replace_all`, documents of the collection not in `documents` are
    /// deleted, making the collection exactly this set.
    pub fn ingest_documents(
        &self,
        target: &Target,
        documents: Vec<NewDocument>,
        replace_all: bool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<IngestReport, RagError> {
        let started = Instant::now();
        let total = documents.len();
        progress(&Progress::Started { total });
        let present: HashSet<String> = documents.iter().map(|d| d.path.clone()).collect();
        let mut report = IngestReport::default();
        let mut done = 0;
        let mut documents = documents.into_iter().peekable();
        while documents.peek().is_some() {
            let batch: Vec<NewDocument> = documents.by_ref().take(INGEST_BATCH).collect();
            done += batch.len();
            self.write_documents(target, batch, &mut report)?;
            progress(&Progress::Documents { done, total });
        }
        if replace_all {
            let gone: Vec<String> =
                self.document_paths(target)?.into_iter().filter(|path| !present.contains(path)).collect();
            self.delete_documents(target, &gone, &mut report)?;
        }
        self.index_now()?;
        report.collection = target.collection.clone();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Deletes documents by path from `target`, from the journal and every
    /// index; returns how many existed.
    pub fn remove_documents(&self, target: &Target, paths: &[String]) -> Result<usize, RagError> {
        let mut report = IngestReport::default();
        self.delete_documents(target, paths, &mut report)?;
        self.index_now()?;
        Ok(report.deleted)
    }

    fn index_now(&self) -> Result<(), RagError> {
        if !self.options.defer_indexing {
            self.catch_up()?;
        }
        Ok(())
    }

    fn document_paths(&self, target: &Target) -> Result<Vec<String>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT path FROM documents WHERE collection = ?1 AND tenant = ?2")?;
            let rows = stmt.query_map(params![target.collection, target.tenant], |row| row.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()
        })?)
    }

    /// Chunks, embeds and journals one batch of documents.
    fn write_documents(
        &self,
        target: &Target,
        documents: Vec<NewDocument>,
        report: &mut IngestReport,
    ) -> Result<(), RagError> {
        check_target(target)?;
        // Which documents changed?
        let existing: Vec<Option<(i64, String)>> = self.store.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, hash FROM documents WHERE collection = ?1 AND tenant = ?2 AND path = ?3")?;
            documents
                .iter()
                .map(|doc| {
                    stmt.query_row(params![target.collection, target.tenant, doc.path], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
                })
                .collect()
        })?;
        let mut work = Vec::new();
        for (document, existing) in documents.into_iter().zip(existing) {
            match existing {
                Some((_, hash)) if hash == document.hash => report.unchanged += 1,
                existing => {
                    let counter = |text: &str| self.embedder.count_tokens(text).unwrap_or(text.len() / 4 + 1);
                    let chunks = chunk(&document.text, document.format, self.options.chunk, &counter);
                    let prepared: Vec<Prepared> = chunks
                        .into_iter()
                        .map(|c| {
                            let headings = serde_json::to_string(&c.headings).unwrap_or_else(|_| "[]".into());
                            let embedded = indexed_text(&c.headings, &c.text);
                            let hash = embedded_hash(&embedded);
                            Prepared {
                                ordinal: c.ordinal,
                                chars: [c.chars.start, c.chars.end],
                                headings,
                                tokens: c.tokens,
                                hash,
                                text: c.text,
                                embedded,
                            }
                        })
                        .collect();
                    work.push((document, existing.map(|(id, _)| id), prepared));
                }
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        // Embed what is not stored yet, outside the write transaction.
        let mut wanted: Vec<(String, String)> = Vec::new(); // hash, text
        let mut seen = HashSet::new();
        for (_, _, chunks) in &work {
            for c in chunks {
                if seen.insert(c.hash.clone()) {
                    wanted.push((c.hash.clone(), c.embedded.clone()));
                }
            }
        }
        let model = self.embedder.name.clone();
        let stored = self.stored_embeddings(wanted.iter().map(|(h, _)| h.as_str()))?;
        let missing: Vec<&(String, String)> = wanted.iter().filter(|(h, _)| !stored.contains(h)).collect();
        let texts: Vec<&str> = missing.iter().map(|(_, t)| t.as_str()).collect();
        let vectors = if texts.is_empty() { Vec::new() } else { self.embedder.embed(&texts)? };
        report.embedded += vectors.len();

        let time = now_secs();
        self.store.write(|tx| -> Result<(), RagError> {
            let sql = |e| RagError::sql_error(&self.store, e);
            ensure_collection(tx, &target.collection).map_err(sql)?;
            for ((hash, _), vector) in missing.iter().zip(&vectors) {
                tx.sql()
                    .prepare_cached("INSERT OR REPLACE INTO embeddings (hash, model, vector) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![hash, model, vector_to_blob(vector)]))
                    .map_err(sql)?;
            }
            let mut removed = 0;
            let mut written = 0;
            for (document, existing, chunks) in &work {
                let tags = serde_json::to_string(&document.tags).unwrap_or_else(|_| "[]".into());
                let doc_id = match existing {
                    Some(id) => {
                        removed += delete_chunks_of(tx, *id)?;
                        tx.sql()
                            .execute(
                                "UPDATE documents SET format = ?2, hash = ?3, bytes = ?4, tags = ?5, ingested_at = ?6 WHERE id = ?1",
                                params![id, document.format.as_str(), document.hash, document.bytes as i64, tags, time],
                            )
                            .map_err(sql)?;
                        report.updated += 1;
                        *id
                    }
                    None => {
                        tx.sql()
                            .execute(
                                "INSERT INTO documents (collection, tenant, path, format, hash, bytes, tags, ingested_at) \
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                params![
                                    target.collection,
                                    target.tenant,
                                    document.path,
                                    document.format.as_str(),
                                    document.hash,
                                    document.bytes as i64,
                                    tags,
                                    time
                                ],
                            )
                            .map_err(sql)?;
                        report.added += 1;
                        tx.sql().last_insert_rowid()
                    }
                };
                tx.record(Entity::Document, &doc_id.to_string(), Op::Upsert)?;
                for c in chunks {
                    tx.sql()
                        .prepare_cached(
                            "INSERT INTO chunks (document, ordinal, char_start, char_end, headings, tokens, hash, text) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                doc_id,
                                c.ordinal as i64,
                                c.chars[0] as i64,
                                c.chars[1] as i64,
                                c.headings,
                                c.tokens as i64,
                                c.hash,
                                c.text
                            ])
                        })
                        .map_err(sql)?;
                    let chunk_id = tx.sql().last_insert_rowid();
                    tx.record(Entity::Chunk, &chunk_id.to_string(), Op::Upsert)?;
                    written += 1;
                }
            }
            count_changes(tx, &target.collection, written, removed).map_err(sql)?;
            report.chunks_written += written;
            report.chunks_removed += removed;
            Ok(())
        })
    }

    fn delete_documents(&self, target: &Target, paths: &[String], report: &mut IngestReport) -> Result<(), RagError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.store.write(|tx| -> Result<(), RagError> {
            let sql = |e| RagError::sql_error(&self.store, e);
            let mut removed = 0;
            for path in paths {
                let id: Option<i64> = tx
                    .sql()
                    .query_row(
                        "SELECT id FROM documents WHERE collection = ?1 AND tenant = ?2 AND path = ?3",
                        params![target.collection, target.tenant, path],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                let Some(id) = id else { continue };
                removed += delete_chunks_of(tx, id)?;
                tx.sql().execute("DELETE FROM documents WHERE id = ?1", params![id]).map_err(sql)?;
                tx.record(Entity::Document, &id.to_string(), Op::Delete)?;
                report.deleted += 1;
            }
            count_changes(tx, &target.collection, 0, removed).map_err(sql)?;
            report.chunks_removed += removed;
            Ok(())
        })
    }

    fn stored_embeddings<'a>(&self, hashes: impl Iterator<Item = &'a str>) -> Result<HashSet<String>, RagError> {
        let model = &self.embedder.name;
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM embeddings WHERE hash = ?1 AND model = ?2")?;
            let mut found = HashSet::new();
            for hash in hashes {
                if stmt.exists(params![hash, model])? {
                    found.insert(hash.to_owned());
                }
            }
            Ok(found)
        })?)
    }

    /// Applies every journal change the indexes have not seen. Idempotent;
    /// called on open and after every write.
    pub fn catch_up(&self) -> Result<u64, RagError> {
        let _one = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let mut applied = self.bm25.applied_seq()?.min(self.vectors.applied_seq()?);
        let mut total = 0;
        loop {
            let changes = self.store.changes_since(Seq(applied as i64), CATCH_UP_BATCH)?;
            let Some(last) = changes.last() else { break };
            let last = last.seq.0 as u64;
            // The last change of each chunk decides.
            let mut latest: HashMap<u64, Op> = HashMap::new();
            for change in &changes {
                if change.entity == Entity::Chunk
                    && let Ok(id) = change.key.parse::<u64>()
                {
                    latest.insert(id, change.op);
                }
            }
            let mut upserts: Vec<u64> = latest.iter().filter(|(_, op)| **op == Op::Upsert).map(|(id, _)| *id).collect();
            upserts.sort_unstable();
            let rows = self.chunk_rows(&upserts)?;
            let present: HashSet<u64> = rows.iter().map(|r| r.id).collect();
            // Deleted since, or deleted now.
            let deletes: Vec<u64> = latest.keys().copied().filter(|id| !present.contains(id)).collect();
            self.bm25.delete(&deletes);
            self.vectors.delete(&deletes)?;
            if !rows.is_empty() {
                let vectors = self.vectors_for(&rows)?;
                let tenant = |r: &ChunkRow| (!r.tenant.is_empty()).then(|| r.tenant.clone());
                let indexed: Vec<IndexedChunk> = rows
                    .iter()
                    .map(|r| IndexedChunk {
                        id: r.id,
                        collection: r.collection.clone(),
                        tenant: tenant(r),
                        path: r.path.clone(),
                        tags: r.tags.clone(),
                        time: r.time,
                        text: indexed_text(&r.headings, &r.text),
                    })
                    .collect();
                self.bm25.upsert(&indexed)?;
                let points: Vec<VectorPoint> = rows
                    .iter()
                    .zip(vectors)
                    .map(|(r, vector)| VectorPoint {
                        id: r.id,
                        vector,
                        collection: r.collection.clone(),
                        tenant: tenant(r),
                        path: r.path.clone(),
                        tags: r.tags.clone(),
                        time: r.time,
                    })
                    .collect();
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

    fn chunk_rows(&self, ids: &[u64]) -> Result<Vec<ChunkRow>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, d.collection, d.tenant, d.path, d.tags, d.ingested_at, c.headings, c.hash, c.text \
                 FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1",
            )?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                let row = stmt
                    .query_row(params![*id as i64], |row| {
                        let tags: String = row.get(4)?;
                        let headings: String = row.get(6)?;
                        Ok(ChunkRow {
                            id: row.get::<_, i64>(0)? as u64,
                            collection: row.get(1)?,
                            tenant: row.get(2)?,
                            path: row.get(3)?,
                            tags: serde_json::from_str(&tags).unwrap_or_default(),
                            time: row.get(5)?,
                            headings: serde_json::from_str(&headings).unwrap_or_default(),
                            hash: row.get(7)?,
                            text: row.get(8)?,
                        })
                    })
                    .optional()?;
                rows.extend(row);
            }
            Ok(rows)
        })?)
    }

    /// Stored embeddings for `rows`, embedding (and storing) any that are
    /// missing, e.g. after the embedder changed.
    fn vectors_for(&self, rows: &[ChunkRow]) -> Result<Vec<Vec<f32>>, RagError> {
        let model = self.embedder.name.clone();
        let mut found: HashMap<String, Vec<f32>> = self.store.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT vector FROM embeddings WHERE hash = ?1 AND model = ?2")?;
            let mut found = HashMap::new();
            for row in rows {
                if let Some(blob) = stmt.query_row(params![row.hash, model], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                    found.insert(row.hash.clone(), blob_to_vector(&blob));
                }
            }
            Ok(found)
        })?;
        let missing: Vec<&ChunkRow> = rows.iter().filter(|r| !found.contains_key(&r.hash)).collect();
        if !missing.is_empty() {
            let texts: Vec<String> = missing.iter().map(|r| indexed_text(&r.headings, &r.text)).collect();
            let vectors = self.embedder.embed(&texts)?;
            self.store.write(|tx| -> Result<(), RagError> {
                for (row, vector) in missing.iter().zip(&vectors) {
                    tx.sql()
                        .execute(
                            "INSERT OR REPLACE INTO embeddings (hash, model, vector) VALUES (?1, ?2, ?3)",
                            params![row.hash, model, vector_to_blob(vector)],
                        )
                        .map_err(|e| RagError::sql_error(&self.store, e))?;
                }
                Ok(())
            })?;
            for (row, vector) in missing.into_iter().zip(vectors) {
                found.insert(row.hash.clone(), vector);
            }
        }
        Ok(rows.iter().map(|r| found.get(&r.hash).cloned().unwrap_or_default()).collect())
    }

    /// Raw ranked lists: (chunk id, score) best first, up to `k` each.
    pub fn ranked(&self, query: &str, filter: &Filter, mode: Mode, k: usize) -> Result<Vec<(u64, f64)>, RagError> {
        let lists = self.lists(query, filter, mode, k.max(self.options.candidates))?;
        let fused = match mode {
            Mode::Bm25 | Mode::Dense => {
                lists.into_iter().next().unwrap_or_default().into_iter().map(|(id, s)| (id, f64::from(s))).collect()
            }
            Mode::Hybrid => {
                let refs: Vec<&[(u64, f32)]> = lists.iter().map(Vec::as_slice).collect();
                fuse(&refs, self.options.fusion)
            }
        };
        Ok(fused.into_iter().take(k).collect())
    }

    /// The BM25 and/or dense candidate lists for `query`.
    pub fn lists(&self, query: &str, filter: &Filter, mode: Mode, k: usize) -> Result<Vec<Vec<(u64, f32)>>, RagError> {
        let mut lists = Vec::with_capacity(2);
        if mode != Mode::Dense {
            lists.push(self.bm25.search(query, filter, k)?);
        }
        if mode != Mode::Bm25 {
            let vector = self.embedder.embed(&[query])?.pop().unwrap_or_default();
            lists.push(self.vectors.search(&vector, filter, k)?);
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
    pub fn hydrate(&self, ranked: &[(u64, f64)]) -> Result<Vec<Hit>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.collection, d.path, c.char_start, c.char_end, c.headings, c.text \
                 FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1",
            )?;
            let mut hits = Vec::with_capacity(ranked.len());
            for &(id, score) in ranked {
                let hit = stmt
                    .query_row(params![id as i64], |row| {
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
    pub fn chunk_paths(&self, ids: &[u64]) -> Result<HashMap<u64, String>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT d.path FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1")?;
            let mut out = HashMap::with_capacity(ids.len());
            for id in ids {
                if let Some(path) = stmt.query_row(params![*id as i64], |row| row.get(0)).optional()? {
                    out.insert(*id, path);
                }
            }
            Ok(out)
        })?)
    }

    /// Collections with their sizes.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.name, c.chunks_added + c.chunks_removed, \
                   (SELECT count(*) FROM documents d WHERE d.collection = c.name), \
                   (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document WHERE d.collection = c.name) \
                 FROM collections c ORDER BY c.name",
            )?;
            let rows = stmt.query_map([], |row| {
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
        Ok(RagStats {
            documents,
            chunks,
            bm25_chunks: self.bm25.len(),
            vector_chunks: self.vectors.len()?,
            applied_seq: self.bm25.applied_seq()?.min(self.vectors.applied_seq()?),
        })
    }

    /// Stores embeddings computed elsewhere, by [`chunk_hash`], for the
    /// current embedder: ingesting a chunk with that hash then embeds
    /// nothing (bulk loads with precomputed vectors, benchmarks).
    pub fn put_embeddings(&self, items: &[(String, Vec<f32>)]) -> Result<(), RagError> {
        let model = self.embedder.name.clone();
        self.store.write(|tx| -> Result<(), RagError> {
            for (hash, vector) in items {
                if vector.len() != self.embedder.dim() {
                    return Err(RagError::Invalid(format!(
                        "a {}-dimensional vector for a {}-dimensional embedder",
                        vector.len(),
                        self.embedder.dim()
                    )));
                }
                tx.sql()
                    .prepare_cached("INSERT OR REPLACE INTO embeddings (hash, model, vector) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![hash, model, vector_to_blob(vector)]))
                    .map_err(|e| RagError::sql_error(&self.store, e))?;
            }
            Ok(())
        })
    }

    /// Chunk ids per document path of a collection (for calibration data
    /// and tests).
    pub fn chunk_ids(&self, collection: &str) -> Result<Vec<(u64, String)>, RagError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, d.path FROM chunks c JOIN documents d ON d.id = c.document \
                 WHERE d.collection = ?1 ORDER BY c.id",
            )?;
            let rows = stmt.query_map(params![collection], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))?;
            rows.collect()
        })?)
    }

    /// The ids in each index (for consistency checks).
    pub fn index_ids(&self, filter: &Filter) -> Result<(HashSet<u64>, HashSet<u64>), RagError> {
        let n = self.stats()?.chunks as usize + 16;
        let bm25: HashSet<u64> = self.bm25.all_ids(filter, n)?.into_iter().collect();
        let vector = vec![1.0_f32; self.embedder.dim()];
        let dense: HashSet<u64> = self.vectors.search(&vector, filter, n)?.into_iter().map(|(id, _)| id).collect();
        Ok((bm25, dense))
    }
}

fn ensure_collection(tx: &WriteTx<'_>, name: &str) -> rusqlite::Result<()> {
    tx.sql()
        .execute("INSERT OR IGNORE INTO collections (name, created_at_ms) VALUES (?1, ?2)", params![name, now_ms()])
        .map(drop)
}

fn count_changes(tx: &WriteTx<'_>, collection: &str, added: usize, removed: usize) -> rusqlite::Result<()> {
    tx.sql()
        .execute(
            "UPDATE collections SET chunks_added = chunks_added + ?2, chunks_removed = chunks_removed + ?3 WHERE name = ?1",
            params![collection, added as i64, removed as i64],
        )
        .map(drop)
}

/// Deletes a document's chunks, logging each; returns how many.
fn delete_chunks_of(tx: &mut WriteTx<'_>, document: i64) -> Result<usize, RagError> {
    let path = tx.sql().path().map(PathBuf::from).unwrap_or_default();
    let sql = |source| RagError::Store(StoreError::Sqlite { path: path.clone(), source });
    let ids: Vec<i64> = {
        let mut stmt = tx.sql().prepare_cached("SELECT id FROM chunks WHERE document = ?1").map_err(sql)?;
        let rows = stmt.query_map(params![document], |row| row.get(0)).map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    tx.sql().execute("DELETE FROM chunks WHERE document = ?1", params![document]).map_err(sql)?;
    for id in &ids {
        tx.record(Entity::Chunk, &id.to_string(), Op::Delete)?;
    }
    Ok(ids.len())
}
