//! The Flotilla API gateway: the single public entry point.
//!
//! Routes by path prefix from config, finds instances through discovery (server-side
//! discovery, power of two choices), protects each service with a bulkhead, a circuit
//! breaker and budgeted retries (`[resilience]` config), forwards over pooled keep-alive
//! connections (HTTP/1.1 or h2c) with the route's deadline, and answers upstream
//! failures as problem documents: `503` with `Retry-After` when no instance is healthy
//! or the breaker is open (at once, without touching the network), `502` when the
//! upstream fails, `504` when it times out. It never forwards admin, metrics or health
//! paths.

pub mod aggregate;
pub mod openapi;
pub mod proxy;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{any, get};
use kit::config::ConfigError;
use kit::discovery::Discovery;
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

use std::collections::HashMap;

use kit::resilience::{Policy, ResilienceConfig};
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            routes: routes::default_routes(),
        }
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
    let resilience: ResilienceConfig = ctx.config.section("resilience")?;
    let discovery = Discovery::from_url(&ctx.common.discovery)?;
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
    let gateway = Arc::new(Gateway::new(table));
    let body_limit = cfg.routes.iter().map(|r| r.body_limit).max().unwrap_or(0);
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen).await?;
    Ok(service
        .body_limit(body_limit)
        .router(
            router(gateway.clone())
                .merge(openapi::router(gateway.clone()))
                .merge(aggregate::router(gateway.clone())),
        )
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
                "breaker": upstream.policy.breaker.snapshot(),
                "instances": instances,
            })
        })
        .collect();
    axum::Json(serde_json::Value::Array(routes))
}
