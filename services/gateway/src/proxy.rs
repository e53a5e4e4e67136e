//! The forwarding path: route, pass the service's bulkhead and circuit breaker, pick an
//! instance, forward over a pooled connection (retrying what is safe to retry, within
//! the retry budget and the route's deadline), and turn every upstream failure into the
//! right problem document.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kit::Problem;
use kit::discovery::traffic::RouteHint;
use kit::discovery::{Endpoints, Picked};
use kit::resilience::deadline;
use kit::resilience::fallback::StaleCache;
use kit::resilience::retry::{self, Verdict};
use kit::resilience::{Policy, Rejected};
use kit::security::mtls::{self, InternalConnector};
use kit::telemetry::metrics::RouteLabel;
use std::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use crate::routes::{self, Protocol, RouteConfig};

/// The pooled upstream client (request bodies are buffered, so they can be re-sent when
/// a connection is refused).
pub type UpstreamClient = Client<InternalConnector, Full<Bytes>>;

/// Where one route's requests go, and the policies that protect the calls.
pub struct Upstream {
    /// The route.
    pub route: RouteConfig,
    /// Live instances of its service.
    pub endpoints: Endpoints,
    /// Breaker, retry and bulkhead for its service.
    pub policy: Policy,
    /// Last good answers to anonymous `GET`s, when the route serves stale-if-error.
    pub stale: Option<Arc<StaleCache<String, Cached>>>,
}

impl Upstream {
    /// The upstream of `route`, over `endpoints`, under `policy`.
    pub fn new(route: RouteConfig, endpoints: Endpoints, policy: Policy) -> Self {
        let stale = route
            .stale_if_error
            .map(|age| StaleCache::new(STALE_ENTRIES, age));
        Self {
            route,
            endpoints,
            policy,
            stale,
        }
    }
}

/// A remembered good answer (status 200).
#[derive(Debug, Clone)]
pub struct Cached {
    headers: HeaderMap,
    body: Bytes,
}

/// Answers kept per route for stale-if-error, and the largest body kept.
const STALE_ENTRIES: usize = 4096;
const STALE_MAX_BODY: usize = 256 * 1024;

/// Marks an answer served from the stale-if-error fallback.
pub const X_FLOTILLA_FALLBACK: HeaderName = HeaderName::from_static("x-flotilla-fallback");

/// The gateway's routing state.
pub struct Gateway {
    /// Routes with their upstreams.
    pub routes: Vec<(RouteConfig, Upstream)>,
    /// Whether clients reach the gateway over TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    http1: UpstreamClient,
    h2c: UpstreamClient,
}

impl Gateway {
    /// A gateway over `routes`, reaching services over the process's internal
    /// transport (mTLS with the gateway's identity).
    pub fn new(routes: Vec<(RouteConfig, Upstream)>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = mtls::connector(http);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(connector);
        Self {
            routes,
            tls: false,
            http1,
            h2c,
        }
    }

    /// The same gateway, telling upstreams that clients came over TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The pooled client for `protocol`.
    pub fn client(&self, protocol: Protocol) -> &UpstreamClient {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::H2c => &self.h2c,
        }
    }
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, tls: bool) {
    let ip = peer.ip().to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Sets the identity headers services read ([`kit::security::Identity`]).
pub fn set_identity(headers: &mut HeaderMap, id: &kit::security::Identity) {
    let values = [
        (kit::security::USER_ID, id.user_id.clone()),
        (kit::security::ROLES, id.roles.join(" ")),
        (kit::security::SCOPES, id.scopes.join(" ")),
    ];
    for (name, value) in values {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The catch-all handler that forwards to the routed service.
pub async fn forward(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path();
    if let Some(why) = routes::malformed(path) {
        return Problem::bad_request(why).into_response();
    }
    if routes::is_internal(path) {
        return Problem::not_found(format!("no route for {path}")).into_response();
    }
    let Some((route, upstream)) = routes::find(&gw.routes, path) else {
        return Problem::not_found(format!("no route for {path}")).into_response();
    };
    // The server span names the route of the gateway's table, not its catch-all
    // (`/{*path}`), so traces can be found by route.
    kit::telemetry::trace::name_route(req.method(), &route.prefix);
    let label = RouteLabel(route.prefix.clone());
    let mut res = forward_to(&gw, upstream, peer, req).await;
    res.extensions_mut().insert(label);
    res
}

async fn forward_to(gw: &Gateway, upstream: &Upstream, peer: SocketAddr, req: Request) -> Response {
    let route = &upstream.route;
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > route.body_limit) {
        return too_large(route).into_response();
    }
    let body = match Limited::new(body, route.body_limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(route).into_response();
        }
        Err(e) => {
            return Problem::bad_request(format!("cannot read the request body: {e}"))
                .into_response();
        }
    };
    if let Err(p) = crate::edge::body::check(route, &parts.method, &parts.headers, &body) {
        return p.into_response();
    }
    strip_hop_by_hop(&mut parts.headers);
    // Only the gateway may say who the caller is: as its authentication verified it.
    for name in kit::security::IDENTITY_HEADERS {
        parts.headers.remove(name);
    }
    if let Some(id) = parts.extensions.get::<kit::security::Identity>() {
        set_identity(&mut parts.headers, id);
    }
    add_forwarded(&mut parts.headers, peer, gw.tls);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let client = gw.client(route.protocol);
    let Ok(_slot) = upstream.policy.bulkhead.enter().await else {
        return Problem::unavailable(
            format!("too many concurrent requests to {}", route.service),
            Duration::from_secs(1),
        )
        .into_response();
    };

    let deadline = Instant::now() + route.timeout;
    let safe = retry::is_retry_safe(&parts.method, &parts.headers);
    let tried: Mutex<Vec<Arc<str>>> = Mutex::default();
    let call = Call {
        client,
        upstream,
        parts: &parts,
        path_and_query: &path_and_query,
        body: &body,
        deadline,
        tried: &tried,
    };
    let outcome = upstream
        .policy
        .retry
        .run(safe, Some(deadline), |_| call.attempt(), Attempt::verdict)
        .await;
    match &upstream.stale {
        Some(cache)
            if parts.method == http::Method::GET
                && !parts.headers.contains_key(header::AUTHORIZATION) =>
        {
            let accepts_stale = !refuses_stale(&parts.headers);
            stale_if_error(cache, path_and_query, accepts_stale, outcome, route).await
        }
        _ => outcome.into_response(route),
    }
}

/// Whether the client asked for a fresh answer (`cache-control: no-cache`/`no-store`,
/// or `pragma: no-cache`), so no stale one may stand in.
fn refuses_stale(headers: &HeaderMap) -> bool {
    let says = |name: HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| {
                matches!(
                    d.trim().to_ascii_lowercase().as_str(),
                    "no-cache" | "no-store"
                )
            })
    };
    says(header::CACHE_CONTROL) || says(header::PRAGMA)
}

/// The stale-if-error fallback: remembers good answers (bounded in number, size and
/// age) and answers with the last one when the service fails — its breaker is open, no
/// instance is up, it errs or times out.
async fn stale_if_error(
    cache: &StaleCache<String, Cached>,
    key: String,
    accepts_stale: bool,
    outcome: Attempt,
    route: &RouteConfig,
) -> Response {
    match outcome {
        Attempt::Answered(res) if res.status() == http::StatusCode::OK => {
            let small = res
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n <= STALE_MAX_BODY);
            if !small {
                return Attempt::Answered(res).into_response(route);
            }
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            match Limited::new(body, STALE_MAX_BODY).collect().await {
                Ok(b) => {
                    let body = b.to_bytes();
                    cache.put(
                        key,
                        Cached {
                            headers: parts.headers.clone(),
                            body: body.clone(),
                        },
                    );
                    Response::from_parts(parts, Body::from(body))
                }
                Err(_) => Problem::bad_gateway(format!("{} failed while answering", route.service))
                    .into_response(),
            }
        }
        failed if failed.is_failure() && accepts_stale => match cache.get(&key) {
            Some((c, age)) => {
                metrics::counter!("fallbacks_total", "route" => route.prefix.clone()).increment(1);
                let mut res = Response::new(Body::from(c.body));
                *res.headers_mut() = c.headers;
                let h = res.headers_mut();
                h.insert(header::AGE, HeaderValue::from(age.as_secs()));
                h.insert(
                    X_FLOTILLA_FALLBACK,
                    HeaderValue::from_static("stale-if-error"),
                );
                res
            }
            None => failed.into_response(route),
        },
        other => other.into_response(route),
    }
}

/// One forwarded request, attempted once or more.
struct Call<'a> {
    client: &'a UpstreamClient,
    upstream: &'a Upstream,
    parts: &'a http::request::Parts,
    path_and_query: &'a str,
    body: &'a Bytes,
    deadline: Instant,
    tried: &'a Mutex<Vec<Arc<str>>>,
}

/// How one attempt ended.
enum Attempt {
    Answered(http::Response<hyper::body::Incoming>),
    BreakerOpen(Rejected),
    NoInstance,
    NotConnected,
    Failed,
    TimedOut,
}

impl Attempt {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Answered(res) if kit::resilience::is_failure_status(res.status()) => {
                Verdict::Retryable
            }
            Self::Answered(_) | Self::BreakerOpen(_) | Self::NoInstance => Verdict::Done,
            Self::NotConnected => Verdict::NotSent,
            Self::Failed | Self::TimedOut => Verdict::Retryable,
        }
    }

    /// Whether the service failed (rather than answered).
    fn is_failure(&self) -> bool {
        match self {
            Self::Answered(res) => kit::resilience::is_failure_status(res.status()),
            _ => true,
        }
    }

    fn into_response(self, route: &RouteConfig) -> Response {
        let service = &route.service;
        match self {
            Self::Answered(mut res) => {
                strip_hop_by_hop(res.headers_mut());
                res.map(Body::new)
            }
            Self::BreakerOpen(r) => Problem::unavailable(
                format!("{service} is failing; its circuit breaker is open"),
                r.retry_after,
            )
            .into_response(),
            Self::NoInstance => Problem::unavailable(
                format!("no healthy instance of {service}"),
                Duration::from_secs(1),
            )
            .into_response(),
            // Nothing was sent: the service is unavailable, not misbehaving (API.md: 503
            // with `Retry-After` for a dependency that is down).
            Self::NotConnected => Problem::unavailable(
                format!("cannot connect to any instance of {service}"),
                Duration::from_secs(1),
            )
            .into_response(),
            Self::Failed => {
                Problem::bad_gateway(format!("{service} failed to answer")).into_response()
            }
            Self::TimedOut => Problem::gateway_timeout(format!(
                "{service} did not answer within {:?}",
                route.timeout
            ))
            .into_response(),
        }
    }
}

impl Call<'_> {
    async fn attempt(&self) -> Attempt {
        let route = &self.upstream.route;
        let policy = &self.upstream.policy;
        let picked = {
            let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            let picked = pick_untried(&self.upstream.endpoints, &tried, policy, self.parts);
            if let Some(p) = &picked {
                tried.push(Arc::from(p.instance.id.as_str()));
            }
            picked
        };
        let Some(picked) = picked else {
            return match policy.breaker.try_acquire() {
                Err(r) => Attempt::BreakerOpen(r),
                Ok(_unused) => Attempt::NoInstance,
            };
        };
        // The service's breaker, or this instance's own with per-instance breakers.
        let breaker = policy.breaker_for(Some(&picked.instance.id));
        let permit = match breaker.try_acquire() {
            Ok(p) => p,
            Err(r) => return Attempt::BreakerOpen(r),
        };
        let addr = picked.instance.addr.as_str();
        let Ok(uri) = format!("{}://{addr}{}", mtls::scheme(), self.path_and_query).parse::<Uri>()
        else {
            return Attempt::Failed;
        };
        let mut out = http::Request::builder()
            .method(self.parts.method.clone())
            .uri(uri)
            .body(Full::new(self.body.clone()))
            .expect("method and URI were valid on the way in");
        *out.headers_mut() = self.parts.headers.clone();
        deadline::set_header(out.headers_mut(), self.deadline);

        let span =
            kit::telemetry::trace::http_client_span(&self.parts.method, &out.uri().to_string());
        kit::telemetry::trace::inject(&span, out.headers_mut());
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let sent = tokio::time::timeout(remaining, self.client.request(out))
            .instrument(span.clone())
            .await;
        match sent {
            Ok(Ok(res)) => {
                kit::telemetry::trace::record_http_status(&span, res.status());
                permit.record(!kit::resilience::is_failure_status(res.status()));
                Attempt::Answered(res)
            }
            Ok(Err(e)) if e.is_connect() => {
                // A refused connection means this instance is gone, not that the service
                // is failing: the request never reached it. Discovery drops the instance
                // and the retry tries another, so the service's breaker is not charged
                // (a restarted single instance would otherwise stay cut off for the whole
                // open interval).
                drop(permit);
                kit::telemetry::trace::record_failure(&span, "connect");
                tracing::warn!(service = %route.service, instance = %addr, error = %e, "cannot connect");
                Attempt::NotConnected
            }
            Ok(Err(e)) => {
                permit.failure();
                kit::telemetry::trace::record_failure(&span, "transport");
                tracing::warn!(service = %route.service, instance = %addr, error = %e, "upstream failed");
                Attempt::Failed
            }
            Err(_) => {
                permit.failure();
                kit::telemetry::trace::record_failure(&span, "timeout");
                tracing::warn!(service = %route.service, instance = %addr, timeout = ?route.timeout, "upstream timed out");
                Attempt::TimedOut
            }
        }
    }
}

fn too_large(route: &RouteConfig) -> Problem {
    Problem::payload_too_large(format!(
        "the body exceeds this route's limit of {} bytes",
        route.body_limit
    ))
}

/// Picks an instance not tried yet for this request and whose own breaker (with
/// per-instance breakers) is not open, p2c among those; once none is left, any of them.
/// The service's traffic rules choose the version first: the version the request's
/// header names, else by the split, sticky by the authenticated user.
fn pick_untried(
    endpoints: &Endpoints,
    tried: &[Arc<str>],
    policy: &Policy,
    parts: &http::request::Parts,
) -> Option<Picked> {
    let traffic = endpoints.traffic();
    let hint = RouteHint {
        version: traffic
            .as_deref()
            .and_then(|t| parts.headers.get(t.header.as_str()))
            .and_then(|v| v.to_str().ok()),
        user: parts
            .extensions
            .get::<kit::security::Identity>()
            .map(|i| i.user_id.as_str()),
    };
    if tried.is_empty() && !policy.breaker.config().per_instance {
        return endpoints.pick_with(hint);
    }
    endpoints
        .pick_where(hint, |e| {
            !tried.iter().any(|t| **t == *e.instance.id) && !policy.is_open_for(&e.instance.id)
        })
        .or_else(|| endpoints.pick_with(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        h.insert(header::HOST, "shop.example".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1:5555".parse().unwrap(), false);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example");
        assert!(!h.contains_key(header::HOST));
    }
}
