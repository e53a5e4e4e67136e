//! The route table: path prefix → service, with per-route timeout, body limit, access
//! rule (public, authenticated, a scope or a role — optionally per method), rate-limit
//! quota and body format.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;

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

/// Whether a route needs a verified caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Anyone may call; a valid token, when sent, still identifies the caller.
    Public,
    /// A valid access token is required (the default: routes are closed unless opened).
    #[default]
    Authenticated,
}

/// Who may call one method of a route (`methods.GET = { auth = "public" }`). An entry
/// replaces the route-level rule for its method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MethodAccess {
    /// Public or authenticated; a `scope` or `role` implies authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// A scope the token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A role the token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The rule that applies to one request: what [`RouteConfig::access`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    /// No token needed.
    pub public: bool,
    /// The scope required, if any.
    pub scope: Option<&'a str>,
    /// The role required, if any.
    pub role: Option<&'a str>,
}

/// A GCRA quota: a sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Requests per second, sustained (fractions allowed: `0.5` is one every 2 s).
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Eq for Quota {}

impl Quota {
    /// Checks the values (`at` names the setting).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0 && self.per_second <= 1e9) {
            return Err(format!("{at}: per_second must be positive"));
        }
        if self.burst == 0 {
            return Err(format!("{at}: burst must be at least 1"));
        }
        Ok(())
    }
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
    /// `public` or `authenticated` (the default).
    #[serde(default)]
    pub auth: Auth,
    /// A scope every request must carry (implies authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A role every request must carry (implies authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Per-method rules (`GET`, `POST`…), each replacing the route-level rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, MethodAccess>,
    /// This route's own quota per client (`rate_limit = { per_second, burst }`);
    /// without one, the gateway's default quota applies, shared across such routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Quota>,
    /// Whether bodies are JSON: `POST`/`PUT`/`PATCH` bodies must say
    /// `application/json` (`415` otherwise) and nest at most 32 deep (default true).
    #[serde(default = "yes")]
    pub json: bool,
}

fn yes() -> bool {
    true
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
            auth: Auth::Authenticated,
            scope: None,
            role: None,
            methods: BTreeMap::new(),
            rate_limit: None,
            json: true,
        }
    }

    /// The same route, open to anyone.
    pub fn public(mut self) -> Self {
        self.auth = Auth::Public;
        self
    }

    /// The same route, requiring `scope`.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_owned());
        self
    }

    /// The same route, requiring `role`.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// The same route with its own rule for `method`.
    pub fn method(mut self, method: &str, access: MethodAccess) -> Self {
        self.methods.insert(method.to_ascii_uppercase(), access);
        self
    }

    /// The same route with its own quota.
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate_limit = Some(Quota { per_second, burst });
        self
    }

    /// The rule for a request with `method`: the method's own entry if there is one
    /// (`HEAD` falls back to `GET`'s), the route-level rule otherwise.
    pub fn access(&self, method: &Method) -> Access<'_> {
        let entry = self.methods.get(method.as_str()).or_else(|| {
            (method == Method::HEAD)
                .then(|| self.methods.get("GET"))
                .flatten()
        });
        match entry {
            Some(m) => Access {
                public: m.auth == Some(Auth::Public),
                scope: m.scope.as_deref(),
                role: m.role.as_deref(),
            },
            None => Access {
                public: self.auth == Auth::Public,
                scope: self.scope.as_deref(),
                role: self.role.as_deref(),
            },
        }
    }
}

impl MethodAccess {
    /// Anyone may call.
    pub fn public() -> Self {
        Self {
            auth: Some(Auth::Public),
            ..Self::default()
        }
    }

    /// Needs `scope`.
    pub fn scope(scope: &str) -> Self {
        Self {
            scope: Some(scope.to_owned()),
            ..Self::default()
        }
    }

    /// Needs `role`.
    pub fn role(role: &str) -> Self {
        Self {
            role: Some(role.to_owned()),
            ..Self::default()
        }
    }
}

/// The routes `flotilla up` serves by default. Scopes and roles follow the tokens `auth`
/// issues: customers carry `orders:read orders:write users:read users:write
/// payments:read notifications:read` and role `customer`; admins also `admin`.
pub fn default_routes() -> Vec<RouteConfig> {
    vec![
        // Anyone may sign up, log in and refresh; a tighter quota slows guessing.
        RouteConfig::new("/api/auth", "auth")
            .public()
            .rate_limit(5.0, 20),
        RouteConfig::new("/.well-known/jwks.json", "auth").public(),
        RouteConfig {
            // The catalog changes rarely: a recent copy beats an error while inventory
            // is down.
            stale_if_error: Some(Duration::from_secs(300)),
            ..RouteConfig::new("/api/products", "inventory")
                .role("admin")
                .method("GET", MethodAccess::public())
        },
        RouteConfig::new("/api/payments", "payments").scope("payments:read"),
        RouteConfig::new("/api/orders", "orders")
            .scope("orders:write")
            .method("GET", MethodAccess::scope("orders:read")),
        RouteConfig::new("/api/users", "users")
            .scope("users:write")
            .method("GET", MethodAccess::scope("users:read")),
        RouteConfig::new("/api/notifications", "notifications").scope("notifications:read"),
        RouteConfig::new("/api/analytics", "analytics").role("admin"),
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
        if r.auth == Auth::Public && (r.scope.is_some() || r.role.is_some()) {
            return Err(format!(
                "{at}: a public route cannot require a scope or role"
            ));
        }
        for (method, m) in &r.methods {
            if Method::from_bytes(method.as_bytes()).is_err()
                || method.to_ascii_uppercase() != *method
            {
                return Err(format!(
                    "{at}: methods.{method} is not an upper-case HTTP method"
                ));
            }
            if m.auth == Some(Auth::Public) && (m.scope.is_some() || m.role.is_some()) {
                return Err(format!(
                    "{at}: methods.{method} is public and cannot require a scope or role"
                ));
            }
        }
        if let Some(q) = &r.rate_limit {
            q.validate(&format!("{at}.rate_limit"))?;
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

/// The index of the longest route whose prefix matches `path`.
pub fn position<T>(routes: &[(RouteConfig, T)], path: &str) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| matches(&r.prefix, path))
        .max_by_key(|(_, (r, _))| r.prefix.len())
        .map(|(i, _)| i)
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
        let open_admin = RouteConfig::new("/x", "x").public().role("admin");
        assert!(validate(&[open_admin]).unwrap_err().contains("public"));
        let lower = RouteConfig::new("/x", "x").method("get", MethodAccess::public());
        assert!(validate(&[lower]).is_ok(), "stored upper-case");
        let mut odd = RouteConfig::new("/x", "x");
        odd.methods.insert("get".into(), MethodAccess::public());
        assert!(validate(&[odd]).is_err());
        let zero = RouteConfig::new("/x", "x").rate_limit(0.0, 1);
        assert!(validate(&[zero]).unwrap_err().contains("rate_limit"));
    }

    #[test]
    fn access_rules_per_method() {
        let routes = default_routes();
        let rule = |prefix: &str, method: Method| {
            let r = routes.iter().find(|r| r.prefix == prefix).unwrap();
            let a = r.access(&method);
            (
                a.public,
                a.scope.map(str::to_owned),
                a.role.map(str::to_owned),
            )
        };
        assert_eq!(rule("/api/products", Method::GET), (true, None, None));
        assert_eq!(rule("/api/products", Method::HEAD), (true, None, None));
        assert_eq!(
            rule("/api/products", Method::POST),
            (false, None, Some("admin".into()))
        );
        assert_eq!(
            rule("/api/products", Method::PUT),
            (false, None, Some("admin".into()))
        );
        assert_eq!(
            rule("/api/orders", Method::GET),
            (false, Some("orders:read".into()), None)
        );
        assert_eq!(
            rule("/api/orders", Method::POST),
            (false, Some("orders:write".into()), None)
        );
        assert_eq!(
            rule("/api/users", Method::GET),
            (false, Some("users:read".into()), None)
        );
        assert_eq!(rule("/api/auth", Method::POST), (true, None, None));
        assert_eq!(
            rule("/api/notifications", Method::GET),
            (false, Some("notifications:read".into()), None)
        );
        assert_eq!(
            rule("/api/analytics", Method::GET),
            (false, None, Some("admin".into()))
        );
        // Closed unless opened.
        let plain = RouteConfig::new("/x", "x");
        assert!(!plain.access(&Method::GET).public);
        let parsed: RouteConfig = serde_json::from_value(serde_json::json!({
            "prefix": "/x", "service": "x", "auth": "public",
            "methods": {"POST": {"role": "admin"}},
            "rate_limit": {"per_second": 2, "burst": 5},
        }))
        .unwrap();
        assert!(parsed.access(&Method::GET).public);
        assert_eq!(parsed.access(&Method::POST).role, Some("admin"));
        assert_eq!(parsed.rate_limit.unwrap().burst, 5);
    }
}
