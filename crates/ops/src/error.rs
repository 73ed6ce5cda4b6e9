//! Errors as every surface reports them.

use serde::{Deserialize, Serialize};

/// What kind of failure an operation met. The HTTP layer maps each kind to
/// one status; MCP and the CLI read the same kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request asks for something wrong: fix the request.
    Invalid,
    /// What the request names does not exist.
    NotFound,
    /// The caller may not do this (a tenant asking for another tenant's
    /// data, or for an operator's action).
    Forbidden,
    /// A part this operation needs (a model, a server, an index) cannot
    /// serve now; the same request may work later.
    Unavailable,
    /// Stored data is damaged: the operator has to look.
    Corrupt,
    /// A bug or an unexpected failure of the machine (disk, memory).
    Internal,
}

impl ErrorKind {
    /// The stable code in error bodies: `invalid_request`, `not_found`,
    /// `forbidden`, `unavailable`, `corrupt` or `internal`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid_request",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Corrupt => "corrupt",
            Self::Internal => "internal",
        }
    }

    /// The kind `code` names, if it is one of the codes above (a surface
    /// may answer codes of its own, such as `bad_token`).
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Invalid, Self::NotFound, Self::Forbidden, Self::Unavailable, Self::Corrupt, Self::Internal]
            .into_iter()
            .find(|kind| kind.code() == code)
    }
}

/// A failed operation: its kind and a message for a person (what failed,
/// on what, and what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The request is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// What the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// A needed part cannot serve now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// An unexpected failure.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, message.to_string())
    }
}

/// The JSON body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code ([`ErrorKind::code`], or a surface's
    /// own such as `body_too_large`).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl From<&Error> for ErrorDetail {
    fn from(error: &Error) -> Self {
        Self { code: error.kind.code().to_owned(), message: error.message.clone() }
    }
}

impl From<ErrorDetail> for Error {
    fn from(detail: ErrorDetail) -> Self {
        Self::new(ErrorKind::from_code(&detail.code).unwrap_or(ErrorKind::Internal), detail.message)
    }
}
