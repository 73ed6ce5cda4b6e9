//! The host's errors, one enum per concern: starting the host
//! ([`HostError`]), a plugin's manifest ([`ManifestError`]) and component
//! ([`ComponentError`]), loading a plugin ([`LoadError`]), the grants file
//! ([`GrantsError`]), approving a plugin ([`ApproveError`]) and calling a
//! tool ([`CallError`]).
//!
//! Each message says what failed, where (file, key, plugin or tool) and,
//! where the operator can act, what to do. The load and call errors
//! serialize (`error` names the variant, `kind` the nested one) so the HTTP
//! API can return them and clients can match on them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::manifest::MAX_ID;

/// A path as JSON text: lossy for non-UTF-8 paths instead of failing.
fn lossy<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Why the plugin host could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Wasmtime refused the engine configuration.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The thread that enforces wall budgets did not start.
    #[error("cannot start the plugin epoch ticker thread: {0}")]
    Ticker(String),
    /// WASI or the plugin contracts' host interfaces did not link.
    #[error("cannot link the host interfaces: {0}")]
    Link(String),
}

/// Why a `plugin.toml` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManifestError {
    /// The file is missing or unreadable.
    #[error("{}: cannot read: {message}", path.display())]
    Unreadable {
        /// The manifest.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Not TOML, or a key missing, unknown or of the wrong type (the
    /// message names the key and line).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The manifest.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// `id` is empty, too long or has characters other than `[a-z0-9_-]`.
    #[error("{}: `id` = {id:?}: use 1 to {} lowercase letters, digits, `_` or `-`", path.display(), MAX_ID)]
    Id {
        /// The manifest.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The refused id.
        id: String,
    },
    /// A budget is zero or above its maximum.
    #[error("{}: `budgets.{budget}` must be 1 to {max}", path.display())]
    Budget {
        /// The manifest.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// `wall_ms` or `memory_mib`.
        budget: String,
        /// The largest value allowed.
        max: u64,
    },
    /// The plugin's folder is not named after its id.
    #[error("{}: the folder must be named after the plugin's id `{id}`", path.display())]
    FolderName {
        /// The manifest.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The manifest's id.
        id: String,
    },
}

/// Which of a tool's schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaRole {
    /// The arguments' schema.
    Input,
    /// The result's schema.
    Output,
}

impl std::fmt::Display for SchemaRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Input => "input",
            Self::Output => "output",
        })
    }
}

/// Why a plugin's component was refused (the path is in [`LoadError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComponentError {
    /// The `.wasm` file is missing or unreadable.
    #[error("cannot read the component: {message}")]
    Unreadable {
        /// The I/O error.
        message: String,
    },
    /// Not a WebAssembly component wasmtime can compile.
    #[error("not a valid component: {message}")]
    Invalid {
        /// Wasmtime's message.
        message: String,
    },
    /// It imports something this host does not provide.
    #[error("cannot link: {message} (build it with plugins/sdk against a contract in wit/)")]
    Link {
        /// Wasmtime's message.
        message: String,
    },
    /// It does not export any `engram:plugin` contract this host supports.
    #[error("not an engram:plugin component: {message} (build it with plugins/sdk against a contract in wit/)")]
    NotAPlugin {
        /// Wasmtime's message.
        message: String,
    },
    /// Its `describe` export failed.
    #[error("describe failed: {error}")]
    Describe {
        /// How it failed.
        error: CallError,
    },
    /// A tool name has characters other than `[A-Za-z0-9_-]`, or is too long.
    #[error("tool name `{name}`: use letters, digits, `_` or `-`, at most {max} characters with the plugin prefix")]
    ToolName {
        /// The plugin's name for the tool.
        name: String,
        /// The longest published name allowed.
        max: usize,
    },
    /// A tool description is over the limit.
    #[error("tool `{tool}`: description longer than {max} characters")]
    DescriptionTooLong {
        /// The published tool name.
        tool: String,
        /// The limit.
        max: usize,
    },
    /// The plugin describes more tools than the host publishes.
    #[error("{count} tools: a plugin publishes at most {max}")]
    TooManyTools {
        /// Tools it described.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A tool title is over the limit.
    #[error("tool `{tool}`: title longer than {max} characters")]
    TitleTooLong {
        /// The published tool name.
        tool: String,
        /// The limit.
        max: usize,
    },
    /// A schema is not JSON.
    #[error("tool `{tool}`: {schema} schema is not JSON: {message}")]
    SchemaNotJson {
        /// The published tool name.
        tool: String,
        /// Which schema.
        schema: SchemaRole,
        /// The parser's message.
        message: String,
    },
    /// A schema is JSON but not a valid JSON Schema.
    #[error("tool `{tool}`: {schema} schema is not a valid JSON Schema: {message}")]
    SchemaInvalid {
        /// The published tool name.
        tool: String,
        /// Which schema.
        schema: SchemaRole,
        /// The validator's message.
        message: String,
    },
    /// The input schema does not describe an object.
    #[error("tool `{tool}`: the input schema must describe an object")]
    InputNotObject {
        /// The published tool name.
        tool: String,
    },
    /// Two tools have the same name.
    #[error("two tools share the name `{tool}`")]
    DuplicateTool {
        /// The published tool name.
        tool: String,
    },
}

/// Why a plugin did not load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum LoadError {
    /// `plugin.toml` is missing, unreadable or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component is missing or does not compile, link or describe itself.
    #[error("{}: {problem}", path.display())]
    Component {
        /// The component file.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// What is wrong.
        problem: ComponentError,
    },
    /// A new version asks for more than was approved, or changes a tool's
    /// description: it waits for `engram plugins grant`; the approved
    /// version (if loaded) serves on.
    #[error("{id} {version} is held until approved (`engram plugins grant {id}`): it {}", reasons.join(", "))]
    Held {
        /// The plugin.
        id: String,
        /// The held version.
        version: String,
        /// What it asks for beyond the approval.
        reasons: Vec<String>,
    },
    /// A test vector of the plugin failed.
    #[error("{}: test vector {index} ({tool}) failed: {message}", path.display())]
    TestVector {
        /// The vectors file.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// The tool it called.
        tool: String,
        /// Expected versus got.
        message: String,
    },
    /// The grants file could not be reread (on a reload); the grants in
    /// force stay.
    #[error(transparent)]
    Grants(#[from] GrantsError),
}

impl LoadError {
    /// Whether this is a version held for the operator's approval rather
    /// than a broken one.
    pub fn is_held(&self) -> bool {
        matches!(self, Self::Held { .. })
    }
}

/// Why the grants file could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantsError {
    /// The file exists but cannot be read.
    #[error("{}: cannot read: {message}", file.display())]
    Unreadable {
        /// The grants file.
        #[serde(serialize_with = "lossy")]
        file: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Not TOML, or a key unknown or of the wrong type (the message names
    /// the key and line).
    #[error("{}: {message}", file.display())]
    Invalid {
        /// The grants file.
        #[serde(serialize_with = "lossy")]
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A granted directory is not an absolute path.
    #[error("{}: `{id}.files.{dir}.path` must be an absolute path, not `{}`", file.display(), path.display())]
    RelativePath {
        /// The grants file.
        #[serde(serialize_with = "lossy")]
        file: PathBuf,
        /// The plugin.
        id: String,
        /// The directory's requested name.
        dir: String,
        /// The relative path.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    /// The grants could not be encoded as TOML.
    #[error("cannot encode the grants: {message}")]
    Encode {
        /// The encoder's message.
        message: String,
    },
    /// The grants file's folder cannot be created.
    #[error("cannot create {}: {message}", path.display())]
    CreateDir {
        /// The folder.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}: {message}", path.display())]
    Lock {
        /// The lock file.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file cannot be written.
    #[error("cannot write {}: {message}", path.display())]
    Write {
        /// The grants file.
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
}

/// Why `engram plugins grant` (`PluginHost::approve`) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    /// The plugin's folder does not load (manifest or component).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A directory the plugin requests was not mapped to a real one.
    #[error("{id} requests the directory `{dir}`: map it to a real one with `--dir {dir}=/absolute/path`")]
    UnmappedDirectory {
        /// The plugin.
        id: String,
        /// The requested directory's name.
        dir: String,
    },
    /// A mapped path is relative or not a directory.
    #[error("`{}` is not an absolute path to a directory (given for `{dir}`)", path.display())]
    NotADirectory {
        /// The requested directory's name.
        dir: String,
        /// The path given for it.
        path: PathBuf,
    },
    /// A mapped directory overlaps one of Engram's own (its data, cache,
    /// plugins, grants or token): write access there is native code
    /// execution and every secret the daemon holds.
    #[error("`{}` (given for `{dir}`) overlaps Engram's own `{}`: never grant it", path.display(), protected.display())]
    ProtectedDirectory {
        /// The requested directory's name.
        dir: String,
        /// The path given for it.
        path: PathBuf,
        /// Engram's path it overlaps.
        protected: PathBuf,
    },
    /// Private addresses were allowed for a host the plugin does not request.
    #[error("{id} requests no HTTP host `{host}` (write it as its plugin.toml does)")]
    UnknownHost {
        /// The plugin.
        id: String,
        /// The host named.
        host: String,
    },
    /// A directory was mapped that the plugin does not request.
    #[error("{id} requests no directory named `{dir}`")]
    UnknownDirectory {
        /// The plugin.
        id: String,
        /// The mapped name.
        dir: String,
    },
    /// The grants file could not be updated.
    #[error(transparent)]
    Grants(#[from] GrantsError),
}

/// Why a call failed: structured, so clients and models can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CallError {
    /// No loaded tool has that name.
    #[error("no tool named `{tool}`")]
    UnknownTool {
        /// The requested name.
        tool: String,
    },
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments for `{tool}` at `{path}`: {message}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// JSON pointer to the offending value.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The plugin said the call failed.
    #[error("`{tool}` failed ({kind}): {message}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// `invalid_arguments` or `failed`.
        kind: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin's result does not match its output schema (or is not JSON).
    #[error("`{tool}` returned an invalid result at `{path}`: {message}")]
    InvalidOutput {
        /// The tool.
        tool: String,
        /// JSON pointer to the offending value.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A budget ran out; the call was stopped.
    #[error("`{tool}` exceeded its {budget} budget: limit {limit}, used {used}")]
    Budget {
        /// The tool.
        tool: String,
        /// `wall_ms`, `memory_mib` or `output_bytes`.
        budget: String,
        /// The limit.
        limit: u64,
        /// What the call used (or tried to) when it was stopped.
        used: u64,
    },
    /// The plugin already runs as many calls as one plugin may; try again.
    #[error("`{tool}` is busy: its plugin already runs {limit} calls at once")]
    Busy {
        /// The tool.
        tool: String,
        /// Calls one plugin may run at once.
        limit: usize,
    },
    /// The plugin trapped (a bug in the plugin or a sandbox violation).
    #[error("`{tool}` crashed: {message}")]
    Crashed {
        /// The tool.
        tool: String,
        /// The trap.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(error: &LoadError) -> LoadError {
        let json = serde_json::to_value(error).unwrap();
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn load_errors_round_trip_through_json_with_their_kind() {
        let held =
            LoadError::Held { id: "calc".into(), version: "0.2.0".into(), reasons: vec!["adds tool `x`".into()] };
        assert!(held.is_held() && round_trip(&held).is_held());
        assert_eq!(serde_json::to_value(&held).unwrap()["error"], "held");
        let manifest = LoadError::from(ManifestError::Id { path: "/p/x/plugin.toml".into(), id: "X!".into() });
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!((json["error"].as_str(), json["kind"].as_str()), (Some("manifest"), Some("id")), "{json}");
        assert_eq!(round_trip(&manifest), manifest);
        assert!(!manifest.is_held());
        let describe = LoadError::Component {
            path: "/p/x/x.wasm".into(),
            problem: ComponentError::Describe {
                error: CallError::Budget { tool: "x.describe".into(), budget: "wall_ms".into(), limit: 5, used: 6 },
            },
        };
        let json = serde_json::to_value(&describe).unwrap();
        assert_eq!((json["error"].as_str(), json["problem"]["kind"].as_str()), (Some("component"), Some("describe")));
        assert_eq!(json["problem"]["error"]["error"], "budget", "{json}");
        assert_eq!(round_trip(&describe), describe);
        let grants = LoadError::from(GrantsError::Invalid { file: "/g.toml".into(), message: "bad".into() });
        assert_eq!(round_trip(&grants), grants);
    }

    #[test]
    fn messages_name_the_file_the_key_and_what_to_do() {
        let err = ManifestError::Budget { path: "/p/a/plugin.toml".into(), budget: "wall_ms".into(), max: 60_000 };
        assert_eq!(err.to_string(), "/p/a/plugin.toml: `budgets.wall_ms` must be 1 to 60000");
        let err = ManifestError::Id { path: "/p/a/plugin.toml".into(), id: "A".into() };
        assert!(err.to_string().contains("`id` = \"A\": use 1 to 24 lowercase"), "{err}");
        let err = LoadError::Component {
            path: "/p/a/a.wasm".into(),
            problem: ComponentError::DescriptionTooLong { tool: "a.t".into(), max: 4096 },
        };
        assert_eq!(err.to_string(), "/p/a/a.wasm: tool `a.t`: description longer than 4096 characters");
        let err = LoadError::Held { id: "a".into(), version: "2".into(), reasons: vec!["x".into(), "y".into()] };
        assert_eq!(err.to_string(), "a 2 is held until approved (`engram plugins grant a`): it x, y");
        let err = ApproveError::UnmappedDirectory { id: "a".into(), dir: "data".into() };
        assert!(err.to_string().contains("--dir data=/absolute/path"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_path_serializes_lossily() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/p/\xff/plugin.toml"));
        let err = LoadError::from(ManifestError::Invalid { path, message: "x".into() });
        let json = serde_json::to_value(&err).unwrap();
        assert!(json["path"].as_str().is_some_and(|p| p.starts_with("/p/")), "{json}");
    }
}
