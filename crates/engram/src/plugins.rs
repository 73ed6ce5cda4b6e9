//! `engram plugins …`: the running daemon's plugin tools, over its socket.

use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use engram_config::Paths;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What `engram plugins` does.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// List the loaded tools.
    List {
        /// Print the daemon's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call TOOL (`<plugin>.<tool>`) with the JSON object ARGS; prints the
    /// result, or the structured error and exits non-zero.
    Call {
        /// `<plugin>.<tool>`.
        tool: String,
        /// Arguments, a JSON object.
        #[arg(default_value = "{}")]
        args: String,
    },
}

/// Runs `engram plugins …` against the daemon on `paths.socket`.
pub fn run(paths: &Paths, command: PluginsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            PluginsCommand::List { json } => {
                let (status, body) = request(paths, "GET", "/v1/plugins/tools", None).await?;
                anyhow::ensure!(status.is_success(), "the daemon answered {status}: {body}");
                if json {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    for tool in body["tools"].as_array().into_iter().flatten() {
                        let name = tool["name"].as_str().unwrap_or_default();
                        let description = tool["description"].as_str().unwrap_or_default();
                        println!("{name:<28} {}", description.lines().next().unwrap_or_default());
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            PluginsCommand::Call { tool, args } => {
                let arguments: Value =
                    serde_json::from_str(&args).with_context(|| format!("ARGS is not JSON: {args}"))?;
                let payload = serde_json::json!({ "tool": tool, "arguments": arguments });
                let (status, body) = request(paths, "POST", "/v1/plugins/call", Some(payload)).await?;
                if status.is_success() {
                    println!("{}", serde_json::to_string_pretty(&body["result"])?);
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("{}", serde_json::to_string_pretty(&body["error"])?);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

/// One HTTP/1.1 request over the daemon's Unix socket.
async fn request(
    paths: &Paths,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(hyper::StatusCode, Value)> {
    let socket = &paths.socket;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("no daemon answers on {}: start `engram serve` first", socket.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(bytes))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).with_context(|| format!("the daemon answered {status} without JSON"))?;
    Ok((status, value))
}
