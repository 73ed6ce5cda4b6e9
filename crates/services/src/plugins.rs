//! The plugin host as the configuration describes it: the operator's
//! grants (the grants file plus `[plugins.grants.*]`) and the plugins
//! directory, with compiled components cached under the cache directory.

use std::path::PathBuf;
use std::sync::Arc;

use engram_config::{DirMode, Loaded, Origin, Paths};
use engram_plugin_host::GrantsError;
use engram_plugin_host::grants::{FileGrant, Grant, Grants};
use engram_plugin_host::manifest::FileMode;
use engram_plugin_host::{HostError, PluginHost};

/// The grants file at `paths.grants_file` with the configuration's
/// `[plugins.grants.*]` added.
pub fn grants(loaded: &Loaded, paths: &Paths) -> Result<Grants, GrantsError> {
    let config = &loaded.config;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let declared = config
        .plugins
        .grants
        .iter()
        .map(|(id, declared)| {
            let mut grant = Grant::none();
            grant.memory = declared.memory;
            grant.http.clone_from(&declared.http);
            grant.http_private.clone_from(&declared.http_private);
            grant.http_requests = declared.http_requests.unwrap_or(grant.http_requests);
            grant.http_bytes = declared.http_bytes.unwrap_or(grant.http_bytes);
            for (name, dir) in &declared.files {
                let path = match (dir.path.strip_prefix("~"), &home) {
                    (Ok(rest), Some(home)) => home.join(rest),
                    _ => dir.path.clone(),
                };
                let mode = match dir.mode {
                    DirMode::Read => FileMode::Read,
                    DirMode::Write => FileMode::Write,
                };
                grant.files.insert(name.clone(), FileGrant { path, mode, quota_mib: dir.quota_mib });
            }
            (id.clone(), grant)
        })
        .collect();
    // Engram's own files: writing one is running code as the daemon or
    // granting oneself more (the configuration), reading one leaks a key.
    let own = [
        &paths.data_dir,
        &paths.journal,
        &paths.socket,
        &paths.cache_dir,
        &paths.plugins_dir,
        &paths.models_dir,
        &paths.embedder,
        &paths.llm,
        &paths.token_file,
        &paths.tenant_tokens_dir,
    ];
    let keys = [&paths.llm_api_key_file, &paths.qdrant_api_key_file].into_iter().flatten();
    let configs = loaded.sources.iter().filter_map(|origin| match origin {
        Origin::File(path) => Some(path),
        _ => None,
    });
    let protected = own.into_iter().chain(keys).chain(configs).cloned();
    Ok(Grants::open(paths.grants_file.clone())?.with_config(declared).protecting(protected))
}

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    /// The grants file does not parse: running with no grants would
    /// silently break the plugins that need them.
    #[error(transparent)]
    Grants(#[from] GrantsError),
    /// The host could not start (its engine or cache).
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Starts the plugin host with the operator's grants. It loads nothing:
/// the daemon loads the plugins directory in the background
/// ([`PluginHost::serve_dir`]), so serving never waits for a plugin.
pub fn open_host(loaded: &Loaded, paths: &Paths) -> Result<Arc<PluginHost>, PluginsError> {
    let cache = paths.cache_dir.join("plugins");
    Ok(Arc::new(PluginHost::with_grants(Some(cache), grants(loaded, paths)?)?))
}
