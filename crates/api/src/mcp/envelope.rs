//! JSON-RPC answers for requests the MCP transport cannot read: a body that
//! is not JSON (-32700), JSON that is not a JSON-RPC message (-32600),
//! a known method with unusable params (-32602), an oversized body (-32600
//! with HTTP 413). rmcp would answer these with plain-text HTTP errors; a
//! client wants an error object it can match to its request. Nothing here
//! touches the session, so it goes on serving. A `DELETE` that closed a
//! session answers 204.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{ClientJsonRpcMessage, ErrorCode};
use serde_json::{Value, json};

/// Checks a POSTed body before rmcp sees it; passes everything else on.
pub(crate) async fn check(request: Request, next: Next) -> Response {
    if request.method() == Method::DELETE {
        // A closed session is closed now, nothing is pending: 204, which
        // clients check for, rather than rmcp's 202.
        let mut response = next.run(request).await;
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        return response;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(bytes) => bytes,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large("the request body exceeds the limit (server.max_body_bytes)");
        }
        Err(rejection) => {
            return error(StatusCode::BAD_REQUEST, Value::Null, ErrorCode::PARSE_ERROR, &rejection.body_text());
        }
    };
    if let Some(refusal) = refusal(&bytes) {
        return refusal;
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Why `body` cannot reach rmcp, as the JSON-RPC error to answer with.
fn refusal(body: &[u8]) -> Option<Response> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            return Some(error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                ErrorCode::PARSE_ERROR,
                &format!("parse error: {err}"),
            ));
        }
    };
    let Value::Object(message) = &value else {
        let what = if value.is_array() { "batches are not supported" } else { "a message must be a JSON object" };
        return Some(error(StatusCode::BAD_REQUEST, Value::Null, ErrorCode::INVALID_REQUEST, what));
    };
    // Only an id that is a string or a number can be echoed back.
    let id = message.get("id").filter(|id| id.is_string() || id.is_number()).cloned().unwrap_or(Value::Null);
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error(StatusCode::BAD_REQUEST, id, ErrorCode::INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    let has_method = message.get("method").is_some_and(Value::is_string);
    if !has_method && !message.contains_key("result") && !message.contains_key("error") {
        let detail = "a message needs a string `method` (a request or notification), or a `result` or `error`";
        return Some(error(StatusCode::BAD_REQUEST, id, ErrorCode::INVALID_REQUEST, detail));
    }
    match serde_json::from_value::<ClientJsonRpcMessage>(value.clone()) {
        Ok(_) => None,
        // A method rmcp knows whose params do not fit it.
        Err(err) if has_method => {
            Some(error(StatusCode::BAD_REQUEST, id, ErrorCode::INVALID_PARAMS, &format!("invalid params: {err}")))
        }
        Err(err) => {
            Some(error(StatusCode::BAD_REQUEST, id, ErrorCode::INVALID_REQUEST, &format!("invalid message: {err}")))
        }
    }
}

/// The answer to a body over the limit: HTTP 413 carrying a JSON-RPC error.
pub(crate) fn too_large(detail: &str) -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, Value::Null, ErrorCode::INVALID_REQUEST, detail)
}

fn error(status: StatusCode, id: Value, code: ErrorCode, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code.0, "message": message}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(body: &str) -> Option<(StatusCode, Value)> {
        let response = refusal(body.as_bytes())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.ok()?;
        Some((status, serde_json::from_slice(&bytes).ok()?))
    }

    #[tokio::test]
    async fn unreadable_messages_get_json_rpc_errors() {
        for (body, id, code) in [
            ("{not json", Value::Null, -32700),
            ("", Value::Null, -32700),
            ("[1, 2]", Value::Null, -32600),
            ("42", Value::Null, -32600),
            (r#"{"jsonrpc": "1.0", "id": 3, "method": "ping"}"#, json!(3), -32600),
            (r#"{"jsonrpc": "2.0", "id": "a"}"#, json!("a"), -32600),
            (r#"{"jsonrpc": "2.0", "id": {"x": 1}, "method": 5}"#, Value::Null, -32600),
            (r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": 5}"#, json!(7), -32602),
        ] {
            let (status, error) = answer(body).await.unwrap_or_else(|| panic!("{body} was let through"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!((&error["id"], &error["error"]["code"]), (&id, &json!(code)), "{body}: {error}");
            assert_eq!(error["jsonrpc"], "2.0");
        }
    }

    #[tokio::test]
    async fn readable_messages_pass() {
        for body in [
            r#"{"jsonrpc": "2.0", "id": 1, "method": "ping"}"#,
            r#"{"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}"#,
            r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#,
            r#"{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x", "arguments": {}}}"#,
        ] {
            assert!(answer(body).await.is_none(), "{body} was refused");
        }
    }
}
