//! The Flotilla registry as a discovery backend: the client that registers, heartbeats
//! and deregisters an instance, and the [`Resolver`] that long-polls for changes.
//!
//! The wire types here are the registry's public contract (`GET /v1/services`…).
//!
//! These calls are housekeeping (heartbeats every third of a lease, long polls that
//! return every few seconds): they make no client span and send no `traceparent`, so
//! an idle fleet sends no trace per tick to the collector.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::traffic::TrafficPolicy;
use super::{BoxFuture, DiscoveryError, Instance, Resolver, Snapshot};
use crate::config::ConfigError;
use crate::security::mtls::{self, InternalTransport};

/// How long a watch waits at the registry before answering "no change".
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

/// Header carrying a service's revision on `GET /v1/services/{name}`.
pub const INDEX_HEADER: &str = "x-flotilla-index";

/// `PUT /v1/services/{name}/instances/{id}`: register, or heartbeat, with a lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `host:port` of the instance's public listener.
    pub addr: String,
    /// Lease length in milliseconds; the instance expires if not renewed in time.
    pub ttl_ms: u64,
    /// Free-form facts about the instance.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `GET /v1/services` item and `GET /v1/services/{name}` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Service name.
    pub name: String,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// Revision of this service's instance set and traffic rules.
    #[serde(default)]
    pub index: u64,
    /// Its traffic rules, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficPolicy>,
}

/// An HTTP client for the registry's API.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
}

fn backend_err(base: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Backend {
        backend: format!("registry {base}"),
        message: e.to_string(),
    }
}

impl RegistryClient {
    /// A client for `registry://host:port` (or `http(s)://host:port`) over the
    /// process's internal transport ([`mtls::process`]).
    pub fn from_url(url: &str, setting: &str) -> Result<Self, ConfigError> {
        Self::from_url_with(url, setting, &mtls::process())
    }

    /// A client for `registry://host:port` over `transport`.
    pub fn from_url_with(
        url: &str,
        setting: &str,
        transport: &InternalTransport,
    ) -> Result<Self, ConfigError> {
        let rest = url
            .strip_prefix("registry://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| ConfigError::UnknownScheme {
                setting: setting.to_owned(),
                url: url.to_owned(),
                expected: "registry://host:port",
            })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(ConfigError::Setting {
                setting: setting.to_owned(),
                message: format!("{url:?} must be registry://host:port"),
            });
        }
        Ok(Self::with_transport(
            format!("{}://{host}", transport.scheme()),
            transport,
        ))
    }

    /// A client for the registry at `base` (`https://127.0.0.1:8082`) over the
    /// process's internal transport.
    pub fn new(base: String) -> Self {
        Self::with_transport(base, &mtls::process())
    }

    fn with_transport(base: String, transport: &InternalTransport) -> Self {
        let http = transport
            .reqwest_builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(WATCH_WAIT + Duration::from_secs(10))
            .build()
            .expect("an HTTP client from loaded TLS material builds");
        Self { base, http }
    }

    /// The registry's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Registers or renews `id` of `service`.
    pub async fn register(
        &self,
        service: &str,
        id: &str,
        req: &RegisterRequest,
    ) -> Result<(), DiscoveryError> {
        let url = format!("{}/v1/services/{service}/instances/{id}", self.base);
        let res = self
            .http
            .put(url)
            .timeout(Duration::from_secs(3))
            .json(req)
            .send()
            .await
            .map_err(|e| backend_err(&self.base, e))?;
        if !res.status().is_success() {
            return Err(backend_err(
                &self.base,
                format!("register answered {}", res.status()),
            ));
        }
        Ok(())
    }

    /// Removes `id` of `service`.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), DiscoveryError> {
        let url = format!("{}/v1/services/{service}/instances/{id}", self.base);
        self.http
            .delete(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| backend_err(&self.base, e))?;
        Ok(())
    }

    /// Sets the traffic rules of `service` (`None` removes them).
    pub async fn set_traffic(
        &self,
        service: &str,
        traffic: Option<&TrafficPolicy>,
    ) -> Result<(), DiscoveryError> {
        let url = format!("{}/v1/services/{service}/traffic", self.base);
        let req = match traffic {
            Some(t) => self.http.put(url).json(t),
            None => self.http.delete(url),
        };
        let res = req
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| backend_err(&self.base, e))?;
        if !res.status().is_success() {
            let status = res.status();
            let detail = res
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|p| p["detail"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(backend_err(
                &self.base,
                format!("setting traffic answered {status}: {detail}"),
            ));
        }
        Ok(())
    }

    /// Every service with its instances.
    pub async fn services(&self) -> Result<Vec<ServiceEntry>, DiscoveryError> {
        let res = self
            .http
            .get(format!("{}/v1/services", self.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| backend_err(&self.base, e))?;
        res.error_for_status()
            .map_err(|e| backend_err(&self.base, e))?
            .json()
            .await
            .map_err(|e| backend_err(&self.base, e))
    }

    /// One service; with `after`, waits (long-poll) until its revision differs.
    pub async fn service(
        &self,
        service: &str,
        after: Option<u64>,
    ) -> Result<ServiceEntry, DiscoveryError> {
        let mut url = format!("{}/v1/services/{service}", self.base);
        if let Some(index) = after {
            url.push_str(&format!("?index={index}&wait={}s", WATCH_WAIT.as_secs()));
        }
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| backend_err(&self.base, e))?;
        res.error_for_status()
            .map_err(|e| backend_err(&self.base, e))?
            .json()
            .await
            .map_err(|e| backend_err(&self.base, e))
    }
}

/// Resolves through the registry, long-polling for changes.
#[derive(Debug, Clone)]
pub struct RegistryResolver {
    client: RegistryClient,
}

impl RegistryResolver {
    /// A resolver over `client`.
    pub fn new(client: RegistryClient) -> Self {
        Self { client }
    }
}

impl Resolver for RegistryResolver {
    fn resolve<'a>(
        &'a self,
        service: &'a str,
        after: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        Box::pin(async move {
            let entry = self.client.service(service, after).await?;
            Ok(Snapshot {
                instances: entry.instances,
                revision: entry.index,
                traffic: entry.traffic,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "registry"
    }
}

/// Keeps one instance registered: renews its lease every third of the TTL, re-registers
/// after a registry restart, and deregisters on [`Registration::deregister`].
#[derive(Debug)]
pub struct Registration {
    client: RegistryClient,
    service: String,
    id: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Registers now (failing if the registry cannot be reached) and keeps renewing.
    /// `metadata` is called before every heartbeat, so it can report live facts.
    pub async fn start(
        client: RegistryClient,
        service: &str,
        id: &str,
        addr: String,
        ttl: Duration,
        metadata: impl Fn() -> BTreeMap<String, String> + Send + 'static,
    ) -> Result<Self, DiscoveryError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let request = move || RegisterRequest {
            addr: addr.clone(),
            ttl_ms,
            metadata: metadata(),
        };
        client.register(service, id, &request()).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let client = client.clone();
            let (service, id) = (service.to_owned(), id.to_owned());
            tokio::spawn(async move {
                let every = (ttl / 3).max(Duration::from_millis(50));
                let mut failing = false;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stopped.changed() => return,
                    }
                    match client.register(&service, &id, &request()).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(registry = client.base(), "registered again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "heartbeat failed; retrying");
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Self {
            client,
            service: service.to_owned(),
            id: id.to_owned(),
            stop,
            task,
        })
    }

    /// Stops heartbeats and removes the instance from the registry.
    pub async fn deregister(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Err(e) = self.client.deregister(&self.service, &self.id).await {
            tracing::warn!(error = %e, "deregistration failed; the lease will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = RegistryClient::from_url("registry://127.0.0.1:8082", "X").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8082");
        assert!(RegistryClient::from_url("registry://", "X").is_err());
        assert!(RegistryClient::from_url("etcd://x:1", "X").is_err());
    }
}
