//! Dashboard: the fleet's own OpenTelemetry collector and web UI.
//!
//! It receives traces and logs over OTLP/HTTP, protobuf or JSON ([`otlp`]), queues
//! them in front of one writer ([`ingest`]) that keeps them in its own SQLite store
//! ([`store`]: spans with a per-trace summary, logs) with retention by age and size
//! ([`retention`]), and serves a query API ([`api`]) and a web UI ([`ui`]) over them,
//! the services' health and RED metrics scraped from their admin listeners
//! ([`scrape`]), the orders sagas and the event bus ([`fleet`]).
//!
//! Nothing it receives makes it receive more: it refuses to export its own spans to
//! itself (`FLOTILLA_OTLP_ENDPOINT` naming its own listener), and `flotilla up` gives it
//! no endpoint while the services export to it.
#![forbid(unsafe_code)]

pub mod api;
pub mod fleet;
pub mod ingest;
pub mod otlp;
pub mod retention;
pub mod scrape;
pub mod store;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{Config, ConfigError, env_name};
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

use crate::ingest::Ingest;
use crate::store::TelemetryStore;

/// The `[dashboard]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    /// Public listener: the OTLP receiver, the API and the UI
    /// (`FLOTILLA_DASHBOARD__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_DASHBOARD__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_DASHBOARD__STORE`): `sqlite://…`, default
    /// `<data dir>/dashboard/dashboard.db`.
    pub store: Option<String>,
    /// Spans and logs older than this are deleted (`FLOTILLA_DASHBOARD__RETENTION_AGE`).
    #[serde(with = "kit::config::duration")]
    pub retention_age: Duration,
    /// The database is kept under this many bytes, oldest traces and logs deleted first
    /// (`FLOTILLA_DASHBOARD__RETENTION_SIZE`: bytes, or `256MiB`, `1GiB`…).
    #[serde(deserialize_with = "bytes::deserialize")]
    pub retention_size: u64,
    /// How often retention runs (`FLOTILLA_DASHBOARD__RETENTION_INTERVAL`).
    #[serde(with = "kit::config::duration")]
    pub retention_interval: Duration,
    /// Largest OTLP request body, compressed or not (`FLOTILLA_DASHBOARD__BODY_LIMIT`:
    /// bytes, or `8MiB`…); larger ones are answered `413`.
    #[serde(deserialize_with = "bytes::deserialize")]
    pub body_limit: u64,
    /// Spans and log records received but not yet written; a request that would go
    /// over is answered `503` with `Retry-After` (`FLOTILLA_DASHBOARD__QUEUE_CAPACITY`).
    pub queue_capacity: usize,
    /// How often the services' `/metrics` and `/healthz` are read
    /// (`FLOTILLA_DASHBOARD__SCRAPE_INTERVAL`).
    #[serde(with = "kit::config::duration")]
    pub scrape_interval: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8081).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            retention_age: Duration::from_secs(24 * 3600),
            retention_size: 256 * MIB,
            retention_interval: Duration::from_secs(30),
            body_limit: 8 * MIB,
            queue_capacity: 100_000,
            scrape_interval: Duration::from_secs(2),
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Byte sizes in configuration: a number of bytes, or a number with a unit
/// (`512KiB`, `256MiB`, `1GiB`, `10MB`).
pub mod bytes {
    use serde::{Deserialize, Deserializer};

    /// Parses `256MiB`, `1 GiB`, `4096`…
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size (bytes, or 256MiB, 1GiB…)"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(factor)
            .ok_or_else(|| format!("{text:?} is too large"))
    }

    /// Serde: a number of bytes or a string for [`parse`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Reads and checks the `[dashboard]` section.
pub fn section(config: &Config) -> Result<DashboardConfig, ConfigError> {
    let cfg: DashboardConfig = config.section("dashboard")?;
    let bad = |key: &str, message: &str| ConfigError::Setting {
        setting: env_name(Some("dashboard"), key),
        message: message.to_owned(),
    };
    if cfg.retention_age < Duration::from_secs(60) {
        return Err(bad("retention_age", "must be at least 1m"));
    }
    if cfg.retention_size < 4 * MIB {
        return Err(bad("retention_size", "must be at least 4MiB"));
    }
    if cfg.retention_interval.is_zero() {
        return Err(bad("retention_interval", "must be positive"));
    }
    if cfg.body_limit < 1024 || cfg.body_limit > 256 * MIB {
        return Err(bad("body_limit", "must be between 1KiB and 256MiB"));
    }
    if cfg.queue_capacity == 0 || cfg.queue_capacity > ingest::MAX_QUEUE_CAPACITY {
        return Err(bad(
            "queue_capacity",
            &format!("must be between 1 and {}", ingest::MAX_QUEUE_CAPACITY),
        ));
    }
    if cfg.scrape_interval < Duration::from_millis(100) {
        return Err(bad("scrape_interval", "must be at least 100ms"));
    }
    Ok(cfg)
}

/// Whether an OTLP `endpoint` (`http://host:port[/path]`) is the dashboard listening on
/// `listen` (the same port on the same or a loopback host).
pub fn is_own_endpoint(endpoint: &str, listen: SocketAddr) -> bool {
    let endpoint = endpoint.trim();
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            // A host name: another machine, as far as this check can tell.
            Err(_) => return false,
        }
    };
    let here = |ip: std::net::IpAddr| ip.is_loopback() || ip.is_unspecified();
    let same_host = ip == listen.ip() || (here(listen.ip()) && here(ip));
    same_host && port.parse::<u16>().ok() == Some(listen.port())
}

/// Refuses an OTLP endpoint that is this dashboard's own listener: its spans would be
/// received by itself (`up` gives the dashboard no endpoint for that reason).
fn check_not_exporting_to_itself(
    endpoint: Option<&str>,
    listen: SocketAddr,
) -> Result<(), ConfigError> {
    match endpoint {
        Some(e) if is_own_endpoint(e, listen) => Err(ConfigError::Setting {
            setting: "FLOTILLA_OTLP_ENDPOINT".to_owned(),
            message: format!(
                "{e:?} is the dashboard's own listener; it does not export its spans to \
                 itself (leave it empty for the dashboard, or name another collector)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Now, Unix ns.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The store URL: the setting, or the default file under the data directory.
fn store_url(config: &Config, cfg: &DashboardConfig) -> Result<String, ConfigError> {
    Ok(match &cfg.store {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            config
                .common()?
                .data_dir
                .join("dashboard")
                .join("dashboard.db")
                .display()
        ),
    })
}

/// Runs the dashboard until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store, starts the writer, retention and the scraper, and binds the
/// listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg = section(&ctx.config)?;
    check_not_exporting_to_itself(ctx.common.otlp_endpoint.as_deref(), cfg.listen)?;
    if let Some(endpoint) = ctx
        .common
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        // The kit traces every request of the public listener, the receiver's too.
        tracing::warn!(
            endpoint,
            "the dashboard exports its own spans; each OTLP request it receives is one of them"
        );
    }
    let url = store_url(&ctx.config, &cfg)?;
    let store = TelemetryStore::open(&url, &env_name(Some("dashboard"), "store")).await?;
    let ingest = Ingest::start(store.clone(), cfg.queue_capacity);
    retention::spawn(
        store.clone(),
        retention::Policy {
            age: cfg.retention_age,
            size: cfg.retention_size,
            interval: cfg.retention_interval,
        },
    );
    let scraper = match kit::discovery::directory_from_url(&ctx.common.discovery) {
        Ok(directory) => Some(scrape::Scraper::spawn(directory, cfg.scrape_interval)),
        Err(e) => {
            tracing::warn!(error = %e, "no service directory: the services, sagas views stay empty");
            None
        }
    };
    let bus_url = kit_events::url_from_config(&ctx.config);
    let state = api::AppState {
        store: store.clone(),
        ingest,
        fleet: Arc::new(fleet::Fleet::new(scraper, bus_url)),
    };
    let ready = store.clone();
    let body_limit = usize::try_from(cfg.body_limit).unwrap_or(usize::MAX);
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        // Browsers and every service's exporter reach it directly: it is an edge
        // listener, outside the call policy.
        .edge()
        .body_limit(body_limit)
        .router(router(state, body_limit))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>())
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}

/// The public routes: the OTLP receiver, the API and the UI.
pub fn router(state: api::AppState, body_limit: usize) -> axum::Router {
    otlp::router(state.ingest.clone(), body_limit)
        .merge(api::router(state))
        .merge(ui::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(bytes::parse("4096").unwrap(), 4096);
        assert_eq!(bytes::parse("256MiB").unwrap(), 256 * MIB);
        assert_eq!(bytes::parse("1 GiB").unwrap(), 1 << 30);
        assert_eq!(bytes::parse("10MB").unwrap(), 10_000_000);
        assert!(bytes::parse("ten").is_err());
        assert!(bytes::parse("1PiB").is_err());
    }

    #[test]
    fn the_dashboard_does_not_export_to_itself() {
        let listen: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        for own in [
            "http://127.0.0.1:8081",
            "http://localhost:8081/v1/traces",
            "127.0.0.1:8081",
        ] {
            let e = check_not_exporting_to_itself(Some(own), listen).unwrap_err();
            assert!(e.to_string().contains("FLOTILLA_OTLP_ENDPOINT"), "{e}");
        }
        for other in [
            "",
            "http://127.0.0.1:4318",
            "http://collector:8081",
            "http://10.0.0.1:8081",
        ] {
            check_not_exporting_to_itself(Some(other), listen).unwrap();
        }
        check_not_exporting_to_itself(None, listen).unwrap();
    }

    #[test]
    fn settings_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let with = |key: &str, value: &str| {
            Config::for_tests(dir.path()).merged("dashboard", serde_json::json!({ key: value }))
        };
        let config = with("retention_age", "10s");
        let e = section(&config).unwrap_err().to_string();
        assert!(e.contains("FLOTILLA_DASHBOARD__RETENTION_AGE"), "{e}");
        let config = with("retention_size", "1MiB");
        let e = section(&config).unwrap_err().to_string();
        assert!(e.contains("FLOTILLA_DASHBOARD__RETENTION_SIZE"), "{e}");
        let config = with("retention_size", "64MiB");
        assert_eq!(section(&config).unwrap().retention_size, 64 * MIB);
    }
}
