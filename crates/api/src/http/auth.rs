//! Access control for the TCP listener: loopback Host, allowed Origin,
//! bearer token. The token says who calls: the operator's token
//! (`server.token_file`) or a tenant's (`<tenant>.token` in the tenant
//! tokens folder, made by `engram tenant token NAME`). The Unix socket needs
//! none of it: its 0600 mode is the access control, and its callers are the
//! operator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engram_ops::{Caller, TenantId};
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
    tenants: Option<TenantTokens>,
}

/// Tenants' tokens, read from their folder again whenever it changes.
struct TenantTokens {
    dir: PathBuf,
    read: Mutex<TokenSnapshot>,
    /// How long a snapshot may be reused while the folder looks unchanged.
    reread_after: std::time::Duration,
}

/// The tokens as read when the folder had modification time `modified`,
/// at `read_at`.
#[derive(Default)]
struct TokenSnapshot {
    modified: Option<SystemTime>,
    read_at: Option<std::time::Instant>,
    tokens: Vec<(TenantId, String)>,
}

/// A snapshot is reread at the latest after this long, so a token file
/// rewritten in place (which leaves the folder's time alone) counts within
/// a second.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl TenantTokens {
    /// The tenant whose token `presented` is.
    fn find(&self, presented: &str) -> Option<TenantId> {
        let modified = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = read.read_at.is_some_and(|at| at.elapsed() < self.reread_after);
        if read.modified != modified || modified.is_none() || !fresh {
            let tokens = read_tenant_tokens(&self.dir);
            *read = TokenSnapshot { modified, read_at: Some(std::time::Instant::now()), tokens };
        }
        // Compare with every token, so timing says nothing of which matched.
        let mut found = None;
        for (tenant, token) in &read.tokens {
            if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

/// `<tenant>.token` files in `dir`: only private regular files (mode 0600,
/// not links) holding at least 16 characters count; others are logged and
/// ignored.
fn read_tenant_tokens(dir: &Path) -> Vec<(TenantId, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut tokens = Vec::new();
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".token")) else {
            continue;
        };
        let Ok(tenant) = name.parse::<TenantId>() else {
            tracing::warn!(file = %path.display(), "ignoring a tenant token file whose name is not a tenant id");
            continue;
        };
        match read_private(&path) {
            Ok(token) if token.trim().len() >= 16 => tokens.push((tenant, token.trim().to_owned())),
            Ok(_) => tracing::warn!(file = %path.display(), "ignoring a short tenant token file"),
            Err(why) => tracing::warn!(file = %path.display(), "ignoring a tenant token file: {why}"),
        }
    }
    tokens
}

/// The text of `path` if it is a regular file (not a link, FIFO or device)
/// that only its owner can read; checked on the open file, so it cannot be
/// swapped between the check and the read.
fn read_private(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|err| format!("cannot open it ({err}); links are not followed"))?;
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.mode() & 0o077 != 0 {
        return Err("others can read it (chmod 600 it)".into());
    }
    let mut token = String::new();
    file.take(4096).read_to_string(&mut token).map_err(|err| err.to_string())?;
    Ok(token)
}

impl std::fmt::Debug for TcpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpGuard").field("hosts", &self.inner.hosts).field("origins", &self.inner.origins).finish()
    }
}

impl TcpGuard {
    /// A guard for a listener bound to `addr`, accepting `token` and the
    /// given browser `origins`, besides the listener's own (a page it
    /// served itself is same-origin).
    pub fn new(addr: SocketAddr, token: String, mut origins: Vec<String>) -> Self {
        let port = addr.port();
        let hosts: Vec<String> =
            ["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned(), addr.ip().to_string()]
                .into_iter()
                .flat_map(|host| {
                    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
                    [format!("{host}:{port}"), host]
                })
                .collect();
        origins.extend(
            hosts.iter().filter(|host| host.ends_with(&format!(":{port}"))).map(|host| format!("http://{host}")),
        );
        Self { inner: Arc::new(GuardInner { token, hosts, origins, tenants: None }) }
    }

    /// Also accepts tenants' tokens from `dir` (`<tenant>.token` files,
    /// reread whenever the folder changes); each authenticates its tenant.
    pub fn with_tenant_tokens(self, dir: PathBuf) -> Self {
        self.with_tenant_tokens_reread(dir, REREAD_AFTER)
    }

    fn with_tenant_tokens_reread(self, dir: PathBuf, reread_after: std::time::Duration) -> Self {
        let inner = GuardInner {
            token: self.inner.token.clone(),
            hosts: self.inner.hosts.clone(),
            origins: self.inner.origins.clone(),
            tenants: Some(TenantTokens { dir, read: Mutex::default(), reread_after }),
        };
        Self { inner: Arc::new(inner) }
    }

    fn check(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
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
            Some(token) if bool::from(token.as_bytes().ct_eq(self.inner.token.as_bytes())) => Ok(Caller::Operator),
            Some(token) => match self.inner.tenants.as_ref().and_then(|tenants| tenants.find(token)) {
                Some(tenant) => Ok(Caller::Tenant(tenant)),
                None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "the bearer token is wrong")),
            },
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this listener needs `Authorization: Bearer <token>` (the token is in server.token_file)",
            )),
        }
    }
}

/// Middleware enforcing a [`TcpGuard`]: the request goes on with the
/// [`Caller`] its token names.
pub(crate) async fn guard(State(guard): State<TcpGuard>, mut request: Request, next: Next) -> Response {
    match guard.check(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
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
        assert_eq!(guard.check(&headers(&ok)).unwrap(), Caller::Operator);
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
        for origin in ["http://localhost:3000", "http://localhost:8765", "http://127.0.0.1:8765"] {
            let allowed = [("host", "127.0.0.1:8765"), ("authorization", "Bearer s3cret"), ("origin", origin)];
            assert!(guard.check(&headers(&allowed)).is_ok(), "{origin}");
        }
        // The same host on another port is another origin.
        let other =
            [("host", "127.0.0.1:8765"), ("authorization", "Bearer s3cret"), ("origin", "http://localhost:9999")];
        assert_eq!(status(&other), StatusCode::FORBIDDEN);
    }

    #[test]
    fn tenant_tokens_name_their_tenant_and_are_reread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, token: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, token).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("alice.token", "alice-token-0123456789\n", 0o600);
        write("bob.token", "bob-token-0123456789", 0o644);
        let guard = TcpGuard::new("127.0.0.1:1".parse().unwrap(), "operator-token".into(), Vec::new())
            // Reread on every lookup: what changes is seen without waiting.
            .with_tenant_tokens_reread(dir.path().to_path_buf(), std::time::Duration::ZERO);
        let check = |token: &str| {
            let bearer = format!("Bearer {token}");
            guard.check(&headers(&[("host", "127.0.0.1:1"), ("authorization", &bearer)]))
        };
        assert_eq!(check("operator-token").unwrap(), Caller::Operator);
        assert_eq!(check("alice-token-0123456789").unwrap(), Caller::Tenant("alice".parse().unwrap()));
        // Readable by others: ignored.
        assert_eq!(check("bob-token-0123456789").unwrap_err().status, StatusCode::UNAUTHORIZED);
        // A token added later counts without a restart.
        write("carol.token", "carol-token-0123456789", 0o600);
        assert_eq!(check("carol-token-0123456789").unwrap(), Caller::Tenant("carol".parse().unwrap()));
        // Rewritten in place (the folder's time stays): counts once the
        // snapshot is older than the reread interval (zero here).
        std::fs::write(dir.path().join("carol.token"), "carol-new-token-0123456789").unwrap();
        assert_eq!(check("carol-token-0123456789").unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(check("carol-new-token-0123456789").unwrap(), Caller::Tenant("carol".parse().unwrap()));
        // A link is not followed, even to a private file.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("elsewhere");
        std::fs::write(&target, "mallory-token-0123456789").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("mallory.token")).unwrap();
        assert_eq!(check("mallory-token-0123456789").unwrap_err().status, StatusCode::UNAUTHORIZED);
    }
}
