//! Orders: order documents and the order saga, orchestrated with the kit's saga engine.
//!
//! Data flows one way: [`api`] parses, authorizes and prices (from inventory, never from
//! the client); [`domain`] holds the rules and the saga's definition; [`store`] persists
//! the order, its saga state and its outbox events in one transaction per transition;
//! [`saga`] runs the steps over inventory's and payments' gRPC APIs, whose connections
//! all come from [`clients`]. The outbox relay publishes `orders.created`,
//! `orders.confirmed` and `orders.cancelled` to the bus. At start every saga in flight
//! is resumed.

pub mod admin;
pub mod api;
pub mod clients;
pub mod domain;
pub mod saga;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::discovery::Discovery;
use kit::service::{Context, Service, StartError};
use kit_events::outbox::{Relay, RelayConfig};
use serde::Deserialize;

/// The `[orders]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrdersConfig {
    /// Public listener (`FLOTILLA_ORDERS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_ORDERS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_ORDERS__STORE`): `sqlite://…` (default
    /// `<data dir>/orders/orders.db`) or `postgres://user:pass@host:5432/orders`.
    pub store: Option<String>,
    /// Event bus URL (`FLOTILLA_ORDERS__BUS`): `bus://host:port` or `nats://host:port`;
    /// unset, the system-wide `FLOTILLA_BUS`, else the embedded bus's default address.
    pub bus: Option<String>,
    /// Time allowed for one call to inventory or payments (`FLOTILLA_ORDERS__CALL_TIMEOUT`).
    #[serde(with = "kit::config::duration")]
    pub call_timeout: Duration,
    /// How long a step before confirmation retries retryable errors before the order is
    /// cancelled (`FLOTILLA_ORDERS__STEP_DEADLINE`).
    #[serde(with = "kit::config::duration")]
    pub step_deadline: Duration,
    /// First saga retry delay, doubling (`FLOTILLA_ORDERS__MIN_BACKOFF`).
    #[serde(with = "kit::config::duration")]
    pub min_backoff: Duration,
    /// Longest saga retry delay (`FLOTILLA_ORDERS__MAX_BACKOFF`).
    #[serde(with = "kit::config::duration")]
    pub max_backoff: Duration,
    /// How long the first answer to an `Idempotency-Key` is kept
    /// (`FLOTILLA_ORDERS__IDEMPOTENCY_TTL`, at least 24 h).
    #[serde(with = "kit::config::duration")]
    pub idempotency_ttl: Duration,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            bus: None,
            call_timeout: Duration::from_secs(5),
            step_deadline: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            idempotency_ttl: Duration::from_secs(48 * 3600),
        }
    }
}

/// Runs orders until SIGINT/SIGTERM, then lets the sagas it drives reach their end
/// (within the shutdown grace): they hold card details only in this process's memory,
/// so an instance that is replaced finishes its sagas instead of leaving them to
/// another instance that could only cancel them.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    let grace = ctx.common.shutdown_grace;
    let (service, engine) = assemble(ctx).await?;
    service.run_until_stopped().await?;
    if !engine.settle(grace).await {
        tracing::warn!(grace = ?grace, "sagas still in flight at exit; another instance resumes them");
    }
    Ok(())
}

/// Opens the store, starts the outbox relay, resumes the sagas in flight, binds the
/// listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    Ok(assemble(ctx).await?.0)
}

/// [`build`], keeping a handle on the saga engine.
async fn assemble(ctx: Context) -> Result<(Service, ::saga::Engine), StartError> {
    let cfg: OrdersConfig = ctx.config.section("orders")?;
    if cfg.idempotency_ttl < Duration::from_secs(24 * 3600) {
        return Err(kit::config::ConfigError::Setting {
            setting: ctx.setting("idempotency_ttl"),
            message: "must be at least 24h".into(),
        }
        .into());
    }
    let url = cfg.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            ctx.common
                .data_dir
                .join("orders")
                .join("orders.db")
                .display()
        )
    });
    let mut store = store::OrderStore::open(&url, &ctx.setting("store")).await?;

    let bus_url = cfg
        .bus
        .clone()
        .unwrap_or_else(|| kit_events::url_from_config(&ctx.config));
    let bus: Arc<dyn kit_events::EventBus> = if kit::store::scheme(&bus_url) == "bus" {
        // The embedded bus may start after orders: the relay retries until it answers.
        Arc::new(
            kit_events::embedded::EmbeddedBus::new(&bus_url, &ctx.setting("bus"))
                .map_err(|e| StartError::Other(e.to_string()))?,
        )
    } else {
        kit_events::connect(&bus_url, &ctx.setting("bus"))
            .await
            .map_err(|e| StartError::Other(e.to_string()))?
    };
    let relay = match store.pool() {
        store::Pool::Sqlite(pool) => Relay::new(pool, bus, RelayConfig::default()),
        store::Pool::Postgres(pool) => Relay::new(pool, bus, RelayConfig::default()),
    };
    store.set_relay_notifier(relay.notifier());
    relay.spawn();

    let discovery = Discovery::from_url(&ctx.common.discovery)?;
    let resilience: kit::resilience::ResilienceConfig = ctx.config.section("resilience")?;
    let clients = clients::Clients::new(discovery, cfg.call_timeout, &resilience);
    let cards = Arc::new(saga::CardVault::default());
    let engine = ::saga::Engine::new(
        domain::saga_definition(cfg.step_deadline),
        Arc::new(saga::OrderSteps::new(clients.clone(), cards.clone())),
        Arc::new(store.clone()),
        ::saga::EngineConfig {
            min_backoff: cfg.min_backoff,
            max_backoff: cfg.max_backoff,
            // Another instance's engine goes quiet for at most one retry delay plus
            // one call; silence beyond that means it is gone.
            watch: cfg
                .max_backoff
                .saturating_add(cfg.call_timeout)
                .saturating_add(std::time::Duration::from_secs(1)),
            ..::saga::EngineConfig::default()
        },
    );
    let resumed = engine
        .resume_all()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    if resumed > 0 {
        tracing::info!(sagas = resumed, "resumed the sagas in flight");
    }
    tokio::spawn(purge_answers(store.clone(), cfg.idempotency_ttl));

    let ready = store.clone();
    let admin = admin::router(store.clone());
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .router(api::router(api::AppState {
            store,
            engine: engine.clone(),
            clients,
            cards,
        }))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>().merge(admin))
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        );
    Ok((service, engine))
}

/// Forgets idempotency answers older than `ttl`, hourly.
async fn purge_answers(store: store::OrderStore, ttl: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match store.purge_answers(ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "forgot old idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
    }
}
