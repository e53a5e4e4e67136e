//! The edge: what the gateway does to every public request before it is routed.
//!
//! [`stack`] composes the layers, outermost first:
//!
//! 1. [`cors`] — answers preflights and adds CORS headers (only when origins are set);
//! 2. [`classify`] — refuses malformed paths (`400`) and too many headers (`431`), and
//!    records the matched route;
//! 3. [`auth::authenticate`] — verifies the bearer token, if any, and records the result;
//! 4. [`rate_limit::limit`] — charges the caller's bucket (the user for a valid token,
//!    the client address otherwise; so failed logins and bad tokens are charged too):
//!    `429` with `Retry-After` and `RateLimit` headers;
//! 5. [`auth::authorize`] — applies the route's rule: `401` without a valid token on a
//!    closed route, `403` without its scope or role; the verified [`Identity`] goes into
//!    the request's extensions for [`crate::proxy`] and [`crate::aggregate`].
//!
//! Security headers ([`security_headers`]) are added by the service stack to every
//! response, and JSON bodies are checked by [`body`] once the proxy has read them.
//!
//! [`Identity`]: kit::security::Identity

pub mod auth;
pub mod body;
pub mod cors;
pub mod fuzzing;
pub mod rate_limit;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use kit::Problem;
use kit::security::jwt::Verifier;

use crate::proxy::Gateway;
use crate::routes::{self, RouteConfig};

/// Most request headers accepted (`431` beyond); their total size is capped by the
/// service stack ([`kit::http::MAX_HEADER_BYTES`]).
pub const MAX_HEADERS: usize = 100;

/// What the edge layers share.
pub struct Edge {
    /// The routes (and their upstreams).
    pub gateway: Arc<Gateway>,
    /// Verifies access tokens.
    pub verifier: Verifier,
    /// Rate limits; `None` when disabled.
    pub limiter: Option<rate_limit::RateLimiter>,
}

impl Edge {
    /// The route at `index` of the table.
    pub fn route(&self, index: usize) -> Option<&RouteConfig> {
        self.gateway.routes.get(index).map(|(r, _)| r)
    }
}

/// The route a request matched (index into the table), recorded by [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched(pub Option<usize>);

/// Wraps the public router in the edge layers, in the order the module docs give.
pub fn stack(router: Router, edge: Arc<Edge>, cors: Option<cors::CorsLayer>) -> Router {
    // `Router::layer` wraps what is there: the last added runs first.
    let router = router
        .layer(from_fn_with_state(edge.clone(), auth::authorize))
        .layer(from_fn_with_state(edge.clone(), rate_limit::limit))
        .layer(from_fn_with_state(edge.clone(), auth::authenticate))
        .layer(from_fn_with_state(edge, classify));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Refuses what no route should see and records the matched route.
pub async fn classify(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    match check_request(&edge.gateway.routes, req.uri().path(), req.headers()) {
        Ok(matched) => {
            req.extensions_mut().insert(matched);
            next.run(req).await
        }
        Err(p) => p.into_response(),
    }
}

/// The checks of [`classify`], without the plumbing (shared with the fuzz target).
pub fn check_request<T>(
    table: &[(RouteConfig, T)],
    path: &str,
    headers: &HeaderMap,
) -> Result<Matched, Problem> {
    if let Some(why) = routes::malformed(path) {
        return Err(Problem::bad_request(why));
    }
    if headers.len() > MAX_HEADERS {
        return Err(Problem::headers_too_large(format!(
            "{} request headers; the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    Ok(Matched(routes::position(table, path)))
}

/// The headers every public response carries: no MIME sniffing, no referrer, no
/// framing, and HSTS when the gateway serves TLS.
pub fn security_headers(tls: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h
}
