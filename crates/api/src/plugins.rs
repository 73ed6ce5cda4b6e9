//! `/v1/plugins/*`: the plugin tools, listed and called over HTTP.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engram_plugin_host::CallError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::ApiError;
use crate::openai::body;

/// `GET /v1/plugins`, `GET /v1/plugins/tools`, `POST /v1/plugins/call`,
/// `POST /v1/plugins/reload`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/tools", get(list_tools))
        .route("/v1/plugins/call", post(call))
        .route("/v1/plugins/reload", post(reload))
}

async fn host(state: &AppState) -> Result<&std::sync::Arc<engram_plugin_host::PluginHost>, ApiError> {
    state.plugins_loaded().await.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "plugins_unavailable", "this daemon runs no plugin host")
    })
}

/// `GET /v1/plugins/tools`: every loaded tool with its schemas.
async fn list_tools(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "tools": host(&state).await?.list_tools() })))
}

/// `POST /v1/plugins/call` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallRequest {
    /// `<plugin>.<tool>`.
    tool: String,
    /// The arguments object (default: `{}`).
    #[serde(default = "empty_object")]
    arguments: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// `POST /v1/plugins/call`: `{"tool", "result"}`, or an error whose
/// `detail` is the structured [`CallError`].
async fn call(State(state): State<AppState>, payload: Result<Json<CallRequest>, JsonRejection>) -> Response {
    let request = match body(payload) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let host = match host(&state).await {
        Ok(host) => host,
        Err(err) => return err.into_response(),
    };
    match host.call_tool(&request.tool, request.arguments).await {
        Ok(result) => Json(json!({ "tool": request.tool, "result": result })).into_response(),
        Err(err) => {
            let (status, code) = match &err {
                CallError::UnknownTool { .. } => (StatusCode::NOT_FOUND, "unknown_tool"),
                CallError::InvalidArguments { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_arguments"),
                CallError::ToolFailed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "tool_failed"),
                CallError::Budget { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "budget_exceeded"),
                CallError::InvalidOutput { .. } => (StatusCode::BAD_GATEWAY, "invalid_output"),
                CallError::Crashed { .. } => (StatusCode::BAD_GATEWAY, "plugin_crashed"),
                CallError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "plugin_busy"),
            };
            let body = json!({ "error": { "code": code, "message": err.to_string(), "detail": err } });
            (status, Json(body)).into_response()
        }
    }
}

/// `GET /v1/plugins`: every plugin, loaded or held, with what it requests,
/// holds and lacks.
async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "plugins": host(&state).await?.plugins() })))
}

/// `POST /v1/plugins/reload`: rereads the grants and rescans the plugins
/// directory now. Answers `{"loaded": [{id, version}], "failed": [{folder,
/// error, detail}]}`, `detail` being the serialized `LoadError`.
async fn reload(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let host = host(&state).await?.clone();
    let Some(dir) = state.plugins_dir().map(std::path::Path::to_path_buf) else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "plugins_unavailable", "no plugins directory"));
    };
    let report = tokio::task::spawn_blocking(move || host.reload(&dir))
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string()))?;
    let loaded: Vec<Value> = report.loaded.iter().map(|(id, version)| json!({"id": id, "version": version})).collect();
    // `error` is the message; `detail` the structured `LoadError` (its
    // `error` field names the variant, e.g. `held`).
    let failed: Vec<Value> = report
        .failed
        .iter()
        .map(|(folder, error)| {
            json!({"folder": folder.display().to_string(), "error": error.to_string(), "detail": error})
        })
        .collect();
    Ok(Json(json!({ "loaded": loaded, "failed": failed })))
}
