//! `engram serve`: the daemon's lifecycle. Open the services (which lock the
//! data directory and open the journal), bind the listeners, serve until a signal, drain, flush, clean up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use engram_api::server::{self, ConnLimits, Drained, Listener, UnixSocket};
use engram_api::{Access, AppState, HttpLimits, TcpGuard};
use engram_config::{Loaded, Paths};
use engram_services::Services;
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
    // First of all: a signal that arrives while the daemon starts (a client
    // may see the socket as soon as it is bound) is then a clean shutdown,
    // not the default disposition killing the process.
    let signals = shutdown_signal()?;
    let config = &loaded.config;
    let (owned_config, owned_paths) = (config.clone(), paths.clone());
    let services = tokio::task::spawn_blocking(move || Services::open(&owned_config, &owned_paths))
        .await
        .context("opening the data directory panicked")??;
    let (owned_loaded, owned_paths) = (loaded.clone(), paths.clone());
    let plugins = tokio::task::spawn_blocking(move || engram_services::plugins::open_host(&owned_loaded, &owned_paths))
        .await
        .context("starting the plugin host panicked")??;
    // Plugins load in the background, then hot-reload for as long as the
    // daemon runs; requests for tools wait for the first load only.
    let _watcher = plugins
        .serve_dir(paths.plugins_dir.clone(), Duration::from_millis(500))
        .context("cannot start the plugin watcher")?;
    let services = Arc::new(services.with_plugins(plugins));
    // Load the models and open retrieval now, in the background.
    services.warm_up();
    let state = AppState::new(services.clone()).with_conformance_fixtures(config.server.mcp_conformance_fixtures);

    let http = HttpLimits {
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: Duration::from_millis(config.server.body_timeout_ms),
    };
    // The TCP listener first, the socket last: a client that sees the
    // socket (how local clients and tests tell the daemon is up) finds
    // every listener bound.
    let mut tcp = None;
    if let Some(addr) = config.server.tcp {
        let token = server::load_or_create_token(&paths.token_file)?;
        let listener = server::bind_tcp(addr).await?;
        let bound = listener.local_addr().context("cannot read the TCP listener's address")?;
        let guard = TcpGuard::new(bound, token, config.server.allowed_origins.clone())
            .with_tenant_tokens(paths.tenant_tokens_dir.clone());
        tcp = Some((bound, Listener::Tcp(listener, engram_api::router(state.clone(), http, Access::Tcp(guard)))));
    }
    let socket = UnixSocket::bind(&paths.socket)?;
    let mut listeners = vec![Listener::Unix(socket, engram_api::router(state.clone(), http, Access::Local))];
    let tcp_addr = tcp.map(|(bound, listener)| {
        listeners.push(listener);
        bound
    });

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

    tokio::task::spawn_blocking(move || services.store().checkpoint())
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
