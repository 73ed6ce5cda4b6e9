//! Engram's retrieval: structure-aware chunks, ingestion into the journal,
//! hybrid search over the engines of `engram-index`, and conformal
//! thresholds that turn a retrieval score into a certified evidence set.
//!
//! The journal (engram-store) is the record; the indexes are derived from
//! it and can be rebuilt.

pub mod beir;
pub mod certify;
pub mod chunk;
mod chunks;
pub mod conformal;
mod engine;
mod error;
pub mod eval;
mod ingest;
pub mod ops;
pub mod questions;
mod write;

use std::ops::Range;

use engram_ops::{CollectionName, TenantId};

pub use chunks::{ChunkId, INDEX_NAME, SCHEMA, chunk_hash};
pub use engine::{CollectionInfo, Hit, Mode, Rag, RagOptions, RagStats};
pub use engram_index::VectorBackend;
pub use error::RagError;
pub use write::{IngestReport, NewDocument, Progress, SkippedFile, Target, Unlisted, no_progress};

/// What a search is restricted to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this collection.
    pub collection: Option<CollectionName>,
    /// Only this tenant.
    pub tenant: Option<TenantId>,
    /// Only documents whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only documents carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only documents ingested in this range of Unix seconds.
    pub time: Option<Range<i64>>,
}

impl Filter {
    /// Only the collection named `name`; an invalid name is refused.
    pub fn collection(name: &str) -> Result<Self, RagError> {
        let collection = CollectionName::new(name).map_err(|err| RagError::Invalid(err.to_string()))?;
        Ok(Self { collection: Some(collection), ..Self::default() })
    }
}
