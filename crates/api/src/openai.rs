//! The OpenAI-compatible API: `/v1/models`, `/v1/embeddings` and
//! `/v1/chat/completions` (with SSE streaming), so any OpenAI client or chat
//! front end can use Engram's models.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engram_models::{Event, FinishReason, GenerateRequest, Message, ModelError, Prompt, Role, SamplingParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::ApiError;
use engram_services::Models;

/// Most inputs one `/v1/embeddings` call may embed.
const MAX_EMBED_INPUTS: usize = 2048;
/// Default completion budget when the request names none.
const DEFAULT_MAX_TOKENS: usize = 512;

/// `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/chat/completions", post(chat_completions))
}

fn models(state: &AppState) -> Result<&Models, ApiError> {
    state.models().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "this daemon serves no models")
    })
}

pub(crate) fn unavailable(what: &str, reason: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "model_unavailable",
        format!("the {what} is not available: {reason}"),
    )
}

pub(crate) fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(value)| value).map_err(|rejection| {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, "invalid_request", rejection.body_text())
    })
}

impl From<ModelError> for ApiError {
    fn from(err: ModelError) -> Self {
        let (status, code) = match &err {
            ModelError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ModelError::ContextOverflow { .. } => (StatusCode::BAD_REQUEST, "context_length_exceeded"),
            ModelError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ModelError::BadFile { .. } | ModelError::Source { .. } | ModelError::Device { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable")
            }
            ModelError::Remote { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            ModelError::Inference(_) | ModelError::WorkerGone => (StatusCode::INTERNAL_SERVER_ERROR, "inference_error"),
        };
        ApiError::new(status, code, err.to_string())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn list_models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let models = models(&state)?;
    let entry = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "engram"});
    Ok(Json(json!({"object": "list", "data": [entry(&models.llm_id), entry(&models.embedder_id)]})))
}

#[derive(Deserialize)]
pub(crate) struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

async fn embeddings(
    State(state): State<AppState>,
    payload: Result<Json<EmbeddingsRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body(payload)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let texts: Vec<String> = match request.input {
        Value::String(text) => vec![text],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        }
        Value::Array(_) => {
            return Err(bad("`input` must be a string or an array of strings (token arrays are not supported)".into()));
        }
        _ => return Err(bad("`input` must be a string or an array of strings".into())),
    };
    if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
        return Err(bad(format!("`input` must hold 1 to {MAX_EMBED_INPUTS} texts, not {}", texts.len())));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(bad(format!("encoding_format {other:?} is not \"float\" or \"base64\""))),
    };
    let models = models(&state)?;
    let embedder = models.embedder.get().await.map_err(|reason| unavailable("embedding model", reason))?.clone();
    if let Some(dimensions) = request.dimensions
        && dimensions != embedder.dim()
    {
        return Err(bad(format!("this model makes {}-dimensional vectors, not {dimensions}", embedder.dim())));
    }
    let (vectors, tokens) = tokio::task::spawn_blocking(move || -> Result<_, ModelError> {
        let tokens = texts
            .iter()
            .map(|t| embedder.count_tokens(t).map(|n| n.min(embedder.max_tokens())))
            .sum::<Result<usize, _>>()?;
        Ok((embedder.embed(&texts)?, tokens))
    })
    .await
    .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference_error", err.to_string()))??;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 { json!(encode_base64(&vector)) } else { json!(vector) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": models.embedder_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// Little-endian f32s in standard base64, as OpenAI's `encoding_format: base64`.
fn encode_base64(vector: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<Stop>,
    seed: Option<u64>,
    repetition_penalty: Option<f32>,
    response_format: Option<ResponseFormat>,
    stream_options: Option<StreamOptions>,
    n: Option<usize>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Content,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    None,
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl ChatRequest {
    fn into_generate(self) -> Result<(GenerateRequest, bool, bool), ApiError> {
        let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
        if self.n.unwrap_or(1) != 1 {
            return Err(bad("only n = 1 is supported".into()));
        }
        if self.messages.is_empty() {
            return Err(bad("`messages` is empty".into()));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.into_iter().enumerate() {
            let role = match message.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(bad(format!("messages[{i}].role {other:?} is not system, user, assistant or tool")));
                }
            };
            let content = match message.content {
                Content::Text(text) => text,
                Content::None => String::new(),
                Content::Parts(parts) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(bad(format!(
                                    "messages[{i}]: content parts of type {kind:?} are not supported"
                                )));
                            }
                        }
                    }
                    text
                }
            };
            messages.push(Message::new(role, content));
        }
        let json_schema = match self.response_format {
            None => None,
            Some(format) => match format.kind.as_str() {
                "text" => None,
                "json_object" => Some(json!({})),
                "json_schema" => Some(
                    format
                        .json_schema
                        .and_then(|f| f.schema)
                        .ok_or_else(|| bad("response_format.json_schema.schema is missing".into()))?,
                ),
                other => {
                    return Err(bad(format!("response_format.type {other:?} is not text, json_object or json_schema")));
                }
            },
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: self.seed.unwrap_or_else(rand_seed),
            ..SamplingParams::default()
        };
        sampling.validate().map_err(bad)?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        let request = GenerateRequest {
            prompt: Prompt::Chat(messages),
            sampling,
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS),
            stop,
            json_schema,
        };
        let usage = self.stream_options.is_some_and(|o| o.include_usage);
        Ok((request, self.stream, usage))
    }
}

/// A fresh seed when the client sets none, so sampling differs call to call.
fn rand_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    payload: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (request, stream, include_usage) = body(payload)?.into_generate()?;
    let models = models(&state)?;
    let llm = models.llm.get().await.map_err(|reason| unavailable("language model", reason))?;
    let model_id = models.llm_id.clone();
    let mut events = llm.generate(request).await?;
    let id = format!("chatcmpl-{:016x}", rand_seed());
    let created = now();

    if !stream {
        let mut text = String::new();
        while let Some(event) = events.recv().await {
            match event? {
                Event::Text(chunk) => text.push_str(&chunk),
                Event::Done(finish) => {
                    return Ok(Json(json!({
                        "id": id,
                        "object": "chat.completion",
                        "created": created,
                        "model": model_id,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish_reason(finish.reason),
                        }],
                        "usage": {
                            "prompt_tokens": finish.prompt_tokens,
                            "completion_tokens": finish.completion_tokens,
                            "total_tokens": finish.prompt_tokens + finish.completion_tokens,
                        },
                    }))
                    .into_response());
                }
            }
        }
        return Err(ModelError::WorkerGone.into());
    }

    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let chunk = Arc::new(chunk);
    // The stream owns the receiver: when the client disconnects, hyper drops
    // the body, the receiver goes with it, and the generation stops.
    let sse = async_stream(events, chunk, include_usage);
    let mut response = Sse::new(sse).keep_alive(KeepAlive::default()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

type ChunkFn = Arc<dyn Fn(Value, Option<&str>) -> Value + Send + Sync>;

fn async_stream(
    events: engram_models::EventStream,
    chunk: ChunkFn,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    enum Phase {
        Start,
        Streaming,
        Finished,
    }
    let data = |value: Value| Ok(SseEvent::default().data(value.to_string()));
    futures_util::stream::unfold((events, Phase::Start), move |(mut events, phase)| {
        let chunk = chunk.clone();
        async move {
            match phase {
                Phase::Start => {
                    let first = chunk(json!({"role": "assistant", "content": ""}), None);
                    Some((vec![data(first)], (events, Phase::Streaming)))
                }
                Phase::Finished => None,
                Phase::Streaming => match events.recv().await {
                    Some(Ok(Event::Text(text))) => {
                        Some((vec![data(chunk(json!({"content": text}), None))], (events, Phase::Streaming)))
                    }
                    Some(Ok(Event::Done(finish))) => {
                        let mut out = vec![data(chunk(json!({}), Some(finish_reason(finish.reason))))];
                        if include_usage {
                            let mut usage = chunk(json!({}), None);
                            usage["choices"] = json!([]);
                            usage["usage"] = json!({
                                "prompt_tokens": finish.prompt_tokens,
                                "completion_tokens": finish.completion_tokens,
                                "total_tokens": finish.prompt_tokens + finish.completion_tokens,
                            });
                            out.push(data(usage));
                        }
                        out.push(Ok(SseEvent::default().data("[DONE]")));
                        Some((out, (events, Phase::Finished)))
                    }
                    Some(Err(err)) => {
                        let err = ApiError::from(err);
                        let body = json!({"error": {"code": err.code, "message": err.message}});
                        Some((vec![data(body), Ok(SseEvent::default().data("[DONE]"))], (events, Phase::Finished)))
                    }
                    None => None,
                },
            }
        }
    })
    .flat_map(futures_util::stream::iter)
}

use futures_util::StreamExt as _;
