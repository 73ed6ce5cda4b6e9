//! End-to-end: the OpenAI-compatible API of a real daemon with the real
//! default models, driven by a raw HTTP client, the `openai` Python package,
//! and Engram's own remote backend pointed at another Engram.

mod support;

use std::process::Stdio;

use hyper::StatusCode;
use serde_json::{Value, json};
use support::{Daemon, Sandbox, get_unix, post_json};

/// Recorded from SmolLM2-135M-Instruct (Q4_1, native CPU engine), greedy.
const COLORS: &str = "The primary colors are:\n\nRed (R)\nBlue (B)\nYellow (Y)";

fn daemon_with_models(sandbox: &Sandbox, extra: &[(&str, &str)]) -> Daemon {
    let models = support::models_dir();
    let mut env = vec![("ENGRAM_MODELS__DIR", models.to_str().unwrap())];
    env.extend_from_slice(extra);
    sandbox.start(&env)
}

fn greedy_colors() -> Value {
    json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": "Name three primary colors."}],
        "temperature": 0,
        "max_tokens": 24
    })
}

#[test]
fn models_are_listed() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    let reply = get_unix(&daemon.socket, "/v1/models");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let ids: Vec<String> =
        reply.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["SmolLM2-135M-Instruct.Q4_1", "all-MiniLM-L6-v2"]);
}

#[test]
fn embeddings_come_back_as_floats_or_base64_and_bad_input_is_a_400() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    let texts = ["A man is playing a guitar.", "The stock market fell sharply today."];
    let reply = post_json(&daemon.socket, "/v1/embeddings", &json!({"model": "all-MiniLM-L6-v2", "input": texts}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    let vectors: Vec<Vec<f32>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].len(), 384);
    assert!((vectors[0][0] - 0.021_664_098).abs() < 1e-4, "{}", vectors[0][0]);
    assert_eq!(body["usage"]["prompt_tokens"], 9 + 9);

    let reply = post_json(&daemon.socket, "/v1/embeddings", &json!({"input": texts[0], "encoding_format": "base64"}));
    let encoded = reply.json()["data"][0]["embedding"].as_str().unwrap().to_owned();
    // 384 little-endian f32s = 1,536 bytes = 2,048 base64 characters.
    assert_eq!(encoded.len(), 2048);

    for (bad, phrase) in [
        (json!({"input": 42}), "`input`"),
        (json!({"input": [[1, 2, 3]]}), "token arrays"),
        (json!({"input": []}), "1 to 2048"),
        (json!({"input": "x", "dimensions": 128}), "384-dimensional"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
    ] {
        let reply = post_json(&daemon.socket, "/v1/embeddings", &bad);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.body);
        assert!(reply.json()["error"]["message"].as_str().unwrap().contains(phrase), "{bad}: {}", reply.body);
    }
}

#[test]
fn a_greedy_chat_completion_matches_the_generate_command() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    let reply = post_json(&daemon.socket, "/v1/chat/completions", &greedy_colors());
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], COLORS);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 35);

    let models = support::models_dir();
    let output = sandbox.run(
        &["generate", "Name three primary colors.", "--max-tokens", "24"],
        &[("ENGRAM_MODELS__DIR", models.to_str().unwrap())],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{COLORS}\n"));
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[test]
fn a_streamed_chat_completion_sends_deltas_usage_and_done() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    let mut request = greedy_colors();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = post_json(&daemon.socket, "/v1/chat/completions", &request);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_data(&reply.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, COLORS);
    assert!(chunks.len() > 5, "not streamed in pieces: {}", chunks.len());
    let finish = chunks.iter().find_map(|c| c["choices"].get(0)?["finish_reason"].as_str().map(str::to_owned));
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().map(|n| n > 0), Some(true));
}

#[test]
fn json_schema_response_format_yields_valid_json() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    });
    for seed in 0..3 {
        let request = json!({
            "messages": [{"role": "user", "content": "Invent a person. Reply in JSON with name and age."}],
            "seed": seed,
            "max_tokens": 60,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
        });
        let reply = post_json(&daemon.socket, "/v1/chat/completions", &request);
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let content = reply.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        let value: Value = serde_json::from_str(&content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(value["name"].is_string() && value["age"].is_i64(), "{content}");
    }
}

#[test]
fn malformed_chat_requests_get_json_400s() {
    let sandbox = Sandbox::new();
    let daemon = daemon_with_models(&sandbox, &[]);
    for (bad, phrase) in [
        (json!({"messages": []}), "`messages` is empty"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}), "wizard"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}), "temperature"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "n": 3}), "n = 1"),
        (json!({"messages": "hello"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a"}}}}),
            "pattern",
        ),
    ] {
        let reply = post_json(&daemon.socket, "/v1/chat/completions", &bad);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.body);
        assert!(reply.json()["error"]["message"].as_str().unwrap().contains(phrase), "{bad}: {}", reply.body);
    }
}

#[test]
fn a_daemon_without_its_models_answers_503_naming_the_file() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    let reply = post_json(&daemon.socket, "/v1/chat/completions", &greedy_colors());
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{message}");
    // Health is unaffected, and says which part failed and why.
    let health = get_unix(&daemon.socket, "/healthz");
    assert_eq!(health.status, StatusCode::OK);
    let llm = &health.json()["parts"]["llm"];
    assert_eq!(llm["state"], "failed", "{}", health.body);
    assert!(llm["error"].as_str().unwrap().contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{}", health.body);
}

fn tcp_daemon(sandbox: &Sandbox) -> (Daemon, u16, String) {
    let port = support::free_port();
    let daemon = daemon_with_models(sandbox, &[("ENGRAM_SERVER__TCP", &format!("127.0.0.1:{port}"))]);
    let token_file = sandbox.data_dir().join("http.token");
    (daemon, port, token_file.display().to_string())
}

#[test]
fn the_remote_backend_generates_through_another_engram() {
    let server = Sandbox::new();
    let (_daemon, port, token_file) = tcp_daemon(&server);
    let client = Sandbox::new();
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let remote = [
        ("ENGRAM_MODELS__LLM__BACKEND", "openai"),
        ("ENGRAM_MODELS__LLM__BASE_URL", base_url.as_str()),
        ("ENGRAM_MODELS__LLM__MODEL", "SmolLM2-135M-Instruct.Q4_1"),
        ("ENGRAM_MODELS__LLM__API_KEY_FILE", token_file.as_str()),
    ];
    let output = client.run(&["generate", "Name three primary colors.", "--max-tokens", "24", "--stats"], &remote);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{COLORS}\n"));

    // A wrong key is refused at once (no retries for a 401), and says so.
    let wrong = client.path().join("wrong.key");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let mut bad = remote;
    bad[3] = ("ENGRAM_MODELS__LLM__API_KEY_FILE", wrong.to_str().unwrap());
    let output = client.run(&["generate", "hi"], &bad);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("401") && err.contains(&base_url), "{err}");

    // Nobody listening: retried, then a clear error.
    let closed = format!("http://127.0.0.1:{}/v1", support::free_port());
    let mut gone = remote;
    gone[1] = ("ENGRAM_MODELS__LLM__BASE_URL", closed.as_str());
    let output = client.run(&["generate", "hi", "-v"], &[&gone[..], &[("ENGRAM_MODELS__LLM__RETRIES", "1")]].concat());
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(&closed) && err.contains("remote model server"), "{err}");
}

/// The `openai` Python package (a real client) over the TCP listener.
#[test]
fn the_openai_python_client_chats_streams_and_embeds() {
    let python = std::env::var("ENGRAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import openai"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{python} cannot import openai: scripts/test installs it (or set ENGRAM_TEST_PYTHON)"
    );
    let sandbox = Sandbox::new();
    let (_daemon, port, token_file) = tcp_daemon(&sandbox);
    let script = r#"
import json, sys
from openai import OpenAI
port, token_file = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=open(token_file).read().strip())
models = [m.id for m in client.models.list()]
reply = client.chat.completions.create(model=models[0], temperature=0, max_tokens=24,
    messages=[{"role": "user", "content": "Name three primary colors."}])
parts = []
for chunk in client.chat.completions.create(model=models[0], temperature=0, max_tokens=24, stream=True,
        messages=[{"role": "user", "content": "Name three primary colors."}]):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
emb = client.embeddings.create(model=models[1], input=["hello", "world"])
print(json.dumps({"models": models, "content": reply.choices[0].message.content,
    "streamed": "".join(parts), "dims": [len(d.embedding) for d in emb.data]}))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script, &port.to_string(), &token_file])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["content"], COLORS);
    assert_eq!(result["streamed"], COLORS);
    assert_eq!(result["dims"], json!([384, 384]));
}
