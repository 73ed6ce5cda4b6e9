//! The typed client of Engram's operations.
//!
//! One [`Client`] speaks to the daemon over its Unix socket, over its
//! loopback TCP port with the bearer token, or to an in-process router
//! built from the same services (what the CLI uses when no daemon runs).
//! Requests and responses are the operations' own types
//! ([`engram_ops::Operation`]), so a route string, a default or a check is
//! never written again on this side.
//!
//! ```no_run
//! # async fn example() -> Result<(), engram_client::ClientError> {
//! use engram_client::Client;
//! let client = Client::unix("/run/user/1000/engram/engram.sock");
//! let health = client.send(hyper::Method::GET, "/healthz", None).await?;
//! assert!(health.status.is_success());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engram_ops::{ErrorBody, Method, Operation, StreamLine, Streaming};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The body of a response from [`Client::open`], read frame by frame.
pub type StreamingBody = ResponseBody;
type LocalService = BoxCloneSyncService<Request<Full<Bytes>>, Response<ResponseBody>, Infallible>;

/// Why a call did not get an answer from the operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers where the client points.
    #[error("no daemon answers on {target}: {source} (start one with `engram serve`)")]
    Connect {
        /// The socket path or address.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The operation failed; its kind and message came from the daemon.
    #[error("{error}")]
    Operation {
        /// The HTTP status it came with.
        status: StatusCode,
        /// What failed.
        error: engram_ops::Error,
    },
    /// The exchange broke (connection reset, malformed HTTP).
    #[error("talking to the daemon at {target}: {message}")]
    Transport {
        /// The socket path or address.
        target: String,
        /// What broke.
        message: String,
    },
    /// The answer was not what the operation promises.
    #[error("the daemon's answer to {route} does not read as expected ({status}): {message}")]
    Decode {
        /// The route.
        route: String,
        /// Its status.
        status: StatusCode,
        /// What did not read.
        message: String,
    },
    /// The request could not be encoded (a path parameter missing).
    #[error("{0}")]
    Request(engram_ops::Error),
}

/// A raw answer of [`Client::send`] or [`Client::request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The body as JSON (`null` when it is empty or not JSON).
    pub json: serde_json::Value,
}

#[derive(Clone)]
enum Transport {
    Unix(PathBuf),
    Tcp { addr: SocketAddr, token: String },
    Local(LocalService),
}

/// An idle HTTP/1.1 connection kept for the next request, and since when.
type Pool = Arc<Mutex<Option<(SendRequest<Full<Bytes>>, Instant)>>>;

/// How long an idle connection is reused. The daemon closes connections
/// that stay silent past its header deadline (10 s by default); a request
/// written just as that close happens cannot be recovered, so connections
/// are retired well before.
const IDLE_REUSE: Duration = Duration::from_secs(4);

/// A client of one Engram instance. Cheap to clone; clones share the kept
/// connection.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    /// `None`: a new connection per request.
    pool: Option<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("target", &self.target()).finish()
    }
}

impl Client {
    /// A client of the daemon listening on the Unix socket at `path`. It
    /// keeps its connection open between requests (see
    /// [`Client::fresh_connections`]).
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Self { transport: Transport::Unix(path.as_ref().to_path_buf()), pool: Some(Pool::default()) }
    }

    /// A client of the daemon's TCP port at `addr`, with its bearer token
    /// (an empty token sends none).
    pub fn tcp(addr: SocketAddr, token: impl Into<String>) -> Self {
        Self { transport: Transport::Tcp { addr, token: token.into() }, pool: Some(Pool::default()) }
    }

    /// This client, opening a new connection for every request instead of
    /// keeping one.
    pub fn fresh_connections(mut self) -> Self {
        self.pool = None;
        self
    }

    /// A client of an in-process service (the daemon's router over
    /// services opened in this process).
    pub fn in_process<S, B>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service =
            service.map_response(|response: Response<B>| response.map(|body| body.map_err(Into::into).boxed_unsync()));
        Self { transport: Transport::Local(BoxCloneSyncService::new(service)), pool: None }
    }

    /// Whether something accepts connections where this client points (an
    /// in-process service always does).
    pub async fn reachable(&self) -> bool {
        match &self.transport {
            Transport::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            Transport::Tcp { addr, .. } => tokio::net::TcpStream::connect(addr).await.is_ok(),
            Transport::Local(_) => true,
        }
    }

    /// Whether this client talks to an in-process service.
    pub fn is_in_process(&self) -> bool {
        matches!(self.transport, Transport::Local(_))
    }

    fn target(&self) -> String {
        match &self.transport {
            Transport::Unix(path) => path.display().to_string(),
            Transport::Tcp { addr, .. } => addr.to_string(),
            Transport::Local(_) => "this process".to_owned(),
        }
    }

    /// Calls operation `O` and reads its response.
    pub async fn call<O: Operation>(&self, request: &O) -> Result<O::Response, ClientError> {
        let (route, response) = self.start(request).await?;
        let status = response.status();
        let bytes = self.collect(response).await?;
        if !status.is_success() {
            return Err(operation_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|err| decode(&route, status, err))
    }

    /// Calls a streaming operation with `stream: true` set by the caller,
    /// handing each progress event to `on_event` as it arrives, and reads
    /// the final response. Works the same when the request did not ask for
    /// a stream (no events).
    pub async fn call_streaming<O: Streaming>(
        &self,
        request: &O,
        mut on_event: impl FnMut(O::Event),
    ) -> Result<O::Response, ClientError> {
        let (route, response) = self.start(request).await?;
        let status = response.status();
        let ndjson = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
        if !status.is_success() || !ndjson {
            let bytes = self.collect(response).await?;
            if !status.is_success() {
                return Err(operation_error(status, &bytes));
            }
            return serde_json::from_slice(&bytes).map_err(|err| decode(&route, status, err));
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let frame = body.frame().await.transpose().map_err(|err| self.transport_error(err))?;
            let Some(frame) = frame else {
                return Err(ClientError::Decode {
                    route,
                    status,
                    message: "the stream ended without a final line".to_owned(),
                });
            };
            let Ok(data) = frame.into_data() else { continue };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: serde_json::Value =
                    serde_json::from_slice(&line).map_err(|err| decode(&route, status, err))?;
                match StreamLine::<O::Event, O::Response>::from_json(value)
                    .map_err(|err| decode(&route, status, err))?
                {
                    StreamLine::Progress(event) => on_event(event),
                    StreamLine::Done(response) => {
                        finish(body).await;
                        return Ok(response);
                    }
                    StreamLine::Error(error) => {
                        finish(body).await;
                        return Err(ClientError::Operation { status, error });
                    }
                }
            }
        }
    }

    /// Sends a request to a route that has no operation type (health,
    /// metrics, plugin routes) and reads the JSON answer, whatever its status.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<RawResponse, ClientError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = self.build(method, path, bytes)?;
        self.raw(request).await
    }

    /// Sends `request` as it is (for checks of the HTTP layer itself: odd
    /// headers, a wrong token), adding only a `Host` header when it has
    /// none, and, over TCP, the token when it has no `Authorization`.
    pub async fn request(&self, request: Request<Full<Bytes>>) -> Result<RawResponse, ClientError> {
        self.raw(self.complete(request)).await
    }

    /// Sends `request` like [`Client::request`] and returns as soon as the
    /// headers arrive, with the body still streaming (server-sent events,
    /// NDJSON). Concurrent streams each get a connection of their own.
    pub async fn open(&self, request: Request<Full<Bytes>>) -> Result<Response<StreamingBody>, ClientError> {
        self.dispatch(self.complete(request)).await
    }

    /// Adds a `Host` header when `request` has none and, over TCP, the token
    /// when it has no `Authorization`.
    fn complete(&self, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        let headers = request.headers_mut();
        if !headers.contains_key(hyper::header::HOST) {
            headers.insert(hyper::header::HOST, self.host_header());
        }
        if let Transport::Tcp { token, .. } = &self.transport
            && !token.is_empty()
            && !headers.contains_key(hyper::header::AUTHORIZATION)
            && let Ok(value) = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        request
    }

    async fn raw(&self, request: Request<Full<Bytes>>) -> Result<RawResponse, ClientError> {
        let response = self.dispatch(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = self.collect(Response::from_parts(parts.clone(), body)).await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let body = String::from_utf8_lossy(&bytes).into_owned();
        Ok(RawResponse { status: parts.status, headers: parts.headers, body, json })
    }

    fn host_header(&self) -> hyper::header::HeaderValue {
        match &self.transport {
            Transport::Tcp { addr, .. } => hyper::header::HeaderValue::from_str(&addr.to_string())
                .unwrap_or(hyper::header::HeaderValue::from_static("localhost")),
            _ => hyper::header::HeaderValue::from_static("localhost"),
        }
    }

    async fn start<O: Operation>(&self, request: &O) -> Result<(String, Response<ResponseBody>), ClientError> {
        let path = request.path().map_err(ClientError::Request)?;
        let (method, uri, body) = match O::METHOD {
            Method::Get => {
                // Path parameters travel in the path only.
                let mut fields = serde_json::to_value(request)
                    .map_err(|err| ClientError::Request(engram_ops::Error::internal(err)))?;
                if let Some(object) = fields.as_object_mut() {
                    for param in engram_ops::route_params(O::ROUTE) {
                        object.remove(param);
                    }
                }
                let query = serde_urlencoded::to_string(&fields).map_err(|err| {
                    ClientError::Request(engram_ops::Error::invalid(format!("cannot encode the query: {err}")))
                })?;
                let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
                (hyper::Method::GET, uri, Bytes::new())
            }
            Method::Post => {
                let body = serde_json::to_vec(request)
                    .map_err(|err| ClientError::Request(engram_ops::Error::internal(err)))?;
                (hyper::Method::POST, path.clone(), Bytes::from(body))
            }
        };
        Ok((path, self.exchange(method, &uri, body).await?))
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        uri: &str,
        body: Bytes,
    ) -> Result<Response<ResponseBody>, ClientError> {
        let request = self.build(method, uri, body)?;
        self.dispatch(request).await
    }

    /// A request to `uri` with the headers every call carries.
    fn build(&self, method: hyper::Method, uri: &str, body: Bytes) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, self.host_header())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Transport::Tcp { token, .. } = &self.transport
            && !token.is_empty()
        {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(body))
            .map_err(|err| ClientError::Request(engram_ops::Error::invalid(format!("bad request {uri}: {err}"))))
    }

    /// Sends `request` on the kept connection when it is idle, else on a
    /// new one (kept afterwards, if this client keeps connections).
    async fn dispatch(&self, request: Request<Full<Bytes>>) -> Result<Response<ResponseBody>, ClientError> {
        if let Transport::Local(service) = &self.transport {
            return match service.clone().oneshot(request).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            };
        }
        let mut kept = self
            .pool
            .as_ref()
            .and_then(|pool| pool.lock().unwrap_or_else(|e| e.into_inner()).take())
            .filter(|(_, idle_since)| idle_since.elapsed() < IDLE_REUSE)
            .map(|(sender, _)| sender);
        let mut request = Some(request);
        // Kept only after its last body was read, so it is ready at once
        // unless the server closed it.
        if let Some(sender) = kept.as_mut()
            && sender.ready().await.is_ok()
            && let Some(unsent) = request.take()
        {
            match sender.try_send_request(unsent).await {
                Ok(response) => return Ok(self.keep(kept.take().expect("kept"), response)),
                // The server closed the idle connection before reading the
                // request: it was never sent, so sending it again is safe.
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = Some(unsent),
                    None => return Err(self.transport_error(failed.into_error())),
                },
            }
        }
        let Some(request) = request else { return Err(self.transport_error("the request was lost")) };
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await.map_err(|err| self.transport_error(err))?;
        Ok(self.keep(sender, response))
    }

    /// Boxes the response; when this client keeps connections, `sender`
    /// goes back to the pool once the body has been read to its end.
    fn keep(
        &self,
        sender: SendRequest<Full<Bytes>>,
        response: Response<hyper::body::Incoming>,
    ) -> Response<ResponseBody> {
        let pool = self.pool.clone();
        response.map(|inner| {
            let mut body = PooledBody { inner, sender: Some(sender), pool };
            if body.inner.is_end_stream() {
                body.give_back();
            }
            body.map_err(Into::into).boxed_unsync()
        })
    }

    /// A new HTTP/1.1 connection.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        match &self.transport {
            Transport::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|source| ClientError::Connect { target: path.display().to_string(), source })?;
                self.handshake(TokioIo::new(stream)).await
            }
            Transport::Tcp { addr, .. } => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|source| ClientError::Connect { target: addr.to_string(), source })?;
                // Requests are small and latency-bound.
                stream.set_nodelay(true).map_err(|err| self.transport_error(err))?;
                self.handshake(TokioIo::new(stream)).await
            }
            Transport::Local(_) => Err(self.transport_error("an in-process client has no connection")),
        }
    }

    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|err| self.transport_error(err))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn collect(&self, response: Response<ResponseBody>) -> Result<Bytes, ClientError> {
        Ok(response.into_body().collect().await.map_err(|err| self.transport_error(err))?.to_bytes())
    }

    fn transport_error(&self, err: impl std::fmt::Display) -> ClientError {
        ClientError::Transport { target: self.target(), message: err.to_string() }
    }
}

/// Reads what follows a stream's last line (its end, normally), so the
/// connection can serve the next request.
async fn finish(mut body: ResponseBody) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// A response body that returns its connection to the pool when read to
/// its end (a body dropped early, or failing, takes its connection with it).
struct PooledBody {
    inner: hyper::body::Incoming,
    /// The connection's sender, held until the body ends (dropping it
    /// earlier makes the connection close mid-response).
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Where it goes then, if this client keeps connections.
    pool: Option<Pool>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let (Some(sender), Some(pool)) = (self.sender.take(), &self.pool) {
            *pool.lock().unwrap_or_else(|e| e.into_inner()) = Some((sender, Instant::now()));
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn decode(route: &str, status: StatusCode, err: serde_json::Error) -> ClientError {
    ClientError::Decode { route: route.to_owned(), status, message: err.to_string() }
}

/// The operation error in an error answer (or the body itself, when it is
/// not the standard error shape).
fn operation_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let error = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => body.error.into(),
        Err(_) => engram_ops::Error::internal(format!("{status}: {}", String::from_utf8_lossy(bytes).trim())),
    };
    ClientError::Operation { status, error }
}
