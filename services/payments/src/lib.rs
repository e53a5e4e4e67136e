//! Payments: the payments ledger, behind an internal gRPC API for the order saga and a
//! public read of one payment.
//!
//! Data flows one way: [`api`] and [`grpc`] parse and validate, [`ledger`] runs each
//! operation (idempotency, the provider call, the state machine of [`domain`]), [`store`]
//! persists (SQLite by default, MariaDB in production). The card processor is behind
//! [`provider::PaymentProvider`]; the built-in one is simulated. Card numbers are
//! checked (Luhn, expiry), passed to the provider, and never stored or logged: only the
//! last four digits are kept.

pub mod admin;
pub mod api;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod provider;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            provider_latency: Duration::ZERO,
        }
    }
}

/// Runs payments until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the ledger and binds the public, admin and gRPC listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: PaymentsConfig = ctx.config.section("payments")?;
    let url = cfg.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            ctx.common
                .data_dir
                .join("payments")
                .join("payments.db")
                .display()
        )
    });
    let ledger = store::open(&url, &ctx.setting("store")).await?;
    let provider = Arc::new(provider::SimulatedProvider {
        latency: cfg.provider_latency,
    });
    let payments = ledger::Payments::new(ledger.clone(), provider);
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
