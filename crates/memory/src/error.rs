//! What can go wrong in memory, and which kind of failure each is.

use engram_index::IndexError;
use engram_store::StoreError;

/// A memory failure.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An index (BM25, vectors, the embedding cache) failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The embedder failed.
    #[error("embedding: {0}")]
    Embed(#[from] engram_models::ModelError),
    /// The request itself is wrong (empty text, bad importance...).
    #[error("{0}")]
    Invalid(String),
    /// What the request names (a conversation) does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl MemoryError {
    /// What kind of failure this is, for every surface.
    pub fn kind(&self) -> engram_ops::ErrorKind {
        use engram_ops::ErrorKind;
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Store(_) | Self::Index(_) | Self::Embed(_) => ErrorKind::Internal,
        }
    }
}

impl From<MemoryError> for engram_ops::Error {
    fn from(err: MemoryError) -> Self {
        Self::new(err.kind(), err.to_string())
    }
}
