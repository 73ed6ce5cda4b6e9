//! Engram's retrieval: structure-aware chunks, a BM25 index, and conformal
//! thresholds that turn a retrieval score into a certified evidence set.
//!
//! The journal (engram-store) is the record; the indexes here are derived
//! from it and can be rebuilt.

pub mod beir;
pub mod bm25;
pub mod certify;
pub mod chunk;
pub mod conformal;
pub mod engine;
pub mod eval;
pub mod fusion;
pub mod ingest;
pub mod metrics;
pub mod ops;
pub mod qdrant_server;
pub mod questions;
pub mod vector;

use std::ops::Range;

pub use engine::{Hit, IngestReport, Mode, NewDocument, Progress, Rag, RagError, RagOptions, Target, VectorBackend};

/// What a search is restricted to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this collection.
    pub collection: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only documents whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only documents carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only documents ingested in this range of Unix seconds.
    pub time: Option<Range<i64>>,
}
