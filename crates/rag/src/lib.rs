//! Engram's retrieval: structure-aware chunks, a BM25 index, and conformal
//! thresholds that turn a retrieval score into a certified evidence set.
//!
//! The journal (engram-store) is the record; the indexes here are derived
//! from it and can be rebuilt.

pub mod beir;
pub mod bm25;
pub mod chunk;
pub mod conformal;
pub mod fusion;
pub mod metrics;
