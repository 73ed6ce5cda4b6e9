//! Prometheus metrics: request counts and latencies per route, plus gauges
//! filled at scrape time.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The daemon's metrics registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    store_size: Gauge,
    store_last_seq: Gauge,
    uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every Engram metric registered under `engram_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("engram");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let store_size = Gauge::default();
        let store_last_seq = Gauge::default();
        let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register("http_requests", "HTTP requests served, by method, route and status", requests.clone());
        registry.register("http_request_duration_seconds", "Time to the response head, by route", latency.clone());
        registry.register("http_requests_in_flight", "HTTP requests being served now", in_flight.clone());
        registry.register("store_size_bytes", "Journal database plus write-ahead log", store_size.clone());
        registry.register("store_last_seq", "Highest change sequence number in the journal", store_last_seq.clone());
        registry.register("uptime_seconds", "Seconds since the daemon started", uptime.clone());
        Self { inner: Arc::new(Inner { registry, requests, latency, in_flight, store_size, store_last_seq, uptime }) }
    }

    /// Sets the gauges that are read at scrape time.
    pub fn set_gauges(&self, uptime_s: f64, store_size: u64, store_last_seq: i64) {
        self.inner.uptime.set(uptime_s);
        self.inner.store_size.set(i64::try_from(store_size).unwrap_or(i64::MAX));
        self.inner.store_last_seq.set(store_last_seq);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// A method as a metrics label: the standard ones by name, anything else
/// (a client may send any token, before it is authenticated) as `other`,
/// so no request can grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

/// Middleware (applied per route, so the matched path is known) that counts
/// and times every request.
pub(crate) async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method()).to_owned();
    let inner = &metrics.inner;
    inner.in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    inner.in_flight.dec();
    inner.latency.get_or_create(&RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    inner.requests.get_or_create(&RequestLabels { method, route, status: response.status().as_u16() }).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_become_labels() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"PURGE").unwrap()), "other");
        let invented: std::collections::HashSet<&str> =
            (0..1000).map(|i| method_label(&Method::from_bytes(format!("M{i}").as_bytes()).unwrap())).collect();
        assert_eq!(invented.len(), 1);
    }
}
