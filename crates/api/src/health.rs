//! The daemon's own routes: `/healthz` (the journal's state, for
//! `engram doctor` and supervisors) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;

/// `GET /healthz`, `GET /metrics`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(prometheus))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    pid: u32,
    uptime_seconds: f64,
    store: StoreHealth,
}

#[derive(Serialize)]
struct StoreHealth {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlite_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.store().clone();
    let stats = tokio::task::spawn_blocking(move || store.stats()).await;
    let store = match stats {
        Ok(Ok(stats)) => StoreHealth {
            status: "ok",
            path: Some(stats.path.display().to_string()),
            schema_version: Some(stats.schema_version),
            last_seq: Some(stats.last_seq.0),
            size_bytes: Some(stats.size_bytes),
            sqlite_version: Some(stats.sqlite_version),
            error: None,
        },
        Ok(Err(err)) => StoreHealth::failed(err.to_string()),
        Err(err) => StoreHealth::failed(format!("store check did not finish: {err}")),
    };
    let healthy = store.status == "ok";
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        uptime_seconds: state.uptime(),
        store,
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

impl StoreHealth {
    fn failed(error: String) -> Self {
        Self {
            status: "error",
            path: None,
            schema_version: None,
            last_seq: None,
            size_bytes: None,
            sqlite_version: None,
            error: Some(error),
        }
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let store = state.store().clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await {
        state.metrics().set_gauges(state.uptime(), stats.size_bytes, stats.last_seq.0);
    }
    let text = state.metrics().encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
