//! Notifications: one email per event that concerns a user.
//!
//! It consumes `users.registered`, `orders.confirmed`, `orders.cancelled` and
//! `payments.refunded` from the bus as one queue consumer group ([`events`]), renders
//! each into an email ([`domain`]), sends it over SMTP when
//! `FLOTILLA_NOTIFICATIONS__SMTP` is set or into a maildir under the data directory
//! otherwise ([`mail`]), and records what it sent together with the event id in its
//! inbox, in one transaction of its own store ([`store`]: SQLite by default, PostgreSQL
//! in production). Users read their messages at `GET /api/notifications` ([`api`]).
//!
//! Recipients: `users.registered` carries the address, and notifications keeps a local
//! directory (user id → address) built from those events. The order and payment events
//! name the user only and find the address there; one that arrives before its user's
//! registration is retried until the registration has been handled.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod domain;
pub mod events;
pub mod mail;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kit::config::ConfigError;
use kit::service::{Context, Service, StartError};
use kit_events::EventBus;
use serde::Deserialize;

use crate::events::{Backoff, Mailroom};
use crate::mail::{Maildir, Mailer, SmtpMailer};

/// The `[notifications]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    /// Public listener (`FLOTILLA_NOTIFICATIONS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_NOTIFICATIONS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_NOTIFICATIONS__STORE`): `sqlite://…` (default
    /// `<data dir>/notifications/notifications.db`) or
    /// `postgres://user:pass@host:5432/notifications`.
    pub store: Option<String>,
    /// SMTP server (`FLOTILLA_NOTIFICATIONS__SMTP`): `smtp://host:port`,
    /// `smtp://user:pass@host:587?tls=required` or `smtps://host:465`. Unset: mail goes
    /// to the maildir.
    pub smtp: Option<String>,
    /// Time one SMTP conversation may take (`FLOTILLA_NOTIFICATIONS__SMTP_TIMEOUT`).
    #[serde(with = "kit::config::duration")]
    pub smtp_timeout: Duration,
    /// Where mail goes without SMTP (`FLOTILLA_NOTIFICATIONS__MAILDIR`); default
    /// `<data dir>/notifications/maildir`.
    pub maildir: Option<PathBuf>,
    /// The sender (`FLOTILLA_NOTIFICATIONS__FROM`).
    pub from: String,
    /// The consumer group every instance joins (`FLOTILLA_NOTIFICATIONS__GROUP`).
    pub group: String,
    /// How long a delivery may stay unacknowledged before the bus offers it again
    /// (`FLOTILLA_NOTIFICATIONS__ACK_TIMEOUT`); longer than `smtp_timeout`.
    #[serde(with = "kit::config::duration")]
    pub ack_timeout: Duration,
    /// Deliveries of one event before the bus dead-letters it
    /// (`FLOTILLA_NOTIFICATIONS__MAX_DELIVERIES`).
    pub max_deliveries: u32,
    /// Events one instance holds unacknowledged at most
    /// (`FLOTILLA_NOTIFICATIONS__MAX_IN_FLIGHT`); small, so instances share the work.
    pub max_in_flight: u32,
    /// First redelivery delay after a failed send; doubles per attempt
    /// (`FLOTILLA_NOTIFICATIONS__RETRY_MIN`).
    #[serde(with = "kit::config::duration")]
    pub retry_min: Duration,
    /// Longest redelivery delay (`FLOTILLA_NOTIFICATIONS__RETRY_MAX`).
    #[serde(with = "kit::config::duration")]
    pub retry_max: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            smtp: None,
            smtp_timeout: Duration::from_secs(10),
            maildir: None,
            from: "Flotilla <no-reply@flotilla.local>".to_owned(),
            group: "notifications".to_owned(),
            ack_timeout: Duration::from_secs(60),
            max_deliveries: 10,
            max_in_flight: 4,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl NotificationsConfig {
    fn check(&self, ctx: &Context) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Setting {
            setting: ctx.setting(key),
            message: message.to_owned(),
        };
        if !kit_events::valid_group_name(&self.group) {
            return Err(bad("group", "letters, digits, `-` or `_`, 1-64 characters"));
        }
        if self.ack_timeout <= self.smtp_timeout {
            return Err(bad("ack_timeout", "must be longer than smtp_timeout"));
        }
        if self.max_deliveries == 0 || self.max_in_flight == 0 {
            return Err(bad(
                "max_deliveries",
                "max_deliveries and max_in_flight must be at least 1",
            ));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(bad(
                "retry_min",
                "retry_min must be positive and at most retry_max",
            ));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(bad("from", "not an email address (`Name <addr@host>`)"));
        }
        Ok(())
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Runs notifications until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store, starts consuming from the bus `FLOTILLA_BUS` names and binds the
/// listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let bus = kit_events::for_producer(&kit_events::url_from_config(&ctx.config), "FLOTILLA_BUS")
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    build_with_bus(ctx, bus).await
}

/// [`build`] with a given bus (tests run several buses in one process).
pub async fn build_with_bus(ctx: Context, bus: Arc<dyn EventBus>) -> Result<Service, StartError> {
    let cfg: NotificationsConfig = ctx.config.section("notifications")?;
    cfg.check(&ctx)?;
    let own = ctx.common.data_dir.join("notifications");
    let url = cfg
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", own.join("notifications.db").display()));
    let store = store::open(&url, &ctx.setting("store")).await?;
    let mailer: Arc<dyn Mailer> = match cfg.smtp.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => {
            Arc::new(SmtpMailer::new(url, cfg.smtp_timeout).map_err(|message| {
                ConfigError::Setting {
                    setting: ctx.setting("smtp"),
                    message,
                }
            })?)
        }
        _ => {
            let root = cfg.maildir.clone().unwrap_or_else(|| own.join("maildir"));
            Arc::new(Maildir::create(&root).map_err(|e| StartError::Other(e.to_string()))?)
        }
    };
    tracing::info!(mailer = %mailer.describe(), "notifications send mail through");
    let group = events::group(
        &cfg.group,
        cfg.ack_timeout,
        cfg.max_deliveries,
        cfg.max_in_flight,
    );
    let backoff = Backoff {
        min: cfg.retry_min,
        max: cfg.retry_max,
    };
    Mailroom::new(store.clone(), mailer, cfg.from.clone(), group, backoff).spawn(bus);
    let ready = store.clone();
    let admin = admin::router(store.clone(), cfg.group.clone());
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
