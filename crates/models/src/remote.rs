//! The generator interface over any OpenAI-compatible server (vLLM,
//! llama.cpp server, Ollama, another Engram): streaming chat completions
//! with a per-request timeout, and retries of the failures that are safe to
//! repeat (exponential backoff with full jitter, or the wait the server's
//! `Retry-After` asks for).
//!
//! The server-sent events are parsed by `eventsource-stream` (the HTML
//! standard's event-stream grammar: `\n`, `\r\n` or `\r` line ends, comment
//! lines, multi-line `data:`, events and UTF-8 characters split across
//! network chunks); this module only reads OpenAI's JSON out of each event.

use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ModelError;
use crate::llm::{Finish, FinishReason, GenerateRequest, Prompt};
use crate::scheduler::{Event, EventStream};

/// How to reach the remote server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Base URL ending in `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name to ask for.
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Give up on one attempt after this long (to the end of the stream).
    /// It also bounds the retries: no wait before a retry runs past this
    /// long after the first attempt started.
    pub timeout: Duration,
    /// Extra attempts after a connection failure or a 408, 429 or 5xx answer
    /// other than 501 and 505 (never once the server has answered 2xx and
    /// started streaming).
    pub retries: u32,
}

/// A client for one remote model.
#[derive(Debug, Clone)]
pub struct RemoteLlm {
    client: reqwest::Client,
    options: RemoteOptions,
}

/// The wait before each retry: exponential backoff with "full jitter" (a
/// uniformly random wait between zero and the exponential ceiling), so that
/// clients failed by the same outage do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// The ceiling of the first retry's wait.
    base: Duration,
    /// No ceiling grows past this.
    cap: Duration,
}

impl Backoff {
    const DEFAULT: Self = Self { base: Duration::from_millis(200), cap: Duration::from_secs(5) };

    /// The longest wait before retry number `retry` (0 for the first):
    /// `base · 2^retry`, at most `cap`.
    fn ceiling(self, retry: u32) -> Duration {
        1u32.checked_shl(retry).and_then(|factor| self.base.checked_mul(factor)).map_or(self.cap, |d| d.min(self.cap))
    }

    /// A wait drawn uniformly from `[0, ceiling(retry)]`.
    fn delay(self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

/// Whether an HTTP status is worth another attempt: the request was not
/// served (408, 429) or the server failed in a way that may pass (5xx other
/// than 501 Not Implemented and 505 HTTP Version Not Supported, which will
/// answer the same again).
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502..=504 | 506..=599)
}

/// The wait a `Retry-After` value asks for (RFC 9110 §10.2.3): a number of
/// seconds, or an HTTP-date (a date already past asks for no wait). `None`
/// when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds still means "not within any budget".
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Why one attempt failed, and whether and when to try again.
#[derive(Debug)]
struct Failure {
    error: ModelError,
    retryable: bool,
    /// The server's `Retry-After`, on a 429 or 503 that sent one.
    retry_after: Option<Duration>,
}

/// What to do after a failed attempt, `elapsed` after the first one started.
#[derive(Debug, PartialEq)]
enum Next {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Give up with the failure as it is.
    GiveUp,
    /// Give up: the wait asked for would end past the budget.
    OverBudget(Duration),
}

/// The retry decision: `retries_done` retries so far out of `retries`, the
/// whole sequence bounded by `budget` (waits included).
fn next_step(
    failure: &Failure,
    retries_done: u32,
    retries: u32,
    elapsed: Duration,
    budget: Duration,
    backoff: Backoff,
    rng: &mut impl rand::Rng,
) -> Next {
    if !failure.retryable || retries_done >= retries {
        return Next::GiveUp;
    }
    let wait = failure.retry_after.unwrap_or_else(|| backoff.delay(retries_done, rng));
    if elapsed.saturating_add(wait) >= budget {
        return Next::OverBudget(wait);
    }
    Next::Retry(wait)
}

impl RemoteLlm {
    /// A client; no request is made until [`RemoteLlm::generate`].
    pub fn new(options: RemoteOptions) -> Result<Self, ModelError> {
        // rustls needs a process-wide crypto provider; ring is already built
        // for the hub client. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| remote_err(&options.base_url, format!("cannot build the HTTP client: {err}"), None))?;
        Ok(Self { client, options })
    }

    /// `GET {base_url}/models` within `timeout`: the answer's status, or
    /// why there was none (`engram doctor`).
    pub async fn probe(base_url: &str, timeout: Duration) -> Result<reqwest::StatusCode, ModelError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}/models", base_url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| remote_err(base_url, format!("cannot build the HTTP client: {err}"), None))?;
        let response = client.get(&url).send().await.map_err(|err| remote_err(&url, error_chain(&err), None))?;
        Ok(response.status())
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.options.model
    }

    fn body(&self, request: &GenerateRequest) -> (String, Value) {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.options.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        });
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if s.top_k > 0 {
            body["top_k"] = json!(s.top_k);
        }
        if s.repetition_penalty != 1.0 {
            body["repetition_penalty"] = json!(s.repetition_penalty);
        }
        if let Some(schema) = &request.json_schema {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
        }
        let base = self.options.base_url.trim_end_matches('/');
        match &request.prompt {
            Prompt::Chat(messages) => {
                body["messages"] = json!(messages);
                (format!("{base}/chat/completions"), body)
            }
            Prompt::Raw(text) => {
                body["prompt"] = json!(text);
                (format!("{base}/completions"), body)
            }
        }
    }

    /// Starts a streamed completion. Dropping the receiver closes the
    /// connection, which cancels the generation on the server.
    pub async fn generate(&self, request: GenerateRequest) -> Result<EventStream, ModelError> {
        let (url, body) = self.body(&request);
        let response = self.send_with_retries(&url, &body).await?;
        let (events, stream) = mpsc::channel(64);
        let timeout = self.options.timeout;
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, pump(response.bytes_stream(), &events, &url)).await;
            let outcome = outcome.unwrap_or_else(|_| {
                Err(remote_err(&url, format!("no complete answer within {} ms", timeout.as_millis()), None))
            });
            if let Err(err) = outcome {
                let _ = events.send(Err(err)).await;
            }
        });
        Ok(stream)
    }

    /// Sends the request until the server answers 2xx, retrying what is
    /// safe to retry: nothing has been streamed before a 2xx answer, so a
    /// retry never repeats text the caller has seen.
    async fn send_with_retries(&self, url: &str, body: &Value) -> Result<reqwest::Response, ModelError> {
        let started = Instant::now();
        let mut retries_done = 0;
        loop {
            let failure = match self.attempt(url, body).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let next = next_step(
                &failure,
                retries_done,
                self.options.retries,
                started.elapsed(),
                self.options.timeout,
                Backoff::DEFAULT,
                &mut rand::rng(),
            );
            let wait = match next {
                Next::Retry(wait) => wait,
                Next::GiveUp => return Err(failure.error),
                Next::OverBudget(wait) => {
                    return Err(with_reason(failure.error, |reason| {
                        format!(
                            "{reason} (not retried: waiting {} ms would end past the {} ms budget)",
                            wait.as_millis(),
                            self.options.timeout.as_millis()
                        )
                    }));
                }
            };
            retries_done += 1;
            tracing::warn!(
                url,
                retry = retries_done,
                wait_ms = wait.as_millis() as u64,
                error = %failure.error,
                "remote model call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request; a 2xx response is returned before its body is read.
    async fn attempt(&self, url: &str, body: &Value) -> Result<reqwest::Response, Failure> {
        let mut call = self.client.post(url).json(body).timeout(self.options.timeout);
        if let Some(key) = &self.options.api_key {
            call = call.bearer_auth(key);
        }
        match call.send().await {
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = if matches!(status, 429 | 503) {
                    response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| parse_retry_after(value, SystemTime::now()))
                } else {
                    None
                };
                let shown = response.status();
                let text = response.text().await.unwrap_or_default();
                let text = text.trim();
                let text = match text.char_indices().nth(500) {
                    Some((cut, _)) => format!("{}…", &text[..cut]),
                    None => text.to_owned(),
                };
                Err(Failure {
                    error: remote_err(url, format!("answered {shown}: {text}"), Some(status)),
                    retryable: retryable_status(status),
                    retry_after,
                })
            }
            // The request never reached the server: always safe to repeat.
            Err(err) if err.is_connect() => {
                Err(Failure { error: remote_err(url, error_chain(&err), None), retryable: true, retry_after: None })
            }
            // A timeout or a connection lost after the request was sent: the
            // server may be generating already, so it is not repeated.
            Err(err) => {
                Err(Failure { error: remote_err(url, error_chain(&err), None), retryable: false, retry_after: None })
            }
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own message alone
/// hides whether the connection was refused or the name did not resolve).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn remote_err(url: &str, reason: impl Into<String>, status: Option<u16>) -> ModelError {
    ModelError::Remote { url: url.to_owned(), reason: reason.into(), status }
}

/// The error with its reason rewritten (other errors unchanged).
fn with_reason(err: ModelError, rewrite: impl FnOnce(&str) -> String) -> ModelError {
    match err {
        ModelError::Remote { url, reason, status } => ModelError::Remote { url, reason: rewrite(&reason), status },
        other => other,
    }
}

/// Reads the server-sent events of a streamed completion (the response
/// body's chunks, as they arrive) into `events`.
async fn pump<S, B, E>(bytes: S, events: &mpsc::Sender<Result<Event, ModelError>>, url: &str) -> Result<(), ModelError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: Display,
{
    let started = Instant::now();
    let mut first_token = None;
    let mut reason = FinishReason::Length;
    let (mut prompt_tokens, mut completion_tokens, mut counted) = (0usize, 0usize, 0usize);
    let mut stream = std::pin::pin!(bytes.eventsource());
    while let Some(event) = stream.next().await {
        let event = event.map_err(|err| {
            let reason = match err {
                EventStreamError::Transport(err) => format!("stream broke: {err}"),
                EventStreamError::Utf8(err) => format!("the event stream is not UTF-8: {err}"),
                EventStreamError::Parser(err) => format!("not a server-sent event stream: {err}"),
            };
            remote_err(url, reason, None)
        })?;
        let data = event.data.trim();
        if data == "[DONE]" {
            let finish = Finish {
                reason,
                prompt_tokens,
                completion_tokens: if completion_tokens > 0 { completion_tokens } else { counted },
                prefill: first_token.unwrap_or_default(),
                decode: started.elapsed().saturating_sub(first_token.unwrap_or_default()),
            };
            let _ = events.send(Ok(Event::Done(finish))).await;
            return Ok(());
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|err| remote_err(url, format!("not a JSON event ({err}): {data}"), None))?;
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            let message = error["message"].as_str().map_or_else(|| error.to_string(), str::to_owned);
            return Err(remote_err(url, format!("the stream reported an error: {message}"), None));
        }
        if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
            prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
            completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0) as usize;
        }
        let Some(choice) = value["choices"].get(0) else { continue };
        let text = choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or_default();
        if !text.is_empty() {
            first_token.get_or_insert_with(|| started.elapsed());
            counted += 1;
            if events.send(Ok(Event::Text(text.to_owned()))).await.is_err() {
                return Ok(()); // the client went away: dropping the stream closes the connection
            }
        }
        match choice["finish_reason"].as_str() {
            Some("stop") => reason = FinishReason::Stop,
            Some("length") => reason = FinishReason::Length,
            _ => {}
        }
    }
    Err(remote_err(url, "the stream ended without [DONE]", None))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{Message, Role};

    const URL: &str = "http://127.0.0.1:1/v1/chat/completions";

    /// What `pump` sends for a body arriving as `chunks`, and how it ends.
    async fn pump_chunks(
        chunks: Vec<Result<Vec<u8>, String>>,
    ) -> (Vec<Result<Event, ModelError>>, Result<(), ModelError>) {
        let (sender, mut receiver) = mpsc::channel(1024);
        let outcome = pump(futures_util::stream::iter(chunks), &sender, URL).await;
        drop(sender);
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        (events, outcome)
    }

    /// The text of the `Text` events, and the `Done` event if any.
    fn split(events: &[Result<Event, ModelError>]) -> (String, Option<&Finish>) {
        let mut text = String::new();
        let mut done = None;
        for event in events {
            match event {
                Ok(Event::Text(t)) => text.push_str(t),
                Ok(Event::Done(finish)) => done = Some(finish),
                Err(err) => panic!("unexpected error event: {err}"),
            }
        }
        (text, done)
    }

    fn delta(text: &str) -> String {
        format!("data: {}\n\n", json!({"choices": [{"delta": {"content": text}, "finish_reason": null}]}))
    }

    /// A complete stream: two deltas (one with non-ASCII text), a finish,
    /// usage, and the end marker.
    fn full_stream() -> String {
        let mut body = String::new();
        body.push_str(": keep-alive\n\n");
        body.push_str(&delta("Héllo"));
        body.push_str(&delta(", 世界 👋"));
        body.push_str(&format!("data: {}\n\n", json!({"choices": [{"delta": {}, "finish_reason": "stop"}]})));
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
        ));
        body.push_str("data: [DONE]\n\n");
        body
    }

    fn assert_full(events: &[Result<Event, ModelError>]) {
        let (text, done) = split(events);
        assert_eq!(text, "Héllo, 世界 👋");
        let done = done.expect("a Done event");
        assert_eq!(done.reason, FinishReason::Stop);
        assert_eq!((done.prompt_tokens, done.completion_tokens), (12, 3));
    }

    #[tokio::test]
    async fn sse_reads_deltas_usage_and_done() {
        let (events, outcome) = pump_chunks(vec![Ok(full_stream().into_bytes())]).await;
        outcome.unwrap();
        assert_full(&events);
    }

    #[tokio::test]
    async fn sse_takes_crlf_and_cr_line_ends() {
        let crlf = full_stream().replace('\n', "\r\n");
        let (events, outcome) = pump_chunks(vec![Ok(crlf.into_bytes())]).await;
        outcome.unwrap();
        assert_full(&events);
        // Bare CR line ends too; but a CR that is the very last byte of the
        // body is held back (an LF may follow in the next chunk), so such a
        // stream must not end right at the blank line after [DONE].
        let cr = full_stream().replace('\n', "\r");
        let (events, outcome) = pump_chunks(vec![Ok(format!("{cr}: bye\r").into_bytes())]).await;
        outcome.unwrap();
        assert_full(&events);
        let (_, outcome) = pump_chunks(vec![Ok(cr.into_bytes())]).await;
        assert!(outcome.is_err(), "the final CR is awaited, not taken as a line end");
    }

    #[tokio::test]
    async fn sse_survives_any_split_into_two_chunks() {
        for body in [full_stream(), full_stream().replace('\n', "\r\n")] {
            let bytes = body.as_bytes();
            // Every cut point, including inside "\r\n" and inside the
            // multi-byte characters of "é", "世界" and "👋".
            for cut in 0..=bytes.len() {
                let chunks = vec![Ok(bytes[..cut].to_vec()), Ok(bytes[cut..].to_vec())];
                let (events, outcome) = pump_chunks(chunks).await;
                outcome.unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
                assert_full(&events);
            }
        }
    }

    #[tokio::test]
    async fn sse_survives_one_byte_chunks() {
        let chunks = full_stream().into_bytes().into_iter().map(|b| Ok(vec![b])).collect();
        let (events, outcome) = pump_chunks(chunks).await;
        outcome.unwrap();
        assert_full(&events);
    }

    #[tokio::test]
    async fn sse_splits_inside_a_utf8_character() {
        let body = delta("日本") + "data: [DONE]\n\n";
        let bytes = body.as_bytes();
        let cut = body.find('日').unwrap() + 1; // one byte into a three-byte character
        let (events, outcome) = pump_chunks(vec![Ok(bytes[..cut].to_vec()), Ok(bytes[cut..].to_vec())]).await;
        outcome.unwrap();
        let (text, done) = split(&events);
        assert_eq!(text, "日本");
        assert!(!text.contains('\u{FFFD}'));
        assert!(done.is_some());
    }

    #[tokio::test]
    async fn sse_joins_multi_line_data_and_skips_comments_and_other_fields() {
        let body = concat!(
            ":\n",
            ": ping\n",
            "\n",
            "event: completion\n",
            "id: 7\n",
            "retry: 1000\n",
            "data: {\"choices\":\n",
            "data: [{\"delta\": {\"content\": \"two lines\"}}]}\n",
            "\n",
            "data: [DONE]\n",
            "\n",
        );
        let (events, outcome) = pump_chunks(vec![Ok(body.as_bytes().to_vec())]).await;
        outcome.unwrap();
        let (text, done) = split(&events);
        assert_eq!(text, "two lines");
        let done = done.unwrap();
        // No usage reported: the count of text events stands in.
        assert_eq!((done.prompt_tokens, done.completion_tokens, done.reason), (0, 1, FinishReason::Length));
    }

    #[tokio::test]
    async fn sse_without_done_is_an_error() {
        let (events, outcome) = pump_chunks(vec![Ok(delta("cut off").into_bytes())]).await;
        assert_eq!(split(&events).0, "cut off");
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains("without [DONE]") && err.contains(URL), "{err}");
        // `data: [DONE]` with no blank line after it is not a dispatched event.
        let (_, outcome) = pump_chunks(vec![Ok(b"data: [DONE]\n".to_vec())]).await;
        assert!(outcome.is_err());
    }

    #[tokio::test]
    async fn sse_reports_broken_streams_bad_json_and_error_events() {
        let (events, outcome) = pump_chunks(vec![Ok(delta("a").into_bytes()), Err("connection reset".into())]).await;
        assert_eq!(split(&events).0, "a");
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains("stream broke: connection reset"), "{err}");

        let (_, outcome) = pump_chunks(vec![Ok(b"data: {not json\n\n".to_vec())]).await;
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains("not a JSON event") && err.contains("{not json"), "{err}");

        let error = json!({"error": {"message": "out of memory", "type": "server_error"}});
        let (_, outcome) = pump_chunks(vec![Ok(format!("data: {error}\n\n").into_bytes())]).await;
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains("the stream reported an error: out of memory"), "{err}");
    }

    #[tokio::test]
    async fn sse_stops_quietly_when_the_receiver_is_gone() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let body = delta("nobody listens");
        pump(futures_util::stream::iter(vec![Ok::<_, String>(body.into_bytes())]), &sender, URL).await.unwrap();
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(5) };
        let ceilings: Vec<u128> = (0..7).map(|r| backoff.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 5000, 5000]);
        // Shifts and products that would overflow stay at the cap.
        assert_eq!(backoff.ceiling(31), backoff.cap);
        assert_eq!(backoff.ceiling(32), backoff.cap);
        assert_eq!(backoff.ceiling(u32::MAX), backoff.cap);
        let huge = Backoff { base: Duration::from_secs(u64::MAX / 2), cap: Duration::MAX };
        assert_eq!(huge.ceiling(3), Duration::MAX);
    }

    #[test]
    fn backoff_delays_are_full_jitter_within_bounds() {
        let backoff = Backoff::DEFAULT;
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..8 {
            let ceiling = backoff.ceiling(retry);
            let draws: Vec<Duration> = (0..2000).map(|_| backoff.delay(retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {retry}: a draw over {ceiling:?}");
            // Full jitter: spread over the whole range, mean near half the ceiling.
            let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
            let ratio = mean / ceiling.as_secs_f64();
            assert!((0.45..0.55).contains(&ratio), "retry {retry}: mean/ceiling {ratio}");
            assert!(draws.iter().any(|d| *d < ceiling / 10), "retry {retry}: no short waits");
            assert!(draws.iter().any(|d| *d > ceiling * 9 / 10), "retry {retry}: no long waits");
        }
        let zero = Backoff { base: Duration::ZERO, cap: Duration::from_secs(1) };
        assert_eq!(zero.delay(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::MAX));
        // IMF-fixdate, and the two obsolete formats RFC 9110 still accepts.
        let later = Some(Duration::from_secs(30));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), later);
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now), later);
        assert_eq!(parse_retry_after("Sun Nov  6 08:50:07 1994", now), later);
        // A date already past: retry at once.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        for bad in ["", " ", "-1", "+5", "1.5", "soon", "5 s", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404, 413, 422, 501, 505] {
            assert!(!retryable_status(status), "{status}");
        }
    }

    fn failure(retryable: bool, retry_after: Option<Duration>) -> Failure {
        Failure { error: remote_err(URL, "test", Some(503)), retryable, retry_after }
    }

    #[test]
    fn next_step_honours_retry_after_budget_and_count() {
        let mut rng = StdRng::seed_from_u64(1);
        let backoff = Backoff::DEFAULT;
        let budget = Duration::from_secs(10);
        let second = Duration::from_secs(1);
        // Not retryable, or out of retries: give up.
        assert_eq!(next_step(&failure(false, None), 0, 3, second, budget, backoff, &mut rng), Next::GiveUp);
        assert_eq!(next_step(&failure(true, None), 3, 3, second, budget, backoff, &mut rng), Next::GiveUp);
        // The server's wait is taken as it is, jitter or not.
        let asked = Duration::from_secs(4);
        assert_eq!(next_step(&failure(true, Some(asked)), 0, 3, second, budget, backoff, &mut rng), Next::Retry(asked));
        // ...unless it would end past the budget.
        let far = Duration::from_secs(9);
        assert_eq!(
            next_step(&failure(true, Some(far)), 0, 3, second, budget, backoff, &mut rng),
            Next::OverBudget(far)
        );
        assert_eq!(
            next_step(&failure(true, Some(Duration::MAX)), 0, 3, second, budget, backoff, &mut rng),
            Next::OverBudget(Duration::MAX)
        );
        // Without one, a jittered backoff under the retry's ceiling.
        for retry in 0..3 {
            match next_step(&failure(true, None), retry, 3, Duration::ZERO, budget, backoff, &mut rng) {
                Next::Retry(wait) => assert!(wait <= backoff.ceiling(retry)),
                other => panic!("{other:?}"),
            }
        }
        // A spent budget stops even a short backoff.
        let spent = next_step(&failure(true, None), 0, 3, budget, budget, backoff, &mut rng);
        assert!(matches!(spent, Next::OverBudget(_)), "{spent:?}");
    }

    /// A loopback HTTP/1.1 server answering each connection with the next of
    /// `responses` (then closing it); records when each request arrived.
    async fn canned_server(responses: Vec<String>) -> (String, Arc<Mutex<Vec<Instant>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&arrivals);
        tokio::spawn(async move {
            for response in responses {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                // Read the head and the whole body before answering.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                seen.lock().unwrap().push(Instant::now());
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (base, arrivals)
    }

    fn answer(status: &str, headers: &[&str], body: &str) -> String {
        let mut head = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        format!("{head}\r\n{body}")
    }

    fn client(base_url: String, retries: u32, timeout: Duration) -> RemoteLlm {
        RemoteLlm::new(RemoteOptions { base_url, model: "m".into(), api_key: Some("k".into()), timeout, retries })
            .unwrap()
    }

    fn hello() -> GenerateRequest {
        GenerateRequest::chat(vec![Message::new(Role::User, "hello")])
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_waited_out_then_streams() {
        let ok = answer("200 OK", &["content-type: text/event-stream"], &full_stream());
        let busy = answer("429 Too Many Requests", &["retry-after: 1"], "slow down");
        let (base, arrivals) = canned_server(vec![busy, ok]).await;
        let mut stream = client(base, 2, Duration::from_secs(20)).generate(hello()).await.unwrap();
        let mut events = Vec::new();
        while let Some(event) = stream.recv().await {
            events.push(event);
        }
        assert_full(&events);
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 2);
        let waited = arrivals[1] - arrivals[0];
        assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, not the 1 s asked");
    }

    #[tokio::test]
    async fn retries_stop_at_the_count_and_never_for_a_client_error() {
        let unavailable = answer("503 Service Unavailable", &[], "overloaded");
        let (base, arrivals) = canned_server(vec![unavailable.clone(), unavailable.clone(), unavailable]).await;
        let err = client(base, 1, Duration::from_secs(20)).generate(hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Remote { status: Some(503), .. }), "{err}");
        assert!(err.to_string().contains("overloaded"), "{err}");
        assert_eq!(arrivals.lock().unwrap().len(), 2, "one attempt and one retry");

        let bad = answer("400 Bad Request", &[], "no such model");
        let (base, arrivals) = canned_server(vec![bad, answer("200 OK", &[], "")]).await;
        let err = client(base, 3, Duration::from_secs(20)).generate(hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Remote { status: Some(400), .. }), "{err}");
        assert_eq!(arrivals.lock().unwrap().len(), 1, "a 400 is not retried");
    }

    #[tokio::test]
    async fn a_retry_after_past_the_budget_fails_at_once() {
        let busy = answer("503 Service Unavailable", &["retry-after: 3600"], "maintenance");
        let (base, arrivals) = canned_server(vec![busy, answer("200 OK", &[], "")]).await;
        let started = Instant::now();
        let err = client(base, 3, Duration::from_secs(5)).generate(hello()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
        let text = err.to_string();
        assert!(text.contains("maintenance") && text.contains("past the 5000 ms budget"), "{text}");
        assert_eq!(arrivals.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_then_reported() {
        // Bind, learn the port, close: nothing listens there now.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}/v1");
        let err = client(base.clone(), 2, Duration::from_secs(20)).generate(hello()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&base) && text.to_lowercase().contains("refused"), "{text}");
    }
}
