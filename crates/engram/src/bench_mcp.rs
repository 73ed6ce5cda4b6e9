//! `engram bench mcp`: what the MCP surface adds to a plugin tool call, on
//! a running daemon. The peer is the same call on the plain HTTP route
//! (`POST /v1/plugins/call`) in the same run; then `tools/call` over
//! streamable HTTP (Unix socket, and TCP with the token when configured),
//! through `engram mcp-stdio`, and a soak of concurrent sessions.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use engram_client::Client;
use engram_config::{Loaded, Paths};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::bench::stats::{Samples, Summary};

/// Options of `engram bench mcp`.
#[derive(Debug, clap::Args)]
pub struct McpBenchArgs {
    /// The plugin tool to call (`<plugin>.<tool>`); a no-op by default.
    #[arg(long, default_value = "template.greet")]
    pub tool: String,
    /// Its arguments, as JSON.
    #[arg(long, default_value = r#"{"name": "bench"}"#)]
    pub arguments: String,
    /// Measured calls per sequential series.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Unmeasured calls first.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Concurrent MCP sessions of the soak (0 skips it).
    #[arg(long, default_value_t = 32)]
    pub sessions: usize,
    /// How long the soak runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
}

struct Row {
    label: String,
    latencies: Summary,
    wall: Duration,
}

/// Runs the series against the daemon on `paths.socket` and prints them.
pub fn mcp(loaded: &Loaded, paths: &Paths, args: &McpBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    let arguments: Value = serde_json::from_str(&args.arguments).context("--arguments is not JSON")?;
    let mcp_name = args.tool.replacen('.', "__", 1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let unix = Client::unix(&paths.socket);
        let call = json!({"tool": args.tool, "arguments": arguments});
        let check = unix.send(hyper::Method::POST, "/v1/plugins/call", Some(call.clone())).await?;
        anyhow::ensure!(
            check.status.is_success(),
            "the daemon on {} cannot call {}: {} {}",
            paths.socket.display(),
            args.tool,
            check.status,
            check.body.trim()
        );

        let mut rows = Vec::new();
        let label = "POST /v1/plugins/call (peer)".to_owned();
        rows.push(
            series(label, args, || async {
                let reply = unix.send(hyper::Method::POST, "/v1/plugins/call", Some(call.clone())).await?;
                anyhow::ensure!(reply.status.is_success(), "{}", reply.body);
                Ok(())
            })
            .await?,
        );
        let session = Session::open(unix.clone()).await?;
        rows.push(
            series("MCP tools/call, HTTP on the socket".to_owned(), args, || session.call(&mcp_name, &arguments))
                .await?,
        );
        if let Some(addr) = loaded.config.server.tcp {
            let token = std::fs::read_to_string(&paths.token_file)
                .with_context(|| format!("cannot read the token from {}", paths.token_file.display()))?;
            let session = Session::open(Client::tcp(addr, token.trim())).await?;
            rows.push(
                series("MCP tools/call, HTTP on loopback TCP".to_owned(), args, || session.call(&mcp_name, &arguments))
                    .await?,
            );
        }
        let mut stdio = StdioBridge::start(loaded, paths).await?;
        let mut latencies = Vec::with_capacity(args.requests);
        let started = Instant::now();
        for i in 0..args.warmup + args.requests {
            let t0 = Instant::now();
            stdio.call(&mcp_name, &arguments).await?;
            if i >= args.warmup {
                latencies.push(t0.elapsed());
            }
        }
        let latencies = Samples::new(latencies).summary().context("no call was measured")?;
        rows.push(Row { label: "MCP tools/call, engram mcp-stdio".to_owned(), latencies, wall: started.elapsed() });
        print(&rows, args);

        if args.sessions > 0 {
            soak(&unix, &mcp_name, &arguments, args).await?;
        }
        Ok(())
    })
}

async fn series<F, Fut>(label: String, args: &McpBenchArgs, mut call: F) -> anyhow::Result<Row>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(args.requests);
    let started = Instant::now();
    for i in 0..args.warmup + args.requests {
        let t0 = Instant::now();
        call().await.with_context(|| format!("{label}: call {i} failed"))?;
        if i >= args.warmup {
            latencies.push(t0.elapsed());
        }
    }
    let latencies = Samples::new(latencies).summary().context("no call was measured")?;
    Ok(Row { label, latencies, wall: started.elapsed() })
}

/// An MCP session over the daemon's streamable HTTP endpoint.
struct Session {
    client: Client,
    id: String,
}

impl Session {
    async fn open(client: Client) -> anyhow::Result<Self> {
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "engram-bench", "version": "1"}}});
        let response = client.open(post(&initialize, None)).await?;
        let id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("the daemon opened no MCP session")?
            .to_owned();
        response.into_body().collect().await.map_err(|err| anyhow::anyhow!("{err}"))?;
        let session = Self { client, id };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = session.client.open(post(&initialized, Some(&session.id))).await?;
        response.into_body().collect().await.map_err(|err| anyhow::anyhow!("{err}"))?;
        Ok(session)
    }

    async fn call(&self, name: &str, arguments: &Value) -> anyhow::Result<()> {
        let message = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}});
        let response = self.client.open(post(&message, Some(&self.id))).await?;
        let mut answer = None;
        crate::mcp_stdio::read_events(response.into_body(), &mut |message| answer = Some(message))
            .await
            .map_err(anyhow::Error::msg)?;
        check(answer)
    }
}

/// The tool call's answer must be a result that is not an error.
fn check(answer: Option<Value>) -> anyhow::Result<()> {
    let answer = answer.context("no answer")?;
    anyhow::ensure!(answer.pointer("/result/isError") == Some(&Value::Bool(false)), "{answer}");
    Ok(())
}

fn post(message: &Value, session: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::post(engram_api::MCP_PATH)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json, text/event-stream");
    if let Some(id) = session {
        request = request.header("mcp-session-id", id).header("mcp-protocol-version", "2025-11-25");
    }
    request.body(Full::new(Bytes::from(message.to_string()))).unwrap_or_default()
}

/// `engram mcp-stdio` as a child, as an IDE runs it.
struct StdioBridge {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl StdioBridge {
    async fn start(loaded: &Loaded, paths: &Paths) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut command = tokio::process::Command::new(exe);
        let file = loaded.sources.iter().rev().find_map(|s| match s {
            engram_config::Origin::File(path) => Some(path),
            _ => None,
        });
        if let Some(config) = file {
            command.arg("--config").arg(config);
        }
        command
            .arg("--data-dir")
            .arg(&paths.data_dir)
            .args(["mcp-stdio", "--no-start"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start engram mcp-stdio")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut bridge = Self { child, stdin, stdout, next_id: 1 };
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "engram-bench", "version": "1"}}});
        bridge.send(&initialize).await?;
        bridge.answer(0).await?;
        bridge.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        Ok(bridge)
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        self.stdin.write_all(&line).await.context("the bridge's stdin closed")?;
        Ok(self.stdin.flush().await?)
    }

    async fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        loop {
            let line = self.stdout.next_line().await?.context("the bridge exited")?;
            let message: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
            if message["id"] == id {
                return Ok(message);
            }
        }
    }

    async fn call(&mut self, name: &str, arguments: &Value) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}))
            .await?;
        check(Some(self.answer(id).await?))
    }
}

impl Drop for StdioBridge {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `sessions` MCP sessions, each on its own connection, calling the tool
/// back to back for `duration`; every error is counted and the first few
/// printed.
async fn soak(unix: &Client, name: &str, arguments: &Value, args: &McpBenchArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.sessions {
        let (client, name, arguments) = (unix.clone().fresh_connections(), name.to_owned(), arguments.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let session = match Session::open(client).await {
                Ok(session) => session,
                Err(err) => return (latencies, vec![format!("opening a session: {err:#}")]),
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match session.call(&name, &arguments).await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(err) => errors.push(format!("{err:#}")),
                }
            }
            (latencies, errors)
        });
    }
    let started = Instant::now();
    let (mut all, mut errors) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (latencies, session_errors) = joined.context("a soak session panicked")?;
        all.extend(latencies);
        errors.extend(session_errors);
    }
    let wall = started.elapsed();
    let calls = all.len();
    let summary = Samples::new(all).summary().context("the soak made no successful call")?;
    println!(
        "\nsoak: {} concurrent MCP sessions (socket, one connection each) for {} s: {calls} calls, {:.0} calls/s, p50 {}, p99 {}, max {}, {} errors",
        args.sessions,
        args.duration,
        calls as f64 / wall.as_secs_f64(),
        micros(summary.p50),
        micros(summary.p99),
        micros(summary.max),
        errors.len()
    );
    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    anyhow::ensure!(errors.is_empty(), "{} calls of the soak failed", errors.len());
    Ok(())
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn print(rows: &[Row], args: &McpBenchArgs) {
    println!("{} with {}, {} sequential calls per row (one client)", args.tool, args.arguments, args.requests);
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "path", "p50", "p90", "p99", "max", "calls/s", "p50 vs peer"
    );
    let base = rows.first().map(|r| r.latencies.p50).unwrap_or_default();
    for row in rows {
        println!(
            "{:<38} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>10.2}x",
            row.label,
            micros(row.latencies.p50),
            micros(row.latencies.p90),
            micros(row.latencies.p99),
            micros(row.latencies.max),
            row.latencies.n as f64 / row.wall.as_secs_f64(),
            row.latencies.p50.as_secs_f64() / base.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    }
}
