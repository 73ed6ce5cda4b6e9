//! The typed configuration and its per-key documentation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Engram's whole configuration, one struct per `[section]` of the TOML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Config {
    /// `[storage]`: the data directory and the journal.
    pub storage: Storage,
    /// `[server]`: listeners, limits and timeouts.
    pub server: Server,
    /// `[models]`: where model weights live.
    pub models: Models,
    /// `[plugins]`: where plugin components live.
    pub plugins: Plugins,
    /// `[retrieval]`: chunking and hybrid search.
    pub retrieval: Retrieval,
    /// `[memory]`: conversation memory and the prompts built from it.
    pub memory: Memory,
    /// `[experience]`: the experience library's lookups and learning.
    pub experience: Experience,
    /// `[log]`: log filter and format.
    pub log: Log,
}

/// `[storage]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Storage {
    /// Data directory; `None` means the XDG default.
    pub data_dir: Option<PathBuf>,
    /// SQLite durability of an acknowledged write.
    pub synchronous: Synchronous,
    /// Wait for a competing writer, in ms.
    pub busy_timeout_ms: u64,
}

/// How hard SQLite syncs a committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at checkpoints: survives a killed process.
    Normal,
}

/// `[server]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Server {
    /// Unix socket path; `None` means the XDG runtime default.
    pub socket: Option<PathBuf>,
    /// Opt-in loopback TCP listener.
    pub tcp: Option<SocketAddr>,
    /// Bearer-token file for TCP; `None` means `<data_dir>/http.token`.
    pub token_file: Option<PathBuf>,
    /// Browser origins allowed on TCP.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Deadline for a complete request head (and keep-alive idle), in ms.
    pub header_timeout_ms: u64,
    /// Deadline for a request body, in ms.
    pub body_timeout_ms: u64,
    /// Most connections served at once.
    pub max_connections: u32,
    /// Drain time for in-flight requests on shutdown, in ms.
    pub shutdown_grace_ms: u64,
    /// Serve the MCP conformance suite's fixture tools, resources and
    /// prompts on `/mcp` (for running the suite; off otherwise).
    #[serde(default)]
    pub mcp_conformance_fixtures: bool,
}

/// `[models]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Models {
    /// Models directory; `None` means `<data_dir>/models`.
    pub dir: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU inference threads; 0 = one per core.
    pub threads: usize,
    /// `[models.embedder]`.
    pub embedder: Embedder,
    /// `[models.llm]`.
    pub llm: Llm,
}

/// `[models.embedder]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Embedder {
    /// Folder under `models.dir`, absolute path, or `hf:ORG/NAME`.
    pub source: String,
    /// Texts per forward pass.
    pub batch_size: usize,
}

/// Which generator backend serves `[models.llm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// A GGUF model run in-process with candle.
    Local,
    /// An OpenAI-compatible HTTP server.
    Openai,
}

/// Which engine runs a local model on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuEngine {
    /// Engram's own kernels for llama-architecture Q4_0/Q4_1/Q8_0 files;
    /// candle for everything else.
    Native,
    /// Always candle (Q4_1/Q5 tensors converted once to a Q8_0 copy).
    Candle,
}

/// `[models.llm]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Llm {
    /// Local or remote.
    pub backend: LlmBackend,
    /// Local on the CPU: native kernels where they apply, or candle.
    pub cpu_engine: CpuEngine,
    /// Local: GGUF file under `models.dir`, absolute path, or `hf:ORG/REPO/FILE`.
    pub source: String,
    /// Prompt + completion cap, in tokens.
    pub context_tokens: usize,
    /// Waiting requests beyond the running one.
    pub queue_depth: usize,
    /// Remote: base URL ending in `/v1`.
    pub base_url: Option<String>,
    /// Remote: file holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// Remote: model name.
    pub model: Option<String>,
    /// Remote: per-request timeout, in ms.
    pub request_timeout_ms: u64,
    /// Remote: retries of failed connections and 429/5xx answers.
    pub retries: u32,
}

/// How hybrid search fuses its BM25 and dense lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    /// ½ each of the per-query min-max normalized scores.
    Normalized,
    /// Reciprocal rank fusion (k = 60).
    Rrf,
}

/// `[retrieval]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Retrieval {
    /// Target chunk size, in embedder tokens.
    pub chunk_tokens: usize,
    /// Tokens a chunk repeats from the previous one in the same section.
    pub chunk_overlap: usize,
    /// Candidates each list (BM25, dense) gives a hybrid search or a
    /// conformal set.
    pub candidates: usize,
    /// Fusion of the two lists.
    pub fusion: FusionKind,
    /// Files larger than this are skipped at ingest, in bytes.
    pub max_file_bytes: u64,
    /// Where chunk embeddings live.
    pub vector_store: VectorStoreKind,
    /// Share of a certificate's chunks that may change before it is stale
    /// (until then it is approximate).
    pub stale_share: f64,
    /// `δ` of a certificate's PAC statement.
    pub pac_delta: f64,
    /// `[retrieval.qdrant]`: the server, when `vector_store = "qdrant"`.
    pub qdrant: QdrantServer,
}

/// The budgets an assembled prompt may have, in tokens (`memory.budget_tokens`
/// and a request's own).
pub const BUDGET_TOKENS: std::ops::RangeInclusive<usize> = 256..=1 << 20;

/// `[memory]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Memory {
    /// Most tokens of an assembled prompt (counted with the generator's
    /// tokenizer and chat template).
    pub budget_tokens: usize,
    /// The latest turns an assembled prompt carries verbatim.
    pub recent_turns: usize,
    /// Earlier turns recalled into an assembled prompt.
    pub recall_k: usize,
    /// The system prompt an assembled prompt starts with.
    pub system_prompt: String,
    /// Whether the LLM keeps each conversation's compact memory.
    pub summarize: bool,
    /// A level-2 summary rolls up the level-1 summaries every this many turns.
    pub rollup_every: usize,
    /// Level 1: rewrites the running summary with the new turns
    /// (`{summary}`, `{turns}`).
    pub summary_prompt: String,
    /// Level 2: rolls up the recent level-1 summaries (`{summary}`, `{summaries}`).
    pub rollup_prompt: String,
    /// Most turns a conversation keeps in recall; beyond it the turns of
    /// least retention are archived (kept, restorable). 0 keeps all.
    pub capacity: usize,
    /// A turn's retention halves every this many later turns.
    pub half_life_turns: usize,
}

/// `[experience]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Experience {
    /// Most insights a lookup puts into a prompt.
    pub insights: usize,
    /// Candidates a lookup weighs (what the applicability check sees).
    pub candidates: usize,
    /// Whether the LLM checks which candidates apply.
    pub applicability_check: bool,
    /// Without the check, the least cosine similarity of task and
    /// condition an insight needs to be chosen.
    pub min_similarity: f64,
    /// A learned insight at least this alike (cosine) to an active one is
    /// merged into it.
    pub duplicate_similarity: f64,
    /// The applicability check (`{task}`, `{candidates}`).
    pub check_prompt: String,
    /// Reflection on a failed attempt (`{task}`, `{insights}`,
    /// `{attempt}`, `{verdict}`).
    pub reflect_prompt: String,
    /// The optimization task runner's prompt (`{insights}`, `{task}`).
    pub solve_prompt: String,
    /// Relative tolerance of an objective against the known answer.
    pub tolerance: f64,
    /// Conditions the LLM proposes per insight in an evolution.
    pub rewrites: usize,
    /// Quarantine an insight hurt this many times (and more than helped).
    pub quarantine_hurt: u64,
    /// Evolution's rewrite prompt (`{insight}`, `{applies}`,
    /// `{not_applies}`, `{k}`).
    pub evolve_prompt: String,
}

/// The vector store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorStoreKind {
    /// qdrant-edge, embedded in the process (no server).
    Edge,
    /// A Qdrant server or cluster, over gRPC.
    Qdrant,
}

/// `[retrieval.qdrant]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct QdrantServer {
    /// gRPC URL of the server (port 6334 by default).
    pub url: String,
    /// File holding the API key; `None` sends none.
    pub api_key_file: Option<PathBuf>,
    /// Chunks go to the collection `<collection_prefix>-chunks-<embedder folder>`
    /// (each indexed feature has its own).
    pub collection_prefix: String,
    /// Per-request timeout, in ms.
    pub timeout_ms: u64,
}

/// `[plugins]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Plugins {
    /// Plugins directory; `None` means `<data_dir>/plugins`.
    pub dir: Option<PathBuf>,
    /// Grants and approvals; `None` means `<data_dir>/plugin-grants.toml`.
    pub grants_file: Option<PathBuf>,
    /// `[plugins.grants.<id>]`: grants declared here, added to the grants
    /// file's (which `engram plugins grant|revoke` edit).
    #[serde(default)]
    pub grants: std::collections::BTreeMap<String, PluginGrant>,
}

/// What the configuration grants one plugin (its request still bounds it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PluginGrant {
    /// Recall from the caller's memory.
    #[serde(default)]
    pub memory: bool,
    /// Hosts (`name` or `name:port`) it may reach over HTTP.
    #[serde(default)]
    pub http: Vec<String>,
    /// Which of those hosts may resolve to loopback or private addresses:
    /// `true` (all), `false` (none), or a list of them.
    #[serde(default)]
    pub http_private: PrivateHosts,
    /// HTTP requests per call (default 16).
    pub http_requests: Option<u32>,
    /// HTTP bytes per call, both ways (default 4 MiB).
    pub http_bytes: Option<u64>,
    /// Directories by the name the plugin requests them under.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, DirGrant>,
}

/// Which of a plugin's granted HTTP hosts may resolve to loopback or
/// private addresses (a service on this machine or network): `http_private`
/// in the configuration and the grants file. Link-local and cloud metadata
/// addresses are refused either way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PrivateHosts {
    /// Every granted host (`true`), or none (`false`).
    Every(bool),
    /// Only these granted hosts (as `http` writes them; the host part
    /// counts, ports are `http`'s business).
    Only(Vec<String>),
}

impl Default for PrivateHosts {
    fn default() -> Self {
        Self::Every(false)
    }
}

impl PrivateHosts {
    /// Whether any host may.
    pub fn any(&self) -> bool {
        match self {
            Self::Every(every) => *every,
            Self::Only(hosts) => !hosts.is_empty(),
        }
    }

    /// Allows what `other` allows too.
    pub fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Every(true), _) | (_, Self::Every(false)) => {}
            (_, Self::Every(true)) | (Self::Every(false), Self::Only(_)) => *self = other.clone(),
            (Self::Only(mine), Self::Only(theirs)) => {
                for host in theirs {
                    if !mine.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                        mine.push(host.clone());
                    }
                }
            }
        }
    }
}

/// A directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DirGrant {
    /// The directory (absolute, or starting with `~/`).
    pub path: PathBuf,
    /// `read` or `write`.
    pub mode: DirMode,
    /// For `write`: most MiB it may hold (default 1024).
    #[serde(default)]
    pub quota_mib: Option<u64>,
}

/// How a granted directory may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    /// Read only.
    Read,
    /// Read and write.
    Write,
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Log {
    /// Filter directive in `tracing_subscriber::EnvFilter` syntax.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, colored on a terminal.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// A configuration key and the form its value must take.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// Dotted key, e.g. `server.tcp`.
    pub key: &'static str,
    /// The expected form, phrased for an error message.
    pub expected: &'static str,
}

/// Every key Engram understands, with the form its value must take.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "storage.data_dir", expected: "an absolute directory path (or one starting with `~/`)" },
    KeyDoc { key: "storage.synchronous", expected: "\"full\" or \"normal\"" },
    KeyDoc { key: "storage.busy_timeout_ms", expected: "an integer number of milliseconds, 0 to 600000" },
    KeyDoc {
        key: "server.socket",
        expected: "an absolute socket path of at most 107 bytes (or one starting with `~/`)",
    },
    KeyDoc { key: "server.tcp", expected: "a loopback address with a port, e.g. \"127.0.0.1:8765\" or \"[::1]:8765\"" },
    KeyDoc { key: "server.token_file", expected: "an absolute file path (or one starting with `~/`)" },
    KeyDoc {
        key: "server.allowed_origins",
        expected: "a list of origins such as [\"http://localhost:3000\"] (scheme://host[:port], no path)",
    },
    KeyDoc { key: "server.max_body_bytes", expected: "an integer number of bytes, at least 1024" },
    KeyDoc { key: "server.header_timeout_ms", expected: "an integer number of milliseconds, 100 to 3600000" },
    KeyDoc { key: "server.body_timeout_ms", expected: "an integer number of milliseconds, 100 to 3600000" },
    KeyDoc { key: "server.max_connections", expected: "an integer, 1 to 65536" },
    KeyDoc { key: "server.shutdown_grace_ms", expected: "an integer number of milliseconds, 0 to 600000" },
    KeyDoc { key: "server.mcp_conformance_fixtures", expected: "true or false" },
    KeyDoc { key: "models.dir", expected: "an absolute directory path (or one starting with `~/`)" },
    KeyDoc { key: "plugins.dir", expected: "an absolute directory path (or one starting with `~/`)" },
    KeyDoc { key: "plugins.grants_file", expected: "an absolute file path (or one starting with `~/`)" },
    KeyDoc {
        key: "plugins.grants",
        expected: "tables [plugins.grants.ID] with memory, http, http_private, http_requests, http_bytes and files",
    },
    KeyDoc { key: "models.device", expected: "\"cpu\", \"cuda\" or \"cuda:N\"" },
    KeyDoc { key: "models.threads", expected: "an integer number of threads, 0 (one per core) to 1024" },
    KeyDoc {
        key: "models.embedder.source",
        expected: "a folder under models.dir, an absolute path, or \"hf:ORG/NAME\"",
    },
    KeyDoc { key: "models.embedder.batch_size", expected: "an integer, 1 to 1024" },
    KeyDoc { key: "models.llm.backend", expected: "\"local\" or \"openai\"" },
    KeyDoc { key: "models.llm.cpu_engine", expected: "\"native\" or \"candle\"" },
    KeyDoc {
        key: "models.llm.source",
        expected: "a GGUF file under models.dir, an absolute path, or \"hf:ORG/REPO/FILE.gguf\"",
    },
    KeyDoc { key: "models.llm.context_tokens", expected: "an integer number of tokens, 64 to 1048576" },
    KeyDoc { key: "models.llm.queue_depth", expected: "an integer, 0 to 4096" },
    KeyDoc { key: "models.llm.base_url", expected: "an http(s) URL ending in /v1, e.g. \"http://127.0.0.1:8080/v1\"" },
    KeyDoc { key: "models.llm.api_key_file", expected: "an absolute file path (or one starting with `~/`)" },
    KeyDoc { key: "models.llm.model", expected: "the model name the remote server knows" },
    KeyDoc { key: "models.llm.request_timeout_ms", expected: "an integer number of milliseconds, 100 to 3600000" },
    KeyDoc { key: "models.llm.retries", expected: "an integer, 0 to 10" },
    KeyDoc { key: "retrieval.chunk_tokens", expected: "an integer number of tokens, 32 to 8192" },
    KeyDoc { key: "retrieval.chunk_overlap", expected: "an integer number of tokens, at most half of chunk_tokens" },
    KeyDoc { key: "retrieval.candidates", expected: "an integer, 10 to 1000" },
    KeyDoc { key: "retrieval.fusion", expected: "\"normalized\" or \"rrf\"" },
    KeyDoc { key: "retrieval.max_file_bytes", expected: "an integer number of bytes, 1024 to 1073741824" },
    KeyDoc { key: "retrieval.vector_store", expected: "\"edge\" or \"qdrant\"" },
    KeyDoc { key: "retrieval.stale_share", expected: "a share of the chunks, 0 to 1" },
    KeyDoc { key: "retrieval.pac_delta", expected: "a probability strictly between 0 and 0.5" },
    KeyDoc { key: "retrieval.qdrant.url", expected: "the server's gRPC URL, e.g. \"http://127.0.0.1:6334\"" },
    KeyDoc { key: "retrieval.qdrant.api_key_file", expected: "an absolute file path (or one starting with `~/`)" },
    KeyDoc { key: "retrieval.qdrant.collection_prefix", expected: "1 to 64 characters: letters, digits, `-` and `_`" },
    KeyDoc { key: "retrieval.qdrant.timeout_ms", expected: "an integer number of milliseconds, 100 to 3600000" },
    KeyDoc { key: "memory.budget_tokens", expected: "an integer number of tokens, 256 to 1048576" },
    KeyDoc { key: "memory.recent_turns", expected: "an integer, 0 to 1000" },
    KeyDoc { key: "memory.recall_k", expected: "an integer, 0 to 100" },
    KeyDoc { key: "memory.system_prompt", expected: "a string" },
    KeyDoc { key: "memory.summarize", expected: "true or false" },
    KeyDoc { key: "memory.rollup_every", expected: "an integer number of turns, 2 to 100000" },
    KeyDoc { key: "memory.summary_prompt", expected: "a string holding {summary} and {turns}" },
    KeyDoc { key: "memory.rollup_prompt", expected: "a string holding {summary} and {summaries}" },
    KeyDoc { key: "memory.capacity", expected: "an integer number of turns, 0 (keep all) to 100000000" },
    KeyDoc { key: "memory.half_life_turns", expected: "an integer number of turns, 1 to 100000000" },
    KeyDoc { key: "experience.insights", expected: "an integer, 1 to 20" },
    KeyDoc { key: "experience.candidates", expected: "an integer, 1 to 100" },
    KeyDoc { key: "experience.applicability_check", expected: "true or false" },
    KeyDoc { key: "experience.min_similarity", expected: "a cosine similarity, -1 to 1" },
    KeyDoc { key: "experience.duplicate_similarity", expected: "a cosine similarity, 0 to 1" },
    KeyDoc { key: "experience.check_prompt", expected: "a string holding {task} and {candidates}" },
    KeyDoc {
        key: "experience.reflect_prompt",
        expected: "a string holding {task}, {insights}, {attempt} and {verdict}",
    },
    KeyDoc { key: "experience.solve_prompt", expected: "a string holding {insights} and {task}" },
    KeyDoc { key: "experience.tolerance", expected: "a relative tolerance, 0 to 1" },
    KeyDoc { key: "experience.rewrites", expected: "an integer, 1 to 10" },
    KeyDoc { key: "experience.quarantine_hurt", expected: "an integer, 1 to 1000000" },
    KeyDoc {
        key: "experience.evolve_prompt",
        expected: "a string holding {insight}, {applies}, {not_applies} and {k}",
    },
    KeyDoc { key: "log.level", expected: "a tracing filter such as \"info\" or \"engram=debug,info\"" },
    KeyDoc { key: "log.format", expected: "\"human\" or \"json\"" },
];

/// The expected form of `key`, or a generic phrase for keys not in [`KEYS`].
pub fn expected_form(key: &str) -> &'static str {
    if key.starts_with("plugins.grants.") {
        return "a plugin grant: memory (a boolean), http (a list of hosts: name, name:port or name:*), \
                http_private (a boolean, or a list of those hosts), \
                http_requests and http_bytes (integers), files.NAME = { path = \"/absolute/dir\", mode = \"read\" \
                or \"write\", quota_mib = 1024 }";
    }
    KEYS.iter()
        .find(|doc| doc.key == key)
        .map_or("a value of the documented type (see config/default.toml)", |doc| doc.expected)
}

/// One value that parsed but is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key.
    pub key: &'static str,
    /// What is wrong with the value.
    pub problem: String,
}

impl Config {
    /// Checks the values that types alone cannot, returning every problem.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut bad = |key: &'static str, problem: String| out.push(Invalid { key, problem });

        for (key, path) in [
            ("storage.data_dir", &self.storage.data_dir),
            ("server.socket", &self.server.socket),
            ("server.token_file", &self.server.token_file),
            ("models.dir", &self.models.dir),
            ("plugins.dir", &self.plugins.dir),
            ("plugins.grants_file", &self.plugins.grants_file),
            ("models.llm.api_key_file", &self.models.llm.api_key_file),
            ("retrieval.qdrant.api_key_file", &self.retrieval.qdrant.api_key_file),
        ] {
            if let Some(path) = path
                && !is_absolute_or_home(path)
            {
                bad(key, format!("`{}` is a relative path", path.display()));
            }
        }
        for (id, grant) in &self.plugins.grants {
            for (name, dir) in &grant.files {
                if !is_absolute_or_home(&dir.path) {
                    bad(
                        "plugins.grants",
                        format!("`{id}.files.{name}.path` = `{}` is a relative path", dir.path.display()),
                    );
                }
            }
        }
        if let Some(socket) = &self.server.socket
            && socket.as_os_str().len() > crate::MAX_SOCKET_PATH
        {
            bad("server.socket", format!("`{}` is {} bytes long", socket.display(), socket.as_os_str().len()));
        }
        if let Some(addr) = self.server.tcp
            && !addr.ip().is_loopback()
        {
            bad("server.tcp", format!("{addr} is not a loopback address"));
        }
        if let Some(addr) = self.server.tcp
            && addr.port() == 0
        {
            bad("server.tcp", format!("{addr} has port 0"));
        }
        for origin in &self.server.allowed_origins {
            if !is_origin(origin) {
                bad("server.allowed_origins", format!("{origin:?} is not an origin"));
            }
        }
        let ranges: [(&'static str, u64, u64, u64); 27] = [
            ("experience.rewrites", self.experience.rewrites as u64, 1, 10),
            ("experience.quarantine_hurt", self.experience.quarantine_hurt, 1, 1_000_000),
            ("experience.insights", self.experience.insights as u64, 1, 20),
            ("experience.candidates", self.experience.candidates as u64, 1, 100),
            (
                "memory.budget_tokens",
                self.memory.budget_tokens as u64,
                *BUDGET_TOKENS.start() as u64,
                *BUDGET_TOKENS.end() as u64,
            ),
            ("memory.recent_turns", self.memory.recent_turns as u64, 0, 1000),
            ("memory.recall_k", self.memory.recall_k as u64, 0, 100),
            ("memory.rollup_every", self.memory.rollup_every as u64, 2, 100_000),
            ("memory.capacity", self.memory.capacity as u64, 0, 100_000_000),
            ("memory.half_life_turns", self.memory.half_life_turns as u64, 1, 100_000_000),
            ("retrieval.chunk_tokens", self.retrieval.chunk_tokens as u64, 32, 8192),
            ("retrieval.chunk_overlap", self.retrieval.chunk_overlap as u64, 0, self.retrieval.chunk_tokens as u64 / 2),
            ("retrieval.candidates", self.retrieval.candidates as u64, 10, 1000),
            ("retrieval.max_file_bytes", self.retrieval.max_file_bytes, 1024, 1 << 30),
            ("retrieval.qdrant.timeout_ms", self.retrieval.qdrant.timeout_ms, 100, 3_600_000),
            ("models.threads", self.models.threads as u64, 0, 1024),
            ("models.embedder.batch_size", self.models.embedder.batch_size as u64, 1, 1024),
            ("models.llm.context_tokens", self.models.llm.context_tokens as u64, 64, 1 << 20),
            ("models.llm.queue_depth", self.models.llm.queue_depth as u64, 0, 4096),
            ("models.llm.request_timeout_ms", self.models.llm.request_timeout_ms, 100, 3_600_000),
            ("models.llm.retries", u64::from(self.models.llm.retries), 0, 10),
            ("storage.busy_timeout_ms", self.storage.busy_timeout_ms, 0, 600_000),
            ("server.max_body_bytes", self.server.max_body_bytes, 1024, u64::MAX),
            ("server.header_timeout_ms", self.server.header_timeout_ms, 100, 3_600_000),
            ("server.body_timeout_ms", self.server.body_timeout_ms, 100, 3_600_000),
            ("server.max_connections", u64::from(self.server.max_connections), 1, 65_536),
            ("server.shutdown_grace_ms", self.server.shutdown_grace_ms, 0, 600_000),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                bad(key, format!("{value} is out of range"));
            }
        }
        let (stale_share, pac_delta) = (self.retrieval.stale_share, self.retrieval.pac_delta);
        let fractions = [
            ("retrieval.stale_share", stale_share, (0.0..=1.0).contains(&stale_share)),
            ("retrieval.pac_delta", pac_delta, pac_delta > 0.0 && pac_delta < 0.5),
            (
                "experience.min_similarity",
                self.experience.min_similarity,
                (-1.0..=1.0).contains(&self.experience.min_similarity),
            ),
            (
                "experience.duplicate_similarity",
                self.experience.duplicate_similarity,
                (0.0..=1.0).contains(&self.experience.duplicate_similarity),
            ),
            ("experience.tolerance", self.experience.tolerance, (0.0..=1.0).contains(&self.experience.tolerance)),
        ];
        for (key, value, fits) in fractions {
            if !fits {
                bad(key, format!("{value} is out of range"));
            }
        }
        for (key, source) in
            [("models.embedder.source", &self.models.embedder.source), ("models.llm.source", &self.models.llm.source)]
        {
            if source.trim().is_empty() {
                bad(key, "the value is empty".to_owned());
            }
        }
        for (key, prompt, holes) in [
            ("memory.summary_prompt", &self.memory.summary_prompt, &["{summary}", "{turns}"][..]),
            ("memory.rollup_prompt", &self.memory.rollup_prompt, &["{summary}", "{summaries}"]),
            ("experience.check_prompt", &self.experience.check_prompt, &["{task}", "{candidates}"]),
            (
                "experience.reflect_prompt",
                &self.experience.reflect_prompt,
                &["{task}", "{insights}", "{attempt}", "{verdict}"],
            ),
            ("experience.solve_prompt", &self.experience.solve_prompt, &["{insights}", "{task}"]),
            (
                "experience.evolve_prompt",
                &self.experience.evolve_prompt,
                &["{insight}", "{applies}", "{not_applies}", "{k}"],
            ),
        ] {
            for hole in holes {
                if !prompt.contains(hole) {
                    bad(key, format!("the prompt has no {hole}"));
                }
            }
        }
        if !is_device(&self.models.device) {
            bad("models.device", format!("{:?} is not a device", self.models.device));
        }
        let qdrant = &self.retrieval.qdrant;
        if !(qdrant.url.starts_with("http://") || qdrant.url.starts_with("https://")) {
            bad("retrieval.qdrant.url", format!("{:?} is not an http(s) URL", qdrant.url));
        }
        let prefix = &qdrant.collection_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad("retrieval.qdrant.collection_prefix", format!("{prefix:?} is not a collection name"));
        }
        let llm = &self.models.llm;
        if let Some(url) = &llm.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad("models.llm.base_url", format!("{url:?} is not an http(s) URL"));
        }
        if llm.backend == LlmBackend::Openai {
            if llm.base_url.is_none() {
                bad("models.llm.base_url", "backend = \"openai\" needs a base_url".to_owned());
            }
            if llm.model.is_none() {
                bad("models.llm.model", "backend = \"openai\" needs a model name".to_owned());
            }
        }
        if self.log.level.trim().is_empty() {
            bad("log.level", "the value is empty".to_owned());
        }
        out
    }
}

/// `cpu`, `cuda` or `cuda:N`.
fn is_device(device: &str) -> bool {
    match device.split_once(':') {
        None => matches!(device, "cpu" | "cuda"),
        Some(("cuda", ordinal)) => ordinal.parse::<usize>().is_ok(),
        Some(_) => false,
    }
}

fn is_absolute_or_home(path: &Path) -> bool {
    path.is_absolute() || path.starts_with("~")
}

/// `scheme://host[:port]` with an http(s) scheme and nothing after the authority.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_port_only() {
        assert!(is_origin("http://localhost:3000"));
        assert!(is_origin("https://chat.example"));
        assert!(!is_origin("localhost:3000"));
        assert!(!is_origin("http://localhost:3000/"));
        assert!(!is_origin("ftp://x"));
        assert!(!is_origin("http://"));
    }
}
