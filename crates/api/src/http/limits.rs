//! Request limits every listener applies: a body size cap (refused from the
//! declared length before a byte is read, or cut off while streaming) and a
//! deadline for the whole body to arrive.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, SizeHint};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Limits applied to every request, whatever the listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body; larger ones get 413 before being read.
    pub max_body_bytes: u64,
    /// A request body must arrive within this, all of it (a client that
    /// trickles a byte at a time does not get more).
    pub body_timeout: Duration,
}

/// A body that fails once its deadline passes, however it trickles.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (server.body_timeout_ms)")]
struct BodyDeadline(Duration);

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyDeadline(self.timeout).into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Refuses a declared-too-large body before reading a byte of it, and caps
/// and times out undeclared (chunked) ones while they stream.
pub(crate) async fn limit_body(State(limits): State<HttpLimits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limits.max_body_bytes
    {
        let detail = format!(
            "the request body is {length} bytes; the limit is {} (server.max_body_bytes)",
            limits.max_body_bytes
        );
        // MCP clients match errors to requests: theirs is a JSON-RPC error.
        if request.uri().path() == crate::mcp::PATH {
            return crate::mcp::envelope::too_large(&detail);
        }
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail).into_response();
    }
    let max = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: http_body_util::Limited::new(body, max),
            deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
            timeout: limits.body_timeout,
        })
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Bytes;
    use futures_util::{StreamExt, stream};
    use tower::ServiceExt;

    use axum::Router;
    use axum::middleware;
    use axum::routing::post;

    use super::*;

    fn echo(max_body_bytes: u64) -> Router {
        let limits = HttpLimits { max_body_bytes, body_timeout: Duration::from_millis(200) };
        Router::new()
            .route("/echo", post(|body: Bytes| async move { body.len().to_string() }))
            .layer(middleware::from_fn_with_state(limits, limit_body))
    }

    /// A chunked body (no Content-Length) of `n` chunks of `size` bytes.
    fn chunked(n: usize, size: usize) -> Body {
        Body::from_stream(stream::iter((0..n).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; size])))))
    }

    async fn post_echo(app: Router, body: Body, length: Option<u64>) -> (StatusCode, String) {
        let mut request = Request::post("/echo");
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn bodies_within_the_limit_pass() {
        assert_eq!(post_echo(echo(1024), chunked(4, 256), None).await, (StatusCode::OK, "1024".to_owned()));
    }

    #[tokio::test]
    async fn a_declared_oversized_body_is_refused_unread() {
        // The body would fail if read: the 413 must come from the header alone.
        let poisoned = Body::from_stream(stream::iter([Err::<Bytes, _>(std::io::Error::other("read!"))]));
        let (status, body) = post_echo(echo(1024), poisoned, Some(100 << 20)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("body_too_large"), "{body}");
    }

    #[tokio::test]
    async fn an_undeclared_oversized_body_is_cut_off_while_streaming() {
        let (status, _) = post_echo(echo(1024), chunked(10, 256), None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A byte every 50 ms for 400 ms: each frame comes well within the
    /// 200 ms timeout, the whole body does not.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_gets_one_deadline_for_all_of_it() {
        let trickle = stream::unfold(0, |sent| async move {
            if sent == 8 {
                return None;
            }
            tokio::time::advance(Duration::from_millis(50)).await;
            Some((Ok::<_, Infallible>(Bytes::from_static(b"x")), sent + 1))
        });
        let (status, _) = post_echo(echo(1024), Body::from_stream(trickle), None).await;
        assert!(status.is_client_error() || status.is_server_error(), "{status}");
        // The same bytes in time pass.
        assert_eq!(post_echo(echo(1024), chunked(8, 1), None).await, (StatusCode::OK, "8".to_owned()));
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let stalled =
            Body::from_stream(stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"{"))]).chain(stream::pending()));
        let (status, _) = post_echo(echo(1024), stalled, None).await;
        assert!(status.is_client_error() || status.is_server_error(), "{status}");
    }
}
