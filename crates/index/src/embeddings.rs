//! The embedding cache: vectors in the journal's `embeddings` table, keyed
//! by a hash of the text embedded and the model's name, so re-ingesting,
//! reindexing or indexing the same text in another feature never embeds it
//! twice with the same model.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Store, StoreError, WriteTx};
use sha2::{Digest, Sha256};

use crate::IndexError;

/// What turns texts into vectors. The index crate knows no model; a
/// feature passes its embedder through this.
pub trait Embed: Send + Sync {
    /// The model's name: part of every cache key.
    fn model(&self) -> &str;
    /// The length of its vectors.
    fn dimension(&self) -> usize;
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>>;
}

/// An embedder given by its name, its dimension and a function: how a
/// feature hands its model to the engines without this crate knowing it.
pub struct EmbedFn<F> {
    model: String,
    dimension: usize,
    embed: F,
}

impl<F> EmbedFn<F>
where
    F: Fn(&[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
{
    /// Model `model`, whose vectors have `dimension` numbers, embedding with `embed`.
    pub fn new(model: impl Into<String>, dimension: usize, embed: F) -> Self {
        Self { model: model.into(), dimension, embed }
    }
}

impl<F> Embed for EmbedFn<F>
where
    F: Fn(&[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
{
    fn model(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        (self.embed)(texts)
    }
}

/// The cache key of `text`: its SHA-256, in hex.
pub fn text_hash(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_blob(blob: &[u8]) -> Vec<f32> {
    blob.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect()
}

/// One model's cached embeddings in a journal.
#[derive(Clone)]
pub struct EmbeddingCache {
    store: Store,
    embed: Arc<dyn Embed>,
}

impl EmbeddingCache {
    /// The cache of `embed`'s vectors in `store`.
    pub fn new(store: Store, embed: Arc<dyn Embed>) -> Self {
        Self { store, embed }
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embed> {
        &self.embed
    }

    /// The cached vectors among `hashes`. A stored vector of another size
    /// (a model folder replaced under the same name) counts as missing, so
    /// it is embedded again and overwritten.
    pub fn get(&self, hashes: &[&str]) -> Result<HashMap<String, Vec<f32>>, IndexError> {
        let model = self.embed.model();
        let bytes = self.embed.dimension() * 4;
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT vector FROM embeddings WHERE hash = ?1 AND model = ?2")?;
            let mut found = HashMap::new();
            for hash in hashes {
                if let Some(blob) = stmt.query_row(params![hash, model], |r| r.get::<_, Vec<u8>>(0)).optional()?
                    && blob.len() == bytes
                {
                    found.insert((*hash).to_owned(), from_blob(&blob));
                }
            }
            Ok(found)
        })?)
    }

    /// Which of `hashes` are cached at the model's size (without reading
    /// the vectors).
    pub fn contains(&self, hashes: &[&str]) -> Result<Vec<bool>, IndexError> {
        let model = self.embed.model();
        let bytes = (self.embed.dimension() * 4) as i64;
        Ok(self.store.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT 1 FROM embeddings WHERE hash = ?1 AND model = ?2 AND length(vector) = ?3")?;
            hashes.iter().map(|hash| stmt.exists(params![hash, model, bytes])).collect()
        })?)
    }

    /// Caches `vector` for `hash` inside the caller's transaction (so a
    /// feature's rows and their embeddings commit together).
    pub fn put_in(&self, tx: &WriteTx<'_>, hash: &str, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.embed.dimension() {
            return Err(IndexError::Embed(format!(
                "a {}-dimensional vector for the {}-dimensional model {}",
                vector.len(),
                self.embed.dimension(),
                self.embed.model()
            )));
        }
        tx.sql()
            .prepare_cached("INSERT OR REPLACE INTO embeddings (hash, model, vector) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![hash, self.embed.model(), to_blob(vector)]))
            .map_err(|source| StoreError::Sqlite { path: self.store.path().to_path_buf(), source })?;
        Ok(())
    }

    /// Drops the cached vectors of `hash` (every model's) inside the
    /// caller's transaction: what forgetting a text leaves behind otherwise.
    pub fn forget_in(&self, tx: &WriteTx<'_>, hash: &str) -> Result<(), IndexError> {
        tx.sql()
            .prepare_cached("DELETE FROM embeddings WHERE hash = ?1")
            .and_then(|mut s| s.execute(params![hash]))
            .map_err(|source| StoreError::Sqlite { path: self.store.path().to_path_buf(), source })?;
        Ok(())
    }

    /// Caches vectors computed elsewhere (bulk loads, benchmarks).
    pub fn put(&self, items: &[(String, Vec<f32>)]) -> Result<(), IndexError> {
        self.store.write(|tx| items.iter().try_for_each(|(hash, vector)| self.put_in(tx, hash, vector)))
    }

    /// Embeds `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
        let vectors = self.embed.embed(texts).map_err(|e| IndexError::Embed(e.to_string()))?;
        if vectors.len() != texts.len() {
            return Err(IndexError::Embed(format!("{} vectors for {} texts", vectors.len(), texts.len())));
        }
        Ok(vectors)
    }

    /// The vector of each text: cached ones read, the others embedded and
    /// cached.
    pub fn vectors(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
        let hashes: Vec<String> = texts.iter().map(|t| text_hash(t)).collect();
        let keys: Vec<&str> = hashes.iter().map(String::as_str).collect();
        let mut found = self.get(&keys)?;
        let mut missing: Vec<(&str, &str)> = Vec::new();
        let mut seen = HashSet::new();
        for (hash, text) in keys.iter().zip(texts) {
            if !found.contains_key(*hash) && seen.insert(*hash) {
                missing.push((hash, text));
            }
        }
        if !missing.is_empty() {
            let fresh = self.embed(&missing.iter().map(|(_, text)| *text).collect::<Vec<_>>())?;
            self.store.write(|tx| {
                missing.iter().zip(&fresh).try_for_each(|((hash, _), vector)| self.put_in(tx, hash, vector))
            })?;
            found.extend(missing.iter().map(|(hash, _)| (*hash).to_owned()).zip(fresh));
        }
        Ok(keys.iter().map(|hash| found.get(*hash).cloned().unwrap_or_default()).collect())
    }
}
