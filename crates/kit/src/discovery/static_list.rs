//! A fixed list of instances from configuration:
//! `static://inventory=127.0.0.1:9001,127.0.0.1:9002;orders=10.0.0.5:8080`.

use std::collections::HashMap;

use super::{BoxFuture, DiscoveryError, Instance, Resolver, Snapshot};
use crate::config::ConfigError;

/// Resolves from a list given at start; it never changes.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    services: HashMap<String, Vec<Instance>>,
}

impl StaticResolver {
    /// Parses a `static://name=addr,addr;name=addr` URL.
    pub fn parse(url: &str, setting: &str) -> Result<Self, ConfigError> {
        let bad = super::setting_error(setting);
        let body = url
            .strip_prefix("static://")
            .ok_or_else(|| bad(format!("{url:?} is not a static:// URL")))?;
        let mut services = HashMap::new();
        for part in body.split(';').filter(|p| !p.trim().is_empty()) {
            let (name, addrs) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} must be name=host:port[,host:port]")))?;
            let mut instances = Vec::new();
            for (i, addr) in addrs.split(',').map(str::trim).enumerate() {
                if !super::is_host_port(addr) {
                    return Err(bad(format!("{addr:?} in {name} is not host:port")));
                }
                instances.push(Instance {
                    id: format!("{}-{i}", name.trim()),
                    addr: addr.to_owned(),
                    healthy: true,
                    metadata: Default::default(),
                });
            }
            services.insert(name.trim().to_owned(), instances);
        }
        Ok(Self { services })
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(
        &'a self,
        service: &'a str,
        after: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        Box::pin(async move {
            if after.is_some() {
                std::future::pending::<()>().await;
            }
            Ok(Snapshot {
                instances: self.services.get(service).cloned().unwrap_or_default(),
                revision: 1,
                traffic: None,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "static"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_services_and_addresses() {
        let r = StaticResolver::parse(
            "static://inventory=127.0.0.1:9001,127.0.0.1:9002;orders=db:80",
            "FLOTILLA_DISCOVERY",
        )
        .unwrap();
        let inv = r.resolve("inventory", None).await.unwrap();
        assert_eq!(inv.instances.len(), 2);
        assert_eq!(inv.instances[1].addr, "127.0.0.1:9002");
        assert!(r.resolve("nope", None).await.unwrap().instances.is_empty());
    }

    #[test]
    fn rejects_bad_addresses_naming_the_setting() {
        let err = StaticResolver::parse("static://inventory=localhost", "FLOTILLA_DISCOVERY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FLOTILLA_DISCOVERY") && err.contains("localhost"),
            "{err}"
        );
    }
}
