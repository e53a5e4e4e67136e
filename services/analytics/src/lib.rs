//! Analytics: projections of every event on the bus.
//!
//! It consumes every subject as a stream consumer group from the beginning
//! ([`events`]), adds each event to per-minute counters ([`domain`]) in its own store
//! together with the event's inbox entry ([`store`]: SQLite by default, PostgreSQL in
//! production), and serves `GET /api/analytics/summary?window=` to administrators
//! ([`api`]). [`rebuild`] (`flotilla analytics rebuild`) drops the projections and
//! replays the stream from the beginning into new ones.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod domain;
pub mod events;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{Config, ConfigError};
use kit::service::{Context, Service, StartError};
use kit_events::EventBus;
use serde::Deserialize;

use crate::events::{Projector, ProjectorConfig};

/// The `[analytics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AnalyticsConfig {
    /// Public listener (`FLOTILLA_ANALYTICS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_ANALYTICS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_ANALYTICS__STORE`): `sqlite://…` (default
    /// `<data dir>/analytics/analytics.db`) or `postgres://user:pass@host:5432/analytics`.
    pub store: Option<String>,
    /// Prefix of the consumer groups, one per generation
    /// (`FLOTILLA_ANALYTICS__GROUP_PREFIX`; `analytics` → `analytics-g1`).
    pub group_prefix: String,
    /// Ack timeout of the group (`FLOTILLA_ANALYTICS__ACK_TIMEOUT`).
    #[serde(with = "kit::config::duration")]
    pub ack_timeout: Duration,
    /// Deliveries before dead-lettering (`FLOTILLA_ANALYTICS__MAX_DELIVERIES`).
    pub max_deliveries: u32,
    /// Unacknowledged deliveries per consumer (`FLOTILLA_ANALYTICS__MAX_IN_FLIGHT`).
    pub max_in_flight: u32,
    /// How soon a rebuild is noticed while no event arrives
    /// (`FLOTILLA_ANALYTICS__GENERATION_CHECK`).
    #[serde(with = "kit::config::duration")]
    pub generation_check: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            group_prefix: "analytics".to_owned(),
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 10,
            max_in_flight: 64,
            generation_check: Duration::from_secs(1),
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn section(config: &Config) -> Result<AnalyticsConfig, ConfigError> {
    let cfg: AnalyticsConfig = config.section("analytics")?;
    // Room for `-g<generation>` within the 64 characters of a group name.
    if cfg.group_prefix.len() > 40 || !kit_events::valid_group_name(&cfg.group_prefix) {
        return Err(ConfigError::Setting {
            setting: kit::config::env_name(Some("analytics"), "group_prefix"),
            message: "letters, digits, `-` or `_`, 1-40 characters".to_owned(),
        });
    }
    if cfg.generation_check.is_zero() {
        return Err(ConfigError::Setting {
            setting: kit::config::env_name(Some("analytics"), "generation_check"),
            message: "must be positive".to_owned(),
        });
    }
    Ok(cfg)
}

async fn open_store(
    config: &Config,
    cfg: &AnalyticsConfig,
) -> Result<Arc<dyn store::AnalyticsStore>, StartError> {
    let url = match &cfg.store {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            config
                .common()?
                .data_dir
                .join("analytics")
                .join("analytics.db")
                .display()
        ),
    };
    Ok(store::open(&url, &kit::config::env_name(Some("analytics"), "store")).await?)
}

/// Drops the projections of the store `config` names and starts a new generation:
/// running instances switch to the consumer group `<prefix>-g<generation>`, which
/// replays the stream from the beginning. Returns that group's name.
pub async fn rebuild(config: &Config) -> Result<String, StartError> {
    let cfg = section(config)?;
    let store = open_store(config, &cfg).await?;
    let generation = store
        .rebuild()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    Ok(events::group_name(&cfg.group_prefix, generation))
}

/// Runs analytics until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store, starts projecting from the bus `FLOTILLA_BUS` names and binds the
/// listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let bus = kit_events::for_producer(&kit_events::url_from_config(&ctx.config), "FLOTILLA_BUS")
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    build_with_bus(ctx, bus).await
}

/// [`build`] with a given bus (tests run several buses in one process).
pub async fn build_with_bus(ctx: Context, bus: Arc<dyn EventBus>) -> Result<Service, StartError> {
    let cfg = section(&ctx.config)?;
    let store = open_store(&ctx.config, &cfg).await?;
    Projector::new(
        store.clone(),
        ProjectorConfig {
            group_prefix: cfg.group_prefix.clone(),
            ack_timeout: cfg.ack_timeout,
            max_deliveries: cfg.max_deliveries,
            max_in_flight: cfg.max_in_flight,
            generation_check: cfg.generation_check,
        },
    )
    .spawn(bus);
    let ready = store.clone();
    let admin = admin::router(store.clone(), cfg.group_prefix.clone());
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .router(api::router(store))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>().merge(admin))
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}
