//! The generator interface over any OpenAI-compatible server (vLLM,
//! llama.cpp server, Ollama, another Engram): streaming chat completions
//! with a per-request timeout and retries with exponential backoff.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ModelError;
use crate::llm::{Finish, FinishReason, GenerateRequest, Prompt};
use crate::scheduler::{Event, EventStream};

/// How to reach the remote server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Base URL ending in `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name to ask for.
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Give up on one attempt after this long (to the end of the stream).
    pub timeout: Duration,
    /// Extra attempts after a connection failure or a 408/429/5xx answer.
    pub retries: u32,
}

/// A client for one remote model.
#[derive(Debug, Clone)]
pub struct RemoteLlm {
    client: reqwest::Client,
    options: RemoteOptions,
}

impl RemoteLlm {
    /// A client; no request is made until [`RemoteLlm::generate`].
    pub fn new(options: RemoteOptions) -> Result<Self, ModelError> {
        // rustls needs a process-wide crypto provider; ring is already built
        // for the hub client. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| remote_err(&options.base_url, format!("cannot build the HTTP client: {err}"), None))?;
        Ok(Self { client, options })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.options.model
    }

    fn body(&self, request: &GenerateRequest) -> (String, Value) {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.options.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        });
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if s.top_k > 0 {
            body["top_k"] = json!(s.top_k);
        }
        if s.repetition_penalty != 1.0 {
            body["repetition_penalty"] = json!(s.repetition_penalty);
        }
        if let Some(schema) = &request.json_schema {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
        }
        let base = self.options.base_url.trim_end_matches('/');
        match &request.prompt {
            Prompt::Chat(messages) => {
                body["messages"] = json!(messages);
                (format!("{base}/chat/completions"), body)
            }
            Prompt::Raw(text) => {
                body["prompt"] = json!(text);
                (format!("{base}/completions"), body)
            }
        }
    }

    /// Starts a streamed completion. Dropping the receiver closes the
    /// connection, which cancels the generation on the server.
    pub async fn generate(&self, request: GenerateRequest) -> Result<EventStream, ModelError> {
        let (url, body) = self.body(&request);
        let response = self.send_with_retries(&url, &body).await?;
        let (events, stream) = mpsc::channel(64);
        let timeout = self.options.timeout;
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, pump(response, &events, &url)).await;
            let outcome = outcome.unwrap_or_else(|_| {
                Err(remote_err(&url, format!("no complete answer within {} ms", timeout.as_millis()), None))
            });
            if let Err(err) = outcome {
                let _ = events.send(Err(err)).await;
            }
        });
        Ok(stream)
    }

    async fn send_with_retries(&self, url: &str, body: &Value) -> Result<reqwest::Response, ModelError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let mut call = self.client.post(url).json(body).timeout(self.options.timeout);
            if let Some(key) = &self.options.api_key {
                call = call.bearer_auth(key);
            }
            let retryable = match call.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry = matches!(status.as_u16(), 408 | 429 | 500..=599);
                    let text = response.text().await.unwrap_or_default();
                    let err = remote_err(url, format!("answered {status}: {}", text.trim()), Some(status.as_u16()));
                    if !retry {
                        return Err(err);
                    }
                    err
                }
                Err(err) if err.is_connect() || err.is_timeout() => remote_err(url, err.to_string(), None),
                Err(err) => return Err(remote_err(url, err.to_string(), None)),
            };
            if attempt >= self.options.retries {
                return Err(retryable);
            }
            attempt += 1;
            tracing::warn!(url, attempt, error = %retryable, "remote model call failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn remote_err(url: &str, reason: impl Into<String>, status: Option<u16>) -> ModelError {
    ModelError::Remote { url: url.to_owned(), reason: reason.into(), status }
}

/// Reads the server-sent events of a streamed completion into `events`.
async fn pump(
    response: reqwest::Response,
    events: &mpsc::Sender<Result<Event, ModelError>>,
    url: &str,
) -> Result<(), ModelError> {
    let started = Instant::now();
    let mut first_token = None;
    let mut bytes = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut reason = FinishReason::Length;
    let (mut prompt_tokens, mut completion_tokens, mut counted) = (0usize, 0usize, 0usize);
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|err| remote_err(url, format!("stream broke: {err}"), None))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                let finish = Finish {
                    reason,
                    prompt_tokens,
                    completion_tokens: if completion_tokens > 0 { completion_tokens } else { counted },
                    prefill: first_token.unwrap_or_default(),
                    decode: started.elapsed().saturating_sub(first_token.unwrap_or_default()),
                };
                let _ = events.send(Ok(Event::Done(finish))).await;
                return Ok(());
            }
            let value: Value = serde_json::from_str(data)
                .map_err(|err| remote_err(url, format!("not a JSON event ({err}): {data}"), None))?;
            if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
                prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
            let Some(choice) = value["choices"].get(0) else { continue };
            let text = choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or_default();
            if !text.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
                counted += 1;
                if events.send(Ok(Event::Text(text.to_owned()))).await.is_err() {
                    return Ok(()); // the client went away: dropping the stream closes the connection
                }
            }
            match choice["finish_reason"].as_str() {
                Some("stop") => reason = FinishReason::Stop,
                Some("length") => reason = FinishReason::Length,
                _ => {}
            }
        }
    }
    Err(remote_err(url, "the stream ended without [DONE]", None))
}
