//! The axum router: the routes every listener serves and the layers around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engram_store::Store;
use serde::Serialize;

use crate::auth::{self, TcpGuard};
use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::{openai, plugins};
use engram_services::{Models, Services};

/// Everything a request handler may need: the services and the metrics.
/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    started: Instant,
    metrics: Metrics,
    services: Arc<Services>,
}

impl AppState {
    /// State over `services`, with fresh metrics.
    pub fn new(services: Arc<Services>) -> Self {
        Self { inner: Arc::new(StateInner { started: Instant::now(), metrics: Metrics::new(), services }) }
    }

    /// The services.
    pub fn services(&self) -> &Arc<Services> {
        &self.inner.services
    }

    /// The plugins directory, if this daemon runs a plugin host.
    pub fn plugins_dir(&self) -> Option<&std::path::Path> {
        self.plugins().map(|_| self.inner.services.plugins_dir())
    }

    /// The plugin host, if this daemon runs one.
    pub fn plugins(&self) -> Option<&Arc<engram_plugin_host::PluginHost>> {
        self.inner.services.plugins()
    }

    /// The models.
    pub fn models(&self) -> Option<&Models> {
        Some(self.inner.services.models())
    }

    /// The journal.
    pub fn store(&self) -> &Store {
        self.inner.services.store()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Limits applied to every request, whatever the listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body; larger ones get 413 before being read.
    pub max_body_bytes: u64,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
}

/// Who a listener serves.
#[derive(Debug, Clone)]
pub enum Access {
    /// The Unix socket: its file mode is the access control.
    Local,
    /// The loopback TCP port: every request passes the guard.
    Tcp(TcpGuard),
}

/// The application for one listener.
pub fn router(state: AppState, limits: HttpLimits, access: Access) -> Router {
    let metrics = state.metrics().clone();
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/tools", get(plugins::list_tools))
        .route("/v1/plugins/call", post(plugins::call))
        .route("/v1/plugins/reload", post(plugins::reload))
        .merge(crate::rag::routes())
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX)))
        .layer(middleware::from_fn_with_state(limits, limit_body));
    if let Access::Tcp(guard) = access {
        app = app.layer(middleware::from_fn_with_state(guard, auth::guard));
    }
    // Outermost, so refused requests are counted too.
    app.layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// Refuses a declared-too-large body before reading a byte of it, and caps
/// and times out undeclared (chunked) ones while they stream.
async fn limit_body(State(limits): State<HttpLimits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limits.max_body_bytes
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is {length} bytes; the limit is {} (server.max_body_bytes)",
                limits.max_body_bytes
            ),
        )
        .into_response();
    }
    let max = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let request = request.map(|body| {
        Body::new(tower_http::timeout::TimeoutBody::new(limits.body_timeout, http_body_util::Limited::new(body, max)))
    });
    next.run(request).await
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
        uptime_seconds: state.inner.started.elapsed().as_secs_f64(),
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
        state.metrics().set_gauges(state.inner.started.elapsed().as_secs_f64(), stats.size_bytes, stats.last_seq.0);
    }
    let text = state.metrics().encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Bytes;
    use futures_util::{StreamExt, stream};
    use tower::ServiceExt;

    use super::*;

    fn echo(max_body_bytes: u64) -> Router {
        let limits = HttpLimits { max_body_bytes, body_timeout: Duration::from_millis(200) };
        Router::new()
            .route("/echo", post(|body: Bytes| async move { body.len().to_string() }))
            .layer(middleware::from_fn_with_state(limits, limit_body))
    }

    /// A chunked body (no Content-Length) of `n` chunks of `size` bytes.
    fn chunked(n: usize, size: usize) -> Body {
        Body::from_stream(stream::iter((0..n).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; size])))))
    }

    async fn post_echo(app: Router, body: Body, length: Option<u64>) -> (StatusCode, String) {
        let mut request = Request::post("/echo");
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn bodies_within_the_limit_pass() {
        assert_eq!(post_echo(echo(1024), chunked(4, 256), None).await, (StatusCode::OK, "1024".to_owned()));
    }

    #[tokio::test]
    async fn a_declared_oversized_body_is_refused_unread() {
        // The body would fail if read: the 413 must come from the header alone.
        let poisoned = Body::from_stream(stream::iter([Err::<Bytes, _>(std::io::Error::other("read!"))]));
        let (status, body) = post_echo(echo(1024), poisoned, Some(100 << 20)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("body_too_large"), "{body}");
    }

    #[tokio::test]
    async fn an_undeclared_oversized_body_is_cut_off_while_streaming() {
        let (status, _) = post_echo(echo(1024), chunked(10, 256), None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let stalled =
            Body::from_stream(stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"{"))]).chain(stream::pending()));
        let (status, _) = post_echo(echo(1024), stalled, None).await;
        assert!(status.is_client_error() || status.is_server_error(), "{status}");
    }
}
