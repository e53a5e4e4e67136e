//! RED metrics per route (rate, errors, duration) and process metrics, rendered in the
//! Prometheus text format at the admin `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A route label a handler can put on its response when axum's matched path is not the
/// right one (the gateway labels by route prefix, not by its catch-all).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// Installs the Prometheus recorder (once per process; later calls reuse it).
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // A second global recorder (tests running several services) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The Prometheus text exposition of every metric of this process.
pub fn render() -> String {
    let handle = install_recorder();
    if let Some(rss) = crate::service::process_rss_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    handle.render()
}

/// `2xx`, `4xx`… for the status label.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware: counts requests by route, method and status class, times them, and
/// tracks the number in flight.
pub async fn red(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let in_flight_route = matched.clone().unwrap_or_else(|| "other".to_owned());
    let in_flight = metrics::gauge!("http_requests_in_flight", "route" => in_flight_route);
    in_flight.increment(1.0);
    let res = next.run(req).await;
    in_flight.decrement(1.0);
    let route = res
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .or(matched)
        .unwrap_or_else(|| "unmatched".to_owned());
    let class = status_class(res.status().as_u16());
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => class)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
