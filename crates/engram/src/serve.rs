//! `engram serve`: the daemon's lifecycle. Lock the data directory, open the
//! journal, bind the listeners, serve until a signal, drain, flush, clean up.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use engram_api::server::{self, ConnLimits, Drained, Listener, UnixSocket};
use engram_api::{Access, AppState, HttpLimits, TcpGuard};
use engram_config::{Loaded, Paths, Synchronous};
use engram_store::{Durability, Store, StoreOptions};
use rustix::fs::FlockOperation;
use tokio::signal::unix::{SignalKind, signal};

/// Runs the daemon until SIGINT/SIGTERM; returns once it has shut down cleanly.
pub fn run(loaded: &Loaded, paths: &Paths) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("engram-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(loaded, paths))
}

async fn serve(loaded: &Loaded, paths: &Paths) -> anyhow::Result<()> {
    let config = &loaded.config;
    create_private_dir(&paths.data_dir)?;
    let _lock = DataDirLock::acquire(&paths.lock_file, &paths.data_dir)?;

    let options = store_options(config);
    let journal = paths.journal.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&journal, &options))
        .await
        .context("opening the journal panicked")??;
    let plugins = load_plugins(config, paths).await?;
    // Hot reload for as long as the daemon runs.
    let _watcher = plugins
        .watch(paths.plugins_dir.clone(), Duration::from_millis(500), None)
        .context("cannot start the plugin watcher")?;
    let state = AppState::with_models(store.clone(), crate::models::daemon_models(config, paths))
        .with_plugins(plugins.clone(), paths.plugins_dir.clone())
        .with_rag(rag_service(config, paths, &store));
    // Load the models now, in the background: requests that need them wait,
    // and a model that cannot load is reported in the log and per request.
    {
        let state = state.clone();
        tokio::spawn(async move {
            if let Some(models) = state.models() {
                let _ = tokio::join!(models.llm.get(), models.embedder.get());
            }
            // Opening the indexes catches them up with the journal.
            if let Some(rag) = state.rag()
                && let Err(err) = rag.get(&state).await
            {
                tracing::error!(error = %err.message, "retrieval unavailable");
            }
        });
    }

    let http = HttpLimits {
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: Duration::from_millis(config.server.body_timeout_ms),
    };
    let socket = UnixSocket::bind(&paths.socket)?;
    let mut listeners = vec![Listener::Unix(socket, engram_api::router(state.clone(), http, Access::Local))];
    let mut tcp_addr = None;
    if let Some(addr) = config.server.tcp {
        let token = server::load_or_create_token(&paths.token_file)?;
        let tcp = server::bind_tcp(addr).await?;
        let bound = tcp.local_addr().context("cannot read the TCP listener's address")?;
        let guard = TcpGuard::new(bound, token, config.server.allowed_origins.clone());
        listeners.push(Listener::Tcp(tcp, engram_api::router(state.clone(), http, Access::Tcp(guard))));
        tcp_addr = Some(bound);
    }

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        socket = %paths.socket.display(),
        tcp = tcp_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data_dir = %paths.data_dir.display(),
        "engram is ready"
    );

    let limits = ConnLimits {
        header_timeout: Duration::from_millis(config.server.header_timeout_ms),
        max_connections: config.server.max_connections as usize,
        shutdown_grace: Duration::from_millis(config.server.shutdown_grace_ms),
    };
    let signals = shutdown_signal()?;
    match server::serve(listeners, limits, signals).await {
        Drained::Clean => tracing::info!("all in-flight requests finished"),
        Drained::TimedOut(open) => {
            tracing::warn!(
                open,
                grace_ms = config.server.shutdown_grace_ms,
                "grace period over; closing busy connections"
            )
        }
    }

    tokio::task::spawn_blocking(move || store.checkpoint())
        .await
        .context("flushing the journal panicked")?
        .context("cannot flush the journal on shutdown")?;
    tracing::info!("engram stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down (send it again to exit at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
    })
}

/// Retrieval over the daemon's journal, opened once the embedder is loaded.
fn rag_service(config: &engram_config::Config, paths: &Paths, store: &Store) -> engram_api::RagService {
    let (store, dir) = (store.clone(), crate::rag::index_dir(paths));
    let (config, paths) = (config.clone(), paths.clone());
    engram_api::RagService::new(move |embedder| {
        // Read here, so an unreadable key file costs retrieval, not the daemon.
        let options = crate::rag::options(&config, &paths).map_err(|e| format!("{e:#}"))?;
        let started = std::time::Instant::now();
        let rag = engram_rag::Rag::open(store.clone(), &dir, embedder, options).map_err(|e| e.to_string())?;
        tracing::info!(ms = started.elapsed().as_millis() as u64, "retrieval indexes ready");
        Ok(rag)
    })
}

/// How the journal is opened, from `[storage]`.
pub(crate) fn store_options(config: &engram_config::Config) -> StoreOptions {
    StoreOptions {
        durability: match config.storage.synchronous {
            Synchronous::Full => Durability::Full,
            Synchronous::Normal => Durability::Normal,
        },
        busy_timeout: Duration::from_millis(config.storage.busy_timeout_ms),
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {} (storage.data_dir)", dir.display()))
}

/// An exclusive `flock` on `<data_dir>/engram.lock`, held for the daemon's
/// life; the kernel releases it however the process ends.
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub(crate) fn acquire(path: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
                anyhow::bail!(
                    "another engram process{who} is using data dir {}: stop it first (a running daemon owns the journal and indexes), or use another --data-dir",
                    data_dir.display()
                );
            }
            Err(err) => return Err(err).with_context(|| format!("cannot lock {}", path.display())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write the pid to the lock file {}", PathBuf::from(path).display()))?;
        Ok(Self { _file: file })
    }
}

/// Starts the plugin host with the operator's grants and loads every plugin
/// in the plugins directory (compiled components are cached under the cache
/// dir); a plugin that does not load is reported and skipped. A grants file
/// that does not parse stops the start: running with no grants would
/// silently break the plugins that need them.
async fn load_plugins(
    config: &engram_config::Config,
    paths: &Paths,
) -> anyhow::Result<std::sync::Arc<engram_plugin_host::PluginHost>> {
    let (dir, cache) = (paths.plugins_dir.clone(), paths.cache_dir.join("plugins"));
    let grants = crate::plugins::open_grants(config, paths)?;
    tokio::task::spawn_blocking(move || {
        let host = engram_plugin_host::PluginHost::with_grants(Some(cache), grants)?;
        let report = host.load_dir(&dir);
        for (id, version) in &report.loaded {
            tracing::info!(plugin = %id, %version, "plugin ready");
        }
        if !report.failed.is_empty() {
            tracing::warn!(failed = report.failed.len(), dir = %dir.display(), "some plugins did not load");
        }
        Ok(std::sync::Arc::new(host))
    })
    .await
    .context("loading plugins panicked")?
}
