//! Inventory: the product catalog, its stock, and reservations for orders in flight.
//!
//! Data flows one way: [`api`] (public REST) and [`grpc`] (internal, for the order saga)
//! parse and validate, [`domain`] holds the rules, [`store`] persists (SQLite by
//! default, Redis in production). A background sweeper expires reservations past their
//! TTL, returning their stock. Both stores write their `inventory.*` events to an outbox
//! in the same atomic change ([`events`]); the kit's relay publishes them.

pub mod admin;
pub mod api;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// Internal gRPC listener (`FLOTILLA_INVENTORY__GRPC_LISTEN`), advertised as
    /// `metadata.grpc_addr`.
    pub grpc_listen: SocketAddr,
    /// How long a reservation holds stock before it expires
    /// (`FLOTILLA_INVENTORY__RESERVATION_TTL`, e.g. `15m`).
    #[serde(with = "kit::config::duration")]
    pub reservation_ttl: Duration,
    /// How often expired reservations are swept (`FLOTILLA_INVENTORY__SWEEP_INTERVAL`).
    #[serde(with = "kit::config::duration")]
    pub sweep_interval: Duration,
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
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            reservation_ttl: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(1),
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

/// Opens the store, seeds it if asked, starts the reservation sweeper, and binds the
/// public, admin and gRPC listeners.
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
    tokio::spawn(sweep(store.clone(), cfg.sweep_interval));
    let (outbox, wake) = store.outbox();
    let bus = kit_events::for_producer(&kit_events::url_from_config(&ctx.config), "FLOTILLA_BUS")
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    let relay =
        kit_events::outbox::Relay::shared(outbox, bus, Default::default()).with_notifier(wake);
    tokio::spawn(purge_sent(relay.clone()));
    relay.spawn();
    let grpc_routes = proto::grpc_extras(
        tonic::service::Routes::new(grpc::InventoryGrpc::new(store.clone(), cfg.reservation_ttl)),
        &[grpc::SERVICE_NAME],
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))?;
    let ready = store.clone();
    let admin = admin::router(store.clone());
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .grpc(cfg.grpc_listen, grpc_routes.into_axum_router())
        .await?;
    Ok(service
        .router(api::router(api::AppState { store }))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>().merge(admin))
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}

/// How long published outbox rows are kept (well past the broker's duplicate window)
/// before [`purge_sent`] deletes them; on Redis they would otherwise hold memory forever.
const KEEP_SENT: Duration = Duration::from_secs(60 * 60);

/// Deletes outbox rows published more than [`KEEP_SENT`] ago, every few minutes.
async fn purge_sent(relay: kit_events::outbox::Relay) {
    let mut tick = tokio::time::interval(Duration::from_secs(5 * 60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match relay.purge_sent(KEEP_SENT).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "deleted published outbox rows"),
            Err(e) => tracing::warn!(error = %e, "purging published outbox rows failed"),
        }
    }
}

/// Expires reservations past their TTL every `interval`, for as long as the process runs.
async fn sweep(store: Arc<dyn store::CatalogStore>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store::expire_due(store.as_ref(), domain::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired reservations returned their stock"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired reservations failed"),
        }
    }
}
