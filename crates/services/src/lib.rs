//! The features one Engram process serves, opened from the configuration.
//!
//! [`Services`] owns the data directory (its lock and journal), the models,
//! retrieval and the plugin host, maps the configuration to each feature's
//! options, and applies one open/retry policy ([`Lazy`]) to every part that
//! loads in the background. The daemon serves it over HTTP; a CLI command
//! with no daemon to talk to builds the same services in-process and talks
//! to them through the same router, so every operation runs the same code
//! either way.
//!
//! Features never call each other; where an operation needs two (questions
//! an LLM writes for a retrieval calibration), the composition lives here.

pub mod experience;
pub mod health;
mod lazy;
mod lock;
pub mod memory;
pub mod models;
pub mod plugins;
pub mod rag;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_config::{Config, Paths, Synchronous};
use engram_store::{Durability, Store, StoreOptions};

pub use experience::ExperienceService;
pub use lazy::{Lazy, LoadState, RETRY_AFTER};
pub use lock::{DataDirLock, create_private_dir};
pub use memory::MemoryService;
pub use models::Models;
pub use rag::RagService;

/// Why the services could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process owns the data directory.
    #[error(
        "another engram process{} is using data dir {}: stop it first (a running daemon owns the journal and indexes), or use another --data-dir",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        data_dir.display()
    )]
    Locked {
        /// The data directory.
        data_dir: PathBuf,
        /// The holder's pid, when its lock file says.
        pid: Option<u32>,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Store(#[from] engram_store::StoreError),
    /// Retrieval failed outside a request (reindex, evaluation).
    #[error(transparent)]
    Rag(#[from] engram_rag::RagError),
    /// Memory failed.
    #[error(transparent)]
    Memory(#[from] engram_memory::MemoryError),
    /// The experience library failed outside a request (evaluation).
    #[error(transparent)]
    Experience(#[from] engram_experience::ExperienceError),
    /// A model could not be loaded.
    #[error(transparent)]
    Model(#[from] engram_models::ModelError),
    /// The configuration asks for something this part cannot do.
    #[error("{0}")]
    Config(String),
}

/// How the journal is opened, from `[storage]`.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        durability: match config.storage.synchronous {
            Synchronous::Full => Durability::Full,
            Synchronous::Normal => Durability::Normal,
        },
        busy_timeout: Duration::from_millis(config.storage.busy_timeout_ms),
    }
}

/// The features one process serves over one data directory.
pub struct Services {
    config: Config,
    paths: Paths,
    store: Store,
    models: Arc<Models>,
    rag: RagService,
    memory: MemoryService,
    experience: ExperienceService,
    plugins: Option<Arc<engram_plugin_host::PluginHost>>,
    opened: Instant,
    _lock: DataDirLock,
}

impl Services {
    /// Creates and locks the data directory, opens the journal (blocking)
    /// and prepares the models and retrieval, which load on first use.
    pub fn open(config: &Config, paths: &Paths) -> Result<Self, Error> {
        create_private_dir(&paths.data_dir)?;
        let lock = DataDirLock::acquire(&paths.lock_file, &paths.data_dir)?;
        let store = Store::open(&paths.journal, &store_options(config))?;
        let models = Arc::new(models::configured(config, paths));
        let rag = RagService::new(config, paths, &store, models.clone());
        let memory = MemoryService::new(config, paths, &store, models.clone());
        let experience = ExperienceService::new(config, paths, &store, models.clone());
        Ok(Self {
            config: config.clone(),
            paths: paths.clone(),
            store,
            models,
            rag,
            memory,
            experience,
            plugins: None,
            opened: Instant::now(),
            _lock: lock,
        })
    }

    /// The same services with a plugin host. Call before sharing them.
    pub fn with_plugins(mut self, host: Arc<engram_plugin_host::PluginHost>) -> Self {
        self.plugins = Some(host);
        self
    }

    /// Starts loading the models and opening retrieval in the background;
    /// requests that need them wait, and a failure is logged here and
    /// reported per request.
    pub fn warm_up(self: &Arc<Self>) {
        let services = self.clone();
        tokio::spawn(async move {
            let models = &services.models;
            let _ = tokio::join!(models.llm.get(), models.embedder.get());
            // Opening the indexes catches them up with the journal.
            if let Err(err) = services.rag.engine().await {
                tracing::error!(error = %err, "retrieval unavailable");
            }
            match services.memory.engine().await {
                // Summaries left behind by a restart catch up now.
                Ok(memory) => {
                    // Plugins granted `memory` recall from the caller's conversation.
                    if let Some(host) = &services.plugins {
                        host.set_recall(Arc::new(memory::PluginRecall(memory.clone())));
                    }
                    services.memory.start_summarizer(memory);
                }
                Err(err) => tracing::error!(error = %err, "memory unavailable"),
            }
        });
    }

    /// How long ago these services opened.
    pub fn uptime(&self) -> Duration {
        self.opened.elapsed()
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The resolved paths.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The journal.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The models.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Retrieval.
    pub fn rag(&self) -> &RagService {
        &self.rag
    }

    /// Memory.
    pub fn memory(&self) -> &MemoryService {
        &self.memory
    }

    /// The experience library.
    pub fn experience(&self) -> &ExperienceService {
        &self.experience
    }

    /// The plugin host, if these services run one.
    pub fn plugins(&self) -> Option<&Arc<engram_plugin_host::PluginHost>> {
        self.plugins.as_ref()
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> &std::path::Path {
        &self.paths.plugins_dir
    }
}
