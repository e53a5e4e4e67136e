//! Every connection orders opens to another service, in one place: gRPC channels to
//! inventory and payments (resolved through kit discovery: an instance's
//! `metadata.grpc_addr`, balanced with power of two choices) and inventory's public
//! catalog over HTTP for prices. Transport security for these channels is added here
//! and nowhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::discovery::Discovery;
use proto::inventory::inventory_client::InventoryClient;
use proto::payments::payments_client::PaymentsClient;
use tonic::transport::{Channel, Endpoint};

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

/// The clients of the services orders calls.
#[derive(Clone)]
pub struct Clients {
    discovery: Discovery,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    http: reqwest::Client,
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
    /// Clients resolving through `discovery`; each call may take `timeout`.
    pub fn new(discovery: Discovery, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            discovery,
            channels: Arc::default(),
            http,
            timeout,
        }
    }

    /// Inventory's gRPC API.
    pub async fn inventory(&self) -> Result<InventoryClient<Channel>, Unavailable> {
        Ok(InventoryClient::new(self.grpc("inventory").await?))
    }

    /// Payments' gRPC API.
    pub async fn payments(&self) -> Result<PaymentsClient<Channel>, Unavailable> {
        Ok(PaymentsClient::new(self.grpc("payments").await?))
    }

    /// A live address of `service`: `metadata[key]` of a picked instance, or its
    /// public address when `key` is `None`.
    async fn address(
        &self,
        service: &'static str,
        key: Option<&str>,
    ) -> Result<String, Unavailable> {
        let endpoints = self.discovery.endpoints(service);
        if endpoints.current().is_empty() {
            endpoints.wait_resolved(Duration::from_secs(2)).await;
        }
        let picked = endpoints.pick().ok_or_else(|| Unavailable {
            service,
            detail: "no healthy instance".into(),
        })?;
        match key {
            None => Ok(picked.instance.addr.clone()),
            Some(k) => picked
                .instance
                .metadata
                .get(k)
                .cloned()
                .ok_or_else(|| Unavailable {
                    service,
                    detail: format!("instance {} advertises no {k}", picked.instance.id),
                }),
        }
    }

    async fn grpc(&self, service: &'static str) -> Result<Channel, Unavailable> {
        let addr = self.address(service, Some("grpc_addr")).await?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Unavailable {
                service,
                detail: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(channel)
    }

    /// The price of `sku` from inventory's catalog; `None` for an unknown SKU.
    pub async fn price(&self, sku: &str) -> Result<Option<Price>, Unavailable> {
        let addr = self.address("inventory", None).await?;
        let unavailable = |detail: String| Unavailable {
            service: "inventory",
            detail,
        };
        let res = self
            .http
            .get(format!("http://{addr}/api/products/{sku}"))
            .header(kit::resilience::fault::CALLER_HEADER, CALLER)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match res.status().as_u16() {
            200 => res
                .json::<Price>()
                .await
                .map(Some)
                .map_err(|e| unavailable(e.to_string())),
            404 => Ok(None),
            s => Err(unavailable(format!("answered {s}"))),
        }
    }
}
