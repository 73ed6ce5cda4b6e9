//! Access control for the TCP listener: loopback Host, allowed Origin,
//! bearer token. The Unix socket needs none of it: its 0600 mode is the
//! access control.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// What the TCP listener checks on every request.
#[derive(Clone)]
pub struct TcpGuard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    token: String,
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl std::fmt::Debug for TcpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpGuard").field("hosts", &self.inner.hosts).field("origins", &self.inner.origins).finish()
    }
}

impl TcpGuard {
    /// A guard for a listener bound to `addr`, accepting `token` and the
    /// given browser `origins`.
    pub fn new(addr: SocketAddr, token: String, origins: Vec<String>) -> Self {
        let port = addr.port();
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned(), addr.ip().to_string()]
            .into_iter()
            .flat_map(|host| {
                let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
                [format!("{host}:{port}"), host]
            })
            .collect();
        Self { inner: Arc::new(GuardInner { token, hosts, origins }) }
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !self.inner.hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "bad_host",
                format!("Host {host:?} is not a loopback name for this listener"),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if !self.inner.origins.iter().any(|allowed| allowed == origin) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    format!("Origin {origin:?} is not in server.allowed_origins"),
                ));
            }
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if bool::from(token.as_bytes().ct_eq(self.inner.token.as_bytes())) => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "the bearer token is wrong")),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this listener needs `Authorization: Bearer <token>` (the token is in server.token_file)",
            )),
        }
    }
}

/// Middleware enforcing a [`TcpGuard`].
pub(crate) async fn guard(State(guard): State<TcpGuard>, request: Request, next: Next) -> Response {
    match guard.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => {
            let unauthorized = err.status == StatusCode::UNAUTHORIZED;
            let mut response = err.into_response();
            if unauthorized {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn checks_host_origin_and_token() {
        let guard =
            TcpGuard::new("127.0.0.1:8765".parse().unwrap(), "s3cret".into(), vec!["http://localhost:3000".into()]);
        let ok = [("host", "127.0.0.1:8765"), ("authorization", "Bearer s3cret")];
        assert!(guard.check(&headers(&ok)).is_ok());
        assert!(guard.check(&headers(&[("host", "localhost:8765"), ("authorization", "Bearer s3cret")])).is_ok());
        let status = |pairs: &[(&'static str, &str)]| guard.check(&headers(pairs)).unwrap_err().status;
        assert_eq!(
            status(&[("host", "evil.example:8765"), ("authorization", "Bearer s3cret")]),
            StatusCode::MISDIRECTED_REQUEST
        );
        assert_eq!(status(&[("host", "127.0.0.1:8765")]), StatusCode::UNAUTHORIZED);
        assert_eq!(status(&[("host", "127.0.0.1:8765"), ("authorization", "Bearer nope")]), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&[
                ("host", "127.0.0.1:8765"),
                ("authorization", "Bearer s3cret"),
                ("origin", "http://evil.example")
            ]),
            StatusCode::FORBIDDEN
        );
        let allowed =
            [("host", "127.0.0.1:8765"), ("authorization", "Bearer s3cret"), ("origin", "http://localhost:3000")];
        assert!(guard.check(&headers(&allowed)).is_ok());
    }
}
