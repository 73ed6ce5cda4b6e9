//! [`PluginHost`]: loads plugin folders, lists their tools and calls them,
//! each call in a fresh sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{CallError, ComponentError, HostError, LoadError, ManifestError};
use crate::grants::{Approval, Effective, Grants};
use crate::manifest::Manifest;
use crate::recall::{Recall, Scope};
use crate::report::{HeldVersion, LoadReport};
use crate::runtime::{Compiled, Runtime, Setup};
use crate::tool::{MAX_TOOLS, Tool, ToolInfo, digest};

/// One loaded plugin version.
pub(crate) struct Loaded {
    pub(crate) manifest: Manifest,
    pub(crate) sha256: String,
    pub(crate) compiled: Compiled,
    pub(crate) tools: BTreeMap<String, Tool>,
    /// Each tool's digest, for approvals.
    pub(crate) digests: BTreeMap<String, String>,
    /// What it may use; replaced when grants change.
    pub(crate) effective: RwLock<Arc<Effective>>,
    /// Its calls running now ([`PLUGIN_CALLS`] at most).
    pub(crate) in_flight: AtomicUsize,
}

/// Longest a request for tools waits for the first load of the plugins
/// directory; then it answers with what has loaded.
pub const LOAD_WAIT: Duration = Duration::from_secs(10);

/// Calls of one plugin that may run at once; more are refused as busy, so
/// one plugin (slow, or blocking until its deadline) cannot take every
/// sandbox slot and thread from the others.
pub const PLUGIN_CALLS: usize = 16;

/// One running call of a plugin, counted down when it ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Loaded {
    pub(crate) fn effective(&self) -> Arc<Effective> {
        Arc::clone(&self.effective.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A plugin folder read, compiled and described, not yet checked against
/// its approval.
pub(crate) struct Prepared {
    pub(crate) manifest: Manifest,
    pub(crate) sha256: String,
    pub(crate) compiled: Compiled,
    pub(crate) tools: BTreeMap<String, Tool>,
    pub(crate) digests: BTreeMap<String, String>,
}

/// The plugin host. Cheap to share (`Arc`); calls run concurrently.
pub struct PluginHost {
    pub(crate) runtime: Runtime,
    pub(crate) plugins: RwLock<BTreeMap<String, Arc<Loaded>>>,
    pub(crate) held: RwLock<BTreeMap<String, (Manifest, HeldVersion)>>,
    pub(crate) grants: Grants,
    pub(crate) recall: RwLock<Option<Arc<dyn Recall>>>,
    /// Bumped whenever the published tools change (a version loaded or
    /// unloaded), so surfaces can tell their clients.
    pub(crate) generation: tokio::sync::watch::Sender<u64>,
    /// True while the first load of the plugins directory runs in the
    /// background (see [`PluginHost::serve_dir`]).
    pub(crate) loading: tokio::sync::watch::Sender<bool>,
}

impl PluginHost {
    /// A host caching compiled components in `cache_dir` (none: compile on
    /// every load), with grants kept in memory (nothing granted).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, HostError> {
        Self::with_grants(cache_dir, Grants::in_memory())
    }

    /// A host whose plugins get what `grants` gives them.
    pub fn with_grants(cache_dir: Option<PathBuf>, grants: Grants) -> Result<Self, HostError> {
        Ok(Self {
            runtime: Runtime::new(cache_dir)?,
            plugins: RwLock::new(BTreeMap::new()),
            held: RwLock::new(BTreeMap::new()),
            grants,
            recall: RwLock::new(None),
            generation: tokio::sync::watch::Sender::new(0),
            loading: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The grants in force.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Tells the receiver each time the published tools change (the value
    /// is a counter; only changes matter).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn tools_changed(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Waits until the first load of the plugins directory is done (at once
    /// if none runs), for [`LOAD_WAIT`] at most: a request for tools made
    /// while the daemon starts sees every plugin that loads, not an empty
    /// list, and one slow plugin cannot hold it longer.
    pub async fn loaded(&self) {
        let mut loading = self.loading.subscribe();
        // An error means the sender is gone: no load is running either.
        let _ = tokio::time::timeout(LOAD_WAIT, loading.wait_for(|loading| !loading)).await;
    }

    /// Whether the first load of the plugins directory is still running.
    pub fn is_loading(&self) -> bool {
        *self.loading.borrow()
    }

    /// Where plugins with the `memory` grant recall from.
    pub fn set_recall(&self, recall: Arc<dyn Recall>) {
        *self.recall.write().unwrap_or_else(|e| e.into_inner()) = Some(recall);
    }

    /// Loads every plugin folder under `dir`; a bad one is reported and
    /// skipped, the others load.
    pub fn load_dir(&self, dir: &Path) -> LoadReport {
        let mut report = LoadReport::default();
        for folder in crate::watch::folders(dir).into_values() {
            match self.load_logged(&folder) {
                Ok((id, version)) => report.loaded.push((id, version)),
                Err(err) => report.failed.push((folder, err)),
            }
        }
        report
    }

    /// [`PluginHost::load`], a failure logged (a success logs itself).
    pub(crate) fn load_logged(&self, folder: &Path) -> Result<(String, String), LoadError> {
        let loaded = self.load(folder);
        if let Err(err) = &loaded {
            tracing::warn!(plugin = %folder.display(), error = %err, "plugin not loaded");
        }
        loaded
    }

    /// Loads (or replaces) the plugin in `folder`: compiles its component,
    /// reads its tools, checks them against its approval (a version asking
    /// for more is held), runs its test vectors in the sandbox, then swaps
    /// it in. Calls in flight finish on the version they started with; a
    /// version that fails never replaces a working one. Returns its id and
    /// version.
    pub fn load(&self, folder: &Path) -> Result<(String, String), LoadError> {
        let Prepared { manifest, sha256, compiled, tools, digests } = self.prepare(folder)?;
        let id = manifest.id.clone();
        let grant = self.grants.get(&id);
        if let Some(approval) = &grant.approved {
            let reasons = approval.review(&manifest.capabilities, &manifest.budgets, &digests);
            if !reasons.is_empty() {
                let version = manifest.version.clone();
                let held = HeldVersion { version: version.clone(), reasons: reasons.clone() };
                self.held.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (manifest, held));
                return Err(LoadError::Held { id, version, reasons });
            }
        }
        let effective = RwLock::new(Arc::new(Effective::of(&manifest.capabilities, &grant)));
        let loaded = Loaded { manifest, sha256, compiled, tools, digests, effective, in_flight: AtomicUsize::new(0) };
        self.run_vectors(folder, &loaded)?;
        // First sight, or a version within its approval: this is now the
        // approved state later versions are compared with. A plugin never
        // approved by the operator stays marked so.
        let approval = Approval {
            version: loaded.manifest.version.clone(),
            request: loaded.manifest.capabilities.clone(),
            tools: loaded.digests.clone(),
            budgets: Some(loaded.manifest.budgets),
            sha256: Some(loaded.sha256.clone()),
            // A new build the operator never saw is not theirs either.
            automatic: grant.approved.as_ref().is_none_or(|approved| {
                approved.automatic || approved.sha256.as_ref().is_some_and(|sha256| *sha256 != loaded.sha256)
            }),
        };
        if grant.approved.is_none() {
            tracing::warn!(
                plugin = %id,
                version = %approval.version,
                "plugin seen for the first time: approved automatically with nothing granted; review it with `engram plugins list`"
            );
        }
        if grant.approved.as_ref() != Some(&approval)
            && let Err(err) = self.grants.update(&id, |grant| grant.approved = Some(approval))
        {
            tracing::warn!(plugin = %id, error = %err, "cannot record the plugin's approval");
        }
        let key = (id, loaded.manifest.version.clone());
        tracing::info!(plugin = %key.0, version = %key.1, tools = loaded.tools.len(), sha256 = %loaded.sha256, "plugin loaded");
        self.held.write().unwrap_or_else(|e| e.into_inner()).remove(&key.0);
        let digests = loaded.digests.clone();
        // The grant read above may be stale: a revocation that landed while
        // the vectors ran refreshed the plugins then loaded, not this one.
        // Read it again (off the lock: it touches the disk), and once more
        // under the lock that refreshes take if it changed meanwhile.
        let generation = self.grants.generation();
        let mut effective = Effective::of(&loaded.manifest.capabilities, &self.grants.get(&key.0));
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if self.grants.generation() != generation {
            effective = Effective::of(&loaded.manifest.capabilities, &self.grants.get(&key.0));
        }
        *loaded.effective.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(effective);
        let previous = plugins.insert(key.0.clone(), Arc::new(loaded));
        drop(plugins);
        if previous.is_none_or(|previous| previous.digests != digests) {
            self.tools_changed();
        }
        Ok(key)
    }

    /// Reads, compiles and describes the plugin in `folder`.
    pub(crate) fn prepare(&self, folder: &Path) -> Result<Prepared, LoadError> {
        let manifest_path = folder.join("plugin.toml");
        let manifest = Manifest::read(&manifest_path)?;
        if folder.file_name().and_then(|n| n.to_str()) != Some(manifest.id.as_str()) {
            return Err(ManifestError::FolderName { path: manifest_path, id: manifest.id }.into());
        }
        let wasm = folder.join(format!("{}.wasm", manifest.id));
        let bad = |problem: ComponentError| LoadError::Component { path: wasm.clone(), problem };
        let bytes = std::fs::read(&wasm).map_err(|err| bad(ComponentError::Unreadable { message: err.to_string() }))?;
        let (compiled, sha256) = self.runtime.compile(&bytes).map_err(bad)?;
        let specs =
            self.runtime.describe(&compiled, &manifest).map_err(|error| bad(ComponentError::Describe { error }))?;
        if specs.len() > MAX_TOOLS {
            return Err(bad(ComponentError::TooManyTools { count: specs.len(), max: MAX_TOOLS }));
        }
        let mut tools = BTreeMap::new();
        for spec in specs {
            let tool = Tool::from_spec(&manifest, spec).map_err(bad)?;
            let name = tool.info.name.clone();
            if tools.insert(name.clone(), tool).is_some() {
                return Err(bad(ComponentError::DuplicateTool { tool: name }));
            }
        }
        let digests = tools.iter().map(|(name, tool)| (name.clone(), digest(&tool.info))).collect();
        Ok(Prepared { manifest, sha256, compiled, tools, digests })
    }

    /// Unloads plugin `id`; calls in flight finish. Whether it was loaded.
    pub fn unload(&self, id: &str) -> bool {
        self.held.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        let removed = self.plugins.write().unwrap_or_else(|e| e.into_inner()).remove(id).is_some();
        if removed {
            self.tools_changed();
        }
        removed
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

    /// Runs `local` (published as `name`) of `plugin` in a fresh store.
    pub(crate) fn call_in(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        name: &str,
        local: &str,
        args: &str,
    ) -> Result<String, CallError> {
        let running = Running(&plugin.in_flight);
        if running.0.fetch_add(1, Ordering::AcqRel) >= PLUGIN_CALLS {
            return Err(CallError::Busy { tool: name.to_owned(), limit: PLUGIN_CALLS });
        }
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
        let wall_ms = || {
            let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
            name.split_once('.').and_then(|(id, _)| plugins.get(id).map(|p| p.manifest.budgets.wall_ms))
        };
        // A tool not (yet) published may be in the first load, still running.
        let wall_ms = match wall_ms() {
            Some(wall_ms) => Some(wall_ms),
            None => {
                self.loaded().await;
                wall_ms()
            }
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
}
