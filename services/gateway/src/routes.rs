//! The route table: path prefix → service, with per-route timeout and body limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the gateway talks to a route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (multiplexed on few connections).
    H2c,
}

/// One route, as configured (`[[gateway.routes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// Path prefix, matched on whole segments (`/api/products` matches
    /// `/api/products/X` but not `/api/productsX`).
    pub prefix: String,
    /// The service that serves it.
    pub service: String,
    /// Time allowed for the upstream's answer to start.
    #[serde(with = "kit::config::duration", default = "default_timeout")]
    pub timeout: Duration,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Upstream protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Serve anonymous `GET`s from the last good answer, up to this old, while the
    /// service fails (RFC 5861 "stale-if-error"; off when absent).
    #[serde(default, with = "kit::config::optional_duration")]
    pub stale_if_error: Option<Duration>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_limit() -> usize {
    256 * 1024
}

impl RouteConfig {
    /// A route with default timeout, body limit and protocol.
    pub fn new(prefix: &str, service: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            service: service.to_owned(),
            timeout: default_timeout(),
            body_limit: default_body_limit(),
            protocol: Protocol::Http1,
            stale_if_error: None,
        }
    }
}

/// The routes `flotilla up` serves by default.
pub fn default_routes() -> Vec<RouteConfig> {
    vec![
        RouteConfig {
            // The catalog changes rarely: a recent copy beats an error while inventory
            // is down.
            stale_if_error: Some(Duration::from_secs(300)),
            ..RouteConfig::new("/api/products", "inventory")
        },
        RouteConfig::new("/api/payments", "payments"),
        RouteConfig::new("/api/orders", "orders"),
    ]
}

/// Checks a route table; the error names the offending route.
pub fn validate(routes: &[RouteConfig]) -> Result<(), String> {
    for (i, r) in routes.iter().enumerate() {
        let at = format!("gateway.routes[{i}] ({})", r.prefix);
        if !r.prefix.starts_with('/') || (r.prefix.len() > 1 && r.prefix.ends_with('/')) {
            return Err(format!(
                "{at}: prefix must start with '/' and not end with one"
            ));
        }
        if is_internal(&r.prefix) {
            return Err(format!(
                "{at}: admin, metrics and health paths are never routed"
            ));
        }
        if r.service.is_empty() {
            return Err(format!("{at}: service is empty"));
        }
        if r.timeout.is_zero() || r.body_limit == 0 {
            return Err(format!("{at}: timeout and body_limit must be positive"));
        }
    }
    Ok(())
}

/// Whether `prefix` matches `path` on a segment boundary.
fn matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// The longest route whose prefix matches `path`.
pub fn find<'a, T>(routes: &'a [(RouteConfig, T)], path: &str) -> Option<&'a (RouteConfig, T)> {
    routes
        .iter()
        .filter(|(r, _)| matches(&r.prefix, path))
        .max_by_key(|(r, _)| r.prefix.len())
}

/// Paths the gateway never forwards: admin, metrics and health endpoints.
pub fn is_internal(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "admin" | "metrics" | "healthz" | "readyz" | "livez")
}

/// Why a path is refused before routing (`None`: it is fine). Dot segments, empty
/// segments, and encoded slashes, backslashes, dots or NULs could make the upstream see
/// another path than the one routed.
pub fn malformed(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the path must start with '/'");
    }
    let lower = path.to_ascii_lowercase();
    if ["%2f", "%5c", "%00", "%2e"]
        .iter()
        .any(|e| lower.contains(e))
        || path.contains('\\')
    {
        return Some("encoded '/', '\\', '.' or NUL in the path");
    }
    if path.len() > 1
        && path[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Some("empty or dot segments in the path");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<(RouteConfig, ())> {
        ["/api/products", "/api/orders", "/api/orders/special", "/"]
            .iter()
            .map(|p| (RouteConfig::new(p, p), ()))
            .collect()
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        let found = |p: &str| find(&t, p).map(|(r, _)| r.prefix.as_str());
        assert_eq!(found("/api/products"), Some("/api/products"));
        assert_eq!(found("/api/products/FLT-1"), Some("/api/products"));
        assert_eq!(found("/api/productsX"), Some("/"));
        assert_eq!(found("/api/orders/special/1"), Some("/api/orders/special"));
        assert_eq!(found("/api/orders/1"), Some("/api/orders"));
        let no_root: Vec<_> = t.into_iter().filter(|(r, _)| r.prefix != "/").collect();
        assert!(find(&no_root, "/other").is_none());
    }

    #[test]
    fn internal_paths() {
        for p in ["/admin", "/admin/routes", "/metrics", "/healthz", "/readyz"] {
            assert!(is_internal(p), "{p}");
        }
        assert!(!is_internal("/api/admin"));
        assert!(!is_internal("/administrator"));
    }

    #[test]
    fn malformed_paths() {
        for p in [
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a\\b",
            "/x%00",
            "/a/..",
        ] {
            assert!(malformed(p).is_some(), "{p}");
        }
        for p in ["/", "/api/products", "/api/products/FLT-1", "/a.b/c"] {
            assert!(malformed(p).is_none(), "{p}");
        }
    }

    #[test]
    fn validation_names_the_route() {
        let mut r = RouteConfig::new("/admin", "x");
        assert!(
            validate(&[r.clone()])
                .unwrap_err()
                .contains("gateway.routes[0]")
        );
        r.prefix = "api".into();
        assert!(validate(&[r]).is_err());
        assert!(validate(&default_routes()).is_ok());
    }
}
