//! What can go wrong in retrieval, and which kind of failure each is.

use engram_index::IndexError;
use engram_store::rusqlite;
use engram_store::{Store, StoreError};

/// A retrieval failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An index (BM25, vectors, the embedding cache) failed.
    #[error(transparent)]
    Index(#[from] IndexError),
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
            Self::Store(StoreError::Corrupt { .. } | StoreError::NotADatabase { .. })
            | Self::Index(IndexError::Store(StoreError::Corrupt { .. } | StoreError::NotADatabase { .. })) => {
                ErrorKind::Corrupt
            }
            Self::Store(_) | Self::Index(_) | Self::Embed(_) | Self::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn sql_error(store: &Store, source: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite { path: store.path().to_path_buf(), source })
    }
}

impl From<RagError> for engram_ops::Error {
    fn from(err: RagError) -> Self {
        Self::new(err.kind(), err.to_string())
    }
}
