//! The daemon's own routes: `/healthz` ([`Healthz`], 503 when degraded,
//! for `engram doctor` and supervisors) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engram_ops::Operation;
use engram_services::health::{Healthz, Status};

use crate::app::AppState;

/// `GET /healthz`, `GET /metrics`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(Healthz::ROUTE, get(healthz)).route("/metrics", get(prometheus))
}

async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.services().health(Healthz {}).await;
    let status = if health.status == Status::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health)).into_response()
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let store = state.store().clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await {
        let uptime = state.services().uptime().as_secs_f64();
        state.metrics().set_gauges(uptime, stats.size_bytes, stats.last_seq.0);
    }
    let text = state.metrics().encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
