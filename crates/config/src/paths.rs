//! Turning the configuration into concrete paths on this machine.

use std::path::{Path, PathBuf};

use crate::schema::Config;

/// Longest Unix socket path the kernel accepts (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The process environment that path defaults depend on.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl HostEnv {
    /// Reads the variables from this process; empty values count as unset.
    /// Without `XDG_RUNTIME_DIR` (a GUI app or an MCP client launching
    /// `engram mcp-stdio` with a trimmed environment), the login session's
    /// `/run/user/<uid>` is used when it exists, is ours and is private, so
    /// the socket is found where a daemon started from a shell put it.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            home: var("HOME"),
            xdg_data_home: var("XDG_DATA_HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").or_else(session_runtime_dir),
        }
    }
}

/// `/run/user/<uid>` when it is a directory owned by this user with mode 0700.
fn session_runtime_dir() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = PathBuf::from(format!("/run/user/{uid}"));
    let meta = std::fs::metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o777 == 0o700).then_some(dir)
}

/// Every path the daemon uses, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The SQLite journal of record.
    pub journal: PathBuf,
    /// The single-instance lock file.
    pub lock_file: PathBuf,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The bearer-token file for TCP.
    pub token_file: PathBuf,
    /// Tenants' TCP tokens: one `<tenant>.token` file each.
    pub tenant_tokens_dir: PathBuf,
    /// The models directory.
    pub models_dir: PathBuf,
    /// The plugins directory (one folder per plugin).
    pub plugins_dir: PathBuf,
    /// The plugins' grants and approvals.
    pub grants_file: PathBuf,
    /// Where derived files are cached (e.g. requantized models).
    pub cache_dir: PathBuf,
    /// The embedding model folder (for a hub source, where it is downloaded).
    pub embedder: PathBuf,
    /// The generator GGUF file (for a hub source, where it is downloaded).
    pub llm: PathBuf,
    /// The remote LLM's API key file, if configured.
    pub llm_api_key_file: Option<PathBuf>,
    /// The Qdrant server's API key file, if configured.
    pub qdrant_api_key_file: Option<PathBuf>,
}

/// Where a model comes from, as written in `models.*.source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file or folder on this machine.
    Local(PathBuf),
    /// A Hugging Face hub repository, and for single-file models the file.
    Hub {
        /// `ORG/NAME`.
        repo: String,
        /// The file within the repository, when the model is one file.
        file: Option<String>,
    },
}

impl ModelSource {
    /// Parses `source`: `hf:ORG/NAME[/FILE]` names the hub; anything else is
    /// a path, relative to `models_dir` unless absolute (`~/` expands).
    pub fn parse(source: &str, models_dir: &Path, home: Option<&Path>) -> Self {
        match source.strip_prefix("hf:") {
            Some(rest) => {
                let mut parts = rest.splitn(3, '/');
                let org = parts.next().unwrap_or_default();
                let name = parts.next().unwrap_or_default();
                Self::Hub { repo: format!("{org}/{name}"), file: parts.next().map(str::to_owned) }
            }
            None => Self::Local(models_dir.join(expand_home(Path::new(source), home))),
        }
    }

    /// Where the model lives on disk: the path itself, or for the hub
    /// `<models_dir>/hub/ORG/NAME[/FILE]`.
    pub fn local_path(&self, models_dir: &Path) -> PathBuf {
        match self {
            Self::Local(path) => path.clone(),
            Self::Hub { repo, file } => {
                let dir = models_dir.join("hub").join(repo);
                file.as_ref().map_or_else(|| dir.clone(), |file| dir.join(file))
            }
        }
    }
}

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot choose a default for `{key}`: neither {vars} is set; set `{key}` in the config file or pass --data-dir"
)]
pub struct UnresolvedPath {
    /// The key to set.
    pub key: &'static str,
    /// The variables that would have given a default.
    pub vars: &'static str,
}

impl Paths {
    /// Resolves configured paths, filling defaults from `env` and expanding `~/`.
    pub fn resolve(config: &Config, env: &HostEnv) -> Result<Self, UnresolvedPath> {
        let expand = |path: &Path| expand_home(path, env.home.as_deref());
        let data_dir = match &config.storage.data_dir {
            Some(dir) => expand(dir),
            None => env
                .xdg_data_home
                .clone()
                .or_else(|| env.home.as_ref().map(|home| home.join(".local").join("share")))
                .map(|dir| dir.join("engram"))
                .ok_or(UnresolvedPath { key: "storage.data_dir", vars: "XDG_DATA_HOME nor HOME" })?,
        };
        let socket = match &config.server.socket {
            Some(path) => expand(path),
            None => match &env.xdg_runtime_dir {
                Some(dir) => dir.join("engram").join("engram.sock"),
                None => data_dir.join("engram.sock"),
            },
        };
        let token_file = config.server.token_file.as_deref().map_or_else(|| data_dir.join("http.token"), expand);
        let models_dir = config.models.dir.as_deref().map_or_else(|| data_dir.join("models"), expand);
        let plugins_dir = config.plugins.dir.as_deref().map_or_else(|| data_dir.join("plugins"), expand);
        let grants_file =
            config.plugins.grants_file.as_deref().map_or_else(|| data_dir.join("plugin-grants.toml"), expand);
        let home = env.home.as_deref();
        let embedder = ModelSource::parse(&config.models.embedder.source, &models_dir, home).local_path(&models_dir);
        let llm = ModelSource::parse(&config.models.llm.source, &models_dir, home).local_path(&models_dir);
        Ok(Self {
            cache_dir: data_dir.join("cache"),
            journal: data_dir.join("journal.sqlite3"),
            lock_file: data_dir.join("engram.lock"),
            tenant_tokens_dir: data_dir.join("tenant-tokens"),
            data_dir,
            socket,
            token_file,
            models_dir,
            plugins_dir,
            grants_file,
            embedder,
            llm,
            llm_api_key_file: config.models.llm.api_key_file.as_deref().map(expand),
            qdrant_api_key_file: config.retrieval.qdrant.api_key_file.as_deref().map(expand),
        })
    }
}

fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}
