//! Dashboard: the fleet's own OpenTelemetry collector and web UI.
//!
//! It receives traces and logs over OTLP/HTTP, keeps them in its own SQLite store with
//! retention by age and size, and serves a query API and a web UI ([`ui`]) over them,
//! the services' health and metrics, the orders sagas and the event bus.
#![forbid(unsafe_code)]

pub mod ui;

use std::net::SocketAddr;

use kit::config::{Config, ConfigError};
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

/// The `[dashboard]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    /// Public listener: the OTLP receiver, the API and the UI
    /// (`FLOTILLA_DASHBOARD__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_DASHBOARD__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8081).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
        }
    }
}

fn section(config: &Config) -> Result<DashboardConfig, ConfigError> {
    config.section("dashboard")
}

/// The public routes: the API and the UI.
pub fn router() -> axum::Router {
    axum::Router::new().merge(ui::router())
}

/// Runs the dashboard until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Binds the listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg = section(&ctx.config)?;
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .edge()
        .router(router()))
}
