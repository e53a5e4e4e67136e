//! Every connection orders opens to another service, in one place: gRPC channels to
//! inventory and payments (resolved through kit discovery: an instance's
//! `metadata.grpc_addr`, balanced with power of two choices) and inventory's public
//! catalog over HTTP for prices. Every call passes the kit's standard client stack
//! (bulkhead, deadline, retry, circuit breaker; policies per target from the
//! `[resilience]` section); catalog prices fall back to the last price inventory gave,
//! for a short while, when its catalog does not answer. Transport security for these
//! channels is added here and nowhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kit::discovery::{Discovery, Picked};
use kit::resilience::fallback::{FallbackLayer, StaleCache};
use kit::resilience::stack::BoxError;
use kit::resilience::{ClientStack, Policy, ResilienceConfig};
use kit::security::mtls::{self, InternalConnector};
use proto::channel::ResilientChannel;
use proto::inventory::inventory_client::InventoryClient;
use proto::payments::payments_client::PaymentsClient;
use tonic::transport::Endpoint;
use tower::{Layer, Service, ServiceExt};

use crate::domain::Price;

/// No instance of a service could be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} unavailable: {detail}")]
pub struct Unavailable {
    /// The service.
    pub service: &'static str,
    /// What failed.
    pub detail: String,
}

/// Header naming the calling service (for caller-specific policies and faults).
const CALLER: &str = "orders";

/// How long a catalog price may stand in for inventory's answer.
pub const PRICE_FALLBACK_MAX_AGE: Duration = Duration::from_secs(60);

/// The clients of the services orders calls.
#[derive(Clone)]
pub struct Clients {
    discovery: Discovery,
    channels: Arc<Mutex<HashMap<String, ResilientChannel>>>,
    inventory: Policy,
    payments: Policy,
    http: HttpClient<InternalConnector, Full<Bytes>>,
    prices: Arc<StaleCache<String, Option<Price>>>,
    timeout: Duration,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Clients {
    /// Clients resolving through `discovery`; each call may take `timeout`, under the
    /// per-target policies of `resilience`.
    pub fn new(discovery: Discovery, timeout: Duration, resilience: &ResilienceConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Self {
            discovery,
            channels: Arc::default(),
            inventory: Policy::new("inventory", resilience),
            payments: Policy::new("payments", resilience),
            http: HttpClient::builder(TokioExecutor::new()).build(mtls::connector(connector)),
            prices: StaleCache::new(10_000, PRICE_FALLBACK_MAX_AGE),
            timeout,
        }
    }

    /// Inventory's gRPC API.
    pub async fn inventory(&self) -> Result<InventoryClient<ResilientChannel>, Unavailable> {
        Ok(InventoryClient::new(self.grpc("inventory").await?))
    }

    /// Payments' gRPC API.
    pub async fn payments(&self) -> Result<PaymentsClient<ResilientChannel>, Unavailable> {
        Ok(PaymentsClient::new(self.grpc("payments").await?))
    }

    fn policy(&self, service: &'static str) -> &Policy {
        if service == "payments" {
            &self.payments
        } else {
            &self.inventory
        }
    }

    /// A live instance of `service`, skipping instances whose own breaker is open (with
    /// per-instance breakers) while others remain.
    async fn pick(&self, service: &'static str) -> Result<Picked, Unavailable> {
        let endpoints = self.discovery.endpoints(service);
        if endpoints.current().is_empty() {
            // None known yet, or none right now (an instance died and its replacement
            // is starting): wait a little for one rather than failing the call at once.
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            endpoints.wait_resolved(Duration::from_secs(2)).await;
            while endpoints.current().is_empty() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let policy = self.policy(service);
        // Within the version the service's traffic rules choose, skipping instances
        // whose breaker is open; if that leaves none, any instance.
        endpoints
            .pick_where(Default::default(), |e| !policy.is_open_for(&e.instance.id))
            .or_else(|| endpoints.pick())
            .ok_or_else(|| Unavailable {
                service,
                detail: "no healthy instance".into(),
            })
    }

    async fn grpc(&self, service: &'static str) -> Result<ResilientChannel, Unavailable> {
        let picked = self.pick(service).await?;
        let instance = &picked.instance;
        let addr = instance
            .metadata
            .get("grpc_addr")
            .cloned()
            .ok_or_else(|| Unavailable {
                service,
                detail: format!("instance {} advertises no grpc_addr", instance.id),
            })?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("{}://{addr}", mtls::scheme()))
            .map_err(|e| Unavailable {
                service,
                detail: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .connect_with_connector_lazy(proto::channel::connector());
        // Every inventory and payments method is idempotent (by order id, payment id
        // or idempotency key), so the stack may retry any of them.
        let stack = ClientStack::new(self.policy(service), self.timeout)
            .instance(&instance.id)
            .idempotent();
        let channel = proto::channel::resilient(channel, &stack, &addr);
        channels.insert(addr, channel.clone());
        Ok(channel)
    }

    /// The price of `sku` from inventory's catalog; `None` for an unknown SKU. While
    /// the catalog does not answer, the price it gave within the last minute stands in.
    pub fn price(
        &self,
        sku: &str,
    ) -> futures_util::future::BoxFuture<'static, Result<Option<Price>, Unavailable>> {
        let this = self.clone();
        let lookup = tower::service_fn(move |sku: String| {
            let this = this.clone();
            this.price_from_catalog(sku)
        });
        let svc = FallbackLayer::new(self.prices.clone()).layer(lookup);
        let sku = sku.to_owned();
        Box::pin(async move {
            svc.oneshot(sku).await.map_err(|e| Unavailable {
                service: "inventory",
                detail: e.to_string(),
            })
        })
    }

    async fn price_from_catalog(self, sku: String) -> Result<Option<Price>, BoxError> {
        let picked = self.pick("inventory").await?;
        let stack = ClientStack::new(&self.inventory, self.timeout).instance(&picked.instance.id);
        let req = http::Request::get(format!(
            "{}://{}/api/products/{sku}",
            mtls::scheme(),
            picked.instance.addr
        ))
        .header(kit::resilience::fault::CALLER_HEADER, CALLER)
        .body(Full::new(Bytes::new()))?;
        let mut http = stack.layer(self.http.clone(), Full::new);
        let res = http.ready().await?.call(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        match status.as_u16() {
            200 => Ok(Some(serde_json::from_slice(&body)?)),
            404 => Ok(None),
            s => Err(format!("inventory answered {s}").into()),
        }
    }
}
