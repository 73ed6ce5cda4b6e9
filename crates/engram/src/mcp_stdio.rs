//! `engram mcp-stdio`: the bridge an IDE launches. It reads JSON-RPC
//! messages, one per line, on stdin, forwards each to the daemon's `/mcp`
//! endpoint over its Unix socket (through the project's client), and writes
//! what comes back — responses, progress, `list_changed` — one per line on
//! stdout. Nothing else ever reaches stdout: every message is re-encoded
//! from parsed JSON by a single writer, and the bridge's own words go to
//! stderr. When no daemon answers, the bridge starts one in the background
//! and says so on stderr; when the daemon restarts under a live session,
//! the bridge replays the client's `initialize` so the client carries on.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use engram_client::{Client, ClientError, StreamingBody};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// `engram mcp-stdio` options.
#[derive(Debug, clap::Args)]
pub struct McpStdioArgs {
    /// Do not start a daemon when none answers; report an error instead.
    #[arg(long)]
    pub no_start: bool,
}

/// JSON-RPC codes the bridge answers with itself.
mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    /// The daemon could not be reached or stopped mid-answer.
    pub const DAEMON: i64 = -32000;
}

/// How a `engram serve` is started when none runs.
pub struct Launch {
    /// This executable.
    pub exe: PathBuf,
    /// The global options the bridge was given (`--config`, `--data-dir`),
    /// so the daemon serves the same data.
    pub global_args: Vec<OsString>,
    /// Where the started daemon logs.
    pub log: PathBuf,
}

/// Runs the bridge until stdin closes.
pub fn run(socket: PathBuf, launch: Option<Launch>, max_message_bytes: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (out, writes) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_stdout(writes));
        let bridge = Arc::new(Bridge {
            client: Client::unix(&socket),
            socket,
            out,
            session: watch::channel(Session::default()).0,
            reopening: tokio::sync::Mutex::new(()),
            launch: launch.map(tokio::sync::Mutex::new),
            inflight: Mutex::default(),
        });
        tokio::spawn(listen(bridge.clone()));
        read_stdin(&bridge, max_message_bytes).await?;
        bridge.close().await;
        drop(bridge);
        // The writer ends once every sender is gone; in-flight calls are
        // abandoned with the runtime.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        Ok(())
    })
}

/// What the bridge knows of the MCP session it relays.
#[derive(Debug, Clone, Default)]
struct Session {
    /// `Mcp-Session-Id` (2025-11-25 sessions; none in 2026-07-28).
    id: Option<String>,
    /// The protocol version `initialize` settled on.
    version: Option<String>,
    /// The client's `initialize` request, replayed when the daemon forgot
    /// the session (it restarted).
    initialize: Option<Value>,
    /// Resources the client subscribed to, subscribed again on reopening.
    subscriptions: std::collections::BTreeSet<String>,
    /// Bumped whenever `id` changes.
    epoch: u64,
}

struct Bridge {
    client: Client,
    socket: PathBuf,
    /// To the stdout writer.
    out: mpsc::UnboundedSender<Value>,
    session: watch::Sender<Session>,
    /// Held while a lost session is being reopened.
    reopening: tokio::sync::Mutex<()>,
    /// `None`: never start a daemon. Held while one starts.
    launch: Option<tokio::sync::Mutex<Launch>>,
    /// The tasks forwarding requests, by request id.
    inflight: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// A message read from stdin.
enum Line {
    Message(Vec<u8>),
    /// Longer than the limit: skipped up to its newline.
    TooLong(usize),
}

/// Reads messages until stdin closes, answering unreadable ones at once.
async fn read_stdin(bridge: &Arc<Bridge>, max: usize) -> anyhow::Result<()> {
    let mut stdin = tokio::io::BufReader::with_capacity(1 << 16, tokio::io::stdin());
    while let Some(line) = read_line(&mut stdin, max).await.context("cannot read stdin")? {
        let bytes = match line {
            Line::Message(bytes) => bytes,
            Line::TooLong(length) => {
                let message = format!(
                    "the message is {length} bytes; the limit is {max} (server.max_body_bytes): it was not sent"
                );
                bridge.reply(Value::Null, code::INVALID_REQUEST, message);
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let message: Value = match serde_json::from_slice(&bytes) {
            Ok(message) => message,
            Err(err) => {
                bridge.reply(Value::Null, code::PARSE_ERROR, format!("parse error: {err}"));
                continue;
            }
        };
        bridge.note(&message);
        let is_request = message.get("id").is_some_and(|id| !id.is_null())
            && message.get("method").is_some_and(Value::is_string)
            && message.get("method").and_then(Value::as_str) != Some("initialize");
        if is_request {
            // Requests may run long (an ingest, a plugin call): concurrently.
            let key = message["id"].to_string();
            // Registered before the task can finish and remove itself.
            let mut inflight = bridge.lock_inflight();
            let task = {
                let bridge = bridge.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    bridge.forward(message).await;
                    bridge.lock_inflight().remove(&key);
                })
            };
            inflight.insert(key, task.abort_handle());
        } else if message.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
            // Dropping the forwarding task closes the request's stream, which
            // cancels it from 2026-07-28 on, and stops a request not yet sent
            // (waiting for the daemon to start) from being sent at all. A
            // session (2025-11-25) also hears the cancellation itself; the
            // cancelled request gets no answer either way.
            let key = message.pointer("/params/requestId").map(Value::to_string).unwrap_or_default();
            if let Some(task) = bridge.lock_inflight().remove(&key) {
                task.abort();
            }
            if bridge.session.borrow().id.is_some() {
                bridge.forward(message).await;
            }
        } else {
            // Notifications, responses and `initialize` keep their order:
            // `notifications/initialized` must reach the session before the
            // next request does.
            bridge.forward(message).await;
        }
    }
    Ok(())
}

/// The next newline-terminated message (the last may lack its newline),
/// or `None` at the end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut length = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((length > 0).then_some(if length > max { Line::TooLong(length) } else { Line::Message(line) }));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        length += chunk.len();
        if length <= max {
            line.extend_from_slice(chunk);
        } else {
            line = Vec::new();
        }
        let used = chunk.len() + usize::from(done);
        reader.consume(used);
        if done {
            return Ok(Some(if length > max { Line::TooLong(length) } else { Line::Message(line) }));
        }
    }
}

/// Writes each message as one line of compact JSON, flushing after each.
async fn write_stdout(mut messages: mpsc::UnboundedReceiver<Value>) {
    let mut stdout = tokio::io::stdout();
    while let Some(message) = messages.recv().await {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            // The client went away.
            std::process::exit(0);
        }
    }
}

impl Bridge {
    fn send(&self, message: Value) {
        // Only fails once the writer stopped, when nobody reads anyway.
        let _ = self.out.send(message);
    }

    /// Answers request `id` (or nobody: `null`) with an error.
    fn reply(&self, id: Value, code: i64, message: String) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}));
    }

    /// Records what `message` tells of the session, in the order messages
    /// arrive (before any is forwarded concurrently).
    fn note(&self, message: &Value) {
        let method = message.get("method").and_then(Value::as_str);
        if method == Some("initialize") {
            self.session.send_modify(|s| s.initialize = Some(message.clone()));
        }
        if let (Some(method @ ("resources/subscribe" | "resources/unsubscribe")), Some(uri)) =
            (method, message.pointer("/params/uri").and_then(Value::as_str))
        {
            let uri = uri.to_owned();
            self.session.send_modify(|s| {
                if method == "resources/subscribe" {
                    s.subscriptions.insert(uri);
                } else {
                    s.subscriptions.remove(&uri);
                }
            });
        }
        // A session-less client names its version in each request: its
        // notifications go with that version too.
        if let Some(version) =
            message.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion").and_then(Value::as_str)
            && self.session.borrow().id.is_none()
            && self.session.borrow().version.as_deref() != Some(version)
        {
            let version = version.to_owned();
            self.session.send_modify(|s| s.version = Some(version));
        }
    }

    /// Sends `message` to the daemon and relays what comes back.
    async fn forward(&self, message: Value) {
        let method = message.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = message.get("id").cloned().filter(|id| !id.is_null() && method.is_some());
        let body = Bytes::from(message.to_string());
        let mut started = false;
        let mut reopened = false;
        loop {
            let session = self.session.borrow().clone();
            let request = post(&message, &session, body.clone());
            let response = match self.client.open(request).await {
                Ok(response) => response,
                Err(ClientError::Connect { .. }) if !started && self.launch.is_some() => {
                    started = true;
                    if let Err(err) = self.start_daemon().await {
                        return self.fail(id, format!("{err:#}"));
                    }
                    continue;
                }
                Err(err) => {
                    let hint = if self.launch.is_some() { "" } else { " (start it with `engram serve`)" };
                    return self.fail(id, format!("cannot reach Engram's daemon: {err}{hint}"));
                }
            };
            if response.status() == StatusCode::NOT_FOUND
                && session.id.is_some()
                && !is_json(&response)
                && method.as_deref() != Some("initialize")
                && !reopened
            {
                // The daemon no longer knows the session: it restarted.
                reopened = true;
                if let Err(err) = self.reopen(session.epoch).await {
                    return self
                        .fail(id, format!("the daemon restarted and the session could not be reopened: {err:#}"));
                }
                continue;
            }
            if method.as_deref() == Some("initialize")
                && let Some(new_id) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
            {
                let new_id = new_id.to_owned();
                self.session.send_modify(|s| {
                    s.id = Some(new_id);
                    s.epoch += 1;
                });
            }
            return self.relay(response, id, method.as_deref()).await;
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports a failure to request `id`; a notification's is logged.
    fn fail(&self, id: Option<Value>, message: String) {
        match id {
            Some(id) => self.reply(id, code::DAEMON, message),
            None => eprintln!("engram mcp-stdio: {message}"),
        }
    }

    /// Relays the answer to one POST: a JSON body, or each event of a
    /// server-sent stream, until the stream ends.
    async fn relay(&self, response: Response<StreamingBody>, id: Option<Value>, method: Option<&str>) {
        let initialize = method == Some("initialize");
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return;
        }
        let what = method.map_or_else(|| "a response".to_owned(), |m| format!("`{m}`"));
        let mut answered = false;
        let mut on_message = |mut message: Value| {
            let answers = message.get("id").is_some() && message.get("method").is_none();
            if answers {
                // The daemon could not tell which request a refusal was for;
                // the bridge can.
                if message["id"].is_null()
                    && let Some(id) = &id
                {
                    message["id"] = id.clone();
                }
                answered |= id.as_ref() == message.get("id");
                if initialize && let Some(version) = message.pointer("/result/protocolVersion").and_then(Value::as_str)
                {
                    let version = version.to_owned();
                    self.session.send_modify(|s| s.version = Some(version));
                }
            }
            self.send(message);
        };
        let outcome = if is_event_stream(&response) {
            read_events(response.into_body(), &mut on_message).await.map_err(|broke| self.stopped(&broke))
        } else {
            match response.into_body().collect().await {
                Ok(body) => {
                    let bytes = body.to_bytes();
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(message) if message.get("jsonrpc").is_some() => {
                            on_message(message);
                            Ok(())
                        }
                        _ if status.is_success() && bytes.is_empty() => Ok(()),
                        _ => Err(format!(
                            "the daemon refused {what}: HTTP {status}: {}",
                            String::from_utf8_lossy(&bytes).trim()
                        )),
                    }
                }
                Err(err) => Err(format!("the daemon's answer broke off: {err}")),
            }
        };
        let Some(id) = id else {
            if let Err(message) = outcome {
                eprintln!("engram mcp-stdio: {message}");
            }
            return;
        };
        if answered {
            return;
        }
        let message = outcome.err().unwrap_or_else(|| self.stopped("its answer ended early"));
        self.reply(id, code::DAEMON, message);
    }

    /// Says that the daemon went away mid-answer, and what happens next.
    fn stopped(&self, detail: &str) -> String {
        let next = if self.launch.is_some() {
            "the next request starts it again"
        } else {
            "start it again with `engram serve`"
        };
        format!("Engram's daemon stopped before answering ({detail}); {next}")
    }

    /// Opens the session again after the daemon forgot `epoch`'s: replays
    /// the client's `initialize` and `notifications/initialized`.
    async fn reopen(&self, epoch: u64) -> anyhow::Result<()> {
        let _one_at_a_time = self.reopening.lock().await;
        let session = self.session.borrow().clone();
        if session.epoch != epoch {
            return Ok(()); // another request reopened it meanwhile
        }
        let mut initialize = session.initialize.clone().context("the client never sent `initialize`")?;
        initialize["id"] = json!("engram-mcp-stdio-reopen");
        let response = self
            .client
            .open(post(&initialize, &Session::default(), Bytes::from(initialize.to_string())))
            .await
            .context("replaying `initialize`")?;
        let status = response.status();
        let new_id = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Read the answer to its end; the client already has one.
        let mut refused = None;
        let outcome = if is_event_stream(&response) {
            read_events(response.into_body(), &mut |message: Value| {
                if let Some(error) = message.get("error") {
                    refused = Some(error.to_string());
                }
            })
            .await
        } else {
            response.into_body().collect().await.map(drop).map_err(|err| err.to_string())
        };
        outcome.map_err(anyhow::Error::msg)?;
        if let Some(error) = refused {
            anyhow::bail!("the daemon refused `initialize`: {error}");
        }
        anyhow::ensure!(status.is_success(), "the daemon answered `initialize` with HTTP {status}");
        let reopened = Session { id: new_id, ..session.clone() };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = self
            .client
            .open(post(&initialized, &reopened, Bytes::from(initialized.to_string())))
            .await
            .context("replaying `notifications/initialized`")?;
        let _ = response.into_body().collect().await;
        for (n, uri) in reopened.subscriptions.iter().enumerate() {
            let subscribe = json!({"jsonrpc": "2.0", "id": format!("engram-mcp-stdio-resubscribe-{n}"),
                "method": "resources/subscribe", "params": {"uri": uri}});
            let answer = self.client.open(post(&subscribe, &reopened, Bytes::from(subscribe.to_string()))).await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let _ = response.into_body().collect().await;
                }
                _ => eprintln!("engram mcp-stdio: could not subscribe to {uri} again after the restart"),
            }
        }
        self.session.send_modify(|s| {
            s.id = reopened.id;
            s.epoch += 1;
        });
        eprintln!("engram mcp-stdio: the daemon restarted; reopened the MCP session");
        Ok(())
    }

    /// Starts `engram serve` in the background (unless another request just
    /// did) and waits until it answers.
    async fn start_daemon(&self) -> anyhow::Result<()> {
        let Some(launch) = &self.launch else { anyhow::bail!("starting a daemon is off (--no-start)") };
        let launch = launch.lock().await;
        if self.client.reachable().await {
            return Ok(());
        }
        if let Some(dir) = launch.log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .with_context(|| format!("cannot open the daemon's log {}", launch.log.display()))?;
        let mut command = std::process::Command::new(&launch.exe);
        command
            .args(&launch.global_args)
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("cannot share the daemon's log file")?)
            .stderr(log);
        // Its own process group: the IDE's Ctrl-C or the bridge's exit
        // leaves the daemon serving.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().with_context(|| format!("cannot start `{} serve`", launch.exe.display()))?;
        eprintln!(
            "engram mcp-stdio: no daemon answered on {}; started `engram serve` in the background (pid {}, log {})",
            self.socket.display(),
            child.id(),
            launch.log.display()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.client.reachable().await {
                // Reap it when it exits, so it leaves no zombie behind.
                std::thread::spawn(move || child.wait());
                return Ok(());
            }
            if let Some(status) = child.try_wait().context("cannot watch the started daemon")? {
                let tail = std::fs::read_to_string(&launch.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                anyhow::bail!(
                    "the daemon started by mcp-stdio exited ({status}); its log {} ends:\n{}",
                    launch.log.display(),
                    tail.join("\n")
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the daemon started by mcp-stdio did not answer on {} within 120 s (log {})",
                self.socket.display(),
                launch.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends the session on the daemon (best effort) as the client leaves.
    async fn close(&self) {
        let session = self.session.borrow().clone();
        let Some(id) = session.id else { return };
        let mut request = Request::delete(engram_api::MCP_PATH).header("mcp-session-id", id);
        if let Some(version) = &session.version {
            request = request.header("mcp-protocol-version", version);
        }
        if let Ok(request) = request.body(Full::new(Bytes::new())) {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.open(request)).await;
        }
    }
}

/// Relays the server's own messages (`notifications/tools/list_changed`)
/// on the session's standalone stream, reopening it while the session lives.
async fn listen(bridge: Arc<Bridge>) {
    let mut sessions = bridge.session.subscribe();
    loop {
        let session = sessions.borrow_and_update().clone();
        let Some(id) = session.id else {
            if sessions.changed().await.is_err() {
                return;
            }
            continue;
        };
        let mut request =
            Request::get(engram_api::MCP_PATH).header(header::ACCEPT, "text/event-stream").header("mcp-session-id", id);
        if let Some(version) = &session.version {
            request = request.header("mcp-protocol-version", version);
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else { return };
        match bridge.client.open(request).await {
            Ok(response) if response.status().is_success() && is_event_stream(&response) => {
                let _ = read_events(response.into_body(), &mut |message| bridge.send(message)).await;
            }
            // No standalone stream for this session (or no longer): wait
            // for the next session.
            Ok(response) if response.status().is_client_error() => {
                if sessions.changed().await.is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        // The stream ended (the daemon stopped, or closed it): try again
        // shortly, or sooner when the session changes.
        let _ = tokio::time::timeout(Duration::from_secs(1), sessions.changed()).await;
    }
}

/// A POST of `message` to `/mcp` with the session's headers and, from
/// 2026-07-28 on, the standard `Mcp-Method` and `Mcp-Name` headers.
fn post(message: &Value, session: &Session, body: Bytes) -> Request<Full<Bytes>> {
    let method = message.get("method").and_then(Value::as_str);
    let version = message
        .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
        .and_then(Value::as_str)
        .or(if method == Some("initialize") { None } else { session.version.as_deref() });
    let mut request = Request::post(engram_api::MCP_PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(id) = &session.id
        && method != Some("initialize")
    {
        request = request.header("mcp-session-id", id);
    }
    if let Some(version) = version {
        request = request.header("mcp-protocol-version", version);
        if version >= "2026-07-28"
            && let Some(method) = method
        {
            request = request.header("mcp-method", method);
            if let Some(name) = standard_name(method, message.get("params")) {
                request = request.header("mcp-name", name);
            }
        }
    }
    // Header values come from the client's message and may not be valid
    // header text; such a message goes without them and the daemon says why.
    request.body(Full::new(body.clone())).unwrap_or_else(|_| {
        Request::post(engram_api::MCP_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .unwrap_or_default()
    })
}

/// The `Mcp-Name` header for `method` (SEP-2243): the tool or prompt name,
/// the resource URI or the task id, base64-wrapped when it is not plain
/// visible ASCII.
fn standard_name(method: &str, params: Option<&Value>) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return None,
    };
    let value = params?.get(key)?.as_str()?;
    let plain = !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && value.chars().all(|c| (' '..='~').contains(&c))
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        Some(value.to_owned())
    } else {
        use base64::Engine;
        Some(format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value)))
    }
}

fn is_event_stream(response: &Response<StreamingBody>) -> bool {
    content_type(response).starts_with("text/event-stream")
}

fn is_json(response: &Response<StreamingBody>) -> bool {
    content_type(response).starts_with("application/json")
}

fn content_type(response: &Response<StreamingBody>) -> &str {
    response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Hands each JSON message of a server-sent event stream to `on_message`
/// until it ends. Events without data (the transport's priming events) and
/// data that is not JSON are skipped.
pub(crate) async fn read_events(mut body: StreamingBody, on_message: &mut impl FnMut(Value)) -> Result<(), String> {
    let mut parser = EventParser::default();
    loop {
        match body.frame().await {
            None => return Ok(()),
            Some(Err(err)) => return Err(format!("its event stream broke off: {err}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    for payload in parser.push(&data) {
                        if let Ok(message) = serde_json::from_str::<Value>(&payload) {
                            on_message(message);
                        }
                    }
                }
            }
        }
    }
}

/// An incremental parser of `text/event-stream`: yields each event's data.
#[derive(Default)]
struct EventParser {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl EventParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let data = self.data.join("\n");
                self.data.clear();
                if !data.trim().is_empty() {
                    events.push(data);
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_frames_and_priming_events_skipped() {
        let mut parser = EventParser::default();
        assert!(parser.push(b"data: \nid: 0\nretry: 3000\n\nda").is_empty());
        assert_eq!(parser.push(b"ta: {\"a\":\r\ndata: 1}\r\n\r\n"), ["{\"a\":\n1}"]);
        assert_eq!(parser.push(b"event: message\ndata:x\n\ndata: y\n\n"), ["x", "y"]);
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_whole() {
        let input = b"{\"a\":1}\n0123456789abcdef\n\n{\"b\":2}".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 10).await.unwrap() {
            lines.push(match line {
                Line::Message(bytes) => String::from_utf8(bytes).unwrap(),
                Line::TooLong(n) => format!("too long: {n}"),
            });
        }
        assert_eq!(lines, ["{\"a\":1}", "too long: 16", "", "{\"b\":2}"]);
    }

    #[test]
    fn standard_names_are_wrapped_when_not_plain() {
        let params = json!({"name": "calc__evaluate", "uri": "engram://collections"});
        assert_eq!(standard_name("tools/call", Some(&params)).as_deref(), Some("calc__evaluate"));
        assert_eq!(standard_name("resources/read", Some(&params)).as_deref(), Some("engram://collections"));
        assert_eq!(standard_name("tools/list", Some(&params)), None);
        let odd = json!({"name": "café"});
        assert_eq!(standard_name("prompts/get", Some(&odd)).as_deref(), Some("=?base64?Y2Fmw6k=?="));
    }

    #[test]
    fn requests_carry_the_session_and_version() {
        let session = Session { id: Some("s1".into()), version: Some("2025-11-25".into()), ..Session::default() };
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}});
        let request = post(&call, &session, Bytes::new());
        assert_eq!(request.headers()["mcp-session-id"], "s1");
        assert_eq!(request.headers()["mcp-protocol-version"], "2025-11-25");
        assert!(request.headers().get("mcp-method").is_none());

        let stateless = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let request = post(&stateless, &Session::default(), Bytes::new());
        assert_eq!(request.headers()["mcp-protocol-version"], "2026-07-28");
        assert_eq!(
            (&request.headers()["mcp-method"], &request.headers()["mcp-name"]),
            (&"tools/call".parse().unwrap(), &"x".parse().unwrap())
        );

        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
        let request = post(&initialize, &session, Bytes::new());
        assert!(
            request.headers().get("mcp-session-id").is_none()
                && request.headers().get("mcp-protocol-version").is_none()
        );
    }
}
