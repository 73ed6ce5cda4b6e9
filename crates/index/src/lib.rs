//! Engram's search engines, shared by every feature that searches its own
//! records (retrieval chunks today; conversation turns and insights next).
//!
//! - [`bm25`]: tantivy with Lucene's English analysis;
//! - [`vector`]: the [`VectorIndex`] trait and its embedded backend
//!   (qdrant-edge), and [`qdrant`], its Qdrant server backend;
//! - [`fusion`] of ranked lists and [`metrics`] of rankings;
//! - [`embeddings`]: the embedding cache by text hash;
//! - [`follower`]: keeps a feature's two indexes derived from the journal.
//!
//! A feature declares its documents once ([`Schema`]: the fields searches
//! filter on), implements [`Source`] to turn journal rows into
//! [`Document`]s, and owns its index directory or server collection. This
//! crate knows the journal's change log and embedding table, and nothing of
//! any feature's tables, models or requests.

pub mod bm25;
pub mod document;
pub mod embeddings;
pub mod follower;
pub mod fusion;
pub mod metrics;
pub mod qdrant;
pub mod vector;

pub use bm25::{Bm25, Bm25Error, english_analyzer};
pub use document::{Condition, Document, Field, FieldKind, Filter, Schema, Value};
pub use embeddings::{Embed, EmbedFn, EmbeddingCache, text_hash};
pub use follower::{Follower, Progress, Source};
pub use fusion::{Fusion, fuse};
pub use qdrant::{QdrantIndex, QdrantOptions};
pub use vector::{EdgeIndex, Point, VectorBackend, VectorError, VectorIndex};

use engram_store::StoreError;

/// An index failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The BM25 index failed.
    #[error(transparent)]
    Bm25(#[from] Bm25Error),
    /// The vector index failed.
    #[error(transparent)]
    Vector(#[from] VectorError),
    /// The embedder failed, or made vectors that do not fit.
    #[error("embedding: {0}")]
    Embed(String),
    /// A document, filter or index does not match the declared fields.
    #[error("index schema: {0}")]
    Schema(String),
}
