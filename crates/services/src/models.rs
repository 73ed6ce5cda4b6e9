//! Building the configured models: resolving sources (local paths, the hub),
//! choosing the device and pools, local or remote generator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::lazy::Lazy;
use engram_config::{Config, LlmBackend, ModelSource, Paths};
use engram_models::{
    Embedder, Llm, LocalModel, LocalOptions, ModelError, RemoteLlm, RemoteOptions, Scheduler, fetch_from_hub,
    inference_pool, open_device,
};

/// Where a configured source is on disk, fetching it from the hub if needed.
pub fn resolve(source: &str, paths: &Paths) -> Result<PathBuf, ModelError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match ModelSource::parse(source, &paths.models_dir, home.as_deref()) {
        ModelSource::Local(path) => Ok(path),
        ModelSource::Hub { repo, file } => fetch_from_hub(&repo, file.as_deref(), &paths.models_dir.join("hub")),
    }
}

/// How the configuration says to load a local GGUF model.
pub fn local_options(config: &Config, paths: &Paths) -> Result<LocalOptions, ModelError> {
    Ok(LocalOptions {
        device: open_device(&config.models.device)?,
        context_tokens: config.models.llm.context_tokens,
        cache_dir: paths.cache_dir.join("models"),
        convert_slow_types: true,
        native_cpu: config.models.llm.cpu_engine == engram_config::CpuEngine::Native,
    })
}

/// Loads the local GGUF model the configuration names.
pub fn load_local(config: &Config, paths: &Paths) -> Result<LocalModel, ModelError> {
    let path = resolve(&config.models.llm.source, paths)?;
    LocalModel::load(&path, &local_options(config, paths)?)
}

/// The remote generator the configuration names.
pub fn remote(config: &Config, paths: &Paths) -> Result<RemoteLlm, ModelError> {
    let llm = &config.models.llm;
    let base_url = llm.base_url.clone().unwrap_or_default();
    let api_key = match &paths.llm_api_key_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|err| ModelError::Source {
                    source_id: file.display().to_string(),
                    reason: format!("cannot read models.llm.api_key_file: {err}"),
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    RemoteLlm::new(RemoteOptions {
        base_url,
        model: llm.model.clone().unwrap_or_default(),
        api_key,
        timeout: Duration::from_millis(llm.request_timeout_ms),
        retries: llm.retries,
    })
}

/// Starts the configured generator: a scheduler over the local model, or
/// the remote client.
pub fn load_llm(config: &Config, paths: &Paths) -> Result<Llm, ModelError> {
    match config.models.llm.backend {
        LlmBackend::Local => {
            let model = load_local(config, paths)?;
            let pool = inference_pool(config.models.threads, "engram-llm")?;
            Ok(Llm::Local(Scheduler::start(model, pool, config.models.llm.queue_depth)?))
        }
        LlmBackend::Openai => Ok(Llm::Remote(Arc::new(remote(config, paths)?))),
    }
}

/// Loads the configured embedding model.
pub fn load_embedder(config: &Config, paths: &Paths) -> Result<Embedder, ModelError> {
    let dir = resolve(&config.models.embedder.source, paths)?;
    let device = open_device(&config.models.device)?;
    let pool = inference_pool(config.models.threads, "engram-embed")?;
    Embedder::load(&dir, &device, pool, config.models.embedder.batch_size)
}

/// The daemon's models, each loaded on first use (or at start, in the
/// background) under the one retry policy of [`Lazy`].
pub struct Models {
    /// The generator (local scheduler or remote client).
    pub llm: Lazy<Llm>,
    /// The embedding model.
    pub embedder: Lazy<Arc<Embedder>>,
    /// The generator's id in `/v1/models`.
    pub llm_id: String,
    /// The embedder's id in `/v1/models`.
    pub embedder_id: String,
}

/// The id a source is listed under in `/v1/models`: its file or folder name.
fn model_id(source: &str) -> String {
    let name = source.trim_end_matches('/').rsplit('/').next().unwrap_or(source);
    name.strip_suffix(".gguf").unwrap_or(name).to_owned()
}

/// The configured models, not loaded yet.
pub fn configured(config: &Config, paths: &Paths) -> Models {
    let llm_id = match config.models.llm.backend {
        LlmBackend::Local => model_id(&config.models.llm.source),
        LlmBackend::Openai => config.models.llm.model.clone().unwrap_or_default(),
    };
    let (c1, p1) = (config.clone(), paths.clone());
    let (c2, p2) = (config.clone(), paths.clone());
    Models {
        llm: Lazy::new(move || {
            let started = std::time::Instant::now();
            let result = load_llm(&c1, &p1).map_err(|err| err.to_string());
            match &result {
                Ok(llm) => tracing::info!(
                    model = llm.name(),
                    ms = started.elapsed().as_millis() as u64,
                    "language model ready"
                ),
                Err(err) => tracing::error!(error = %err, "language model unavailable"),
            }
            result
        }),
        embedder: Lazy::new(move || {
            let result = load_embedder(&c2, &p2).map(Arc::new).map_err(|err| err.to_string());
            match &result {
                Ok(e) => tracing::info!(model = e.name, dim = e.dim(), "embedding model ready"),
                Err(err) => tracing::error!(error = %err, "embedding model unavailable"),
            }
            result
        }),
        llm_id,
        embedder_id: model_id(&config.models.embedder.source),
    }
}
