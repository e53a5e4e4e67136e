//! The services view: every `interval`, the service directory (registry or etcd) is
//! read and each instance's admin listener is asked for `/healthz` and `/metrics`. RED
//! rates and latency percentiles come from the difference between an instance's last
//! two scrapes; memory from `process_resident_memory_bytes`; circuit breakers from
//! `breaker_state{target}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use kit::discovery::{Directory, Instance};
use serde::Serialize;

/// How long one instance may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The services as last scraped.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ServicesView {
    /// When (RFC 3339); `null` before the first scrape.
    pub scraped_at: Option<String>,
    /// Every service in the directory, by name.
    pub services: Vec<ServiceView>,
}

/// One service.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Its instances, by id.
    pub instances: Vec<InstanceView>,
}

/// One instance; what cannot be known is `null`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    /// Its id.
    pub id: String,
    /// Its public listener.
    pub address: String,
    /// Whether discovery routes to it (lease alive, not draining).
    pub healthy: bool,
    /// `up`: its `/healthz` answered 200; `down`: it did not; `unknown`: it advertises
    /// no admin listener.
    pub status: &'static str,
    /// The version it registered.
    pub version: Option<String>,
    /// Seconds since it started.
    pub uptime_s: Option<f64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Requests per second between the last two scrapes.
    pub request_rate: Option<f64>,
    /// `5xx` answers per second between the last two scrapes.
    pub error_rate: Option<f64>,
    /// Median latency of the requests between the last two scrapes, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the requests between the last two scrapes, ms.
    pub p99_ms: Option<f64>,
    /// Its circuit breakers, by target.
    pub breakers: Vec<BreakerView>,
}

/// A circuit breaker of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BreakerView {
    /// The service it protects calls to.
    pub target: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
}

/// One series of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments and malformed lines are
/// skipped; a trailing timestamp is ignored).
pub fn parse_prometheus(text: &str) -> Vec<Series> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => continue,
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// What one scrape of an instance's `/metrics` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Requests answered.
    pub requests: f64,
    /// Of which `5xx`.
    pub errors: f64,
    /// Latency histogram, cumulative: upper bound in seconds → count, by bound.
    pub buckets: Vec<(f64, f64)>,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<u64>,
    /// Breakers: target → `breaker_state` (0 closed, 1 open, 2 half-open).
    pub breakers: BTreeMap<String, f64>,
}

impl Sample {
    /// Reads the kit's metrics: `http_requests_total{status}`,
    /// `http_request_duration_seconds_bucket{le}`, `process_resident_memory_bytes`,
    /// `breaker_state{target}`.
    pub fn from_metrics(text: &str) -> Self {
        let mut s = Self::default();
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for series in parse_prometheus(text) {
            match series.name.as_str() {
                "http_requests_total" => {
                    s.requests += series.value;
                    if series.labels.get("status").is_some_and(|v| v == "5xx") {
                        s.errors += series.value;
                    }
                }
                "http_request_duration_seconds_bucket" => {
                    let Some(le) = series.labels.get("le") else {
                        continue;
                    };
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        match le.parse::<f64>() {
                            Ok(v) => v,
                            Err(_) => continue,
                        }
                    };
                    buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += series.value;
                }
                "process_resident_memory_bytes" => s.rss_bytes = Some(series.value as u64),
                "breaker_state" => {
                    if let Some(target) = series.labels.get("target") {
                        s.breakers.insert(target.clone(), series.value);
                    }
                }
                _ => {}
            }
        }
        s.buckets = buckets.into_values().collect();
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        s
    }
}

/// Rates and percentiles between two samples `elapsed` apart; `None` where the counters
/// went backwards (the instance restarted) or nothing can be said.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Requests per second.
    pub request_rate: Option<f64>,
    /// `5xx` per second.
    pub error_rate: Option<f64>,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

/// Cumulative histogram buckets `(le, count)` of `now` minus those of `before`, per
/// bound, never below zero (a bound `before` lacks counts from zero).
pub fn bucket_delta(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, (n - was).max(0.0))
        })
        .collect()
}

/// Compares `now` with `before`.
pub fn rates(before: &Sample, now: &Sample, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || now.requests < before.requests {
        return Rates::default();
    }
    let delta = bucket_delta(&now.buckets, &before.buckets);
    Rates {
        request_rate: Some((now.requests - before.requests) / secs),
        error_rate: Some((now.errors - before.errors).max(0.0) / secs),
        p50_ms: quantile(&delta, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&delta, 0.99).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a cumulative histogram, interpolated linearly within its bucket
/// (as Prometheus' `histogram_quantile`); the highest finite bound when it falls in the
/// `+Inf` bucket; `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

fn breaker_state(value: f64) -> &'static str {
    match value as u8 {
        0 => "closed",
        1 => "open",
        _ => "half_open",
    }
}

/// The scraper's latest view (cheap to clone).
#[derive(Clone)]
pub struct Scraper {
    view: Arc<RwLock<Arc<ServicesView>>>,
    directory: Arc<dyn Directory>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("directory", &self.directory.location())
            .finish_non_exhaustive()
    }
}

impl Scraper {
    /// Starts scraping `directory` every `interval`.
    pub fn spawn(directory: Arc<dyn Directory>, interval: Duration) -> Self {
        let scraper = Self {
            view: Arc::default(),
            directory,
        };
        let s = scraper.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(TIMEOUT)
                .build()
                .expect("a plain HTTP client builds");
            let mut previous: HashMap<String, (Instant, Sample)> = HashMap::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match s.directory.services().await {
                    Ok(services) => {
                        let view = scrape(&http, services, &mut previous).await;
                        *s.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
                    }
                    Err(e) => tracing::debug!(error = %e, "reading the service directory failed"),
                }
            }
        });
        scraper
    }

    /// The latest view.
    pub fn view(&self) -> Arc<ServicesView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The directory it reads.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }
}

async fn scrape(
    http: &reqwest::Client,
    services: Vec<kit::discovery::registry::ServiceEntry>,
    previous: &mut HashMap<String, (Instant, Sample)>,
) -> ServicesView {
    let probes = services
        .iter()
        .flat_map(|s| &s.instances)
        .map(|i| probe(http, i));
    let mut results = futures_util::future::join_all(probes).await.into_iter();
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for service in &services {
        let mut instances = Vec::new();
        for instance in &service.instances {
            let (status, sample) = results.next().unwrap_or(("unknown", None));
            let now = Instant::now();
            let rates = match (&sample, previous.get(&instance.id)) {
                (Some(s), Some((at, before))) => rates(before, s, now - *at),
                _ => Rates::default(),
            };
            if let Some(s) = &sample {
                seen.insert(instance.id.clone(), (now, s.clone()));
            }
            let meta = &instance.metadata;
            instances.push(InstanceView {
                id: instance.id.clone(),
                address: instance.addr.clone(),
                healthy: instance.healthy,
                status,
                version: meta.get("version").cloned(),
                uptime_s: meta
                    .get("started_at")
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map(|d| d.as_secs_f64()),
                rss_bytes: sample
                    .as_ref()
                    .and_then(|s| s.rss_bytes)
                    .or_else(|| meta.get("rss_bytes").and_then(|r| r.parse().ok())),
                request_rate: rates.request_rate,
                error_rate: rates.error_rate,
                p50_ms: rates.p50_ms,
                p99_ms: rates.p99_ms,
                breakers: sample
                    .as_ref()
                    .map(|s| {
                        s.breakers
                            .iter()
                            .map(|(target, v)| BreakerView {
                                target: target.clone(),
                                state: breaker_state(*v),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        out.push(ServiceView {
            name: service.name.clone(),
            instances,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // Instances gone from the directory are forgotten.
    *previous = seen;
    ServicesView {
        scraped_at: Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        services: out,
    }
}

/// Asks an instance's admin listener for `/healthz` and `/metrics`.
async fn probe(http: &reqwest::Client, instance: &Instance) -> (&'static str, Option<Sample>) {
    let Some(admin) = instance.metadata.get("admin_addr") else {
        return ("unknown", None);
    };
    let health = http.get(format!("http://{admin}/healthz")).send();
    let metrics = http.get(format!("http://{admin}/metrics")).send();
    let (health, metrics) = tokio::join!(health, metrics);
    let status = match health {
        Ok(r) if r.status().is_success() => "up",
        _ => "down",
    };
    let sample = match metrics {
        Ok(r) if r.status().is_success() => r.text().await.ok().map(|t| Sample::from_metrics(&t)),
        _ => None,
    };
    (status, sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# TYPE http_requests_total counter
http_requests_total{route="/api/orders",method="POST",status="2xx"} 90
http_requests_total{route="/api/orders",method="POST",status="5xx"} 10
http_requests_total{route="/api/orders/{id}",method="GET",status="2xx"} 100
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{route="/api/orders",method="POST",le="0.001"} 50
http_request_duration_seconds_bucket{route="/api/orders",method="POST",le="0.01"} 90
http_request_duration_seconds_bucket{route="/api/orders",method="POST",le="+Inf"} 100
http_request_duration_seconds_bucket{route="/api/orders/{id}",method="GET",le="0.001"} 100
http_request_duration_seconds_bucket{route="/api/orders/{id}",method="GET",le="0.01"} 100
http_request_duration_seconds_bucket{route="/api/orders/{id}",method="GET",le="+Inf"} 100
http_request_duration_seconds_sum{route="/api/orders",method="POST"} 0.5
process_resident_memory_bytes 12345678
breaker_state{target="inventory"} 0
breaker_state{target="pay\"ments"} 2
"#;

    #[test]
    fn the_kits_metrics_are_read() {
        let s = Sample::from_metrics(METRICS);
        assert_eq!(s.requests, 200.0);
        assert_eq!(s.errors, 10.0);
        assert_eq!(
            s.buckets,
            vec![(0.001, 150.0), (0.01, 190.0), (f64::INFINITY, 200.0)]
        );
        assert_eq!(s.rss_bytes, Some(12_345_678));
        assert_eq!(s.breakers.get("inventory"), Some(&0.0));
        assert_eq!(s.breakers.get("pay\"ments"), Some(&2.0));
        assert_eq!(breaker_state(2.0), "half_open");
    }

    #[test]
    fn rates_are_per_second_between_two_scrapes() {
        let before = Sample::from_metrics(METRICS);
        let mut now = before.clone();
        now.requests += 40.0;
        now.errors += 4.0;
        // 40 more requests: 20 under 1 ms, 20 between 1 and 10 ms.
        now.buckets = vec![(0.001, 170.0), (0.01, 230.0), (f64::INFINITY, 240.0)];
        let r = rates(&before, &now, Duration::from_secs(2));
        assert_eq!(r.request_rate, Some(20.0));
        assert_eq!(r.error_rate, Some(2.0));
        assert_eq!(r.p50_ms, Some(1.0));
        let p99 = r.p99_ms.unwrap();
        assert!((p99 - 9.82).abs() < 1e-9, "{p99}");
        // A restart (counters back to zero) says nothing for this interval.
        let restarted = Sample::default();
        assert_eq!(
            rates(&now, &restarted, Duration::from_secs(2)),
            Rates::default()
        );
        // No requests in the interval: rates of zero, no percentiles.
        let idle = rates(&now, &now, Duration::from_secs(2));
        assert_eq!(idle.request_rate, Some(0.0));
        assert_eq!(idle.p99_ms, None);
    }

    #[test]
    fn quantiles_interpolate_and_stop_at_the_last_finite_bound() {
        let b = [(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 40.0)];
        assert_eq!(quantile(&b, 0.25), Some(0.1));
        assert!((quantile(&b, 0.375).unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(quantile(&b, 0.9), Some(0.2));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let s = parse_prometheus("x{a=\"1\" 3\ny 2 1700000000\n{}\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "y");
        assert_eq!(s[0].value, 2.0);
    }
}
