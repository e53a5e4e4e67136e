//! CORS from configuration: the origins allowed to call the API from a browser (none by
//! default, so no CORS headers at all), answered preflights included.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
pub use tower_http::cors::CorsLayer;
use tower_http::cors::{AllowOrigin, ExposeHeaders};

/// The `[gateway.cors]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins allowed (`https://shop.example`); `"*"` allows any. Empty: CORS is off.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight allows.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight allows.
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    pub exposed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "kit::config::duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: s(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
            allowed_headers: s(&[
                "authorization",
                "content-type",
                "idempotency-key",
                "x-request-id",
            ]),
            exposed_headers: s(&[
                "retry-after",
                "ratelimit",
                "ratelimit-policy",
                "x-request-id",
                "www-authenticate",
            ]),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    /// The layer, or `None` when no origin is allowed; `Err` names the bad value.
    pub fn layer(&self) -> Result<Option<CorsLayer>, String> {
        if self.allowed_origins.is_empty() {
            return Ok(None);
        }
        let origin = if self.allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let origins = self
                .allowed_origins
                .iter()
                .map(|o| {
                    let ok = (o.starts_with("https://") || o.starts_with("http://"))
                        && !o.ends_with('/');
                    ok.then(|| HeaderValue::from_str(o).ok())
                        .flatten()
                        .ok_or_else(|| {
                            format!(
                                "allowed_origins: {o:?} is not an origin like https://shop.example"
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(origins)
        };
        let methods = self
            .allowed_methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes()).map_err(|_| format!("allowed_methods: {m:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names = |list: &[String], what: &str| {
            list.iter()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("{what}: {h:?}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods(methods)
                .allow_headers(names(&self.allowed_headers, "allowed_headers")?)
                .expose_headers(ExposeHeaders::list(names(
                    &self.exposed_headers,
                    "exposed_headers",
                )?))
                .max_age(self.max_age),
        ))
    }
}
