//! What operator tools (`flotilla status`, `traffic`, `chaos`, `up`…) read and change in
//! discovery, whichever backend holds it: every service with its instances, one
//! service, and its traffic rules. The registry and etcd both keep these; DNS and
//! static lists have no such directory.

use std::sync::Arc;

use super::etcd::EtcdClient;
use super::registry::{RegistryClient, ServiceEntry};
use super::traffic::TrafficPolicy;
use super::{BoxFuture, DiscoveryError};
use crate::config::ConfigError;

/// A backend's directory of services, as the operator sees it.
pub trait Directory: Send + Sync + 'static {
    /// Every service with its instances.
    fn services(&self) -> BoxFuture<'_, Result<Vec<ServiceEntry>, DiscoveryError>>;

    /// One service, now (an unknown service has no instances).
    fn service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceEntry, DiscoveryError>>;

    /// Sets the traffic rules of `name`; `None` removes them.
    fn set_traffic<'a>(
        &'a self,
        name: &'a str,
        traffic: Option<&'a TrafficPolicy>,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>>;

    /// Removes instance `id` of `service` at once, without waiting for its lease to
    /// run out: a supervisor that saw the process die knows it will not come back.
    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>>;

    /// Where the directory is, for messages (`registry https://127.0.0.1:8082`).
    fn location(&self) -> String;
}

impl Directory for RegistryClient {
    fn services(&self) -> BoxFuture<'_, Result<Vec<ServiceEntry>, DiscoveryError>> {
        Box::pin(RegistryClient::services(self))
    }

    fn service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceEntry, DiscoveryError>> {
        Box::pin(RegistryClient::service(self, name, None))
    }

    fn set_traffic<'a>(
        &'a self,
        name: &'a str,
        traffic: Option<&'a TrafficPolicy>,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(RegistryClient::set_traffic(self, name, traffic))
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(RegistryClient::deregister(self, service, id))
    }

    fn location(&self) -> String {
        format!("registry {}", self.base())
    }
}

impl Directory for EtcdClient {
    fn services(&self) -> BoxFuture<'_, Result<Vec<ServiceEntry>, DiscoveryError>> {
        Box::pin(EtcdClient::services(self))
    }

    fn service<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServiceEntry, DiscoveryError>> {
        Box::pin(EtcdClient::service(self, name))
    }

    fn set_traffic<'a>(
        &'a self,
        name: &'a str,
        traffic: Option<&'a TrafficPolicy>,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(EtcdClient::set_traffic(self, name, traffic))
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(EtcdClient::remove_instance(self, service, id))
    }

    fn location(&self) -> String {
        format!("etcd {}", self.hosts())
    }
}

/// The directory a discovery URL names: `registry://host:port` (over the process's
/// internal transport) or `etcd://host:port[,…]`.
pub fn directory_from_url(url: &str) -> Result<Arc<dyn Directory>, ConfigError> {
    let setting = "FLOTILLA_DISCOVERY";
    match url.split_once("://").map(|(s, _)| s) {
        Some("registry" | "http" | "https") => {
            Ok(Arc::new(RegistryClient::from_url(url, setting)?))
        }
        Some("etcd") => Ok(Arc::new(EtcdClient::from_url(url, setting)?)),
        _ => Err(ConfigError::UnknownScheme {
            setting: setting.to_owned(),
            url: url.to_owned(),
            expected: "registry://, etcd:// (DNS and static lists keep no directory)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let etcd = directory_from_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(etcd.location(), "etcd 127.0.0.1:2379");
        let registry = directory_from_url("registry://127.0.0.1:8082").unwrap();
        assert!(
            registry.location().starts_with("registry http"),
            "{}",
            registry.location()
        );
        let err = directory_from_url("dns://?domain=x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("FLOTILLA_DISCOVERY"), "{err}");
    }
}
