//! OpenTelemetry tracing: the tracer provider and its sampler, W3C `traceparent`
//! extraction on the server side and injection on outbound calls, and the spans of
//! calls: HTTP and gRPC servers ([`server_span`]), HTTP clients ([`http_client_span`])
//! and gRPC clients ([`grpc_client_span`]), named and attributed the way OpenTelemetry's
//! semantic conventions say.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TelemetryConfig;

/// The `traceparent` header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Which traces are recorded and exported (`FLOTILLA_TRACE_SAMPLING`).
///
/// Every span gets real ids whatever the choice, so `traceparent` flows on every hop; an
/// unsampled one carries the flags `00` and is not exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every trace (the default; what a laptop wants).
    AlwaysOn,
    /// No trace is recorded, whatever the caller says.
    AlwaysOff,
    /// Parent-based ratio: a trace the caller sampled (or not) keeps that decision; a
    /// trace that starts here is sampled with this probability, in (0, 1].
    Ratio(f64),
}

impl Sampling {
    /// A ratio sampler; the ratio must be in (0, 1].
    pub fn ratio(r: f64) -> Result<Self, String> {
        if r > 0.0 && r <= 1.0 {
            Ok(Self::Ratio(r))
        } else {
            Err(format!(
                "{r} is not a sampling ratio in (0, 1]; use `always_off` to record no trace"
            ))
        }
    }

    /// Reads `always_on`, `always_off` or a ratio in (0, 1].
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "always_on" | "on" => Ok(Self::AlwaysOn),
            "always_off" | "off" => Ok(Self::AlwaysOff),
            t => match t.parse::<f64>() {
                Ok(r) => Self::ratio(r),
                Err(_) => Err(format!(
                    "{text:?} is not `always_on`, `always_off` or a ratio in (0, 1]"
                )),
            },
        }
    }

    /// The SDK sampler this stands for.
    pub fn sampler(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

impl serde::Serialize for Sampling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::AlwaysOn => s.serialize_str("always_on"),
            Self::AlwaysOff => s.serialize_str("always_off"),
            Self::Ratio(r) => s.serialize_f64(*r),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Sampling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(r) => Self::ratio(r),
            Raw::Text(t) => Self::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The OTel resource of this process: `service.name` and `service.instance.id`.
pub(super) fn resource(cfg: &TelemetryConfig) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            cfg.instance.clone(),
        ))
        .build()
}

/// Builds the provider: sampling as configured (spans get real ids either way, so
/// `traceparent` flows), and exporting over OTLP/HTTP only when an endpoint is
/// configured.
pub(super) fn provider(cfg: &TelemetryConfig) -> SdkTracerProvider {
    use opentelemetry_otlp::WithExportConfig;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource(cfg))
        .with_sampler(cfg.sampling.sampler());
    if let Some(endpoint) = cfg.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let endpoint = signal_url(endpoint, "traces");
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("FLOTILLA_OTLP_ENDPOINT={endpoint}: cannot export traces: {e}"),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    provider
}

/// `http://host:4318` → `http://host:4318/v1/<signal>`. A URL with a path ending in
/// `/v1/<another signal>` gets this signal's path instead (`…/v1/traces` names the
/// collector's base for logs too); any other path is kept.
pub(super) fn signal_url(endpoint: &str, signal: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let path = trimmed
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    if path.is_empty() {
        return format!("{trimmed}/v1/{signal}");
    }
    for other in ["traces", "logs", "metrics"] {
        if let Some(base) = trimmed.strip_suffix(&format!("/v1/{other}")) {
            return format!("{base}/v1/{signal}");
        }
    }
    trimmed.to_owned()
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The trace context carried by incoming `headers`.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current span's context into outbound `headers` (`traceparent`).
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current(), headers);
}

/// Writes `span`'s context into outbound `headers` (`traceparent`): the callee's server
/// span becomes a child of `span`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// `span`'s context as a `traceparent` value, if it has a valid one (sampled or not).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Makes `span` a child of the trace a stored `traceparent` names (an event's, a saga's);
/// an absent or malformed value leaves `span` where it is.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent.and_then(|t| http::HeaderValue::from_str(t).ok()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, value);
    let cx = extract(&headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `url` fit for the `url.full` attribute: no user name or password, no fragment, and
/// the values of query parameters that carry secrets (`token`, `key`, `signature`…)
/// replaced by `REDACTED`.
pub fn redact_url(url: &str) -> String {
    const SECRET_KEYS: [&str; 12] = [
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "code",
        "key",
        "api_key",
        "apikey",
        "password",
        "secret",
        "signature",
        "sig",
    ];
    let url = url.split('#').next().unwrap_or(url);
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(host);
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                    out.push_str(k);
                    out.push_str("=REDACTED");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// `host` and `port` of `url`'s authority (the scheme's default port when none is
/// written), for `server.address`/`server.port`.
pub fn server_of(url: &str) -> (Option<&str>, Option<u16>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("", url),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_host_port(hostport);
    let port = port.or(match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    (Some(host).filter(|h| !h.is_empty()), port)
}

/// `host:port` → (`host`, `port`); `[::1]:80` keeps the brackets off the host.
pub fn split_host_port(hostport: &str) -> (&str, Option<u16>) {
    if let Some(v6) = hostport.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (hostport, None),
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (hostport, None),
    }
}

/// A client span for one outbound HTTP request (`otel.kind = client`, named by the
/// method): `http.request.method`, `server.address`, `server.port` and `url.full` (see
/// [`redact_url`]) now, `http.response.status_code` with [`record_http_status`]. Inject
/// it with [`inject`] into the request.
pub fn http_client_span(method: &http::Method, url: &str) -> tracing::Span {
    let (host, port) = server_of(url);
    tracing::info_span!(
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        server.address = host.unwrap_or_default(),
        server.port = port,
        url.full = %redact_url(url),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records the answer's status on a span from [`http_client_span`]: a `4xx` or `5xx`
/// marks the client span as failed.
pub fn record_http_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_client_error() || status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
}

/// Marks a client span failed without an answer (`error.type` is the failure's kind:
/// `timeout`, `connect`, `transport`…).
pub fn record_failure(span: &tracing::Span, kind: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
pub fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// A client span for one gRPC call to `path` (`/pkg.Service/Method`) on `server`
/// (`host:port`, if known): `rpc.system = grpc`, `rpc.service`, `rpc.method`,
/// `server.address`, `server.port`; `rpc.grpc.status_code` comes with
/// [`record_grpc_status`] (or [`GrpcStatusBody`] for a status in the trailers).
pub fn grpc_client_span(path: &str, server: Option<&str>) -> tracing::Span {
    let (service, method) = grpc_method(path).unwrap_or(("", path));
    let (host, port) = server.map(split_host_port).unwrap_or(("", None));
    tracing::info_span!(
        "grpc.client",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        server.address = host,
        server.port = port,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Whether the `grpc-status` `code` is a failure for a span of that side: every code but
/// `OK` for a client; for a server only the codes that mean the server failed
/// (`UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
/// `DATA_LOSS`), as the semantic conventions say.
pub fn grpc_code_is_error(code: u32, server: bool) -> bool {
    if server {
        matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
    } else {
        code != 0
    }
}

/// Records `code` as `rpc.grpc.status_code` on a gRPC span of that side, marking the
/// span failed when the code is one (see [`grpc_code_is_error`]).
pub fn record_grpc_status(span: &tracing::Span, code: u32, server: bool) {
    span.record("rpc.grpc.status_code", code);
    if grpc_code_is_error(code, server) {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", code);
    }
}

/// A gRPC response body that records the `grpc-status` of its trailers on `span` and
/// keeps `span` open until the body is done: the span of a call lasts until its answer
/// is read, and the status of a successful call (sent in the trailers) is on it.
pub struct GrpcStatusBody<B> {
    inner: B,
    span: Option<tracing::Span>,
    server: bool,
}

impl<B> GrpcStatusBody<B> {
    /// Wraps `inner`; `server` says which side's error codes apply. A response whose
    /// headers already carry `grpc-status` (trailers-only) should record it with
    /// [`record_grpc_status`] instead.
    pub fn new(inner: B, span: tracing::Span, server: bool) -> Self {
        Self {
            inner,
            span: Some(span),
            server,
        }
    }
}

impl<B> http_body::Body for GrpcStatusBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let server = self.server;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(span) = self.span.take()
                    && let Some(code) = crate::resilience::stack::grpc_code(trailers)
                {
                    record_grpc_status(&span, code, server);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(span) = self.span.take() {
                    record_failure(&span, "transport");
                }
            }
            Poll::Ready(None) => self.span = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Names the current server span's route after the fact: `http.route` and the span's
/// name (`{method} {route}`). For a handler behind a catch-all (the gateway's
/// `/{*path}`) that knows the route only once it has matched its own table. The span's
/// name must be set through OpenTelemetry: once a span has a context (a child or a
/// `traceparent` was made from it), recording `otel.name` no longer renames it.
pub fn name_route(method: &http::Method, route: &str) {
    let span = tracing::Span::current();
    span.record("http.route", route);
    span.context()
        .span()
        .update_name(format!("{method} {route}"));
}

/// Middleware: one server span per request, child of the caller's `traceparent`, and
/// the response carries this span's `traceparent`. A gRPC request
/// (`content-type: application/grpc…`) gets an RPC span (`rpc.system`, `rpc.service`,
/// `rpc.method`, `rpc.grpc.status_code`), any other an HTTP one.
pub async fn server_span(req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let span = if grpc {
        grpc_server_span(&req)
    } else {
        http_server_span(&req)
    };
    let _ = span.set_parent(extract(req.headers()));
    if let Some(id) = req
        .headers()
        .get(crate::http::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        span.record("request_id", id);
    }
    let mut res = next.run(req).instrument(span.clone()).await;
    let traceparent = traceparent(&span);
    if grpc {
        match crate::resilience::stack::grpc_code(res.headers()) {
            Some(code) => record_grpc_status(&span, code, true),
            None if res.status().is_success() => {
                let (parts, body) = res.into_parts();
                let body = axum::body::Body::new(GrpcStatusBody::new(body, span, true));
                res = Response::from_parts(parts, body);
            }
            None => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", res.status().as_str());
            }
        }
    } else {
        span.record("http.response.status_code", res.status().as_u16());
        if res.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", res.status().as_str());
        }
    }
    if let Some(v) = traceparent.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
        res.headers_mut().insert(TRACEPARENT, v);
    }
    res
}

fn http_server_span(req: &Request) -> tracing::Span {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let name = format!("{} {}", req.method(), route.unwrap_or(req.uri().path()));
    tracing::info_span!(
        "http.server",
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        request_id = tracing::field::Empty,
    )
}

fn grpc_server_span(req: &Request) -> tracing::Span {
    let path = req.uri().path();
    let (service, method) = grpc_method(path).unwrap_or(("", path));
    tracing::info_span!(
        "grpc.server",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        request_id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_url_gets_the_signal_path() {
        assert_eq!(
            signal_url("http://127.0.0.1:4318", "traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://c:4318/", "logs"),
            "http://c:4318/v1/logs"
        );
        assert_eq!(
            signal_url("http://c:4318/custom/v1/traces", "traces"),
            "http://c:4318/custom/v1/traces"
        );
        assert_eq!(
            signal_url("http://c:4318/custom/v1/traces", "logs"),
            "http://c:4318/custom/v1/logs"
        );
        assert_eq!(
            signal_url("http://c:4318/otlp", "logs"),
            "http://c:4318/otlp"
        );
    }

    #[test]
    fn sampling_reads_names_and_ratios() {
        assert_eq!(Sampling::parse("always_on"), Ok(Sampling::AlwaysOn));
        assert_eq!(Sampling::parse(" ALWAYS_OFF "), Ok(Sampling::AlwaysOff));
        assert_eq!(Sampling::parse("0.1"), Ok(Sampling::Ratio(0.1)));
        assert_eq!(Sampling::parse("1"), Ok(Sampling::Ratio(1.0)));
        for bad in ["0", "-1", "1.01", "NaN", "inf", "half", ""] {
            assert!(Sampling::parse(bad).is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&Sampling::Ratio(0.5)).unwrap();
        assert_eq!(
            serde_json::from_str::<Sampling>(&json).unwrap(),
            Sampling::Ratio(0.5)
        );
        let json = serde_json::to_string(&Sampling::AlwaysOn).unwrap();
        assert_eq!(
            serde_json::from_str::<Sampling>(&json).unwrap(),
            Sampling::AlwaysOn
        );
        assert!(serde_json::from_str::<Sampling>("2.0").is_err());
    }

    #[test]
    fn urls_lose_credentials_and_secret_query_values() {
        assert_eq!(
            redact_url("https://alice:pw@auth:8443/jwks?token=abc&page=2#frag"),
            "https://auth:8443/jwks?token=REDACTED&page=2"
        );
        assert_eq!(
            redact_url("http://gw/v1/orders?Signature=s&sku=a"),
            "http://gw/v1/orders?Signature=REDACTED&sku=a"
        );
        assert_eq!(redact_url("http://h:1/p"), "http://h:1/p");
    }

    #[test]
    fn servers_and_grpc_methods_are_split() {
        assert_eq!(
            server_of("https://u:p@auth:8443/x"),
            (Some("auth"), Some(8443))
        );
        assert_eq!(server_of("http://gw/x"), (Some("gw"), Some(80)));
        assert_eq!(server_of("http://[::1]:81/"), (Some("::1"), Some(81)));
        assert_eq!(split_host_port("10.0.0.1:50051"), ("10.0.0.1", Some(50051)));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(
            grpc_method("/flotilla.inventory.v1.Inventory/Reserve"),
            Some(("flotilla.inventory.v1.Inventory", "Reserve"))
        );
        assert_eq!(grpc_method("/healthz"), None);
        assert!(grpc_code_is_error(5, false));
        assert!(
            !grpc_code_is_error(5, true),
            "NOT_FOUND is the caller's problem"
        );
        assert!(grpc_code_is_error(14, true));
        assert!(!grpc_code_is_error(0, false));
    }

    #[test]
    fn unsampled_spans_still_carry_a_valid_traceparent() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampling::AlwaysOff.sampler())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("unsampled");
            let tp = traceparent(&span).expect("a traceparent");
            assert!(tp.ends_with("-00"), "{tp}");
            assert_ne!(&tp[3..35], "00000000000000000000000000000000", "{tp}");
        });
    }

    #[test]
    fn extracts_the_callers_trace() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&h);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
