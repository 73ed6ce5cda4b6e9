//! Engram's HTTP surface: one axum application served on a Unix socket and,
//! opt-in, a loopback TCP port guarded by a bearer token.
//!
//! [`http`] is the infrastructure (listeners, connection loop, guard,
//! limits, metrics) and knows no feature; `op` turns any typed operation
//! into a route; each feature module (`health`, `openai`, `plugins`,
//! `rag`) exports its routes, and [`router`] joins them.

mod app;
mod experience;
mod health;
pub mod http;
mod mcp;
mod memory;
mod op;
mod openai;
mod plugins;
mod rag;

pub use app::{Access, AppState, router};
pub use http::server;
pub use http::{ApiError, HttpLimits, Metrics, TcpGuard};
pub use mcp::PATH as MCP_PATH;
