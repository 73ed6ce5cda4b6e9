//! The MCP surface end to end: a real daemon with the real default models
//! and plugins built from `plugins/`, driven over streamable HTTP and
//! through `engram mcp-stdio` by real clients nobody here wrote (the Python
//! `mcp` SDK and the MCP Inspector CLI), and at the protocol level for the
//! properties those clients hide (tenant isolation, errors, the bridge's
//! stdout, a daemon killed under a live session).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::Request;
use hyper::body::Bytes;
use serde_json::{Value, json};
use support::Sandbox;

/// The plugins built from `plugins/`, copied without `template` (dropped in
/// later, to see `list_changed`), into a folder of the sandbox.
fn plugins_without_template(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let built = support::plugins_dir();
    let dir = sandbox.path().join("plugins");
    for entry in std::fs::read_dir(built).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "template" {
            support::copy_dir(&entry.path(), &dir.join(entry.file_name()));
        }
    }
    (dir, built.join("template"))
}

/// Environment of a daemon with the default models, `plugins` and TCP on `port`.
fn daemon_env(plugins: &Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ENGRAM_MODELS__DIR", support::models_dir().display().to_string()),
        ("ENGRAM_PLUGINS__DIR", plugins.display().to_string()),
        ("ENGRAM_SERVER__TCP", format!("127.0.0.1:{port}")),
    ]
}

/// A daemon for MCP tests: see [`mcp_daemon`].
struct McpDaemon {
    daemon: support::Daemon,
    addr: SocketAddr,
    /// The environment it was started with.
    env: Vec<(&'static str, String)>,
    plugins: PathBuf,
    /// The `template` plugin, built but not installed.
    template: PathBuf,
}

/// A daemon with the default models, the built plugins but `template`, TCP
/// on a free loopback port, and `extra` settings.
fn mcp_daemon(sandbox: &Sandbox, extra: &[(&'static str, &str)]) -> McpDaemon {
    let (plugins, template) = plugins_without_template(sandbox);
    let port = support::free_port();
    let mut env = daemon_env(&plugins, port);
    env.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
    let daemon = sandbox.start(&as_refs(&env));
    // Logged once every listener is bound (the TCP token written before).
    daemon.wait_for_log("engram is ready", Duration::from_secs(60));
    McpDaemon { daemon, addr: SocketAddr::from(([127, 0, 0, 1], port)), env, plugins, template }
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A minimal MCP client over HTTP for protocol-level checks: it speaks the
/// 2025-11-25 session protocol and reads JSON or server-sent events.
struct RawMcp {
    addr: SocketAddr,
    token: String,
    session: Option<String>,
}

impl RawMcp {
    fn open(addr: SocketAddr, token: &str) -> Self {
        let mut mcp = Self { addr, token: token.to_owned(), session: None };
        let (headers, answer) = mcp.post_with_headers(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}));
        assert_eq!(answer[0]["result"]["protocolVersion"], "2025-11-25", "{answer:?}");
        mcp.session = Some(headers["mcp-session-id"].to_str().unwrap().to_owned());
        mcp.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn post_with_headers(&self, message: &Value) -> (hyper::HeaderMap, Vec<Value>) {
        let mut request = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session).header("mcp-protocol-version", "2025-11-25");
        }
        let reply = support::request_tcp(self.addr, request.body(Full::new(Bytes::from(message.to_string()))).unwrap());
        let messages = if reply.body.trim_start().starts_with('{') {
            vec![reply.json()]
        } else {
            reply
                .body
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str(data.trim()).ok())
                .collect()
        };
        (reply.headers, messages)
    }

    fn post(&self, message: &Value) -> Vec<Value> {
        self.post_with_headers(message).1
    }

    /// Calls tool `name` and returns its result (or the JSON-RPC error).
    fn call(&self, name: &str, arguments: Value) -> Value {
        let answer =
            self.post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name, "arguments": arguments}}));
        let last = answer.last().cloned().unwrap_or_default();
        if last["error"].is_object() { last } else { last["result"].clone() }
    }

    fn tool_names(&self) -> Vec<String> {
        let answer = self.post(&json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}));
        answer[0]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The operator's TCP token (written before a daemon of [`mcp_daemon`] is ready).
fn operator_token(sandbox: &Sandbox) -> String {
    let file = sandbox.data_dir().join("http.token");
    let token = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    token.trim().to_owned()
}

fn tenant_token(sandbox: &Sandbox, tenant: &str) -> String {
    let output = sandbox.run(&["tenant", "token", tenant], &[]);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn tenants_come_from_their_tokens_and_never_see_each_other() {
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let addr = daemon.addr;
    let (ada, bob) = (tenant_token(&sandbox, "ada"), tenant_token(&sandbox, "bob"));
    assert_ne!(ada, bob);
    let (ada, bob) = (RawMcp::open(addr, &ada), RawMcp::open(addr, &bob));

    // A tenant sees its own tools, not the operator's.
    let names = ada.tool_names();
    assert!(names.contains(&"rag_search".to_owned()) && names.contains(&"rag_ingest".to_owned()), "{names:?}");
    assert!(!names.contains(&"rag_calibrate".to_owned()), "{names:?}");

    let doc = json!({"path": "secret.md", "text": "The vault code of Ada is 7781 and nobody else may read it."});
    let ingested = ada.call("rag_ingest", json!({"collection": "notes", "documents": [doc]}));
    assert_eq!(ingested["structuredContent"]["added"], 1, "{ingested}");
    let found = ada.call("rag_search", json!({"query": "vault code", "collection": "notes", "mode": "bm25"}));
    assert_eq!(found["structuredContent"]["hits"][0]["path"], "secret.md", "{found}");
    let hidden = bob.call("rag_search", json!({"query": "vault code", "collection": "notes", "mode": "bm25"}));
    assert_eq!(hidden["structuredContent"]["hits"], json!([]), "{hidden}");

    // Ada's collections are hers; Bob has none, and cannot list Ada's.
    let listed = ada.call("rag_collections", json!({}));
    assert_eq!(listed["structuredContent"]["collections"][0]["documents"], 1, "{listed}");
    assert_eq!(bob.call("rag_collections", json!({}))["structuredContent"]["collections"], json!([]));

    // A tenant's ingest never reads the daemon's own files (its tokens).
    let token_file = sandbox.data_dir().join("http.token");
    let stolen = bob.call("rag_ingest", json!({"collection": "loot", "paths": [token_file]}));
    assert_eq!(stolen["isError"], true, "{stolen}");
    assert!(stolen["content"][0]["text"].as_str().unwrap().contains("only the operator"), "{stolen}");

    // Management routes, plugin manifests and certificates are the operator's.
    for path in ["/v1/plugins", "/metrics", "/healthz"] {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {}", bob.token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(support::request_tcp(addr, request).status, hyper::StatusCode::FORBIDDEN, "{path}");
    }
    let resources = bob.post(&json!({"jsonrpc": "2.0", "id": 5, "method": "resources/list"}));
    let uris = resources[0]["result"]["resources"].to_string();
    assert!(uris.contains("engram://collections") && !uris.contains("engram://plugins/"), "{uris}");
    let manifest = bob.post(&json!({"jsonrpc": "2.0", "id": 6, "method": "resources/read",
        "params": {"uri": "engram://plugins/calc"}}));
    assert!(manifest[0]["error"].is_object(), "{manifest:?}");

    // The tenant is never an argument a model could forge.
    let forged = bob.call("rag_search", json!({"query": "vault code", "collection": "notes", "tenant": "ada"}));
    assert_eq!(forged["isError"], true, "{forged}");
    assert!(forged["content"][0]["text"].as_str().unwrap().contains("the connection decides it"), "{forged}");
    let forbidden = bob.call("rag_calibrate", json!({"collection": "notes", "generate": 2}));
    assert!(forbidden.to_string().contains("is for the operator"), "{forbidden}");

    // A revoked token stops working at once.
    let output = sandbox.run(&["tenant", "revoke", "bob"], &[]);
    assert!(output.status.success(), "{output:?}");
    let request = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {}", bob.token))
        .body(Full::new(Bytes::from(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string())))
        .unwrap();
    assert_eq!(support::request_tcp(addr, request).status, hyper::StatusCode::UNAUTHORIZED);
}

#[test]
fn bad_messages_get_json_rpc_errors_and_the_session_survives() {
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[("ENGRAM_SERVER__MAX_BODY_BYTES", "65536")]);
    let addr = daemon.addr;
    let mcp = RawMcp::open(addr, &operator_token(&sandbox));

    let send_raw = |body: String| {
        let request = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {}", mcp.token))
            .header("mcp-session-id", mcp.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        support::request_tcp(addr, request)
    };
    for (body, code) in [
        ("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\"".to_owned(), -32700),
        ("[]".to_owned(), -32600),
        (json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": 3}).to_string(), -32602),
        (
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x".repeat(70_000)}})
                .to_string(),
            -32600,
        ),
    ] {
        let reply = send_raw(body.clone());
        assert!(reply.status.is_client_error(), "{}: {}", &body[..40.min(body.len())], reply.status);
        assert_eq!(reply.json()["error"]["code"], code, "{}", reply.body);
    }
    let unknown = mcp.post(&json!({"jsonrpc": "2.0", "id": 4, "method": "engram/nonsense"}));
    assert_eq!(unknown[0]["error"]["code"], -32601, "{unknown:?}");

    // Arguments that break the tool's schema never reach the guest.
    let invalid = mcp.call("calc__evaluate", json!({"expression": 42}));
    assert_eq!(invalid["isError"], true, "{invalid}");
    assert!(invalid["content"][0]["text"].as_str().unwrap().contains("invalid arguments"), "{invalid}");
    // A guest past its budget is a tool error naming the budget.
    let spun = mcp.call("hostile__spin", json!({}));
    assert_eq!(spun["isError"], true, "{spun}");
    assert!(spun["content"][0]["text"].as_str().unwrap().contains("wall_ms budget: limit 200"), "{spun}");
    // Management actions are never tools.
    let names = mcp.tool_names();
    assert!(names.iter().all(|n| !n.contains("grant") && !n.contains("revoke") && !n.contains("tenant")), "{names:?}");

    // After all that, the same session still serves.
    let fine = mcp.call("calc__evaluate", json!({"expression": "6*7"}));
    assert_eq!(fine["structuredContent"]["value"], "42", "{fine}");
}

/// `engram mcp-stdio` as an IDE runs it: a child with piped stdio whose
/// stdout lines are collected by a thread.
struct Bridge {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Everything it wrote to stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Bridge {
    fn start(sandbox: &Sandbox, env: &[(&str, &str)]) -> Self {
        let mut command = sandbox.command(&["mcp-stdio"]);
        command.envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn engram mcp-stdio");
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, stdin, lines, stderr }
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message on stdout, which must be JSON-RPC.
    fn next(&self, limit: Duration) -> Value {
        let line = self.lines.recv_timeout(limit).expect("a message from the bridge");
        let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
        message
    }

    /// The answer to request `id`, skipping notifications.
    fn answer(&self, id: u64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let message = self.next(deadline.saturating_duration_since(Instant::now()));
            if message["id"] == id {
                return message;
            }
        }
    }

    fn initialize(&mut self) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
            "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
            .to_string(),
        );
        let answer = self.answer(1, Duration::from_secs(120));
        assert_eq!(answer["result"]["serverInfo"]["name"], "engram", "{answer}");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the daemon answering on the sandbox's socket.
fn daemon_pid(sandbox: &Sandbox) -> i32 {
    support::get_unix(&sandbox.socket(), "/healthz").json()["pid"].as_i64().unwrap() as i32
}

/// `kill -9` of the daemon answering on the sandbox's socket; returns once
/// it is gone (its pidfd turns readable when the process exits).
fn kill_daemon(sandbox: &Sandbox) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let pid = rustix::process::Pid::from_raw(daemon_pid(sandbox)).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let ready = poll(&mut fds, Some(&Timespec { tv_sec: 10, tv_nsec: 0 })).expect("poll");
    assert!(ready > 0, "the killed daemon is still running");
}

#[test]
fn the_stdio_bridge_starts_the_daemon_writes_only_json_rpc_and_survives_its_death() {
    let sandbox = Sandbox::new();
    let (plugins, template) = plugins_without_template(&sandbox);
    let plugins = plugins.display().to_string();
    let models = support::models_dir().display().to_string();
    // A daemon that logs everything: none of it may reach the bridge's stdout.
    let env = [
        ("ENGRAM_MODELS__DIR", models.as_str()),
        ("ENGRAM_PLUGINS__DIR", plugins.as_str()),
        ("RUST_LOG", "trace"),
        ("ENGRAM_SERVER__MAX_BODY_BYTES", "65536"),
    ];
    let mut bridge = Bridge::start(&sandbox, &env);
    bridge.initialize();
    let log = sandbox.data_dir().join("engram-serve.log");
    let said = bridge.stderr.lock().unwrap().clone();
    assert!(said.contains("started `engram serve` in the background"), "{said}");
    assert!(std::fs::metadata(&log).map(|m| m.len() > 0).unwrap_or(false), "the started daemon logs to its file");

    // Fuzz: garbage, truncated, oversized and valid lines, interleaved.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call",
        "params": {"name": "calc__evaluate", "arguments": {"expression": "1+1"}}})
    .to_string();
    let mut expected = Vec::new();
    for i in 0..120u64 {
        let line = match next() % 6 {
            0 => valid.replacen("\"id\":0", &format!("\"id\":{}", 1000 + i), 1),
            1 => valid[..(next() as usize % valid.len())].to_owned(),
            2 => (0..(next() % 200)).map(|_| char::from(b' ' + (next() % 95) as u8)).collect(),
            3 => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
                1000 + i,
                "x".repeat(70_000)
            ),
            4 => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{}}}",
                1000 + i,
                next() % 9
            ),
            _ => format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}}", 1000 + i),
        };
        // Complete requests under the size limit are answered by id.
        if line.contains(&format!("\"id\":{}", 1000 + i)) && line.len() < 65_536 {
            expected.push(1000 + i);
        }
        bridge.send(&line);
    }
    bridge.send(r#"{"jsonrpc":"2.0","id":99,"method":"ping"}"#);
    // Every line on stdout parses as JSON-RPC (checked in `next`), and every
    // complete request with an id is answered, by a result or an error.
    let mut answered = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.iter().all(|id| answered.contains(id)) || !answered.contains(&99) {
        let message = bridge.next(deadline.saturating_duration_since(Instant::now()));
        if let Some(id) = message["id"].as_u64() {
            answered.insert(id);
        }
    }

    // A subscription to a plugin's manifest...
    bridge.send(r#"{"jsonrpc":"2.0","id":6,"method":"resources/subscribe","params":{"uri":"engram://plugins/calc"}}"#);
    assert!(bridge.answer(6, Duration::from_secs(30))["result"].is_object());

    // Kill the daemon under a call in flight (its first progress
    // notification says it is running): the client hears why. (600
    // documents: the message stays under this daemon's 64 KiB limit.)
    let documents: Vec<Value> =
        (0..600).map(|i| json!({"path": format!("d{i}.md"), "text": format!("Parcel {i} left the depot.")})).collect();
    bridge.send(
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "rag_ingest",
            "arguments": {"collection": "parcels", "documents": documents}, "_meta": {"progressToken": "p7"}}})
        .to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while bridge.next(deadline.saturating_duration_since(Instant::now()))["method"] != "notifications/progress" {}
    kill_daemon(&sandbox);
    let died = bridge.answer(7, Duration::from_secs(30));
    assert!(died.to_string().contains("stopped before answering"), "{died}");
    // The next call starts a daemon and reopens the session transparently.
    bridge.send(&valid.replacen("\"id\":0", "\"id\":8", 1));
    let again = bridge.answer(8, Duration::from_secs(120));
    assert_eq!(again["result"]["structuredContent"]["value"], "2", "{again}");
    // ...outlives the restart: a plugin dropped in updates it.
    support::copy_dir(&template, &Path::new(&plugins).join("template"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = bridge.next(deadline.saturating_duration_since(Instant::now()));
        if message["method"] == "notifications/resources/updated" {
            assert_eq!(message["params"]["uri"], "engram://plugins/calc", "{message}");
            break;
        }
    }
    kill_daemon(&sandbox);
}

/// Reads server-sent events from `body` until `stop` says so or it ends;
/// returns every JSON message seen.
async fn read_sse(body: &mut engram_client::StreamingBody, mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
    use http_body_util::BodyExt;
    let (mut pending, mut seen) = (String::new(), Vec::new());
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(Ok(message)) = line.strip_prefix("data:").map(|d| serde_json::from_str::<Value>(d.trim())) {
                let done = stop(&message);
                seen.push(message);
                if done {
                    return seen;
                }
            }
        }
    }
    seen
}

#[test]
fn a_cancelled_ingest_stops_after_its_batch_and_leaves_a_consistent_journal() {
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let addr = daemon.addr;
    let mcp = RawMcp::open(addr, &operator_token(&sandbox));
    let session = mcp.session.clone().unwrap();

    const TOTAL: usize = 3000;
    let documents: Vec<Value> = (0..TOTAL)
        .map(|i| json!({"path": format!("doc-{i:05}.md"), "text": format!("Record {i}: the parcel numbered {i} left depot {} on a rainy morning.", i % 17)}))
        .collect();
    let ingest = json!({"jsonrpc": "2.0", "id": 21, "method": "tools/call", "params": {"name": "rag_ingest",
        "arguments": {"collection": "parcels", "documents": documents}, "_meta": {"progressToken": "ingest-1"}}});
    let client = engram_client::Client::tcp(addr, mcp.token.clone());
    let post = |message: &Value| {
        Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(message.to_string())))
            .unwrap()
    };
    let (progress, after) = support::block_on(async {
        let response = client.open(post(&ingest)).await.unwrap();
        let mut body = response.into_body();
        // The first progress notification after the first batch: cancel.
        let progress = read_sse(&mut body, |m| {
            m["method"] == "notifications/progress" && m["params"]["progress"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 21, "reason": "the user changed their mind"}});
        let accepted = client.clone().fresh_connections().open(post(&cancel)).await.unwrap();
        assert!(accepted.status().is_success(), "{}", accepted.status());
        let after = read_sse(&mut body, |_| false).await;
        (progress, after)
    });
    let last = progress.last().unwrap();
    assert_eq!(last["params"]["progressToken"], "ingest-1", "{progress:?}");
    assert_eq!(last["params"]["total"].as_f64(), Some(TOTAL as f64), "{last}");
    // A cancelled request gets no answer (MCP: the receiver stays silent).
    assert!(after.iter().all(|m| m["id"] != 21 || m["error"].is_object()), "{after:?}");

    // The ingest stopped early; what it wrote is whole: every document it
    // recorded has its chunk, and ingesting again completes the rest.
    // Ingests take turns, so one more (elsewhere) starts only once the
    // cancelled one's last batch has committed.
    let other = mcp.call("rag_ingest", json!({"collection": "other", "documents": [{"path": "x.md", "text": "x"}]}));
    assert_eq!(other["structuredContent"]["added"], 1, "{other}");
    let listed = mcp.call("rag_collections", json!({}));
    let collections = listed["structuredContent"]["collections"].as_array().cloned().unwrap_or_default();
    let partial = collections.iter().find(|c| c["name"] == "parcels").cloned().unwrap_or_else(|| panic!("{listed}"));
    let written = partial["documents"].as_u64().unwrap() as usize;
    assert!(written > 0 && written < TOTAL, "{partial}");
    assert_eq!(partial["chunks"], partial["documents"], "{partial}");

    let documents: Vec<Value> = (0..TOTAL)
        .map(|i| json!({"path": format!("doc-{i:05}.md"), "text": format!("Record {i}: the parcel numbered {i} left depot {} on a rainy morning.", i % 17)}))
        .collect();
    let report = mcp.call("rag_ingest", json!({"collection": "parcels", "documents": documents}));
    let report = &report["structuredContent"];
    assert_eq!(report["added"].as_u64().unwrap() as usize, TOTAL - written, "{report}");
    assert_eq!(report["unchanged"].as_u64().unwrap() as usize, written, "{report}");
    let found = mcp
        .call("rag_search", json!({"query": "parcel numbered 2999", "collection": "parcels", "mode": "bm25", "k": 1}));
    assert_eq!(found["structuredContent"]["hits"][0]["path"], "doc-02999.md", "{found}");
}

/// A Python with the `mcp` SDK (scripts/test installs it).
fn python_with_mcp() -> String {
    let python = std::env::var("ENGRAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import mcp"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{python} cannot import mcp: scripts/test installs it (or set ENGRAM_TEST_PYTHON)"
    );
    python
}

#[test]
fn the_python_sdk_works_over_stdio_and_http_in_both_protocol_versions() {
    let python = python_with_mcp();
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let (plugins, template, env) = (&daemon.plugins, &daemon.template, &daemon.env);
    let token = operator_token(&sandbox);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp_sdk_client.py");
    let url = format!("http://{}/mcp", daemon.addr);
    for transport in ["http", "stdio"] {
        // `auto`, the SDK's default, discovers 2026-07-28 on its own.
        for mode in ["legacy", "auto", "2026-07-28"] {
            let collection = format!("facts-{transport}-{}", &mode[..4]);
            // The bridge runs in the sandbox's environment, like `sandbox.command`.
            let mut command = sandbox.command(&[]);
            let bridge_env: Vec<(String, String)> = command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
                .collect();
            command = std::process::Command::new(&python);
            command
                .arg(&script)
                .args(["--transport", transport, "--mode", mode, "--url", &url, "--token", &token])
                .arg("--engram")
                .arg(support::BIN)
                .arg("--data-dir")
                .arg(sandbox.data_dir())
                .arg("--plugins")
                .arg(plugins)
                .arg("--template")
                .arg(template)
                .args(["--collection", &collection])
                .envs(bridge_env)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            let output = command.output().expect("run the mcp SDK client");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{transport} {mode}: {stderr}");
            let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!("{transport} {mode}: no summary ({e}): {}", String::from_utf8_lossy(&output.stdout))
            });
            let what = format!("{transport} {mode}: {summary}");
            let version = if mode == "legacy" { "2025-11-25" } else { "2026-07-28" };
            assert_eq!(summary["protocol_version"], version, "{what}");
            assert_eq!(summary["plugin_value"], "1024/3", "{what}");
            assert_eq!(summary["ingested"], 8, "{what}");
            let progress = summary["progress"].as_array().unwrap();
            assert!(progress.last().is_some_and(|p| p[0] == 8.0 && p[1] == 8.0), "{what}");
            let certified = &summary["certified"];
            assert_eq!(certified["certificate"], certified["calibrated"], "{what}");
            assert_eq!(certified["coverage_guarantee"], 0.8, "{what}");
            assert!(certified["population"].as_str().unwrap().contains(&collection), "{what}");
            // The population the guarantee is for, by name, and nothing withheld.
            assert!(certified["questions_from"].as_str().is_some_and(|q| !q.is_empty()), "{what}");
            assert_eq!(certified["no_guarantee"], json!([]), "{what}");
            assert!(certified["paths"].as_array().unwrap().contains(&json!("bread.md")), "{what}");
            assert_eq!(summary["cancelled"], true, "{what}");
            assert!(summary["resources"].as_array().unwrap().contains(&json!("engram://collections")), "{what}");
            assert_eq!(
                (&summary["collections_resource"], &summary["prompt_cites"]),
                (&json!(true), &json!(true)),
                "{what}"
            );
            assert_eq!(summary["list_changed"], true, "{what}");
            assert_eq!(summary["memory_updated"], true, "{what}");
            assert!(summary["greeting"].as_str().unwrap().contains("Hello, Ada!"), "{what}");
            assert!(!stderr.contains("Session termination failed"), "{what}: {stderr}");
        }
    }
}

/// The MCP Inspector's CLI (Node 22), installed by scripts/test.
fn inspector() -> (String, String) {
    let node = std::env::var("ENGRAM_TEST_NODE").expect("ENGRAM_TEST_NODE: scripts/test installs Node 22");
    let modules = std::env::var("ENGRAM_TEST_NODE_MODULES").expect("ENGRAM_TEST_NODE_MODULES: set by scripts/test");
    let cli = Path::new(&modules).join("@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    assert!(cli.is_file(), "{} is missing: scripts/test installs the inspector", cli.display());
    (node, cli.display().to_string())
}

#[test]
fn the_mcp_inspector_cli_lists_and_calls_tools_over_http_and_stdio() {
    let (node, cli) = inspector();
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let env = &daemon.env;
    let token = operator_token(&sandbox);
    let url = format!("http://{}/mcp", daemon.addr);
    let header = format!("Authorization: Bearer {token}");
    let data_dir = sandbox.data_dir().display().to_string();
    let http: Vec<String> = ["--server-url", &url, "--header", &header].map(String::from).to_vec();
    // The inspector, like IDEs, gives a stdio server a trimmed environment
    // plus what its configuration sets (`-e`): the sandbox's here.
    let mut stdio: Vec<String> = Vec::new();
    let sandbox_env = [
        ("HOME", sandbox.path().join("home").display().to_string()),
        ("XDG_RUNTIME_DIR", sandbox.path().join("run").display().to_string()),
    ];
    for (key, value) in sandbox_env.iter().map(|(k, v)| (*k, v.clone())).chain(env.iter().map(|(k, v)| (*k, v.clone())))
    {
        stdio.extend(["-e".to_owned(), format!("{key}={value}")]);
    }
    stdio.extend(["--", support::BIN, "mcp-stdio", "--data-dir", &data_dir].map(String::from));
    for (name, target) in [("http", &http), ("stdio", &stdio)] {
        let run = |method: &[&str]| {
            let mut command = sandbox.command(&[]);
            let envs: Vec<(String, String)> = command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
                .collect();
            command = std::process::Command::new(&node);
            command.arg(&cli).arg("--cli").args(["--format", "json"]).args(method);
            // Options go before the server; a stdio server's command comes last.
            command.args(target).envs(envs).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            let output = command.output().expect("run the inspector");
            assert!(
                output.status.success(),
                "{name} {method:?}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice::<Value>(&output.stdout)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
        };
        let listed = run(&["--method", "tools/list"]);
        let names: Vec<&str> =
            listed["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
        assert!(names.contains(&"rag_search") && names.contains(&"calc__evaluate"), "{name}: {names:?}");
        let called =
            run(&["--method", "tools/call", "--tool-name", "calc__evaluate", "--tool-arg", "expression=2^10/3"]);
        assert_eq!(called["result"]["structuredContent"]["value"], "1024/3", "{name}: {called}");
    }
}

/// A loopback reverse proxy in front of `upstream` that adds the bearer
/// token: the conformance suite cannot send headers. Host and Origin naming
/// the proxy are rewritten to the daemon's; any other value (the suite's
/// DNS-rebinding probes) passes untouched. Returns the proxy's address.
fn token_proxy(upstream: SocketAddr, token: String) -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let client = engram_client::Client::tcp(upstream, token).fresh_connections();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let client = client.clone();
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let client = client.clone();
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        for name in [hyper::header::HOST, hyper::header::ORIGIN] {
                            if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
                                let rewritten = value.replace(&addr.to_string(), &upstream.to_string());
                                parts.headers.insert(name, rewritten.parse().unwrap());
                            }
                        }
                        let request = Request::from_parts(parts, Full::new(body));
                        match client.open(request).await {
                            Ok(response) => Ok::<_, std::convert::Infallible>(response),
                            Err(err) => {
                                let body: engram_client::StreamingBody = Full::new(Bytes::from(err.to_string()))
                                    .map_err(|never| match never {})
                                    .boxed_unsync();
                                Ok(hyper::Response::builder().status(502).body(body).unwrap())
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
    });
    addr
}

#[test]
fn the_official_conformance_suite_passes() {
    let node = std::env::var("ENGRAM_TEST_NODE").expect("ENGRAM_TEST_NODE: scripts/test installs Node 22");
    let modules = std::env::var("ENGRAM_TEST_NODE_MODULES").expect("ENGRAM_TEST_NODE_MODULES: set by scripts/test");
    let suite = Path::new(&modules).join("@modelcontextprotocol/conformance/dist/index.js");
    assert!(suite.is_file(), "{} is missing: scripts/test installs the suite", suite.display());
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[("ENGRAM_SERVER__MCP_CONFORMANCE_FIXTURES", "true")]);
    let upstream = daemon.addr;
    let proxy = token_proxy(upstream, operator_token(&sandbox));
    let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp-conformance-expected-failures.yml");
    // The suite's 0.1.16 knows spec versions up to 2025-11-25 (it refuses
    // "2026-07-28"); the Python SDK test covers 2026-07-28.
    let output = std::process::Command::new(&node)
        .arg(&suite)
        .args(["server", "--url", &format!("http://{proxy}/mcp"), "--spec-version", "2025-11-25", "--suite", "all"])
        .arg("--expected-failures")
        .arg(&expected)
        .arg("-o")
        .arg(sandbox.path().join("conformance"))
        .env("HOME", sandbox.path().join("home"))
        .output()
        .expect("run the conformance suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.rsplit("=== SUMMARY ===").next().unwrap_or_default();
    assert!(output.status.success(), "{summary}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(summary.contains("dns-rebinding-protection") && summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn memory_is_kept_per_tenant_and_conversation_over_mcp_and_the_cli() {
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let (ada, bob) = (tenant_token(&sandbox, "ada"), tenant_token(&sandbox, "bob"));
    let (ada, bob) = (RawMcp::open(daemon.addr, &ada), RawMcp::open(daemon.addr, &bob));
    let names = ada.tool_names();
    assert!(names.contains(&"memory_append".to_owned()) && names.contains(&"memory_recall".to_owned()), "{names:?}");

    let said = [
        ("user", "We are moving the launch to the 14th of March."),
        ("assistant", "Understood, launch on March 14."),
        ("user", "My dog is called Biscuit and hates thunderstorms."),
    ];
    for (speaker, text) in said {
        let stored = ada.call("memory_append", json!({"conversation": "planning", "speaker": speaker, "text": text}));
        assert_eq!(stored["isError"], false, "{stored}");
    }
    let recalled =
        ada.call("memory_recall", json!({"conversation": "planning", "query": "what is my dog's name?", "k": 1}));
    let turn = &recalled["structuredContent"]["turns"][0]["turn"];
    assert_eq!((turn["ordinal"].as_u64(), turn["speaker"].as_str()), (Some(2), Some("user")), "{recalled}");
    assert!(turn["text"].as_str().unwrap().contains("Biscuit"), "{recalled}");

    // The compact memory follows in the background, with the real model.
    daemon.daemon.wait_for_log("to_turn=2", Duration::from_secs(120));
    let summary = ada.call("memory_summary", json!({"conversation": "planning"}));
    let level1 = &summary["structuredContent"]["level1"];
    assert_eq!(level1["last_ordinal"], 2, "{summary}");
    assert!(!level1["text"].as_str().unwrap().trim().is_empty(), "{summary}");

    // Bob has no conversation of that name: Ada's stays hers.
    let other = bob.call("memory_recall", json!({"conversation": "planning", "query": "dog", "k": 5}));
    assert_eq!(other["isError"], true, "{other}");
    assert!(
        other["content"][0]["text"].as_str().unwrap().contains("tenant `bob` has no conversation `planning`"),
        "{other}"
    );
    bob.call("memory_append", json!({"conversation": "planning", "speaker": "user", "text": "Lunch at noon."}));
    let own = bob.call("memory_recall", json!({"conversation": "planning", "query": "dog", "k": 5}));
    let texts = own["structuredContent"]["turns"].to_string();
    assert!(texts.contains("Lunch") && !texts.contains("Biscuit"), "{own}");
    let forged = bob.call("memory_recall", json!({"conversation": "planning", "query": "dog", "tenant": "ada"}));
    assert_eq!(forged["isError"], true, "{forged}");
    let empty = ada.call("memory_append", json!({"conversation": "planning", "speaker": "user", "text": "  "}));
    assert!(empty["content"][0]["text"].as_str().unwrap().contains("is empty"), "{empty}");

    // Ada forgets the dog; nothing of it is recalled any more.
    let forgot = ada.call("memory_forget", json!({"conversation": "planning", "turn": 2}));
    assert_eq!(forgot["structuredContent"]["turns"], 1, "{forgot}");
    let recalled = ada.call("memory_recall", json!({"conversation": "planning", "query": "Biscuit dog", "k": 5}));
    assert!(!recalled.to_string().contains("Biscuit"), "{recalled}");

    // The operator's CLI reaches the same memory, per tenant.
    let output =
        sandbox.run(&["memory", "recall", "planning", "launch date", "--tenant", "ada", "--json", "-k", "1"], &[]);
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(answer["turns"][0]["turn"]["text"].as_str().unwrap().contains("March"), "{answer}");
    // The prompt for a new message stays within the budget the model's
    // tokenizer counts, and says what went in.
    let output = sandbox.run(
        &["memory", "assemble", "planning", "When is the launch?", "--tenant", "ada", "--budget", "300", "--json"],
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let assembled: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(assembled["tokens"].as_u64().unwrap() <= 300, "{assembled}");
    assert_eq!(assembled["counted_with"], "tokenizer");
    assert_eq!(assembled["messages"].as_array().unwrap().last().unwrap()["content"], "When is the launch?");
    assert!(assembled.to_string().contains("March"), "{assembled}");
    assert!(!assembled.to_string().contains("Biscuit"), "{assembled}");
    // The export a person reads: every turn left, every summary version.
    let file = sandbox.path().join("planning.json");
    let output =
        sandbox.run(&["memory", "export", "planning", "--tenant", "ada", "--out", file.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{output:?}");
    let export: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let texts: Vec<&str> = export["turns"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [said[0].1, said[1].1], "{export}");
    assert!(!export.to_string().contains("Biscuit"), "{export}");
    // An archived turn leaves recall and stays in the journal; a restore
    // brings it back.
    let stdout = |output: std::process::Output| String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let recall_ordinals = || {
        let output =
            sandbox.run(&["memory", "recall", "planning", "launch in March", "--tenant", "ada", "--json"], &[]);
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        answer["turns"].as_array().unwrap().iter().map(|r| r["turn"]["ordinal"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert!(recall_ordinals().contains(&0));
    assert_eq!(stdout(sandbox.run(&["memory", "archive", "planning", "0", "--tenant", "ada"], &[])), "archived turn 0");
    assert_eq!(
        stdout(sandbox.run(&["memory", "conversations", "--tenant", "ada"], &[])),
        "planning: 2 turns (1 archived)"
    );
    assert!(!recall_ordinals().contains(&0));
    let output = sandbox.run(&["memory", "archive", "planning", "--tenant", "ada"], &[]);
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("<ORDINAL>"), "{output:?}");
    assert_eq!(stdout(sandbox.run(&["memory", "restore", "planning", "--tenant", "ada"], &[])), "restored turn 0");
    assert!(recall_ordinals().contains(&0));
    let output = sandbox.run(&["memory", "append", "notes", "Buy oat milk", "--json"], &[]);
    assert!(output.status.success(), "{output:?}");
    let output = sandbox.run(&["memory", "conversations"], &[]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "notes: 1 turns");
    let output = sandbox.run(&["memory", "forget-tenant", "--tenant", "ada"], &[]);
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("--yes"), "{output:?}");
    let output = sandbox.run(&["memory", "forget-tenant", "--tenant", "ada", "--yes"], &[]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "forgot 2 turns", "{output:?}");
    let output = sandbox.run(&["memory", "conversations", "--tenant", "ada"], &[]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("no conversations yet"), "{output:?}");
}

#[test]
fn insights_are_looked_up_and_judged_over_mcp_by_each_tenant_for_its_own_lookups() {
    let sandbox = Sandbox::new();
    let daemon = mcp_daemon(&sandbox, &[]);
    let written = sandbox.path().join("written");
    std::fs::create_dir_all(&written).unwrap();
    std::fs::write(
        written.join("capacity.toml"),
        "status = \"active\"\ntaxonomy = \"formulation/constraints/capacity\"\n\
         condition = \"Several products are stored in one warehouse of limited capacity\"\n\
         explanation = \"The capacity bounds the sum of the products, not each product.\"\n\
         example = \"x1 + x2 <= capacity\"\n",
    )
    .unwrap();
    let output = sandbox.run(&["insights", "import", written.to_str().unwrap()], &[("USER", "ana")]);
    assert!(output.status.success(), "{output:?}");
    let (ada, bob) = (tenant_token(&sandbox, "ada"), tenant_token(&sandbox, "bob"));
    let (ada, bob) = (RawMcp::open(daemon.addr, &ada), RawMcp::open(daemon.addr, &bob));
    let names = ada.tool_names();
    assert!(names.contains(&"experience_lookup".to_owned()) && names.contains(&"experience_feedback".to_owned()));

    let task = "A shop sells chairs and tables and stores both in one warehouse that holds 40 pieces. \
                Maximize the profit.";
    let found = ada.call("experience_lookup", json!({"task": task, "task_id": "shop-1", "check": false}));
    let lookup = &found["structuredContent"];
    assert_eq!(lookup["insights"][0]["id"], "ins-1", "{found}");
    assert!(lookup["prompt"].as_str().unwrap().contains("[ins-1] formulation/constraints/capacity"), "{found}");
    assert!(lookup.get("provenance").is_none() && !lookup.to_string().contains("provenance"));
    let retrieval = lookup["retrieval"].as_u64().unwrap();

    // Only the tenant that looked up may judge the lookup.
    let judged = bob.call("experience_feedback", json!({"retrieval": retrieval, "passed": false}));
    assert_eq!(judged["isError"], true, "{judged}");
    assert!(judged["content"][0]["text"].as_str().unwrap().contains("no insight lookup"), "{judged}");
    let forged = bob.call("experience_feedback", json!({"retrieval": retrieval, "passed": false, "tenant": "ada"}));
    assert_eq!(forged["isError"], true, "{forged}");
    let judged =
        ada.call("experience_feedback", json!({"retrieval": retrieval, "passed": true, "diagnosis": "solved"}));
    assert_eq!(judged["structuredContent"]["passed"], true, "{judged}");
    let empty = ada.call("experience_lookup", json!({"task": "  "}));
    assert!(empty["content"][0]["text"].as_str().unwrap().contains("`task` is empty"), "{empty}");

    // The library is the operator's resource: counters show the lookup and
    // its outcome; a tenant may not read it.
    let operator = RawMcp::open(daemon.addr, &operator_token(&sandbox));
    let read = |mcp: &RawMcp, uri: &str| {
        mcp.post(&json!({"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": uri}}))
            .last()
            .cloned()
            .unwrap()
    };
    let library = read(&operator, "engram://insights");
    let text: Value = serde_json::from_str(library["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    let counters = &text["insights"][0]["counters"];
    assert_eq!((counters["retrieved"].as_u64(), counters["helped"].as_u64()), (Some(1), Some(1)), "{text}");
    let one = read(&operator, "engram://insights/ins-1");
    assert!(one["result"]["contents"][0]["text"].as_str().unwrap().contains("\"events\""), "{one}");
    assert!(read(&ada, "engram://insights")["error"].is_object());

    // With the check on, the default model picks among the candidates.
    let checked = ada.call("experience_lookup", json!({"task": task}));
    assert_eq!(checked["structuredContent"]["checked"], true, "{checked}");
}
