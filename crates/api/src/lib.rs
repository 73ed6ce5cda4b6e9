//! Engram's HTTP surface: one axum application served on a Unix socket and,
//! opt-in, a loopback TCP port guarded by a bearer token.
//!
//! [`router`] builds the application for one listener; [`server`] binds the
//! listeners and runs the connection loop with its deadlines and drain.

mod auth;
mod error;
mod metrics;
mod op;
mod openai;
mod plugins;
mod rag;
mod routes;
pub mod server;

pub use auth::TcpGuard;
pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::{Access, AppState, HttpLimits, router};
