//! The daemon's health: whether it answers and its journal is readable,
//! for `engram doctor`, `engram bench healthz` and supervisors.

use engram_ops::{Method, Operation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{LoadState, Services};

/// `GET /healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Healthz {}

impl Operation for Healthz {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/healthz";
    type Response = Health;
    const AUDIENCE: engram_ops::Audience<Self> = engram_ops::Audience::Anyone;
}

/// Whether a part works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It works.
    Ok,
    /// The daemon answers but a part does not (HTTP 503).
    Degraded,
    /// The part failed.
    Error,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the journal cannot be read.
    pub status: Status,
    /// The daemon's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Seconds since the services opened.
    pub uptime_seconds: f64,
    /// The journal.
    pub store: StoreHealth,
    /// The parts that load in the background, each under the one retry
    /// policy ([`crate::Lazy`]): a failed one keeps its reason here until
    /// the next attempt, while the daemon serves everything else. (Absent
    /// from daemons before 0.1's health parts: read as all pending.)
    #[serde(default)]
    pub parts: Parts,
}

/// The background-loaded parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Parts {
    /// The configured LLM.
    pub llm: Part,
    /// The embedder.
    pub embedder: Part,
    /// Retrieval's indexes.
    pub retrieval: Part,
    /// Memory's indexes.
    #[serde(default)]
    pub memory: Part,
}

/// Where one background-loaded part stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Part {
    /// Not loaded yet, or loading now.
    #[default]
    Pending,
    /// Loaded.
    Ready,
    /// The last attempt failed; the next request after the retry delay
    /// tries again.
    Failed {
        /// Why.
        error: String,
    },
}

impl From<LoadState> for Part {
    fn from(state: LoadState) -> Self {
        match state {
            LoadState::Pending => Self::Pending,
            LoadState::Ready => Self::Ready,
            LoadState::Failed(error) => Self::Failed { error },
        }
    }
}

impl Parts {
    /// The failed parts, by name, with their reasons.
    pub fn failed(&self) -> Vec<(&'static str, &str)> {
        [("llm", &self.llm), ("embedder", &self.embedder), ("retrieval", &self.retrieval), ("memory", &self.memory)]
            .into_iter()
            .filter_map(|(name, part)| match part {
                Part::Failed { error } => Some((name, error.as_str())),
                _ => None,
            })
            .collect()
    }
}

/// The journal's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreHealth {
    /// `ok` or `error`.
    pub status: Status,
    /// The journal file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The last change sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    /// Its size on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The SQLite library's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite_version: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StoreHealth {
    fn failed(error: String) -> Self {
        Self {
            status: Status::Error,
            path: None,
            schema_version: None,
            last_seq: None,
            size_bytes: None,
            sqlite_version: None,
            error: Some(error),
        }
    }
}

impl Services {
    /// The daemon's health (reads the journal's statistics off the async
    /// threads).
    pub async fn health(&self, _request: Healthz) -> Health {
        let store = self.store.clone();
        let store = match tokio::task::spawn_blocking(move || store.stats()).await {
            Ok(Ok(stats)) => StoreHealth {
                status: Status::Ok,
                path: Some(stats.path.display().to_string()),
                schema_version: Some(stats.schema_version),
                last_seq: Some(stats.last_seq.0),
                size_bytes: Some(stats.size_bytes),
                sqlite_version: Some(stats.sqlite_version.to_owned()),
                error: None,
            },
            Ok(Err(err)) => StoreHealth::failed(err.to_string()),
            Err(err) => StoreHealth::failed(format!("the journal check did not finish: {err}")),
        };
        Health {
            status: if store.status == Status::Ok { Status::Ok } else { Status::Degraded },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.uptime().as_secs_f64(),
            store,
            parts: Parts {
                llm: self.models.llm.state().into(),
                embedder: self.models.embedder.state().into(),
                retrieval: self.rag.state().into(),
                memory: self.memory.state().into(),
            },
        }
    }
}
