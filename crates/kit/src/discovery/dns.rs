//! DNS discovery for Kubernetes headless services (and anything else with A/SRV records).
//!
//! `dns://[nameserver:port]/?domain=flotilla.svc.cluster.local&port=8080&srv=true&refresh=5s`
//! resolves service `inventory` as the SRV records of `_http._tcp.inventory.<domain>`
//! (with `srv=true`) or the A/AAAA records of `inventory.<domain>` on `port`.
//!
//! DNS carries no metadata, so where every instance listens on the same ports (as in
//! the generated Kubernetes manifests) `grpc_port=9090` and `admin_port=9100` give each
//! resolved address the `grpc_addr` and `admin_addr` that registry entries carry.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::{BoxFuture, DiscoveryError, Instance, Resolver, Snapshot};
use crate::config::ConfigError;

/// Resolves instances from DNS, re-reading the records every `refresh`.
pub struct DnsResolver {
    resolver: TokioResolver,
    domain: String,
    port: u16,
    srv: bool,
    refresh: Duration,
    grpc_port: Option<u16>,
    admin_port: Option<u16>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("domain", &self.domain)
            .field("port", &self.port)
            .field("srv", &self.srv)
            .finish()
    }
}

impl DnsResolver {
    /// Parses a `dns://` URL (see the module docs).
    pub fn parse(url: &str, setting: &str) -> Result<Self, ConfigError> {
        let bad = super::setting_error(setting);
        let rest = url
            .strip_prefix("dns://")
            .ok_or_else(|| bad(format!("{url:?} is not a dns:// URL")))?;
        let (server, query) = rest.split_once('?').unwrap_or((rest, ""));
        let server = server.trim_end_matches('/');
        let (mut domain, mut port, mut srv, mut refresh) =
            (String::new(), 8080u16, false, Duration::from_secs(5));
        let (mut grpc_port, mut admin_port) = (None, None);
        let port_of = |k: &str, v: &str| {
            v.parse::<u16>()
                .map_err(|_| bad(format!("{k}={v:?} is not a port")))
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "domain" => domain = v.trim_matches('.').to_owned(),
                "port" => port = port_of(k, v)?,
                "grpc_port" => grpc_port = Some(port_of(k, v)?),
                "admin_port" => admin_port = Some(port_of(k, v)?),
                "srv" => srv = v == "true" || v == "1",
                "refresh" => {
                    refresh = humantime::parse_duration(v)
                        .map_err(|e| bad(format!("refresh={v:?}: {e}")))?
                }
                other => return Err(bad(format!("unknown dns:// option {other:?}"))),
            }
        }
        let resolver = if server.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| bad(format!("cannot read the system DNS configuration: {e}")))?
                .build()
        } else {
            let addr: SocketAddr = server
                .parse()
                .map_err(|_| bad(format!("{server:?} is not a nameserver ip:port")))?;
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
            .build()
        }
        .map_err(|e| bad(format!("cannot build the DNS resolver: {e}")))?;
        Ok(Self {
            resolver,
            domain,
            port,
            srv,
            refresh,
            grpc_port,
            admin_port,
        })
    }

    fn name_of(&self, service: &str) -> String {
        let base = if self.domain.is_empty() {
            service.to_owned()
        } else {
            format!("{service}.{}", self.domain)
        };
        if self.srv {
            format!("_http._tcp.{base}.")
        } else if self.domain.is_empty() {
            base
        } else {
            format!("{base}.")
        }
    }

    async fn lookup(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let err = |e: &dyn std::fmt::Display| DiscoveryError::Backend {
            backend: "dns".to_owned(),
            message: format!("{}: {e}", self.name_of(service)),
        };
        let name = self.name_of(service);
        let mut addrs: Vec<SocketAddr> = Vec::new();
        if self.srv {
            let lookup = self
                .resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| err(&e))?;
            for record in lookup.answers() {
                if let RData::SRV(srv) = &record.data {
                    let target = srv.target.to_utf8();
                    let ips = self
                        .resolver
                        .lookup_ip(target.as_str())
                        .await
                        .map_err(|e| err(&e))?;
                    addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port)));
                }
            }
        } else {
            let ips = self
                .resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| err(&e))?;
            addrs.extend(ips.iter().map(|ip: IpAddr| SocketAddr::new(ip, self.port)));
        }
        addrs.sort();
        addrs.dedup();
        Ok(addrs.into_iter().map(|a| self.instance_at(a)).collect())
    }

    fn instance_at(&self, addr: SocketAddr) -> Instance {
        let mut metadata = std::collections::BTreeMap::new();
        let ports = [
            ("grpc_addr", self.grpc_port),
            ("admin_addr", self.admin_port),
        ];
        for (key, port) in ports {
            if let Some(port) = port {
                let at = SocketAddr::new(addr.ip(), port);
                metadata.insert(key.to_owned(), at.to_string());
            }
        }
        Instance {
            id: addr.to_string(),
            addr: addr.to_string(),
            healthy: true,
            metadata,
        }
    }
}

/// A revision that changes when the set of addresses changes.
fn revision_of(instances: &[Instance]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for i in instances {
        i.addr.hash(&mut h);
    }
    h.finish()
}

impl Resolver for DnsResolver {
    fn resolve<'a>(
        &'a self,
        service: &'a str,
        after: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        Box::pin(async move {
            loop {
                if after.is_some() {
                    tokio::time::sleep(self.refresh).await;
                }
                let instances = self.lookup(service).await?;
                let revision = revision_of(&instances);
                if after != Some(revision) {
                    return Ok(Snapshot {
                        instances,
                        revision,
                        traffic: None,
                    });
                }
            }
        })
    }

    fn kind(&self) -> &'static str {
        "dns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_for_a_and_srv() {
        let a =
            DnsResolver::parse("dns://?domain=flotilla.svc.cluster.local&port=9000", "X").unwrap();
        assert_eq!(
            a.name_of("inventory"),
            "inventory.flotilla.svc.cluster.local."
        );
        let s = DnsResolver::parse("dns://10.0.0.10:53/?domain=ns.svc&srv=true", "X").unwrap();
        assert_eq!(s.name_of("orders"), "_http._tcp.orders.ns.svc.");
        assert!(DnsResolver::parse("dns://?port=http", "X").is_err());
        assert!(DnsResolver::parse("dns://?bogus=1", "X").is_err());
        assert!(DnsResolver::parse("dns://?grpc_port=x", "X").is_err());
    }

    #[tokio::test]
    async fn fixed_ports_become_metadata() {
        let r = DnsResolver::parse("dns://?port=8080&grpc_port=9090&admin_port=9100", "X").unwrap();
        let i = r.instance_at("10.1.2.3:8080".parse().unwrap());
        assert_eq!(i.addr, "10.1.2.3:8080");
        assert_eq!(i.metadata["grpc_addr"], "10.1.2.3:9090");
        assert_eq!(i.metadata["admin_addr"], "10.1.2.3:9100");
        let plain = DnsResolver::parse("dns://?port=8080", "X").unwrap();
        assert!(
            plain
                .instance_at("10.1.2.3:8080".parse().unwrap())
                .metadata
                .is_empty()
        );
    }

    #[tokio::test]
    async fn resolves_localhost_from_the_hosts_file() {
        let r = DnsResolver::parse("dns://?port=4321", "X").unwrap();
        let snap = r.resolve("localhost", None).await.unwrap();
        assert!(
            snap.instances.iter().any(|i| i.addr == "127.0.0.1:4321"),
            "{:?}",
            snap.instances
        );
    }
}
