//! Layering: built-in defaults, then the user's file, then the environment,
//! then explicit overrides, remembering where every key was set so that an
//! error can name it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::schema::{Config, KEYS, expected_form};

/// The built-in defaults, compiled in from `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "ENGRAM_";

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `config/default.toml`, compiled into the binary.
    Builtin,
    /// A TOML file on disk.
    File(PathBuf),
    /// An `ENGRAM_<SECTION>__<KEY>` environment variable.
    Env(String),
    /// A command-line option such as `--data-dir`.
    Cli(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin => f.write_str("built-in defaults (config/default.toml)"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Cli(flag) => write!(f, "command-line option {flag}"),
        }
    }
}

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The key is not part of the configuration.
    UnknownKey {
        /// The closest known key, when one is close.
        did_you_mean: Option<&'static str>,
    },
    /// The value has the wrong type or an unacceptable value.
    BadValue {
        /// What is wrong.
        problem: String,
        /// The form the value must take.
        expected: &'static str,
    },
}

/// One bad key, with where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `server.tcp`.
    pub key: String,
    /// The layer that set it.
    pub origin: Origin,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ProblemKind::UnknownKey { did_you_mean } => {
                write!(f, "{}: unknown key `{}`", self.origin, self.key)?;
                match did_you_mean {
                    Some(known) => write!(f, " (did you mean `{known}`?)"),
                    None => write!(f, " (known keys are listed in config/default.toml)"),
                }
            }
            ProblemKind::BadValue { problem, expected } => {
                write!(f, "{}: key `{}`: {problem}; expected {expected}", self.origin, self.key)
            }
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer is not valid TOML.
    #[error("{origin}: not valid TOML: {message}")]
    Syntax {
        /// The file or variable.
        origin: Origin,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more keys are unknown or have bad values.
    #[error("{}", list(.0))]
    Problems(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// A loaded, validated configuration and the origin of every key.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The layers that contributed, lowest first.
    pub sources: Vec<Origin>,
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// The layer that set `key` (dotted), or the closest enclosing table's.
    pub fn origin_of(&self, key: &str) -> &Origin {
        origin_of(&self.origins, key)
    }

    /// A [`ConfigError`] for a value of `key` that a later check found bad,
    /// naming where the key was set.
    pub fn bad_value(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Problems(vec![Problem {
            key: key.to_owned(),
            origin: self.origin_of(key).clone(),
            kind: ProblemKind::BadValue { problem: problem.into(), expected: expected_form(key) },
        }])
    }
}

fn origin_of<'a>(origins: &'a BTreeMap<String, Origin>, key: &str) -> &'a Origin {
    let mut probe = key;
    loop {
        if let Some(origin) = origins.get(probe) {
            return origin;
        }
        match probe.rfind(['.', '[']) {
            Some(cut) => probe = &probe[..cut],
            None => return &Origin::Builtin,
        }
    }
}

/// Builds a [`Loaded`] configuration from its layers.
///
/// ```
/// let loaded = engram_config::Loader::new()
///     .env_vars([("ENGRAM_SERVER__MAX_CONNECTIONS".into(), "8".into())])
///     .load()
///     .unwrap();
/// assert_eq!(loaded.config.server.max_connections, 8);
/// ```
#[derive(Debug, Default)]
pub struct Loader {
    file: Option<(PathBuf, bool)>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, toml::Value, Origin)>,
}

impl Loader {
    /// A loader with only the built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the user's file. A `required` file that does not exist is an
    /// error; an optional one is skipped.
    pub fn file(mut self, path: impl Into<PathBuf>, required: bool) -> Self {
        self.file = Some((path.into(), required));
        self
    }

    /// Adds the `ENGRAM_<SECTION>__<KEY>` variables among `vars`; others
    /// (no double underscore, or another prefix) are ignored.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = vars
            .into_iter()
            .filter(|(name, _)| name.strip_prefix(ENV_PREFIX).is_some_and(|rest| rest.contains("__")))
            .collect();
        self.env.sort();
        self
    }

    /// Sets `key` (dotted) last, above every other layer.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>, origin: Origin) -> Self {
        self.overrides.push((key.to_owned(), value.into(), origin));
        self
    }

    /// Merges the layers, deserializes and validates.
    pub fn load(self) -> Result<Loaded, ConfigError> {
        let mut merged = toml::Table::new();
        let mut origins = BTreeMap::new();
        let mut sources = vec![Origin::Builtin];

        let builtin = parse(DEFAULT_TOML, &Origin::Builtin)?;
        merge(&mut merged, builtin, "", &Origin::Builtin, &mut origins);

        if let Some((path, required)) = self.file {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let origin = Origin::File(path);
                    let table = parse(&text, &origin)?;
                    merge(&mut merged, table, "", &origin, &mut origins);
                    sources.push(origin);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(source) => return Err(ConfigError::Read { path, source }),
            }
        }

        for (name, raw) in self.env {
            let origin = Origin::Env(name.clone());
            let key = env_key(&name);
            let value = env_value(&raw);
            merge(&mut merged, nest(&key, value), "", &origin, &mut origins);
            sources.push(origin);
        }

        for (key, value, origin) in self.overrides {
            merge(&mut merged, nest(&key, value), "", &origin, &mut origins);
            if !sources.contains(&origin) {
                sources.push(origin);
            }
        }

        let config = deserialize(merged, &origins)?;
        let problems: Vec<Problem> = config
            .validate()
            .into_iter()
            .map(|invalid| Problem {
                key: invalid.key.to_owned(),
                origin: origin_of(&origins, invalid.key).clone(),
                kind: ProblemKind::BadValue { problem: invalid.problem, expected: expected_form(invalid.key) },
            })
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError::Problems(problems));
        }
        Ok(Loaded { config, sources, origins })
    }
}

fn parse(text: &str, origin: &Origin) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|err| ConfigError::Syntax { origin: origin.clone(), message: err.to_string().trim_end().to_owned() })
}

/// `ENGRAM_SERVER__MAX_BODY_BYTES` -> `server.max_body_bytes`.
fn env_key(name: &str) -> String {
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name);
    rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".")
}

/// A TOML value where the text parses as one (numbers, booleans, arrays,
/// quoted strings), the raw text as a string otherwise.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// `server.tcp` + value -> `{ server = { tcp = value } }`.
fn nest(key: &str, value: toml::Value) -> toml::Table {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().unwrap_or_default();
    let mut table = toml::Table::new();
    table.insert(leaf.to_owned(), value);
    for part in parts.into_iter().rev() {
        let mut outer = toml::Table::new();
        outer.insert(part.to_owned(), toml::Value::Table(table));
        table = outer;
    }
    table
}

fn merge(
    base: &mut toml::Table,
    layer: toml::Table,
    prefix: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (key, value) in layer {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming, &path, origin, origins);
            }
            (_, value) => {
                if let toml::Value::Table(table) = &value {
                    record_leaves(table, &path, origin, origins);
                }
                origins.insert(path, origin.clone());
                base.insert(key, value);
            }
        }
    }
}

fn record_leaves(table: &toml::Table, prefix: &str, origin: &Origin, origins: &mut BTreeMap<String, Origin>) {
    for (key, value) in table {
        let path = format!("{prefix}.{key}");
        if let toml::Value::Table(inner) = value {
            record_leaves(inner, &path, origin, origins);
        }
        origins.insert(path, origin.clone());
    }
}

fn deserialize(merged: toml::Table, origins: &BTreeMap<String, Origin>) -> Result<Config, ConfigError> {
    let mut unknown: Vec<String> = Vec::new();
    let tree = merged.clone();
    let value = toml::Value::Table(merged);
    let mut on_ignored = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let result: Result<Config, _> = serde_path_to_error::deserialize(ignored);

    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .flat_map(|key| leaves(&tree, key))
        .map(|key| Problem {
            origin: origin_of(origins, &key).clone(),
            kind: ProblemKind::UnknownKey { did_you_mean: did_you_mean(&key) },
            key,
        })
        .collect();
    match result {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Problems(problems)),
        Err(err) => {
            let key = err.path().to_string();
            problems.push(Problem {
                origin: origin_of(origins, &key).clone(),
                kind: ProblemKind::BadValue { problem: err.inner().to_string(), expected: expected_form(&key) },
                key,
            });
            Err(ConfigError::Problems(problems))
        }
    }
}

/// An ignored table stands for each of its leaf keys (an unknown section
/// from `ENGRAM_SERVR__TCP` is reported as `servr.tcp`, not `servr`).
fn leaves(tree: &toml::Table, key: String) -> Vec<String> {
    let mut node = tree.get(key.split('.').next().unwrap_or_default());
    for part in key.split('.').skip(1) {
        node = node.and_then(|value| value.as_table()).and_then(|table| table.get(part));
    }
    match node {
        Some(toml::Value::Table(table)) if !table.is_empty() => {
            table.keys().flat_map(|leaf| leaves(tree, format!("{key}.{leaf}"))).collect()
        }
        _ => vec![key],
    }
}

fn did_you_mean(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|doc| (doc.key, strsim::jaro_winkler(key, doc.key)))
        .filter(|(_, score)| *score > 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(known, _)| known)
}

/// The user's default config file: `$XDG_CONFIG_HOME/engram/config.toml`,
/// else `~/.config/engram/config.toml`.
pub fn default_user_file(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    xdg_config_home
        .map(Path::to_path_buf)
        .or_else(|| home.map(|home| home.join(".config")))
        .map(|dir| dir.join("engram").join("config.toml"))
}
