//! HTTP infrastructure with no feature knowledge: binding and serving the
//! listeners ([`server`]), the TCP guard ([`auth`]), request limits
//! ([`limits`]), metrics ([`metrics`]) and the error body ([`error`]).

pub mod auth;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod server;

pub use auth::TcpGuard;
pub use error::ApiError;
pub use limits::HttpLimits;
pub use metrics::Metrics;
