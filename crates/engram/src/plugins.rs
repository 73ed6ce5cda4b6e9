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
    /// Print the tools of PLUGIN (an id) or the tool NAME, with schemas.
    Info {
        /// A plugin id or a `<plugin>.<tool>` name.
        name: String,
    },
    /// Make the daemon rescan its plugins directory now.
    Reload,
    /// Load plugin folders here, without a daemon, and run their test
    /// vectors in the sandbox; exits non-zero if any fails.
    Test {
        /// Plugin folders (plugin.toml, <id>.wasm, tests/), or a plugins directory.
        #[arg(required = true)]
        folders: Vec<std::path::PathBuf>,
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
    if let PluginsCommand::Test { folders } = &command {
        return test(folders);
    }
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
            PluginsCommand::Info { name } => {
                let (status, body) = request(paths, "GET", "/v1/plugins/tools", None).await?;
                anyhow::ensure!(status.is_success(), "the daemon answered {status}: {body}");
                let tools: Vec<&Value> = body["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["name"] == name.as_str() || t["plugin"] == name.as_str())
                    .collect();
                if tools.is_empty() {
                    eprintln!("no plugin or tool named `{name}` is loaded (see `engram plugins list`)");
                    return Ok(ExitCode::FAILURE);
                }
                println!("{}", serde_json::to_string_pretty(&tools)?);
                Ok(ExitCode::SUCCESS)
            }
            PluginsCommand::Reload => {
                let (status, body) = request(paths, "POST", "/v1/plugins/reload", Some(serde_json::json!({}))).await?;
                anyhow::ensure!(status.is_success(), "the daemon answered {status}: {body}");
                for plugin in body["loaded"].as_array().into_iter().flatten() {
                    println!(
                        "loaded  {} {}",
                        plugin["id"].as_str().unwrap_or("?"),
                        plugin["version"].as_str().unwrap_or("?")
                    );
                }
                let failed = body["failed"].as_array().cloned().unwrap_or_default();
                for failure in &failed {
                    println!(
                        "FAILED  {}: {}",
                        failure["folder"].as_str().unwrap_or("?"),
                        failure["error"].as_str().unwrap_or("?")
                    );
                }
                Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            PluginsCommand::Test { .. } => unreachable!("handled above"),
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

/// `engram plugins test`: each folder loaded into a private host, which
/// runs its test vectors; a directory of plugin folders tests them all.
fn test(folders: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let host = engram_plugin_host::PluginHost::new(None).map_err(anyhow::Error::msg)?;
    let mut failures = 0;
    for folder in folders {
        if folder.join("plugin.toml").is_file() {
            match host.load(folder) {
                Ok((id, version)) => println!("PASS  {id} {version} ({})", folder.display()),
                Err(err) => {
                    failures += 1;
                    println!("FAIL  {err}");
                }
            }
        } else {
            let report = host.load_dir(folder);
            anyhow::ensure!(
                !report.loaded.is_empty() || !report.failed.is_empty(),
                "{} holds no plugin folder (plugin.toml)",
                folder.display()
            );
            for (id, version) in report.loaded {
                println!("PASS  {id} {version}");
            }
            for (_, err) in &report.failed {
                failures += 1;
                println!("FAIL  {err}");
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
