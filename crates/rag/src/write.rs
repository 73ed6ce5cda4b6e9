//! Ingestion: documents into the journal (chunked, embedded, logged), then
//! the indexes caught up.
//!
//! Every write goes to the journal first: documents, chunks and their
//! embeddings in one transaction, each chunk change logged with a sequence
//! number. The indexes follow the log ([`engram_index::Follower`]).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use engram_index::text_hash;
use engram_store::rusqlite::{self, OptionalExtension, params};
use engram_store::{Entity, Op, StoreError, WriteTx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use engram_ops::{CollectionName, TenantId};

use crate::chunk::{Format, chunk};
use crate::chunks::indexed_text;
use crate::engine::Rag;
use crate::error::RagError;
use crate::ingest::{Skipped, discover, load};

/// Documents chunked, embedded and journaled per transaction.
const INGEST_BATCH: usize = 32;

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

/// What an ingest of listed documents does to the target's documents that
/// it does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    /// They stay (adding to a collection).
    Keep,
    /// They are deleted: the target holds exactly the listed documents.
    Delete,
}

/// Where ingested documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The collection (created on first use).
    pub collection: CollectionName,
    /// The tenant, if any.
    pub tenant: Option<TenantId>,
}

impl Target {
    /// The collection named `name`, without a tenant; an invalid name is
    /// refused.
    pub fn collection(name: &str) -> Result<Self, RagError> {
        let collection = CollectionName::new(name).map_err(|err| RagError::Invalid(err.to_string()))?;
        Ok(Self { collection, tenant: None })
    }

    /// The tenant as the journal stores it ("" for none).
    fn tenant_key(&self) -> &str {
        self.tenant.as_ref().map_or("", TenantId::as_str)
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
    /// The caller stopped the ingest: the batches reported before it are
    /// written (each in its own transaction), the rest are not, and no
    /// vanished file was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
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
        self.cancelled |= other.cancelled;
    }
}

/// A progress callback for callers that never stop an ingest.
pub fn no_progress(_: &Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// A file left out of an ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SkippedFile {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<Skipped> for SkippedFile {
    fn from(skipped: Skipped) -> Self {
        Self { path: skipped.path.display().to_string(), reason: skipped.reason }
    }
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

impl Rag {
    /// Ingests files and folders into `target`: new and changed files are
    /// chunked, embedded and journaled; unchanged ones skipped; files that
    /// were ingested from under these roots before and are gone now are
    /// deleted from the journal and every index. Unreadable, binary and
    /// oversized files are skipped with a reason. When `progress` answers
    /// `Break`, the ingest stops after the batch it reported (see
    /// [`IngestReport::cancelled`]).
    pub fn ingest_paths(
        &self,
        target: &Target,
        roots: &[PathBuf],
        tags: &[String],
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<IngestReport, RagError> {
        let roots: Vec<PathBuf> =
            roots.iter().map(|root| std::path::absolute(root).unwrap_or_else(|_| root.clone())).collect();
        let started = Instant::now();
        let found = discover(&roots, self.options.max_file_bytes);
        let mut skipped: Vec<SkippedFile> = found.skipped.into_iter().map(SkippedFile::from).collect();
        let mut present: HashSet<String> = skipped.iter().map(|s| s.path.clone()).collect();
        let mut report = IngestReport {
            cancelled: progress(&Progress::Started { total: found.sources.len() }).is_break(),
            ..IngestReport::default()
        };
        let total = found.sources.len();
        for (index, batch) in found.sources.chunks(INGEST_BATCH).enumerate() {
            if report.cancelled {
                break;
            }
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
            let done = (index * INGEST_BATCH + batch.len()).min(total);
            report.cancelled = progress(&Progress::Documents { done, total }).is_break();
        }
        // Vanished: under one of the roots, and neither found nor skipped
        // (a stopped ingest never looked at the rest, so deletes nothing).
        let known = if report.cancelled { Vec::new() } else { self.document_paths(target)? };
        let vanished: Vec<String> = known
            .into_iter()
            .filter(|path| !present.contains(path))
            .filter(|path| roots.iter().any(|root| Path::new(path).starts_with(root)))
            .collect();
        self.delete_documents(target, &vanished, &mut report)?;
        self.index_now()?;
        report.collection = target.collection.to_string();
        report.skipped = skipped;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Ingests documents given as text (an API call, a BEIR corpus);
    /// `unlisted` says what happens to the target's other documents;
    /// `progress` stops it as for [`Rag::ingest_paths`].
    pub fn ingest_documents(
        &self,
        target: &Target,
        documents: Vec<NewDocument>,
        unlisted: Unlisted,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<IngestReport, RagError> {
        let started = Instant::now();
        let total = documents.len();
        let present: HashSet<String> = documents.iter().map(|d| d.path.clone()).collect();
        let mut report =
            IngestReport { cancelled: progress(&Progress::Started { total }).is_break(), ..IngestReport::default() };
        let mut done = 0;
        let mut documents = documents.into_iter().peekable();
        while documents.peek().is_some() && !report.cancelled {
            let batch: Vec<NewDocument> = documents.by_ref().take(INGEST_BATCH).collect();
            done += batch.len();
            self.write_documents(target, batch, &mut report)?;
            report.cancelled = progress(&Progress::Documents { done, total }).is_break();
        }
        if unlisted == Unlisted::Delete && !report.cancelled {
            let gone: Vec<String> =
                self.document_paths(target)?.into_iter().filter(|path| !present.contains(path)).collect();
            self.delete_documents(target, &gone, &mut report)?;
        }
        self.index_now()?;
        report.collection = target.collection.to_string();
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
            let rows = stmt.query_map(params![target.collection.as_str(), target.tenant_key()], |row| row.get(0))?;
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
        // Which documents changed?
        let existing: Vec<Option<(i64, String)>> = self.store.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, hash FROM documents WHERE collection = ?1 AND tenant = ?2 AND path = ?3")?;
            documents
                .iter()
                .map(|doc| {
                    stmt.query_row(params![target.collection.as_str(), target.tenant_key(), doc.path], |row| {
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
                            let hash = text_hash(&embedded);
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
        let cache = self.index.embeddings();
        let stored = cache.contains(&wanted.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>())?;
        let missing: Vec<&(String, String)> =
            wanted.iter().zip(stored).filter(|(_, stored)| !stored).map(|(wanted, _)| wanted).collect();
        let texts: Vec<&str> = missing.iter().map(|(_, t)| t.as_str()).collect();
        let vectors = if texts.is_empty() { Vec::new() } else { cache.embed(&texts)? };
        report.embedded += vectors.len();

        let time = now_secs();
        self.store.write(|tx| -> Result<(), RagError> {
            let sql = |e| RagError::sql_error(&self.store, e);
            ensure_collection(tx, target.collection.as_str()).map_err(sql)?;
            for ((hash, _), vector) in missing.iter().zip(&vectors) {
                cache.put_in(tx, hash, vector)?;
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
                                    target.collection.as_str(),
                                    target.tenant_key(),
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
            count_changes(tx, target.collection.as_str(), written, removed).map_err(sql)?;
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
                        params![target.collection.as_str(), target.tenant_key(), path],
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
            count_changes(tx, target.collection.as_str(), 0, removed).map_err(sql)?;
            report.chunks_removed += removed;
            Ok(())
        })
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
