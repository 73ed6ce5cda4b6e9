//! Structured logs on stderr (stdout stays free for protocols such as MCP
//! over stdio).

use std::io::IsTerminal;

use engram_config::{Loaded, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`.
pub fn init(loaded: &Loaded) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(&directive)
            .map_err(|err| anyhow::anyhow!("RUST_LOG={directive:?} is not a valid filter: {err}"))?,
        _ => EnvFilter::try_new(&loaded.config.log.level).map_err(|err| {
            loaded.bad_value("log.level", format!("{:?} does not parse: {err}", loaded.config.log.level))
        })?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match loaded.config.log.format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}
