//! The client against a real axum server over a Unix socket and in-process:
//! typed calls, streamed events, and errors carried with their kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use engram_client::{Client, ClientError};
use engram_ops::{ErrorKind, Method, Operation, Streaming};
use serde::{Deserialize, Serialize};

/// Counts to `to`, reporting each number when streamed.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Count {
    to: u32,
    #[serde(default)]
    stream: bool,
}

impl Operation for Count {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/count";
    type Response = u32;
}

impl Streaming for Count {
    type Event = serde_json::Value;
    fn streams(&self) -> bool {
        self.stream
    }
    fn advance(event: &serde_json::Value) -> engram_ops::Advance {
        let done = event["n"].as_u64().unwrap_or(0);
        engram_ops::Advance { done, total: None, message: format!("counted {done}") }
    }
}

async fn count(Json(request): Json<Count>) -> axum::response::Response {
    if request.to == 0 {
        let body = serde_json::json!({"error": {"code": "invalid_request", "message": "`to` must be positive"}});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    if !request.stream {
        return Json(request.to).into_response();
    }
    let mut lines: Vec<String> = (1..=request.to).map(|n| format!("{{\"event\":\"counted\",\"n\":{n}}}\n")).collect();
    lines.push(format!("{{\"event\":\"done\",\"report\":{}}}\n", request.to));
    // One byte at a time: lines split across frames must still parse.
    let bytes: Vec<Result<Vec<u8>, std::convert::Infallible>> =
        lines.concat().into_bytes().into_iter().map(|b| Ok(vec![b])).collect();
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(futures_util::stream::iter(bytes)))
        .into_response()
}

fn app() -> axum::Router {
    axum::Router::new().route(Count::ROUTE, post(count))
}

async fn exercise(client: &Client) {
    assert_eq!(client.call(&Count { to: 3, stream: false }).await.unwrap(), 3);
    let mut events = Vec::new();
    let done = client.call_streaming(&Count { to: 4, stream: true }, |e| events.push(e["n"].as_u64())).await.unwrap();
    assert_eq!((done, events), (4, vec![Some(1), Some(2), Some(3), Some(4)]));
    // A streaming call whose request did not ask for a stream reads the plain answer.
    assert_eq!(client.call_streaming(&Count { to: 2, stream: false }, |_| panic!("no events")).await.unwrap(), 2);
    match client.call(&Count { to: 0, stream: false }).await {
        Err(ClientError::Operation { status, error }) => {
            assert_eq!((status, error.kind), (StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Invalid));
            assert_eq!(error.message, "`to` must be positive");
        }
        other => panic!("expected an operation error, got {other:?}"),
    }
    let missing = client.send(hyper::Method::GET, "/nowhere", None).await.unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn calls_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engram.sock");
    let client = Client::unix(&socket);
    assert!(!client.reachable().await);
    match client.call(&Count { to: 1, stream: false }).await {
        Err(err @ ClientError::Connect { .. }) => assert!(err.to_string().contains("engram serve"), "{err}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move { axum::serve(listener, app()).await });
    assert!(client.reachable().await);
    exercise(&client).await;
}

#[tokio::test]
async fn calls_an_in_process_router() {
    let client = Client::in_process(app());
    assert!(client.is_in_process() && client.reachable().await);
    exercise(&client).await;
}

/// The server side of each open connection.
type Connections = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Serves [`app`] on `listener`, counting connections; returns the
/// connection tasks so a test can cut them.
fn serve_counting(listener: tokio::net::UnixListener) -> (Arc<AtomicUsize>, Connections) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, tasks) = (accepted.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let service = hyper_util::service::TowerToHyperService::new(app());
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tasks.lock().unwrap().push(tokio::spawn(async move {
                let _ = connection.await;
            }));
        }
    });
    (accepted, connections)
}

#[tokio::test]
async fn one_connection_serves_many_calls_and_a_closed_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engram.sock");
    let (accepted, connections) = serve_counting(tokio::net::UnixListener::bind(&socket).unwrap());
    let client = Client::unix(&socket);
    exercise(&client).await;
    exercise(&client.clone()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "clones share the kept connection");

    // The server drops the idle connection: the next call opens another.
    for task in connections.lock().unwrap().drain(..) {
        task.abort();
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(client.call(&Count { to: 5, stream: false }).await.unwrap(), 5);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    let fresh = Client::unix(&socket).fresh_connections();
    for _ in 0..3 {
        assert_eq!(fresh.call(&Count { to: 1, stream: false }).await.unwrap(), 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn raw_requests_carry_their_own_headers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engram.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let echo = axum::Router::new().route(
        "/echo",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            ([("x-seen-host", host.clone())], host)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let client = Client::unix(&socket);
    let empty = || http_body_util::Full::new(bytes::Bytes::new());
    let plain = client.request(hyper::Request::get("/echo").body(empty()).unwrap()).await.unwrap();
    assert_eq!((plain.status, plain.body.as_str()), (StatusCode::OK, "localhost"));
    let own = hyper::Request::get("/echo").header("host", "evil.example").body(empty()).unwrap();
    let own = client.request(own).await.unwrap();
    assert_eq!(own.body, "evil.example");
    assert_eq!(own.headers["x-seen-host"], "evil.example");
}
