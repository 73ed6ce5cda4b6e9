//! `engram plugins …`: the running daemon's plugins and tools, over its
//! socket; `grant`, `revoke` and `test` work on files and need no daemon.

use std::process::ExitCode;

use anyhow::Context;
use engram_config::Paths;
use engram_plugin_host::{Capability, LoadError, PrivateAddresses, PrivateHosts, Revocation};
use serde_json::Value;

/// What `engram plugins` does.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// List the plugins (with what they hold, lack, and any version held
    /// for approval) and their tools.
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
    /// Make the daemon reread the grants and rescan its plugins directory now.
    Reload,
    /// Approve plugin ID as it is now in the plugins directory — its
    /// requested capabilities and tool descriptions — and grant what it
    /// requests. A version held for asking more is released this way.
    Grant {
        /// The plugin's id.
        id: String,
        /// Map a directory the plugin requests to a real one: NAME=/absolute/path.
        #[arg(long = "dir", value_name = "NAME=PATH")]
        dirs: Vec<String>,
        /// Let its hosts resolve to loopback or private addresses (a local
        /// service): all of them with no HOST, or only the HOSTs named (as
        /// its plugin.toml writes them). Link-local and cloud metadata
        /// addresses stay refused.
        #[arg(long, value_name = "HOST", num_args = 0..)]
        http_private: Option<Vec<String>>,
    },
    /// Take back plugin ID's grants: all of them, or only those named.
    Revoke {
        /// The plugin's id.
        id: String,
        /// Only the `memory` grant.
        #[arg(long)]
        memory: bool,
        /// Only this HTTP host (repeatable).
        #[arg(long, value_name = "HOST")]
        http: Vec<String>,
        /// Only this directory (repeatable).
        #[arg(long = "dir", value_name = "NAME")]
        dirs: Vec<String>,
    },
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
pub fn run(loaded: &engram_config::Loaded, paths: &Paths, command: PluginsCommand) -> anyhow::Result<ExitCode> {
    let command = match command {
        PluginsCommand::Test { folders } => return test(&folders),
        PluginsCommand::Grant { id, dirs, http_private } => return grant(loaded, paths, &id, &dirs, http_private),
        PluginsCommand::Revoke { id, memory, http, dirs } => {
            let grants = engram_services::plugins::grants(loaded, paths)?;
            grants.revoke(&id, &revocation(memory, http, dirs))?;
            println!("{id} now holds: {}", describe_grant(&grants.get(&id)));
            if let Some(declared) = grants.from_config(&id) {
                println!(
                    "note: the configuration also grants {id}: {} (edit [plugins.grants.{id}] to change that)",
                    describe_grant(declared)
                );
            }
            notify_daemon(paths);
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            PluginsCommand::List { json } => {
                let (status, plugins) = request(paths, "GET", "/v1/plugins", None).await?;
                anyhow::ensure!(status.is_success(), "the daemon answered {status}: {plugins}");
                let (status, tools) = request(paths, "GET", "/v1/plugins/tools", None).await?;
                anyhow::ensure!(status.is_success(), "the daemon answered {status}: {tools}");
                if json {
                    let both = serde_json::json!({"plugins": plugins["plugins"], "tools": tools["tools"]});
                    println!("{}", serde_json::to_string_pretty(&both)?);
                    return Ok(ExitCode::SUCCESS);
                }
                let tools = tools["tools"].as_array().cloned().unwrap_or_default();
                for plugin in plugins["plugins"].as_array().into_iter().flatten() {
                    print_plugin(plugin, &tools);
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
                    println!("{}", failure_line(failure));
                }
                Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            PluginsCommand::Test { .. } | PluginsCommand::Grant { .. } | PluginsCommand::Revoke { .. } => {
                unreachable!("handled above")
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

/// What `engram plugins revoke` takes back: everything when no capability
/// is named, otherwise only those named.
fn revocation(memory: bool, http: Vec<String>, dirs: Vec<String>) -> Revocation {
    let named: Vec<Capability> = memory
        .then_some(Capability::Memory)
        .into_iter()
        .chain(http.into_iter().map(Capability::Http))
        .chain(dirs.into_iter().map(Capability::Directory))
        .collect();
    if named.is_empty() { Revocation::All } else { Revocation::Only(named) }
}

/// One failure of `engram plugins reload` (an entry of the daemon's
/// `failed`): `HELD` for a version waiting for approval, `FAILED`
/// otherwise, then the folder and the message.
fn failure_line(failure: &Value) -> String {
    let detail = serde_json::from_value::<LoadError>(failure["detail"].clone());
    let label = match &detail {
        Ok(LoadError::Held { .. }) => "HELD   ",
        _ => "FAILED ",
    };
    let message = match (failure["error"].as_str(), &detail) {
        (Some(message), _) => message.to_owned(),
        (None, Ok(error)) => error.to_string(),
        (None, Err(_)) => "?".to_owned(),
    };
    format!("{label} {}: {message}", failure["folder"].as_str().unwrap_or("?"))
}

/// One plugin of `engram plugins list`: its version and grants, a held
/// version if any, then its tools.
fn print_plugin(plugin: &Value, tools: &[Value]) {
    let id = plugin["id"].as_str().unwrap_or("?");
    let list = |key: &str| -> Vec<String> {
        plugin[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let (granted, missing) = (list("granted"), list("missing"));
    let mut line = format!("{id} {}", plugin["version"].as_str().unwrap_or("(not loaded)"));
    if !granted.is_empty() {
        line += &format!("  granted: {}", granted.join(", "));
    }
    if !missing.is_empty() {
        line += &format!("  not granted: {}", missing.join(", "));
    }
    println!("{line}");
    if plugin["approved"]["automatic"] == true {
        println!(
            "  NOT REVIEWED: approved automatically (first seen with nothing granted, or a new build \
             within an earlier approval); its tools are published. Review it, then `engram plugins grant {id}` \
             (or remove its folder)"
        );
    }
    if let Some(held) = plugin.get("held").filter(|h| !h.is_null()) {
        let reasons: Vec<&str> = held["reasons"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "  HELD {} until approved (`engram plugins grant {id}`): it {}",
            held["version"].as_str().unwrap_or("?"),
            reasons.join(", ")
        );
    }
    for tool in tools.iter().filter(|t| t["plugin"] == id) {
        let name = tool["name"].as_str().unwrap_or_default();
        let description = tool["description"].as_str().unwrap_or_default();
        println!("  {name:<28} {}", description.lines().next().unwrap_or_default());
    }
}

/// `engram plugins grant`: approves the plugin's folder as it is and grants
/// what it requests, in the grants file; the daemon applies it.
fn grant(
    loaded: &engram_config::Loaded,
    paths: &Paths,
    id: &str,
    dirs: &[String],
    http_private: Option<Vec<String>>,
) -> anyhow::Result<ExitCode> {
    let folder = paths.plugins_dir.join(id);
    anyhow::ensure!(
        folder.join("plugin.toml").is_file(),
        "no plugin `{id}` in {} (install it with scripts/build-plugins or copy its folder there)",
        paths.plugins_dir.display()
    );
    let mut mapped = std::collections::BTreeMap::new();
    for dir in dirs {
        let (name, path) = dir.split_once('=').with_context(|| format!("--dir {dir}: write NAME=/absolute/path"))?;
        mapped.insert(name.to_owned(), std::path::PathBuf::from(path));
    }
    let grants = engram_services::plugins::grants(loaded, paths)?;
    let host = engram_plugin_host::PluginHost::with_grants(Some(paths.cache_dir.join("plugins")), grants)?;
    let private = match http_private {
        None => PrivateAddresses::Refused,
        Some(hosts) if hosts.is_empty() => PrivateAddresses::Allowed,
        Some(hosts) => PrivateAddresses::Only(hosts),
    };
    let grant = host.approve(&folder, &mapped, private)?;
    let version = grant.approved.as_ref().map_or("?", |a| a.version.as_str());
    println!("approved {id} {version}; it holds: {}", describe_grant(&grant));
    notify_daemon(paths);
    Ok(ExitCode::SUCCESS)
}

fn describe_grant(grant: &engram_plugin_host::grants::Grant) -> String {
    let mut parts = Vec::new();
    if grant.memory {
        parts.push("memory".to_owned());
    }
    parts.extend(grant.http.iter().map(|host| format!("http {host}")));
    match &grant.http_private {
        PrivateHosts::Every(true) if !grant.http.is_empty() => parts.push("(private addresses allowed)".to_owned()),
        PrivateHosts::Only(hosts) if !hosts.is_empty() => {
            parts.push(format!("(private addresses allowed for {})", hosts.join(", ")));
        }
        _ => {}
    }
    parts.extend(grant.files.iter().map(|(name, dir)| {
        format!("files {name}={} ({})", dir.path.display(), format!("{:?}", dir.mode).to_lowercase())
    }));
    if parts.is_empty() { "nothing".to_owned() } else { parts.join(", ") }
}

/// Asks a running daemon to apply changed grants now (its watcher would
/// within a second anyway); says so when none runs.
fn notify_daemon(paths: &Paths) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    match runtime.block_on(request(paths, "POST", "/v1/plugins/reload", Some(serde_json::json!({})))) {
        Ok((status, body)) if status.is_success() => {
            for failure in body["failed"].as_array().into_iter().flatten() {
                println!("note: {}", failure["error"].as_str().unwrap_or("?"));
            }
            println!("the running daemon applied it");
        }
        Ok((status, body)) => println!("the daemon answered {status}: {body}"),
        Err(_) => println!("no daemon is running; it applies when one starts"),
    }
}

/// `engram plugins test`: each folder loaded into a private host, which
/// runs its test vectors; a directory of plugin folders tests them all.
fn test(folders: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let host = engram_plugin_host::PluginHost::new(None)?;
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

/// One request to the daemon over its Unix socket, through the client.
pub(crate) async fn request(
    paths: &Paths,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(hyper::StatusCode, Value)> {
    let method = hyper::Method::from_bytes(method.as_bytes()).with_context(|| format!("bad method {method}"))?;
    let reply = engram_client::Client::unix(&paths.socket).send(method, path, body).await?;
    if reply.json.is_null() {
        anyhow::bail!("the daemon answered {} without JSON", reply.status);
    }
    Ok((reply.status, reply.json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revoke_takes_everything_unless_capabilities_are_named() {
        assert_eq!(revocation(false, Vec::new(), Vec::new()), Revocation::All);
        assert_eq!(
            revocation(true, vec!["a.com".into()], vec!["data".into()]),
            Revocation::Only(vec![
                Capability::Memory,
                Capability::Http("a.com".into()),
                Capability::Directory("data".into())
            ])
        );
        assert_eq!(
            revocation(false, vec!["a.com".into()], Vec::new()),
            Revocation::Only(vec![Capability::Http("a.com".into())])
        );
    }

    #[test]
    fn reload_failures_are_labelled_by_their_kind_not_their_text() {
        let entry = |error: &LoadError| json!({"folder": "/p/calc", "error": error.to_string(), "detail": error});
        let held =
            LoadError::Held { id: "calc".into(), version: "0.2.0".into(), reasons: vec!["adds tool `x`".into()] };
        assert_eq!(failure_line(&entry(&held)), format!("HELD    /p/calc: {held}"));
        // A broken plugin whose message happens to read like a held one is
        // still a failure.
        let vector = LoadError::TestVector {
            path: "/p/calc/tests/v.json".into(),
            index: 0,
            tool: "evaluate".into(),
            message: "expected \"is held until approved\", got 2".into(),
        };
        assert!(failure_line(&entry(&vector)).starts_with("FAILED  /p/calc: "), "{}", failure_line(&entry(&vector)));
        // An answer without a detail (or one this CLI cannot read) is a failure, shown as is.
        assert_eq!(failure_line(&json!({"folder": "/p/x", "error": "boom"})), "FAILED  /p/x: boom");
        let mut no_text = entry(&held);
        no_text["error"] = Value::Null;
        assert!(
            failure_line(&no_text).starts_with("HELD    /p/calc: calc 0.2.0 is held"),
            "{}",
            failure_line(&no_text)
        );
    }
}
