//! The Flotilla API gateway: the single public entry point.
//!
//! Routes by path prefix from config, finds instances through discovery (server-side
//! discovery, power of two choices), protects each service with a bulkhead, a circuit
//! breaker and budgeted retries (`[resilience]` config), forwards over pooled keep-alive
//! connections (HTTP/1.1 or h2c) with the route's deadline, and answers upstream
//! failures as problem documents: `503` with `Retry-After` when no instance is healthy,
//! none accepts a connection or the breaker is open (at once, without touching the
//! network), `502` when the upstream fails while answering, `504` when it times out. It never forwards admin, metrics or health
//! paths.
//!
//! At the edge ([`edge`]) it verifies access tokens (EdDSA JWTs against the JWKS of
//! `auth`), applies each route's rule (public, authenticated, scope, role — per method
//! if need be), rate-limits per client and per route (GCRA, in memory or on Redis),
//! checks JSON bodies, answers CORS, adds security headers to every response, and
//! serves TLS when a certificate is configured.

pub mod aggregate;
pub mod edge;
pub mod openapi;
pub mod proxy;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{any, get};
use kit::config::ConfigError;
use kit::discovery::Discovery;
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

use std::collections::HashMap;

use edge::cors::CorsConfig;
use edge::rate_limit::{RateLimitConfig, RateLimiter, RedisStore};
use kit::resilience::{Policy, ResilienceConfig};
use kit::security::jwt::{JwksCache, JwtConfig, Verifier};
use proxy::{Gateway, Upstream};
use routes::RouteConfig;

/// The `[gateway]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Public listener (`FLOTILLA_GATEWAY__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_GATEWAY__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// The route table (`[[gateway.routes]]`).
    pub routes: Vec<RouteConfig>,
    /// Access-token verification (`[gateway.jwt]`, `FLOTILLA_GATEWAY__JWT__JWKS`…).
    pub jwt: JwtConfig,
    /// Default quota and housekeeping of rate limits (`[gateway.rate_limit]`).
    pub rate_limit: RateLimitConfig,
    /// Where rate-limit buckets live: `memory` (this instance) or `redis://host:port/db`
    /// (shared by every instance) (`FLOTILLA_GATEWAY__RATE_LIMIT_STORE`).
    pub rate_limit_store: String,
    /// Browser origins allowed to call the API (`[gateway.cors]`).
    pub cors: CorsConfig,
    /// PEM certificate chain for TLS on the public listener (`FLOTILLA_GATEWAY__TLS_CERT`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for it (`FLOTILLA_GATEWAY__TLS_KEY`).
    pub tls_key: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            routes: routes::default_routes(),
            jwt: JwtConfig::default(),
            rate_limit: RateLimitConfig::default(),
            rate_limit_store: "memory".to_owned(),
            cors: CorsConfig::default(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn setting(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        setting: format!("FLOTILLA_GATEWAY__{}", key.to_uppercase()),
        message: message.into(),
    }
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Builds the route table, starts following each routed service, binds the listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: GatewayConfig = ctx.config.section("gateway")?;
    routes::validate(&cfg.routes).map_err(|message| ConfigError::Setting {
        setting: "FLOTILLA_GATEWAY__ROUTES".to_owned(),
        message,
    })?;
    cfg.jwt.validate("FLOTILLA_GATEWAY__JWT")?;
    cfg.rate_limit
        .validate()
        .map_err(|m| setting("rate_limit", m))?;
    let cors = cfg.cors.layer().map_err(|m| setting("cors", m))?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(kit::security::tls::server_config(
            cert,
            key,
            "FLOTILLA_GATEWAY__TLS_CERT",
            "FLOTILLA_GATEWAY__TLS_KEY",
        )?),
        (None, None) => None,
        _ => {
            return Err(setting(
                "tls_cert",
                "set both FLOTILLA_GATEWAY__TLS_CERT and FLOTILLA_GATEWAY__TLS_KEY, or neither",
            )
            .into());
        }
    };
    let redis = match cfg.rate_limit_store.as_str() {
        "memory" | "" => None,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(RedisStore::new(
                kit::store::redis::connect(url, "FLOTILLA_GATEWAY__RATE_LIMIT_STORE").await?,
            ))
        }
        url => {
            return Err(ConfigError::UnknownScheme {
                setting: "FLOTILLA_GATEWAY__RATE_LIMIT_STORE".to_owned(),
                url: kit::store::redact(url),
                expected: "memory, redis://",
            }
            .into());
        }
    };
    let resilience: ResilienceConfig = ctx.config.section("resilience")?;
    let discovery = Discovery::from_url(&ctx.common.discovery)?;
    let keys = Arc::new(
        JwksCache::from_config(&cfg.jwt, &discovery).map_err(|m| setting("jwt__jwks", m))?,
    );
    keys.prefetch();
    let mut policies: HashMap<String, Policy> = HashMap::new();
    let table = cfg
        .routes
        .iter()
        .map(|r| {
            let policy = policies
                .entry(r.service.clone())
                .or_insert_with(|| Policy::new(&r.service, &resilience))
                .clone();
            let upstream = Upstream::new(r.clone(), discovery.endpoints(&r.service), policy);
            (r.clone(), upstream)
        })
        .collect();
    let gateway = Arc::new(Gateway::new(table).with_tls(tls.is_some()));
    let limiter = cfg
        .rate_limit
        .enabled
        .then(|| RateLimiter::new(&cfg.rate_limit, &cfg.routes, redis));
    let edge = Arc::new(edge::Edge {
        gateway: gateway.clone(),
        verifier: Verifier::new(cfg.jwt.clone(), keys),
        limiter,
    });
    let body_limit = cfg.routes.iter().map(|r| r.body_limit).max().unwrap_or(0);
    let mut service = Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .edge()
        .response_headers(edge::security_headers(tls.is_some()));
    if let Some(tls) = tls {
        service = service.tls(tls);
    }
    let public = router(gateway.clone())
        .merge(openapi::router(gateway.clone()))
        .merge(aggregate::router(gateway.clone()));
    Ok(service
        .body_limit(body_limit)
        .router(edge::stack(public, edge, cors))
        .admin_routes(admin_router(gateway)))
}

/// The public router: every path goes to [`proxy::forward`].
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", any(proxy::forward))
        .route("/{*path}", any(proxy::forward))
        .with_state(gateway)
}

/// `GET /admin/routes`: the table with each route's live instances.
pub fn admin_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/admin/routes", get(admin_routes))
        .with_state(gateway)
}

async fn admin_routes(State(gw): State<Arc<Gateway>>) -> axum::Json<serde_json::Value> {
    let routes: Vec<_> = gw
        .routes
        .iter()
        .map(|(r, upstream)| {
            let instances: Vec<_> = upstream
                .endpoints
                .current()
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "id": e.instance.id,
                        "addr": e.instance.addr,
                        "in_flight": e.in_flight(),
                    })
                })
                .collect();
            serde_json::json!({
                "prefix": r.prefix,
                "service": r.service,
                "timeout_ms": r.timeout.as_millis() as u64,
                "body_limit": r.body_limit,
                "protocol": r.protocol,
                "auth": r.auth,
                "scope": r.scope,
                "role": r.role,
                "methods": r.methods,
                "rate_limit": r.rate_limit,
                "json": r.json,
                "breaker": upstream.policy.breaker.snapshot(),
                "instances": instances,
            })
        })
        .collect();
    axum::Json(serde_json::Value::Array(routes))
}
