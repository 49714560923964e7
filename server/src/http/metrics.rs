//! Prometheus metrics for the gateway: a request counter and a latency
//! histogram labelled by route template and status, and their exposition text.
//! The registry belongs to the app (no global), so parts register their own.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The app's metric registry and the gateway's own series.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Request handlers that panicked (answered `500 internal`).
    pub panics: prometheus::IntCounter,
    /// Requests whose headers have arrived and whose answer has not been sent.
    in_flight: prometheus::IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("nimbus_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("nimbus_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method", "route", "status"],
        )?;
        let panics = prometheus::IntCounter::new("nimbus_http_panics_total", "Request handlers that panicked")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let in_flight = prometheus::IntGauge::new("nimbus_http_requests_in_flight", "HTTP requests being answered")?;
        registry.register(Box::new(panics.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Metrics { registry, requests, latency, panics, in_flight })
    }

    /// A new counter registered with the app's registry.
    pub fn counter(&self, name: &str, help: &str) -> Result<prometheus::IntCounter, prometheus::Error> {
        let counter = prometheus::IntCounter::new(name, help)?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<prometheus::IntGauge, prometheus::Error> {
        let gauge = prometheus::IntGauge::new(name, help)?;
        self.registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
        let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<HistogramVec, prometheus::Error> {
        let histogram = HistogramVec::new(
            HistogramOpts::new(name, help)
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            labels,
        )?;
        self.registry.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    }

    fn observe(&self, method: &str, route: &str, status: &str, seconds: f64) {
        self.requests.with_label_values(&[method, route, status]).inc();
        self.latency.with_label_values(&[method, route, status]).observe(seconds);
    }
}

/// Middleware recording every request under its route template (not its raw
/// path, which would make one series per document).
pub async fn record(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let method = request.method().as_str().to_owned();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics.observe(&method, &route, &status, started.elapsed().as_secs_f64());
    response
}

/// One request counted in `nimbus_http_requests_in_flight` until dropped
/// (also when the client goes away and the handler is cancelled).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Prometheus text of every series (who may read it is decided by the
/// `/metrics` route, which `app` guards).
pub fn exposition(metrics: &Metrics) -> Response {
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&metrics.registry.gather(), &mut buffer) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buffer).into_response(),
        Err(e) => {
            tracing::error!("metrics encoding failed: {e}");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Compares two secrets through their SHA-256 digests, in constant time.
pub fn same_secret(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
