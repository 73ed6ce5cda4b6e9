//! The application: the state handlers share, and the router that joins
//! every feature's routes under the HTTP layers (limits, the TCP guard,
//! metrics).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use engram_services::{Models, Services};
use engram_store::Store;

use crate::http::{self, ApiError, HttpLimits, Metrics, TcpGuard};
use crate::{experience, health, mcp, memory, openai, plugins, rag};

/// Everything a request handler may need: the services and the metrics.
/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    metrics: Metrics,
    services: Arc<Services>,
    /// Serve the MCP conformance suite's fixtures (`server.mcp_conformance_fixtures`).
    conformance_fixtures: bool,
}

impl AppState {
    /// State over `services`, with fresh metrics.
    pub fn new(services: Arc<Services>) -> Self {
        Self { inner: Arc::new(StateInner { metrics: Metrics::new(), services, conformance_fixtures: false }) }
    }

    /// This state, serving the MCP conformance suite's fixture tools,
    /// resources and prompts too (`on`), or not.
    pub fn with_conformance_fixtures(self, on: bool) -> Self {
        let inner = StateInner {
            metrics: self.inner.metrics.clone(),
            services: self.inner.services.clone(),
            conformance_fixtures: on,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Whether the MCP conformance fixtures are served.
    pub(crate) fn conformance_fixtures(&self) -> bool {
        self.inner.conformance_fixtures
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

    /// [`AppState::plugins`], once the first load of the plugins directory
    /// is done (it runs in the background while the daemon starts).
    pub async fn plugins_loaded(&self) -> Option<&Arc<engram_plugin_host::PluginHost>> {
        let host = self.plugins()?;
        host.loaded().await;
        Some(host)
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
    let mcp = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(mcp::envelope::check))
        .service(mcp::service(state.clone(), limits.max_body_bytes));
    // Routes that are not operations check no audience: a tenant's token
    // reaches only the operations (which scope it) and /mcp.
    let operator_only = Router::new()
        .merge(health::routes())
        .merge(openai::routes())
        .merge(plugins::routes())
        .route_layer(middleware::from_fn(operator_only));
    let mut app = Router::new()
        .merge(operator_only)
        .merge(rag::routes())
        .merge(memory::routes())
        .merge(experience::routes())
        .route_service(mcp::PATH, mcp)
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX)))
        .layer(middleware::from_fn_with_state(limits, http::limits::limit_body));
    app = match access {
        // The socket's file mode admits only its owner: the operator.
        Access::Local => app.layer(axum::Extension(engram_ops::Caller::Operator)),
        // The guard names the caller its token belongs to.
        Access::Tcp(guard) => app.layer(middleware::from_fn_with_state(guard, http::auth::guard)),
    };
    // Outermost, so refused requests are counted too.
    app.layer(middleware::from_fn_with_state(metrics, http::metrics::track))
}

/// Refuses tenants' tokens.
async fn operator_only(request: Request, next: middleware::Next) -> Response {
    match request.extensions().get::<engram_ops::Caller>() {
        Some(engram_ops::Caller::Operator) => next.run(request).await,
        Some(engram_ops::Caller::Tenant(tenant)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} is for the operator; tenant `{tenant}`'s token reaches /mcp and the retrieval routes",
                request.uri().path()
            ),
        )
        .into_response(),
        None => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the listener established no caller")
            .into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}
