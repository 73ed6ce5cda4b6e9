//! The one error type of the models crate.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is missing, truncated or malformed.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file (or folder) at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `hf:` source could not be fetched.
    #[error("model source `{source_id}`: {reason}")]
    Source {
        /// The source as configured.
        source_id: String,
        /// What went wrong, and which path to fill instead.
        reason: String,
    },
    /// The request queue is full.
    #[error("the model is busy: {waiting} requests are already waiting (models.llm.queue_depth); retry shortly")]
    Busy {
        /// Requests waiting.
        waiting: usize,
    },
    /// The prompt does not fit the context window.
    #[error("the prompt is {prompt_tokens} tokens, which leaves no room in the {context} tokens of context")]
    ContextOverflow {
        /// Prompt length.
        prompt_tokens: usize,
        /// Requested completion length.
        max_tokens: usize,
        /// The usable context.
        context: usize,
    },
    /// The request itself is invalid (bad parameters, unsupported schema).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The configured device cannot be used.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device as configured.
        device: String,
        /// Why not.
        reason: String,
    },
    /// Inference failed at run time.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A remote model server failed or refused.
    #[error("remote model server {url}: {reason}")]
    Remote {
        /// The URL called.
        url: String,
        /// What happened.
        reason: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },
    /// The model worker thread is gone (it panicked or shut down).
    #[error("the model worker has stopped")]
    WorkerGone,
}

impl ModelError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::BadFile { path: path.into(), reason: reason.to_string() }
    }
}

impl From<candle_core::Error> for ModelError {
    fn from(err: candle_core::Error) -> Self {
        Self::Inference(err.to_string())
    }
}
