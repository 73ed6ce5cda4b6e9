//! Engram's configuration: typed, layered and strict.
//!
//! The layers, lowest first, are the built-in `config/default.toml`, the
//! user's TOML file, `ENGRAM_<SECTION>__<KEY>` environment variables and
//! command-line overrides. [`Loader`] merges them while remembering which
//! layer set each key, so every error names the key, the file (or variable)
//! and the form the value must take:
//!
//! ```text
//! config file /home/me/.config/engram/config.toml: key `server.tcp`: 0.0.0.0:80 is not a loopback address; expected a loopback address with a port, e.g. "127.0.0.1:8765" or "[::1]:8765"
//! ```

mod load;
mod paths;
mod schema;

pub use load::{
    ConfigError, DEFAULT_TOML, ENV_PREFIX, Loaded, Loader, Origin, Problem, ProblemKind, default_user_file,
};
pub use paths::{HostEnv, MAX_SOCKET_PATH, ModelSource, Paths, UnresolvedPath};
pub use schema::{
    BUDGET_TOKENS, Config, CpuEngine, DirGrant, DirMode, Embedder, Experience, FusionKind, Invalid, KEYS, KeyDoc, Llm,
    LlmBackend, Log, LogFormat, Memory, Models, PluginGrant, Plugins, PrivateHosts, QdrantServer, Retrieval, Server,
    Storage, Synchronous, VectorStoreKind, expected_form,
};
