//! The shape every Engram operation shares.
//!
//! Each operation a feature offers (search, ingest, calibrate, …) is one
//! request type implementing [`Operation`]: serde and `schemars` derive its
//! wire form and JSON Schema, it owns its defaults (serde defaults) and its
//! checks ([`Operation::validate`]), and it names its route and response
//! type. The HTTP router, the CLI (through the typed client) and MCP tools
//! are thin adapters over these types, so a default, a check or a route is
//! written once.
//!
//! Failures cross every surface as an [`Error`]: an [`ErrorKind`] (which
//! the HTTP layer maps to a status in exactly one place) and a message for
//! a person.
//!
//! ```
//! use engram_ops::{ErrorKind, Method, Operation};
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct Ping {
//!     #[serde(default = "one")]
//!     times: u32,
//! }
//! fn one() -> u32 { 1 }
//!
//! impl Operation for Ping {
//!     const METHOD: Method = Method::Post;
//!     const ROUTE: &'static str = "/v1/ping";
//!     type Response = u32;
//!     fn validate(&self) -> Result<(), engram_ops::Error> {
//!         if self.times > 10 { return Err(engram_ops::Error::invalid("`times` is at most 10")) }
//!         Ok(())
//!     }
//! }
//! let ping: Ping = serde_json::from_str("{}").unwrap();
//! assert_eq!(ping.times, 1);
//! assert_eq!(Ping { times: 11 }.validate().unwrap_err().kind, ErrorKind::Invalid);
//! ```

mod access;
mod error;
mod ids;
mod tool;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use access::{Audience, Caller, apply_audience};
pub use error::{Error, ErrorBody, ErrorDetail, ErrorKind};
pub use ids::{CollectionName, ConversationId, InvalidId, TenantId};
pub use tool::{Hints, Tool, valid_tool_name};

/// How an operation travels over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A read: the request's fields travel in the query string.
    Get,
    /// The request is the JSON body.
    Post,
}

/// One operation: its request (this type), response and route.
pub trait Operation: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The HTTP method.
    const METHOD: Method;
    /// The route as the router registers it; `{name}` segments are filled
    /// from the request's field of that name.
    const ROUTE: &'static str;
    /// What a successful call answers.
    type Response: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// Who may call it (default: only the operator).
    const AUDIENCE: Audience<Self> = Audience::Operator;

    /// Checks that `caller` may make this request, and scopes it to the
    /// caller's tenant where the operation has one. Every surface calls
    /// this with the caller its transport established.
    fn authorize(&mut self, caller: &Caller) -> Result<(), Error> {
        access::apply_audience(self, caller)
    }

    /// Checks the request's values beyond what its types say.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// The concrete path of this request: [`Self::ROUTE`] with each
    /// `{name}` replaced by the request's field `name`, percent-encoded.
    fn path(&self) -> Result<String, Error> {
        if !Self::ROUTE.contains('{') {
            return Ok(Self::ROUTE.to_owned());
        }
        fill_route(Self::ROUTE, &serde_json::to_value(self).map_err(Error::internal)?)
    }
}

/// An operation that can report progress while it runs: asked with
/// `stream: true`, it answers newline-delimited JSON events
/// ([`StreamLine`]) instead of one response.
pub trait Streaming: Operation {
    /// A progress event.
    type Event: Serialize + DeserializeOwned + Send + 'static;

    /// Whether the caller asked for the event stream.
    fn streams(&self) -> bool;

    /// How far the work is, by `event` (for progress notifications).
    fn advance(event: &Self::Event) -> Advance;
}

/// How far a streaming operation's work is.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    /// Units done; never decreases over one call.
    pub done: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What is being done, for a person.
    pub message: String,
}

/// One line of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine<E, R> {
    /// Work in progress.
    Progress(E),
    /// The final answer.
    Done(R),
    /// The operation failed.
    Error(Error),
}

impl<E: Serialize, R: Serialize> StreamLine<E, R> {
    /// The line as JSON: the event itself, `{"event":"done","report":…}`
    /// or `{"event":"error","error":{"code","message"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Progress(event) => serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            Self::Done(report) => serde_json::json!({ "event": "done", "report": report }),
            Self::Error(error) => serde_json::json!({ "event": "error", "error": ErrorDetail::from(error) }),
        }
    }
}

impl<E: DeserializeOwned, R: DeserializeOwned> StreamLine<E, R> {
    /// Reads a line written by [`StreamLine::to_json`].
    pub fn from_json(mut value: serde_json::Value) -> Result<Self, serde_json::Error> {
        match value.get("event").and_then(serde_json::Value::as_str) {
            Some("done") => Ok(Self::Done(serde_json::from_value(value["report"].take())?)),
            Some("error") => {
                let detail: ErrorDetail = serde_json::from_value(value["error"].take())?;
                Ok(Self::Error(detail.into()))
            }
            _ => Ok(Self::Progress(serde_json::from_value(value)?)),
        }
    }
}

/// Fills `{name}` segments of `route` from the fields of `request`.
fn fill_route(route: &str, request: &serde_json::Value) -> Result<String, Error> {
    let mut path = String::with_capacity(route.len());
    let mut rest = route;
    while let Some(open) = rest.find('{') {
        let close =
            rest[open..].find('}').map(|i| open + i).ok_or_else(|| Error::internal("unclosed route segment"))?;
        path.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let value = match request.get(name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(Error::invalid(format!("`{name}` is required"))),
        };
        if value.is_empty() {
            return Err(Error::invalid(format!("`{name}` is empty")));
        }
        path.extend(value.bytes().map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        }));
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    Ok(path)
}

/// Parameters of a route: the `{name}` segments of `route`.
pub fn route_params(route: &str) -> impl Iterator<Item = &str> {
    route.split('/').filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fill_and_encode_their_parameters() {
        let request = serde_json::json!({"id": "cert a/b", "n": 3});
        assert_eq!(fill_route("/v1/certificates/{id}/check", &request).unwrap(), "/v1/certificates/cert%20a%2Fb/check");
        assert_eq!(fill_route("/v1/x/{n}", &request).unwrap(), "/v1/x/3");
        assert_eq!(fill_route("/v1/x", &request).unwrap(), "/v1/x");
        let missing = fill_route("/v1/x/{other}", &request).unwrap_err();
        assert_eq!((missing.kind, missing.message.as_str()), (ErrorKind::Invalid, "`other` is required"));
        assert!(fill_route("/v1/x/{id}", &serde_json::json!({"id": ""})).is_err());
        assert_eq!(route_params("/v1/certificates/{id}/check").collect::<Vec<_>>(), ["id"]);
    }

    #[test]
    fn stream_lines_round_trip() {
        type Line = StreamLine<serde_json::Value, u32>;
        let progress = Line::Progress(serde_json::json!({"event": "started", "total": 2}));
        for line in [progress, Line::Done(7), Line::Error(Error::not_found("no such thing"))] {
            assert_eq!(Line::from_json(line.to_json()).unwrap(), line);
        }
    }
}
