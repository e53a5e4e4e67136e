//! Inventory: the product catalog and its stock.
//!
//! Data flows one way: [`api`] parses and validates, [`domain`] holds the rules,
//! [`store`] persists (SQLite by default, Redis in production).

pub mod api;
pub mod domain;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use kit::service::{Context, Service, StartError};
use serde::Deserialize;

/// The `[inventory]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InventoryConfig {
    /// Public listener (`FLOTILLA_INVENTORY__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_INVENTORY__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_INVENTORY__STORE`): `sqlite://…` (default
    /// `<data dir>/inventory/inventory.db`) or `redis://…`.
    pub store: Option<String>,
    /// Key prefix in Redis (`FLOTILLA_INVENTORY__REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Seed the demo catalog if this store was never seeded (`FLOTILLA_INVENTORY__SEED`).
    pub seed: bool,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            redis_prefix: "flotilla:inventory:".to_owned(),
            seed: false,
        }
    }
}

/// Runs inventory until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store, seeds it if asked, and binds the listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: InventoryConfig = ctx.config.section("inventory")?;
    let url = cfg.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            ctx.common
                .data_dir
                .join("inventory")
                .join("inventory.db")
                .display()
        )
    });
    let store = store::open(&url, &ctx.setting("store"), &cfg.redis_prefix).await?;
    if cfg.seed {
        let added = store
            .seed_once(domain::demo_catalog())
            .await
            .map_err(|e| StartError::Other(e.to_string()))?;
        if added > 0 {
            tracing::info!(products = added, "seeded the demo catalog");
        }
    }
    let ready = store.clone();
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen).await?;
    Ok(service
        .router(api::router(api::AppState { store }))
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}
