//! Engram's plugin host: expert tools as WebAssembly components.
//!
//! One wasmtime [`Engine`] (Cranelift, pooling allocator, epoch
//! interruption) compiles each component once — cached on disk by its
//! sha256 and the engine's compatibility hash — and keeps an `InstancePre`
//! per plugin version. Every call gets a fresh `Store`: its wall budget is
//! an epoch deadline set before instantiation (a 500 µs ticker advances the
//! epoch), its memory budget a resource limiter, its WASI context denies
//! everything (no environment, no files, no sockets) and its stdout/stderr
//! go, bounded, to the log. Arguments and results are validated against
//! the tools' JSON Schemas; budget overruns come back as structured errors.
//!
//! Capabilities beyond that — directories, outgoing HTTP through the host,
//! recall from memory — are requested in the manifest and granted by the
//! operator ([`grants`]); an upgrade that asks for more or changes a tool's
//! description is held until approved again.
//!
//! Layout of a plugins directory: one folder per plugin holding
//! `plugin.toml` ([`manifest`]), the component (`<id>.wasm`) and optional
//! test vectors (`tests/*.json`) that must pass before the plugin loads.

pub mod grants;
pub mod manifest;
mod net;
mod runtime;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use grants::{Approval, Effective, FileGrant, Grant, Grants};
pub use manifest::{Budgets, Capabilities, Manifest};
use runtime::{Compiled, Runtime, Setup};
pub use watch::{ReloadEvent, Watcher};

/// Who a call runs for: recall from memory stays inside this scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// The tenant, if the daemon serves several.
    pub tenant: Option<String>,
    /// The conversation the call belongs to, if any.
    pub conversation: Option<String>,
}

/// One remembered passage, as the memory layer returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The passage.
    pub text: String,
    /// Relevance, 0 to 1.
    pub score: f32,
}

/// The memory a plugin with the `memory` grant recalls from (the daemon's
/// memory layer implements it).
pub trait Recall: Send + Sync {
    /// Up to `limit` passages relevant to `query`, within `scope` only.
    fn recall(&self, scope: &Scope, query: &str, limit: u32) -> Result<Vec<Hit>, String>;
}

/// Longest published tool name (`<plugin>.<tool>`), MCP clients' common limit.
pub const MAX_TOOL_NAME: usize = 48;
/// Longest tool description.
pub const MAX_DESCRIPTION: usize = 4096;

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `plugin.toml` is missing, unreadable or invalid.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The component is missing or does not compile, link or describe itself.
    #[error("{}: {message}", path.display())]
    Component {
        /// The component file.
        path: PathBuf,
        /// What is wrong.
        message: String,
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
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// The tool it called.
        tool: String,
        /// Expected versus got.
        message: String,
    },
}

/// Why a call failed: structured, so clients and models can act on it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
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
    /// The plugin trapped (a bug in the plugin or a sandbox violation).
    #[error("`{tool}` crashed: {message}")]
    Crashed {
        /// The tool.
        tool: String,
        /// The trap.
        message: String,
    },
}

/// MCP-style behaviour hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Annotations {
    /// Changes nothing outside the call.
    pub read_only: bool,
    /// May destroy or overwrite data.
    pub destructive: bool,
    /// Repeating has no further effect.
    pub idempotent: bool,
    /// Reaches the outside world.
    pub open_world: bool,
}

/// A tool as published to clients.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// `<plugin>.<tool>`.
    pub name: String,
    /// The plugin's id.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// Human-readable title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What it does.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// JSON Schema of the result, if promised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Behaviour hints.
    pub annotations: Annotations,
}

/// One loaded plugin version.
struct Loaded {
    manifest: Manifest,
    sha256: String,
    compiled: Compiled,
    tools: BTreeMap<String, Tool>,
    /// Each tool's digest, for approvals.
    digests: BTreeMap<String, String>,
    /// What it may use; replaced when grants change.
    effective: RwLock<Arc<Effective>>,
}

impl Loaded {
    fn effective(&self) -> Arc<Effective> {
        Arc::clone(&self.effective.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A plugin as `engram plugins list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its id.
    pub id: String,
    /// The version serving (none if only a held version exists).
    pub version: Option<String>,
    /// The component's sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its tools' published names.
    pub tools: Vec<String>,
    /// What its manifest requests.
    pub requested: Capabilities,
    /// What it holds: request ∩ grant.
    pub granted: Vec<String>,
    /// Requested but not granted.
    pub missing: Vec<String>,
    /// A newer version waiting for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldVersion>,
}

/// A version waiting for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct HeldVersion {
    /// Its version.
    pub version: String,
    /// What it asks for beyond the approval.
    pub reasons: Vec<String>,
}

/// A plugin folder read and described but not loaded: what an operator
/// approves with `engram plugins grant`.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Its manifest.
    pub manifest: Manifest,
    /// Each tool's digest.
    pub digests: BTreeMap<String, String>,
}

struct Tool {
    info: ToolInfo,
    /// The plugin's own name for it.
    local: String,
    input: jsonschema::Validator,
    output: Option<jsonschema::Validator>,
}

/// What [`PluginHost::load_dir`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Plugins now loaded: (id, version).
    pub loaded: Vec<(String, String)>,
    /// Folders that did not load, with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// The plugin host. Cheap to share (`Arc`); calls run concurrently.
pub struct PluginHost {
    runtime: Runtime,
    plugins: RwLock<BTreeMap<String, Arc<Loaded>>>,
    held: RwLock<BTreeMap<String, (Manifest, HeldVersion)>>,
    grants: Grants,
    recall: RwLock<Option<Arc<dyn Recall>>>,
}

impl PluginHost {
    /// A host caching compiled components in `cache_dir` (none: compile on
    /// every load), with grants kept in memory (nothing granted).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, String> {
        Self::with_grants(cache_dir, Grants::in_memory())
    }

    /// A host whose plugins get what `grants` gives them.
    pub fn with_grants(cache_dir: Option<PathBuf>, grants: Grants) -> Result<Self, String> {
        Ok(Self {
            runtime: Runtime::new(cache_dir)?,
            plugins: RwLock::new(BTreeMap::new()),
            held: RwLock::new(BTreeMap::new()),
            grants,
            recall: RwLock::new(None),
        })
    }

    /// The grants in force.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Where plugins with the `memory` grant recall from.
    pub fn set_recall(&self, recall: Arc<dyn Recall>) {
        *self.recall.write().unwrap_or_else(|e| e.into_inner()) = Some(recall);
    }

    /// Rereads the grants (applying revocations to the loaded plugins at
    /// once), then reloads every plugin in `dir`, held ones included. A bad
    /// grants file is reported and the grants in force stay.
    pub fn reload(&self, dir: &Path) -> LoadReport {
        let mut failed = Vec::new();
        if let Err(err) = self.grants.reload() {
            tracing::warn!(error = %err, "grants not reloaded; the previous ones stay in force");
            failed.push((self.grants.file().map(Path::to_path_buf).unwrap_or_default(), err));
        }
        self.refresh_grants();
        let mut report = self.load_dir(dir);
        report.failed.splice(0..0, failed);
        report
    }

    /// Recomputes what each loaded plugin may use from the grants in force.
    pub fn refresh_grants(&self) {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        for (id, loaded) in plugins.iter() {
            let effective = Effective::of(&loaded.manifest.capabilities, &self.grants.get(id));
            *loaded.effective.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(effective);
        }
    }

    /// Every plugin, loaded or held, with its grants.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, PluginInfo> = BTreeMap::new();
        for (id, loaded) in plugins.iter() {
            let effective = loaded.effective();
            out.insert(
                id.clone(),
                PluginInfo {
                    id: id.clone(),
                    version: Some(loaded.manifest.version.clone()),
                    sha256: Some(loaded.sha256.clone()),
                    tools: loaded.tools.keys().cloned().collect(),
                    requested: loaded.manifest.capabilities.clone(),
                    granted: effective.granted(),
                    missing: effective.missing.clone(),
                    held: None,
                },
            );
        }
        for (id, (manifest, version)) in held.iter() {
            let entry = out.entry(id.clone()).or_insert_with(|| {
                let effective = Effective::of(&manifest.capabilities, &self.grants.get(id));
                PluginInfo {
                    id: id.clone(),
                    version: None,
                    sha256: None,
                    tools: Vec::new(),
                    requested: manifest.capabilities.clone(),
                    granted: effective.granted(),
                    missing: effective.missing,
                    held: None,
                }
            });
            entry.held = Some(version.clone());
        }
        out.into_values().collect()
    }

    /// Reads and describes the plugin in `folder` without loading it.
    pub fn inspect(&self, folder: &Path) -> Result<Inspection, LoadError> {
        let (manifest, _, _, _, digests) = self.prepare(folder)?;
        Ok(Inspection { manifest, digests })
    }

    /// Approves the plugin in `folder` as it is now — its requested
    /// capabilities and tool descriptions — and grants everything it
    /// requests: each requested directory must be mapped in `dirs` (name →
    /// absolute path). `http_private` lets its hosts be private addresses.
    /// Saved in the grants; call [`PluginHost::reload`] to apply.
    pub fn approve(
        &self,
        folder: &Path,
        dirs: &BTreeMap<String, PathBuf>,
        http_private: bool,
    ) -> Result<Grant, String> {
        let inspection = self.inspect(folder).map_err(|err| err.to_string())?;
        let Inspection { manifest, digests } = inspection;
        let request = &manifest.capabilities;
        let mut files = BTreeMap::new();
        for access in &request.files {
            let path = dirs.get(&access.dir).ok_or_else(|| {
                format!(
                    "{} requests the directory `{}`: map it to a real one with `--dir {}=/absolute/path`",
                    manifest.id, access.dir, access.dir
                )
            })?;
            if !path.is_absolute() || !path.is_dir() {
                return Err(format!("`{}` is not an absolute path to a directory", path.display()));
            }
            files.insert(access.dir.clone(), FileGrant { path: path.clone(), mode: access.mode });
        }
        if let Some(unknown) = dirs.keys().find(|name| !request.files.iter().any(|a| &a.dir == *name)) {
            return Err(format!("{} requests no directory named `{unknown}`", manifest.id));
        }
        self.grants.update(&manifest.id, |grant| {
            grant.memory = request.memory;
            grant.http = request.http.clone();
            grant.http_private = http_private;
            grant.files = files;
            grant.approved =
                Some(Approval { version: manifest.version.clone(), request: request.clone(), tools: digests });
            grant.clone()
        })
    }

    /// Takes back plugin `id`'s grants (all of them, or only those named),
    /// keeping its approval; saved, and applied to the loaded plugin now.
    pub fn revoke(&self, id: &str, memory: bool, http: &[String], dirs: &[String]) -> Result<Grant, String> {
        let grant = self.grants.revoke(id, memory, http, dirs)?;
        self.refresh_grants();
        Ok(grant)
    }

    /// Loads every plugin folder under `dir`; a bad one is reported and
    /// skipped, the others load.
    pub fn load_dir(&self, dir: &Path) -> LoadReport {
        let mut report = LoadReport::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return report;
        };
        // Hidden folders are installs in progress (scripts/build-plugins stages there).
        let mut folders: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("plugin.toml").is_file())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
            .collect();
        folders.sort();
        for folder in folders {
            match self.load(&folder) {
                Ok((id, version)) => report.loaded.push((id, version)),
                Err(err) => {
                    tracing::warn!(plugin = %folder.display(), error = %err, "plugin not loaded");
                    report.failed.push((folder, err.to_string()));
                }
            }
        }
        report
    }

    /// Loads (or replaces) the plugin in `folder`: compiles its component,
    /// reads its tools, checks them against its approval (a version asking
    /// for more is held), runs its test vectors in the sandbox, then swaps
    /// it in. Calls in flight finish on the version they started with; a
    /// version that fails never replaces a working one.
    pub fn load(&self, folder: &Path) -> Result<(String, String), LoadError> {
        let (manifest, sha256, compiled, tools, digests) = self.prepare(folder)?;
        let id = manifest.id.clone();
        let grant = self.grants.get(&id);
        if let Some(approval) = &grant.approved {
            let reasons = approval.review(&manifest.capabilities, &digests);
            if !reasons.is_empty() {
                let version = manifest.version.clone();
                let held = HeldVersion { version: version.clone(), reasons: reasons.clone() };
                self.held.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (manifest, held));
                return Err(LoadError::Held { id, version, reasons });
            }
        }
        let effective = RwLock::new(Arc::new(Effective::of(&manifest.capabilities, &grant)));
        let loaded = Loaded { manifest, sha256, compiled, tools, digests, effective };
        self.run_vectors(folder, &loaded)?;
        // First sight, or a version within its approval: this is now the
        // approved state later versions are compared with.
        let approval = Approval {
            version: loaded.manifest.version.clone(),
            request: loaded.manifest.capabilities.clone(),
            tools: loaded.digests.clone(),
        };
        if grant.approved.as_ref() != Some(&approval)
            && let Err(err) = self.grants.update(&id, |grant| grant.approved = Some(approval))
        {
            tracing::warn!(plugin = %id, error = %err, "cannot record the plugin's approval");
        }
        let key = (id, loaded.manifest.version.clone());
        tracing::info!(plugin = %key.0, version = %key.1, tools = loaded.tools.len(), sha256 = %loaded.sha256, "plugin loaded");
        self.held.write().unwrap_or_else(|e| e.into_inner()).remove(&key.0);
        self.plugins.write().unwrap_or_else(|e| e.into_inner()).insert(key.0.clone(), Arc::new(loaded));
        Ok(key)
    }

    /// Reads, compiles and describes the plugin in `folder`.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        folder: &Path,
    ) -> Result<(Manifest, String, Compiled, BTreeMap<String, Tool>, BTreeMap<String, String>), LoadError> {
        let manifest = Manifest::read(&folder.join("plugin.toml"))?;
        if folder.file_name().and_then(|n| n.to_str()) != Some(manifest.id.as_str()) {
            return Err(LoadError::Manifest {
                path: folder.join("plugin.toml"),
                message: format!("the folder must be named after the plugin's id `{}`", manifest.id),
            });
        }
        let wasm = folder.join(format!("{}.wasm", manifest.id));
        let bad = |message: String| LoadError::Component { path: wasm.clone(), message };
        let bytes = std::fs::read(&wasm).map_err(|err| bad(format!("cannot read the component: {err}")))?;
        let (compiled, sha256) = self.runtime.compile(&bytes).map_err(bad)?;
        let specs =
            self.runtime.describe(&compiled, &manifest).map_err(|err| bad(format!("describe failed: {err}")))?;
        let mut tools = BTreeMap::new();
        for spec in specs {
            let tool = tool_from_spec(&manifest, spec).map_err(bad)?;
            if tools.insert(tool.info.name.clone(), tool).is_some() {
                return Err(bad("two tools share a name".to_owned()));
            }
        }
        let digests = tools.iter().map(|(name, tool)| (name.clone(), digest(&tool.info))).collect();
        Ok((manifest, sha256, compiled, tools, digests))
    }

    /// Unloads plugin `id`; calls in flight finish. Whether it was loaded.
    pub fn unload(&self, id: &str) -> bool {
        self.held.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.plugins.write().unwrap_or_else(|e| e.into_inner()).remove(id).is_some()
    }

    /// Every tool of every loaded plugin, by name.
    pub fn list_tools(&self) -> Vec<ToolInfo> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.values().flat_map(|p| p.tools.values().map(|t| t.info.clone())).collect()
    }

    /// Calls tool `name` (`<plugin>.<tool>`) with `arguments`; blocks until
    /// the plugin answers or its wall budget ends. Run it off the async
    /// executor (see [`PluginHost::call_tool`]).
    pub fn call_tool_blocking(&self, name: &str, arguments: &Value) -> Result<Value, CallError> {
        self.call_tool_blocking_in(&Scope::default(), name, arguments)
    }

    /// [`PluginHost::call_tool_blocking`] for a caller in `scope`.
    pub fn call_tool_blocking_in(&self, scope: &Scope, name: &str, arguments: &Value) -> Result<Value, CallError> {
        let plugin = {
            let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
            name.split_once('.').and_then(|(id, _)| plugins.get(id).cloned())
        };
        let Some((plugin, tool)) = plugin.as_ref().and_then(|p| p.tools.get(name).map(|t| (p, t))) else {
            return Err(CallError::UnknownTool { tool: name.to_owned() });
        };
        if let Some(error) = tool.input.iter_errors(arguments).next() {
            return Err(CallError::InvalidArguments {
                tool: name.to_owned(),
                path: error.instance_path.to_string(),
                message: error.to_string(),
            });
        }
        let text = self.call_in(plugin, scope, name, &tool.local, &arguments.to_string())?;
        let output: Value = serde_json::from_str(&text).map_err(|err| CallError::InvalidOutput {
            tool: name.to_owned(),
            path: String::new(),
            message: format!("not JSON: {err}"),
        })?;
        if let Some(error) = tool.output.as_ref().and_then(|v| v.iter_errors(&output).next()) {
            return Err(CallError::InvalidOutput {
                tool: name.to_owned(),
                path: error.instance_path.to_string(),
                message: error.to_string(),
            });
        }
        Ok(output)
    }

    /// One call in a fresh store without schema validation (benchmarks).
    #[doc(hidden)]
    pub fn call_unchecked(&self, name: &str, arguments: &str) -> Result<String, CallError> {
        let (plugin, local) = self.find(name)?;
        self.call_in(&plugin, &Scope::default(), name, &local, arguments)
    }

    fn call_in(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        name: &str,
        local: &str,
        args: &str,
    ) -> Result<String, CallError> {
        let recall = self.recall.read().unwrap_or_else(|e| e.into_inner()).clone();
        let effective = plugin.effective();
        let setup = Setup { manifest: &plugin.manifest, effective: &effective, recall, scope };
        self.runtime.call(&plugin.compiled, &setup, name, local, args)
    }

    /// `calls` calls on one instance, timed each (the engine's floor, for
    /// benchmarks; real calls always get a fresh instance).
    #[doc(hidden)]
    pub fn warm_calls(&self, name: &str, arguments: &str, calls: usize) -> Result<Vec<Duration>, CallError> {
        let (plugin, local) = self.find(name)?;
        let effective = plugin.effective();
        let setup = Setup { manifest: &plugin.manifest, effective: &effective, recall: None, scope: &Scope::default() };
        self.runtime.warm_calls(&plugin.compiled, &setup, name, &local, arguments, calls)
    }

    fn find(&self, name: &str) -> Result<(Arc<Loaded>, String), CallError> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        name.split_once('.')
            .and_then(|(id, _)| plugins.get(id))
            .and_then(|p| p.tools.get(name).map(|t| (Arc::clone(p), t.local.clone())))
            .ok_or_else(|| CallError::UnknownTool { tool: name.to_owned() })
    }

    /// [`PluginHost::call_tool_blocking`] on tokio's blocking pool, with a
    /// tokio timeout a little past the wall budget as a second line of
    /// defence.
    pub async fn call_tool(self: &Arc<Self>, name: &str, arguments: Value) -> Result<Value, CallError> {
        self.call_tool_in(Scope::default(), name, arguments).await
    }

    /// [`PluginHost::call_tool`] for a caller in `scope`.
    pub async fn call_tool_in(
        self: &Arc<Self>,
        scope: Scope,
        name: &str,
        arguments: Value,
    ) -> Result<Value, CallError> {
        let wall_ms = {
            let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
            name.split_once('.').and_then(|(id, _)| plugins.get(id).map(|p| p.manifest.budgets.wall_ms))
        };
        let Some(wall_ms) = wall_ms else {
            return Err(CallError::UnknownTool { tool: name.to_owned() });
        };
        let host = Arc::clone(self);
        let tool = name.to_owned();
        let started = Instant::now();
        let task = tokio::task::spawn_blocking(move || host.call_tool_blocking_in(&scope, &tool, &arguments));
        match tokio::time::timeout(Duration::from_millis(wall_ms + 250), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => {
                Err(CallError::Crashed { tool: name.to_owned(), message: format!("host task failed: {join}") })
            }
            Err(_) => Err(CallError::Budget {
                tool: name.to_owned(),
                budget: "wall_ms".to_owned(),
                limit: wall_ms,
                used: started.elapsed().as_millis() as u64,
            }),
        }
    }

    /// Runs `folder/tests/*.json` against a candidate version before it is
    /// published.
    fn run_vectors(&self, folder: &Path, loaded: &Loaded) -> Result<(), LoadError> {
        let Ok(entries) = std::fs::read_dir(folder.join("tests")) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            let fail = |index: usize, tool: &str, message: String| LoadError::TestVector {
                path: path.clone(),
                index,
                tool: tool.to_owned(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|err| fail(0, "-", format!("cannot read: {err}")))?;
            let vectors: Vec<Value> =
                serde_json::from_str(&text).map_err(|err| fail(0, "-", format!("not a JSON array: {err}")))?;
            for (index, vector) in vectors.iter().enumerate() {
                let local = vector["tool"].as_str().unwrap_or_default();
                let name = format!("{}.{local}", loaded.manifest.id);
                let Some(tool) = loaded.tools.get(&name) else {
                    return Err(fail(index, local, "no such tool".to_owned()));
                };
                let args = vector["arguments"].to_string();
                let got = self.call_in(loaded, &Scope::default(), &name, &tool.local, &args);
                // Numeric experts may give a relative tolerance for numbers.
                let tolerance = vector.get("tolerance").and_then(Value::as_f64).unwrap_or(0.0);
                match (got, vector.get("expected"), vector.get("error")) {
                    (Ok(text), Some(expected), _) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if !close(&value, expected, tolerance) {
                            return Err(fail(index, local, format!("expected {expected}, got {value}")));
                        }
                    }
                    (Err(CallError::ToolFailed { kind, .. }), _, Some(error))
                        if error.as_str() == Some(&kind.replace('_', "-")) => {}
                    (got, _, _) => return Err(fail(index, local, format!("unexpected outcome {got:?}"))),
                }
            }
        }
        Ok(())
    }
}

/// JSON equality, numbers within `tolerance` relative to the expected
/// value (absolute below 1).
fn close(got: &Value, expected: &Value, tolerance: f64) -> bool {
    match (got, expected) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= tolerance * b.abs().max(1.0),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| close(a, b, tolerance))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| close(v, w, tolerance)))
        }
        _ => got == expected,
    }
}

/// A tool's digest: everything a model reads about it.
fn digest(info: &ToolInfo) -> String {
    let surface =
        serde_json::json!([info.title, info.description, info.input_schema, info.output_schema, info.annotations]);
    let hash = Sha256::digest(surface.to_string().as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn tool_from_spec(manifest: &Manifest, spec: runtime::Spec) -> Result<Tool, String> {
    let name = format!("{}.{}", manifest.id, spec.name);
    let name_ok = !spec.name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && spec.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(format!(
            "tool name `{}`: use letters, digits, `_` or `-`, at most {MAX_TOOL_NAME} characters with the plugin prefix",
            spec.name
        ));
    }
    if spec.description.chars().count() > MAX_DESCRIPTION {
        return Err(format!("tool `{name}`: description longer than {MAX_DESCRIPTION} characters"));
    }
    let schema = |text: &str, which: &str| -> Result<(Value, jsonschema::Validator), String> {
        let value: Value =
            serde_json::from_str(text).map_err(|err| format!("tool `{name}`: {which} schema is not JSON: {err}"))?;
        let validator = jsonschema::validator_for(&value)
            .map_err(|err| format!("tool `{name}`: {which} schema is not a valid JSON Schema: {err}"))?;
        Ok((value, validator))
    };
    let (input_schema, input) = schema(&spec.input_schema, "input")?;
    if input_schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!("tool `{name}`: the input schema must describe an object"));
    }
    let output = spec.output_schema.as_deref().map(|text| schema(text, "output")).transpose()?;
    Ok(Tool {
        info: ToolInfo {
            name: name.clone(),
            plugin: manifest.id.clone(),
            version: manifest.version.clone(),
            title: spec.title,
            description: spec.description,
            input_schema,
            output_schema: output.as_ref().map(|(v, _)| v.clone()),
            annotations: spec.annotations,
        },
        local: spec.name,
        input,
        output: output.map(|(_, v)| v),
    })
}
