//! The embedded Flotilla event bus: a small durable broker for one machine, started by
//! `flotilla up` at `127.0.0.1:8083`. Services reach it through
//! `kit_events::embedded` (`FLOTILLA_BUS=bus://127.0.0.1:8083`).
//!
//! The log is an append-only SQLite table (WAL); consumer groups keep a cursor and a
//! table of unacknowledged deliveries with their lease and attempt count, so acks,
//! nacks, redelivery after the ack timeout and dead-lettering all survive a restart.
//! Retention removes events by age and by total size. Consumers receive deliveries on
//! a streamed HTTP response that the broker feeds when the log changes — no polling.
//! On more than one machine, NATS JetStream takes this role.

pub mod api;
pub mod log;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::service::{Context, Service, StartError};
use serde::Deserialize;

use crate::log::Log;

/// The `[bus]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BusConfig {
    /// Public listener (`FLOTILLA_BUS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_BUS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// The log's database (`FLOTILLA_BUS__STORE`); default `sqlite://<data dir>/bus/bus.db`.
    pub store: Option<String>,
    /// Events older than this are removed (`FLOTILLA_BUS__MAX_AGE`).
    #[serde(with = "kit::config::duration")]
    pub max_age: Duration,
    /// Total event payload kept, oldest removed first (`FLOTILLA_BUS__MAX_BYTES`).
    pub max_bytes: i64,
    /// How often retention runs (`FLOTILLA_BUS__RETENTION_INTERVAL`).
    #[serde(with = "kit::config::duration")]
    pub retention_interval: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8083).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// The `[bus]` section. `FLOTILLA_BUS` (the URL every service connects to) shares its
/// name: when only the URL is set, the section is the defaults.
pub fn config(config: &kit::config::Config) -> Result<BusConfig, kit::config::ConfigError> {
    match config.section::<BusConfig>("bus") {
        Ok(c) => Ok(c),
        Err(e) => match config.section::<String>("bus") {
            Ok(_url) => Ok(BusConfig::default()),
            Err(_) => Err(e),
        },
    }
}

/// Runs the bus until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the log, binds the listeners and starts retention; the returned service is
/// ready to run.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg = config(&ctx.config)?;
    let url = cfg.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            ctx.common.data_dir.join("bus").join("bus.db").display()
        )
    });
    if kit::store::scheme(&url) != "sqlite" {
        return Err(kit::store::StoreError::UnknownScheme {
            setting: ctx.setting("store"),
            url: kit::store::redact(&url),
            expected: "sqlite://",
        }
        .into());
    }
    let pool = kit::store::sqlite::open(&url, &ctx.setting("store"), log::MIGRATIONS).await?;
    let log = Arc::new(Log::new(pool));
    spawn_retention(log.clone(), &cfg);
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen).await?;
    let ready = log.clone();
    Ok(service
        .body_limit(1024 * 1024)
        .readiness(
            "log",
            Arc::new(move || {
                let log = ready.clone();
                Box::pin(async move {
                    sqlx::query("SELECT 1")
                        .execute(log.pool())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            }),
        )
        .router(api::router(log)))
}

fn spawn_retention(log: Arc<Log>, cfg: &BusConfig) {
    let (max_age, max_bytes, every) = (cfg.max_age, cfg.max_bytes, cfg.retention_interval);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match log.enforce_retention(max_age, max_bytes).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "retention removed old events"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_url_does_not_hide_the_section() {
        let base = kit::config::Config::from_file(std::path::Path::new("/nonexistent.toml"));
        let with_url = base.clone().merged("bus", "nats://127.0.0.1:4222");
        assert_eq!(
            config(&with_url).unwrap().listen,
            BusConfig::default().listen
        );
        let with_section = base.merged("bus", serde_json::json!({"listen": "127.0.0.1:7777"}));
        assert_eq!(config(&with_section).unwrap().listen.port(), 7777);
    }
}
