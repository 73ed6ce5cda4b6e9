//! How a command reaches Engram's operations: the running daemon's socket
//! when one answers there, else the same services opened in this process
//! (under the data directory's lock, so no daemon can start meanwhile) and
//! served through the same router. Either way the command runs the same
//! code, with the same defaults, checks and progress events.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use engram_api::{Access, AppState, HttpLimits};
use engram_client::Client;
use engram_config::{Loaded, Paths};

/// A client of this data directory's daemon, or of an in-process instance.
pub async fn connect(loaded: &Loaded, paths: &Paths) -> anyhow::Result<Client> {
    let daemon = Client::unix(&paths.socket);
    if daemon.reachable().await {
        return Ok(daemon);
    }
    let (config, resolved) = (loaded.config.clone(), paths.clone());
    let services = tokio::task::spawn_blocking(move || engram_services::Services::open(&config, &resolved))
        .await
        .context("opening the data directory panicked")??;
    let limits = HttpLimits {
        max_body_bytes: loaded.config.server.max_body_bytes,
        body_timeout: Duration::from_millis(loaded.config.server.body_timeout_ms),
    };
    let router = engram_api::router(AppState::new(Arc::new(services)), limits, Access::Local);
    Ok(Client::in_process(router))
}

/// Runs `command` with a client on a runtime of its own.
pub fn run<T, F, Fut>(loaded: &Loaded, paths: &Paths, command: F) -> anyhow::Result<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(loaded, paths).await?;
        command(client).await
    })
}

/// Sends one operation and waits for its answer (see [`run`]).
pub fn call<O: engram_ops::Operation>(loaded: &Loaded, paths: &Paths, request: &O) -> anyhow::Result<O::Response> {
    run(loaded, paths, |client| async move { Ok(client.call(request).await?) })
}

/// Moves `bar` (if any) to `done` of `total`, clearing it at the end.
pub fn advance(bar: &Option<indicatif::ProgressBar>, done: usize, total: usize) {
    if let Some(bar) = bar {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done >= total {
            bar.finish_and_clear();
        }
    }
}

/// A bar labelled `label` counting `unit` on a terminal's stderr, nothing
/// otherwise.
pub fn terminal_bar(label: &'static str, unit: &str, len: u64) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}} left)"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label);
        bar
    })
}
