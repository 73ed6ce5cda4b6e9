//! Listeners and the connection loop: a Unix socket (with stale-socket
//! recovery) and an optional loopback TCP port, served by hyper with
//! header and body deadlines, a connection cap and a bounded drain.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest path a Unix socket can be bound at.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the socket.
    #[error(
        "another process is serving on {} (is an engram daemon already running?); stop it, or set server.socket to another path",
        path.display()
    )]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket sits at the path.
    #[error("{} exists and is not a socket; Engram will not delete it: remove it or set server.socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The path is longer than the kernel allows.
    #[error("socket path {} is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}: set a shorter server.socket", path.display())]
    TooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Any other I/O error, with what was being done.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What failed.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The TCP address could not be bound.
    #[error("cannot listen on {addr} (server.tcp): {source}")]
    Tcp {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io { what, path: path.to_path_buf(), source }
}

/// A bound Unix socket. Dropping it removes the socket file, unless another
/// process has replaced it since.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
}

impl UnixSocket {
    /// Binds `path` with mode 0600, creating its directory (mode 0700). A
    /// socket file nobody answers on is stale and is replaced; a live one or
    /// a non-socket file is an error. Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(BindError::TooLong { path: path.to_path_buf(), len });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err("cannot create the socket directory", parent))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse { path: path.to_path_buf() }),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::warn!(socket = %path.display(), "removing stale socket left by a daemon that did not exit cleanly");
                    std::fs::remove_file(path).map_err(io_err("cannot remove the stale socket", path))?;
                }
                Err(source) => {
                    return Err(BindError::Io {
                        what: "cannot probe the existing socket",
                        path: path.to_path_buf(),
                        source,
                    });
                }
            },
            Ok(_) => return Err(BindError::NotASocket { path: path.to_path_buf() }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(BindError::Io { what: "cannot inspect", path: path.to_path_buf(), source }),
        }
        let listener = UnixListener::bind(path).map_err(io_err("cannot bind the socket", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot restrict the socket's mode", path))?;
        let ino = std::fs::metadata(path).map_err(io_err("cannot inspect", path))?.ino();
        Ok(Self { listener, path: path.to_path_buf(), ino })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|meta| meta.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the loopback TCP listener.
pub async fn bind_tcp(addr: std::net::SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError::Tcp { addr, source })
}

/// Reads the bearer token from `path`, creating it (mode 0600, 256 random
/// bits, hex) when missing. A token file others can read is refused.
pub fn load_or_create_token(path: &Path) -> Result<String, BindError> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|err| BindError::Io {
                what: "cannot generate a token for",
                path: path.to_path_buf(),
                source: io::Error::other(err.to_string()),
            })?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).map_err(io_err("cannot write", path))?;
            file.sync_all().map_err(io_err("cannot sync", path))?;
            tracing::info!(token_file = %path.display(), "created a bearer token for the TCP listener");
            Ok(token)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(io_err("cannot inspect the token file", path))?;
            if meta.mode() & 0o077 != 0 {
                return Err(BindError::Io {
                    what: "refusing a token file others can read:",
                    path: path.to_path_buf(),
                    source: io::Error::other(format!(
                        "mode is {:o}; run `chmod 600 {}`",
                        meta.mode() & 0o777,
                        path.display()
                    )),
                });
            }
            let token = std::fs::read_to_string(path).map_err(io_err("cannot read the token file", path))?;
            let token = token.trim().to_owned();
            if token.len() < 16 {
                return Err(BindError::Io {
                    what: "token file",
                    path: path.to_path_buf(),
                    source: io::Error::other("holds fewer than 16 characters; delete it to have a new token made"),
                });
            }
            Ok(token)
        }
        Err(source) => Err(BindError::Io { what: "cannot create the token file", path: path.to_path_buf(), source }),
    }
}

/// A listener and the application it serves.
#[derive(Debug)]
pub enum Listener {
    /// The Unix socket.
    Unix(UnixSocket, Router),
    /// The loopback TCP port.
    Tcp(TcpListener, Router),
}

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A complete request head must arrive within this (also the
    /// keep-alive idle limit).
    pub header_timeout: Duration,
    /// Most connections served at once on each listener: TCP clients
    /// (with or without a token) can never take the socket's.
    pub max_connections: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
}

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// This many connections were still busy when the grace ran out.
    TimedOut(usize),
}

/// Serves every listener until `shutdown` resolves, then stops accepting
/// (removing the socket file), lets in-flight requests finish within the
/// grace period, and returns.
pub async fn serve(listeners: Vec<Listener>, limits: ConnLimits, shutdown: impl Future<Output = ()>) -> Drained {
    let cancel = CancellationToken::new();
    let connections = TaskTracker::new();
    let accept_loops = TaskTracker::new();
    for listener in listeners {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        accept_loops.spawn(accept_loop(listener, limits, permits, cancel.clone(), connections.clone()));
    }
    accept_loops.close();
    shutdown.await;
    cancel.cancel();
    accept_loops.wait().await;
    connections.close();
    tracing::info!(open = connections.len(), "stopped accepting; draining in-flight requests");
    match tokio::time::timeout(limits.shutdown_grace, connections.wait()).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut(connections.len()),
    }
}

async fn accept_loop(
    listener: Listener,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = cancel.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = cancel.cancelled() => return,
        };
        match accepted {
            Ok(Accepted::Unix(stream, app)) => {
                connections.spawn(serve_connection(stream, app, limits, cancel.clone(), permit));
            }
            Ok(Accepted::Tcp(stream, app)) => {
                let _ = stream.set_nodelay(true);
                connections.spawn(serve_connection(stream, app, limits, cancel.clone(), permit));
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream, Router),
    Tcp(tokio::net::TcpStream, Router),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Unix(socket, app) => socket.listener.accept().await.map(|(s, _)| Accepted::Unix(s, app.clone())),
        Listener::Tcp(tcp, app) => tcp.accept().await.map(|(s, _)| Accepted::Tcp(s, app.clone())),
    }
}

async fn serve_connection<S>(
    stream: S,
    app: Router,
    limits: ConnLimits,
    cancel: CancellationToken,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _permit = permit;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends one keep-alive request on `stream` and reads its answer's head.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// TCP clients holding every connection they may have leave the
    /// socket's owner served.
    #[tokio::test]
    async fn tcp_connections_cannot_take_the_sockets_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let socket = UnixSocket::bind(&path).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = tcp.local_addr().unwrap();
        // Idle keep-alive connections are kept for an hour: nothing frees a permit.
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(3600),
            max_connections: 2,
            shutdown_grace: Duration::from_millis(10),
        };
        let stop = CancellationToken::new();
        let listeners = vec![Listener::Unix(socket, app.clone()), Listener::Tcp(tcp, app)];
        let server = tokio::spawn(serve(listeners, limits, stop.clone().cancelled_owned()));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            assert!(exchange(&mut stream).await.starts_with("HTTP/1.1 200"));
            held.push(stream);
        }
        // A guard against a hang, not a timing bar: a shared cap never answers.
        let mut owner = tokio::net::UnixStream::connect(&path).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), exchange(&mut owner)).await;
        assert!(answer.is_ok_and(|head| head.starts_with("HTTP/1.1 200")), "the socket's owner was locked out");
        stop.cancel();
        drop(held);
        drop(owner);
        let _ = server.await;
    }
}
