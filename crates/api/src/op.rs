//! Operations as routes: decode the request (path parameters, query or JSON
//! body) → one service call (which validates it) → encode. Every
//! feature's routes are built here, so decoding, validation and the error
//! mapping are written once.

use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawPathParams, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use engram_ops::{Caller, Error, ErrorKind, Method, Operation, StreamLine, Streaming};
use serde_json::Value;

use crate::app::AppState;
use crate::http::ApiError;

/// The HTTP status of each kind of failure: the one place it is decided.
pub(crate) fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Corrupt | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::new(status(err.kind), err.kind.code(), err.message)
    }
}

/// Progress reporting as a streaming handler receives it: each event,
/// answered with whether the caller still wants the work done.
pub(crate) type Progress<O> = Box<dyn FnMut(&<O as Streaming>::Event) -> ControlFlow<()> + Send>;

/// A route for operation `O`, answered by `handler`.
pub(crate) fn route<O, F, Fut>(handler: F) -> Router<AppState>
where
    O: Operation,
    F: Fn(AppState, O) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O::Response, Error>> + Send + 'static,
{
    let serve = move |State(state): State<AppState>, request: Request| async move {
        let request: O = decode(request).await?;
        let response = handler(state, request).await?;
        Ok::<_, ApiError>(Json(response))
    };
    Router::new().route(O::ROUTE, method::<_, _>(O::METHOD, serve))
}

/// A route for a [`Streaming`] operation: with `stream: true` it answers
/// NDJSON progress events and a final `done` (or `error`) line, else one
/// JSON response. The handler reports events through the callback it is
/// given; over HTTP the work always runs to its end.
pub(crate) fn streaming<O, F, Fut>(handler: F) -> Router<AppState>
where
    O: Streaming,
    F: Fn(AppState, O, Progress<O>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O::Response, Error>> + Send + 'static,
{
    let serve = move |State(state): State<AppState>, request: Request| async move {
        let request: O = decode(request).await?;
        if !request.streams() {
            let response = handler(state, request, Box::new(|_| ControlFlow::Continue(()))).await?;
            return Ok::<_, ApiError>(Json(response).into_response());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let events = tx.clone();
        let report = move |event: &O::Event| {
            let line = StreamLine::<&O::Event, ()>::Progress(event).to_json();
            let _ = events.send(format!("{line}\n"));
            ControlFlow::Continue(())
        };
        let work = handler(state, request, Box::new(report));
        // The work finishes even if the client goes away: a half-done
        // ingest is still a consistent journal, and a finished one is kept.
        tokio::spawn(async move {
            let last = match work.await {
                Ok(response) => StreamLine::<(), _>::Done(response).to_json(),
                Err(err) => StreamLine::<(), ()>::Error(err).to_json(),
            };
            let _ = tx.send(format!("{last}\n"));
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
        });
        Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
    };
    Router::new().route(O::ROUTE, method::<_, _>(O::METHOD, serve))
}

/// The caller the listener's guard established for this request.
pub(crate) fn caller(extensions: &axum::http::Extensions) -> Result<Caller, Error> {
    extensions.get::<Caller>().cloned().ok_or_else(|| Error::internal("the listener established no caller"))
}

fn method<H, T>(method: Method, handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    match method {
        Method::Get => get(handler),
        Method::Post => post(handler),
    }
}

/// Reads an operation's request: path parameters plus the query string
/// (GET) or the JSON body (POST), authorized for the caller.
async fn decode<O: Operation>(request: Request) -> Result<O, ApiError> {
    let (mut parts, body) = request.into_parts();
    let caller = caller(&parts.extensions)?;
    let mut params = HashMap::new();
    if engram_ops::route_params(O::ROUTE).next().is_some() {
        let raw = <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", rejection.body_text()))?;
        params.extend(raw.iter().map(|(name, value)| (name.to_owned(), value.to_owned())));
    }
    let mut request: O = match O::METHOD {
        Method::Get => {
            let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
                .map_err(|err| invalid(format!("bad query string: {err}")))?;
            for (name, param) in params {
                if let Some((_, given)) = pairs.iter().find(|(key, given)| *key == name && *given != param) {
                    return Err(invalid(format!("`{name}` is {param:?} in the path but {given:?} in the query")));
                }
                pairs.retain(|(key, _)| *key != name);
                pairs.push((name, param));
            }
            let query = serde_urlencoded::to_string(&pairs).map_err(invalid)?;
            serde_urlencoded::from_str(&query).map_err(|err| invalid(format!("bad query string: {err}")))?
        }
        Method::Post => {
            let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await.map_err(body_error)?;
            json_request(&bytes, params)?
        }
    };
    request.authorize(&caller)?;
    // Checked by the service, the one place every surface goes through.
    Ok(request)
}

/// A POST body as the request, with the path parameters filled in.
fn json_request<O: Operation>(bytes: &Bytes, params: HashMap<String, String>) -> Result<O, ApiError> {
    let mut value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes).map_err(|err| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("the body is not JSON: {err}"))
        })?
    };
    let Some(object) = value.as_object_mut() else {
        return Err(invalid("the body must be a JSON object"));
    };
    for (name, param) in params {
        match object.get(&name) {
            Some(given) if given.as_str() != Some(param.as_str()) => {
                return Err(invalid(format!("`{name}` is {param:?} in the path but {given} in the body")));
            }
            _ => {
                object.insert(name, Value::String(param));
            }
        }
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." { invalid(inner.to_string()) } else { invalid(format!("{path}: {inner}")) }
    })
}

fn invalid(message: impl std::fmt::Display) -> ApiError {
    ApiError::from(Error::invalid(message.to_string()))
}

/// A body that could not be read: too large, too slow, or cut off.
fn body_error(err: axum::Error) -> ApiError {
    let mut source = std::error::Error::source(&err);
    let mut too_large = false;
    while let Some(cause) = source {
        too_large |= cause.is::<http_body_util::LengthLimitError>();
        source = cause.source();
    }
    if too_large {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is over server.max_body_bytes")
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("cannot read the request body: {err}"))
    }
}
