//! Users: profiles of registered users.
//!
//! Auth creates each profile over the internal gRPC API ([`grpc`], CreateProfile,
//! idempotent by user id) when an account registers; clients read and rename their own
//! through the public API ([`api`]), and administrators read anyone's. The caller's
//! identity always comes from the gateway, never from a body. Profiles live in SQLite
//! by default or PostgreSQL in production ([`store`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod domain;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use kit::service::{Context, Service, StartError};
use serde::Deserialize;

/// The `[users]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UsersConfig {
    /// Public listener (`FLOTILLA_USERS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_USERS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Internal gRPC listener (`FLOTILLA_USERS__GRPC_LISTEN`), advertised as
    /// `metadata.grpc_addr`.
    pub grpc_listen: SocketAddr,
    /// Store URL (`FLOTILLA_USERS__STORE`): `sqlite://…` (default
    /// `<data dir>/users/users.db`) or `postgres://user:pass@host:5432/users`.
    pub store: Option<String>,
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
        }
    }
}

/// Runs users until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store and binds the public, admin and gRPC listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: UsersConfig = ctx.config.section("users")?;
    let url = cfg.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            ctx.common.data_dir.join("users").join("users.db").display()
        )
    });
    let store = store::open(&url, &ctx.setting("store")).await?;
    let grpc_routes = proto::grpc_extras(
        tonic::service::Routes::new(grpc::UsersGrpc::new(store.clone())),
        &[grpc::SERVICE_NAME],
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))?;
    let ready = store.clone();
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .grpc(cfg.grpc_listen, grpc_routes.into_axum_router())
        .await?
        .router(api::router(store))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>())
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}
