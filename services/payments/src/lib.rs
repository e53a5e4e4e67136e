//! Payments: the payments ledger, behind an internal gRPC API for the order saga and a
//! public read of one payment.
//!
//! Data flows one way: [`api`] and [`grpc`] parse and validate, [`ledger`] runs each
//! operation (idempotency, the provider call, the state machine of [`domain`]), [`store`]
//! persists (SQLite by default, MariaDB in production). The card processor is behind
//! [`provider::PaymentProvider`]; the built-in one is simulated and keeps its own records
//! ([`provider::SimulatedProvider`]). [`reconcile`] resolves authorizations a crash left
//! pending, by asking the provider under the payment's id. Card numbers are
//! checked (Luhn, expiry), passed to the provider, and never stored or logged: only the
//! last four digits are kept.

pub mod admin;
pub mod api;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod provider;
pub mod reconcile;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::config::ConfigError;
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

/// The `[payments]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PaymentsConfig {
    /// Public listener (`FLOTILLA_PAYMENTS__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_PAYMENTS__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Internal gRPC listener (`FLOTILLA_PAYMENTS__GRPC_LISTEN`), advertised as
    /// `metadata.grpc_addr`.
    pub grpc_listen: SocketAddr,
    /// Store URL (`FLOTILLA_PAYMENTS__STORE`): `sqlite://…` (default
    /// `<data dir>/payments/payments.db`) or `mysql://user:pass@host:3306/payments`.
    pub store: Option<String>,
    /// Time each call to the simulated provider takes
    /// (`FLOTILLA_PAYMENTS__PROVIDER_LATENCY`, e.g. `50ms`).
    #[serde(with = "kit::config::duration")]
    pub provider_latency: Duration,
    /// Where the simulated provider keeps its own records of authorizations
    /// (`FLOTILLA_PAYMENTS__PROVIDER_STORE`): `sqlite://…` (default
    /// `<data dir>/payments/provider.db`) or `mysql://…`, a database of its own, never
    /// the ledger's. Instances sharing a ledger must share it.
    pub provider_store: Option<String>,
    /// How often pending authorizations are reconciled
    /// (`FLOTILLA_PAYMENTS__RECONCILE_INTERVAL`, default `5s`).
    #[serde(with = "kit::config::duration")]
    pub reconcile_interval: Duration,
    /// How old a pending authorization must be before it is resolved by asking the
    /// provider, by the sweeper or by a retried `Authorize`
    /// (`FLOTILLA_PAYMENTS__RECONCILE_STALE_AFTER`, default `10s`: above any provider
    /// call, below the saga's step deadline).
    #[serde(with = "kit::config::duration")]
    pub reconcile_stale_after: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            provider_latency: Duration::ZERO,
            provider_store: None,
            reconcile_interval: reconcile::DEFAULT_INTERVAL,
            reconcile_stale_after: reconcile::DEFAULT_STALE_AFTER,
        }
    }
}

/// Runs payments until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the ledger and the simulated provider's records, starts the reconciliation
/// sweeper and the outbox relay, and binds the public, admin and gRPC listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: PaymentsConfig = ctx.config.section("payments")?;
    for (value, key) in [
        (cfg.reconcile_interval, "reconcile_interval"),
        (cfg.reconcile_stale_after, "reconcile_stale_after"),
    ] {
        if value.is_zero() {
            return Err(ConfigError::Setting {
                setting: ctx.setting(key),
                message: "must be longer than zero (e.g. \"5s\")".into(),
            }
            .into());
        }
    }
    let in_data_dir = |file: &str| {
        format!(
            "sqlite://{}",
            ctx.common.data_dir.join("payments").join(file).display()
        )
    };
    let url = cfg
        .store
        .clone()
        .unwrap_or_else(|| in_data_dir("payments.db"));
    let ledger = store::open(&url, &ctx.setting("store")).await?;
    let provider_url = cfg
        .provider_store
        .clone()
        .unwrap_or_else(|| in_data_dir("provider.db"));
    let provider = Arc::new(provider::Traced::new(
        provider::SimulatedProvider::open(
            &provider_url,
            &ctx.setting("provider_store"),
            cfg.provider_latency,
        )
        .await?,
        "simulated-provider",
    ));
    let payments =
        ledger::Payments::new(ledger.clone(), provider).with_stale_after(cfg.reconcile_stale_after);
    tokio::spawn(reconcile::Reconciler::new(payments.clone()).run(cfg.reconcile_interval));
    let admin = admin::router(ledger.clone());
    let (outbox, wake) = ledger.outbox();
    let bus = kit_events::for_producer(&kit_events::url_from_config(&ctx.config), "FLOTILLA_BUS")
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    kit_events::outbox::Relay::shared(outbox, bus, Default::default())
        .with_notifier(wake)
        .spawn();
    let grpc_routes = proto::grpc_extras(
        tonic::service::Routes::new(grpc::PaymentsGrpc::new(payments.clone())),
        &[grpc::SERVICE_NAME],
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))?;
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .grpc(cfg.grpc_listen, grpc_routes.into_axum_router())
        .await?
        .router(api::router(payments))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>().merge(admin))
        .readiness(
            "store",
            Arc::new(move || {
                let l = ledger.clone();
                Box::pin(async move { l.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}
