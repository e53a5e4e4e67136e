//! Service discovery: where are the instances of a service, and which one gets this call.
//!
//! A [`Resolver`] knows one way of finding instances (the Flotilla [`registry`],
//! [`etcd`], a [`static_list`], or [`dns`] for Kubernetes headless services). [`Discovery`] keeps
//! each service's instance set fresh in the background, keeps the last known set when
//! the backend is unreachable, and balances calls by power of two choices on in-flight
//! requests. Unhealthy or expired instances are never picked. A service's
//! [`traffic::TrafficPolicy`] (from the registry or etcd) narrows a pick to one version
//! first. Operator tools read and change the registry or etcd through one
//! [`Directory`].

pub mod directory;
pub mod dns;
pub mod etcd;
pub mod registry;
pub mod static_list;
pub mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ConfigError;
use traffic::{RouteHint, TrafficPolicy};

pub use directory::{Directory, directory_from_url};

/// A boxed future, as returned by [`Resolver`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One instance of a service, as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique id of the instance (stable for the life of its process).
    pub id: String,
    /// `host:port` of its public listener.
    pub addr: String,
    /// Whether it may receive traffic (lease alive, not draining).
    pub healthy: bool,
    /// Free-form facts: `version`, `admin_addr`, `pid`, `started_at`, `rss_bytes`…
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The instances of one service at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every known instance, healthy or not.
    pub instances: Vec<Instance>,
    /// Changes whenever the set changes; passed back to wait for the next change.
    pub revision: u64,
    /// How calls are spread over versions, where the backend keeps rules (the registry,
    /// etcd).
    pub traffic: Option<TrafficPolicy>,
}

/// A discovery failure.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The backend could not be reached or answered badly.
    #[error("discovery backend {backend} failed: {message}")]
    Backend {
        /// Which backend (`registry http://…`, `dns`…).
        backend: String,
        /// What went wrong.
        message: String,
    },
}

/// One way of finding the instances of a service.
pub trait Resolver: Send + Sync + 'static {
    /// The instances of `service`. With `after: None`, answers at once; with the revision
    /// of a previous snapshot, waits until the set may have changed (the registry
    /// long-polls, etcd watches, DNS waits for its refresh interval, a static list never
    /// changes).
    fn resolve<'a>(
        &'a self,
        service: &'a str,
        after: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>>;

    /// A short name for logs (`registry`, `etcd`, `dns`, `static`).
    fn kind(&self) -> &'static str;
}

/// Builds the resolver a `FLOTILLA_DISCOVERY` URL names.
pub fn resolver_from_url(url: &str) -> Result<Arc<dyn Resolver>, ConfigError> {
    let setting = "FLOTILLA_DISCOVERY";
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "registry" => Ok(Arc::new(registry::RegistryResolver::new(
            registry::RegistryClient::from_url(url, setting)?,
        ))),
        "static" => Ok(Arc::new(static_list::StaticResolver::parse(url, setting)?)),
        "dns" => Ok(Arc::new(dns::DnsResolver::parse(url, setting)?)),
        "etcd" => Ok(Arc::new(etcd::EtcdResolver::new(
            etcd::EtcdClient::from_url(url, setting)?,
        ))),
        _ => Err(ConfigError::UnknownScheme {
            setting: setting.to_owned(),
            url: url.to_owned(),
            expected: "registry://, etcd://, static://, dns://",
        }),
    }
}

/// Makes the [`ConfigError::Setting`] of `setting`, for the backends' URL parsers.
fn setting_error(setting: &str) -> impl Fn(String) -> ConfigError + '_ {
    move |message| ConfigError::Setting {
        setting: setting.to_owned(),
        message,
    }
}

/// Whether `addr` is `host:port`.
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// An instance that can be picked, with its live in-flight count.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The instance.
    pub instance: Arc<Instance>,
    in_flight: Arc<AtomicUsize>,
}

impl Endpoint {
    /// Requests currently in flight to this instance from this process.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A picked endpoint; the in-flight count drops when this is dropped.
#[derive(Debug)]
pub struct Picked {
    /// The chosen instance.
    pub instance: Arc<Instance>,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Power of two choices: of two distinct random endpoints, the one with fewer requests
/// in flight (the first of them on a tie).
pub fn pick_p2c(endpoints: &[Endpoint]) -> Option<Picked> {
    let chosen = match endpoints.len() {
        0 => return None,
        1 => &endpoints[0],
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            if eb.in_flight() < ea.in_flight() {
                eb
            } else {
                ea
            }
        }
    };
    chosen.in_flight.fetch_add(1, Ordering::Relaxed);
    Some(Picked {
        instance: chosen.instance.clone(),
        in_flight: chosen.in_flight.clone(),
    })
}

/// The healthy endpoints of one service and its traffic rules.
#[derive(Debug, Clone)]
struct Routable {
    endpoints: Arc<[Endpoint]>,
    traffic: Option<Arc<TrafficPolicy>>,
}

/// The current state of one service; `None` until first resolved.
type EndpointSet = Option<Routable>;

/// The version of an endpoint's instance (`metadata.version`), `""` if unknown.
fn version_of(e: &Endpoint) -> &str {
    e.instance
        .metadata
        .get("version")
        .map_or("", String::as_str)
}

/// Picks among `endpoints` that pass `keep`, within the version `traffic` chooses for
/// `hint` (all versions without rules, or when no chosen version is left).
fn pick_routed(
    endpoints: &[Endpoint],
    traffic: Option<&TrafficPolicy>,
    hint: RouteHint<'_>,
    keep: impl Fn(&Endpoint) -> bool,
) -> Option<Picked> {
    let version = traffic.and_then(|t| {
        t.choose(hint, |v| {
            endpoints.iter().any(|e| version_of(e) == v && keep(e))
        })
    });
    let usable: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| version.is_none_or(|v| version_of(e) == v) && keep(e))
        .cloned()
        .collect();
    pick_p2c(&usable)
}

/// A live view of one service's healthy instances.
#[derive(Debug, Clone)]
pub struct Endpoints {
    service: Arc<str>,
    rx: watch::Receiver<EndpointSet>,
}

impl Endpoints {
    /// The service this view follows.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The healthy endpoints now (empty before the first answer).
    pub fn current(&self) -> Arc<[Endpoint]> {
        self.rx
            .borrow()
            .as_ref()
            .map_or_else(|| Arc::from([]), |s| s.endpoints.clone())
    }

    /// The service's traffic rules now, if it has any.
    pub fn traffic(&self) -> Option<Arc<TrafficPolicy>> {
        self.rx.borrow().as_ref().and_then(|s| s.traffic.clone())
    }

    /// Picks an instance by power of two choices, within the version the traffic rules
    /// choose; `None` when there is none healthy.
    pub fn pick(&self) -> Option<Picked> {
        self.pick_with(RouteHint::default())
    }

    /// Like [`Endpoints::pick`], routing on what the caller knows of the call (the
    /// version its header asks for, the user for stickiness).
    pub fn pick_with(&self, hint: RouteHint<'_>) -> Option<Picked> {
        self.pick_where(hint, |_| true)
    }

    /// Like [`Endpoints::pick_with`], only among endpoints that pass `keep` (not yet
    /// tried, breaker not open…).
    pub fn pick_where(
        &self,
        hint: RouteHint<'_>,
        keep: impl Fn(&Endpoint) -> bool,
    ) -> Option<Picked> {
        let set = self.rx.borrow();
        let set = set.as_ref()?;
        match &set.traffic {
            None => {
                if set.endpoints.iter().all(&keep) {
                    pick_p2c(&set.endpoints)
                } else {
                    pick_routed(&set.endpoints, None, hint, keep)
                }
            }
            Some(t) => pick_routed(&set.endpoints, Some(t), hint, keep),
        }
    }

    /// Waits up to `timeout` for the first answer from discovery.
    pub async fn wait_resolved(&self, timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Keeps instance sets of the services this process calls, refreshed in the background.
#[derive(Clone)]
pub struct Discovery {
    resolver: Arc<dyn Resolver>,
    services: Arc<Mutex<HashMap<String, Endpoints>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("resolver", &self.resolver.kind())
            .finish()
    }
}

impl Discovery {
    /// Discovery through `resolver`.
    pub fn new(resolver: Arc<dyn Resolver>) -> Self {
        Self {
            resolver,
            services: Arc::default(),
        }
    }

    /// Discovery through the backend a `FLOTILLA_DISCOVERY` URL names.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(resolver_from_url(url)?))
    }

    /// The resolver behind this discovery.
    pub fn resolver(&self) -> &Arc<dyn Resolver> {
        &self.resolver
    }

    /// A live view of `service`; the first call starts following it. Must be called
    /// within a Tokio runtime.
    pub fn endpoints(&self, service: &str) -> Endpoints {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = services.get(service) {
            return e.clone();
        }
        let (tx, rx) = watch::channel(None);
        let view = Endpoints {
            service: Arc::from(service),
            rx,
        };
        services.insert(service.to_owned(), view.clone());
        tokio::spawn(follow(self.resolver.clone(), service.to_owned(), tx));
        view
    }
}

/// Rebuilds the endpoint set from a snapshot, keeping in-flight counters of instances
/// that stay.
fn endpoints_from(snapshot: &Snapshot, previous: &[Endpoint]) -> Arc<[Endpoint]> {
    snapshot
        .instances
        .iter()
        .filter(|i| i.healthy)
        .map(|i| {
            let in_flight = previous
                .iter()
                .find(|e| e.instance.id == i.id && e.instance.addr == i.addr)
                .map(|e| e.in_flight.clone())
                .unwrap_or_default();
            Endpoint {
                instance: Arc::new(i.clone()),
                in_flight,
            }
        })
        .collect()
}

/// Follows one service until every view of it is gone. On errors the last known set
/// stays in use and resolution is retried with backoff.
async fn follow(resolver: Arc<dyn Resolver>, service: String, tx: watch::Sender<EndpointSet>) {
    let mut after = None;
    let mut backoff = Duration::from_millis(200);
    while !tx.is_closed() {
        match resolver.resolve(&service, after).await {
            Ok(snapshot) => {
                backoff = Duration::from_millis(200);
                after = Some(snapshot.revision);
                tx.send_modify(|set| {
                    let previous = set
                        .as_ref()
                        .map_or_else(|| Arc::from([]), |s| s.endpoints.clone());
                    *set = Some(Routable {
                        endpoints: endpoints_from(&snapshot, &previous),
                        traffic: snapshot.traffic.clone().map(Arc::new),
                    });
                });
            }
            Err(e) => {
                tracing::warn!(service = %service, error = %e, "discovery failed; keeping the last known instances");
                after = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, in_flight: usize) -> Endpoint {
        Endpoint {
            instance: Arc::new(Instance {
                id: id.into(),
                addr: format!("{id}:1"),
                healthy: true,
                metadata: BTreeMap::new(),
            }),
            in_flight: Arc::new(AtomicUsize::new(in_flight)),
        }
    }

    #[test]
    fn p2c_with_two_always_takes_the_less_loaded() {
        let set = [endpoint("a", 5), endpoint("b", 0)];
        for _ in 0..100 {
            let p = pick_p2c(&set).unwrap();
            assert_eq!(p.instance.id, "b");
        }
    }

    #[test]
    fn p2c_spreads_evenly_when_equal_and_counts_in_flight() {
        let set: Vec<_> = (0..4).map(|i| endpoint(&i.to_string(), 0)).collect();
        let mut hits = [0usize; 4];
        for _ in 0..4000 {
            let p = pick_p2c(&set).unwrap();
            hits[p.instance.id.parse::<usize>().unwrap()] += 1;
        }
        for h in hits {
            assert!((700..1300).contains(&h), "uneven spread: {hits:?}");
        }
        let held = pick_p2c(&set).unwrap();
        let total: usize = set.iter().map(Endpoint::in_flight).sum();
        assert_eq!(total, 1);
        drop(held);
        assert_eq!(set.iter().map(Endpoint::in_flight).sum::<usize>(), 0);
    }

    #[test]
    fn p2c_never_picks_the_most_loaded_of_three_while_two_are_idle() {
        // With three endpoints the busiest can only be picked if paired with itself,
        // which p2c never does.
        let set = [endpoint("busy", 100), endpoint("x", 0), endpoint("y", 0)];
        for _ in 0..500 {
            let p = pick_p2c(&set).unwrap();
            assert_ne!(p.instance.id, "busy");
        }
    }

    #[test]
    fn unhealthy_instances_are_dropped_and_counters_survive_refresh() {
        let prev = [endpoint("a", 3)];
        let mut b = (*endpoint("b", 0).instance).clone();
        b.healthy = false;
        let snap = Snapshot {
            instances: vec![(*prev[0].instance).clone(), b],
            revision: 2,
            traffic: None,
        };
        let next = endpoints_from(&snap, &prev);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].instance.id, "a");
        assert_eq!(next[0].in_flight(), 3);
    }

    fn versioned(id: &str, version: &str) -> Endpoint {
        let e = endpoint(id, 0);
        let mut i = (*e.instance).clone();
        i.metadata.insert("version".into(), version.into());
        Endpoint {
            instance: Arc::new(i),
            in_flight: e.in_flight,
        }
    }

    #[test]
    fn routing_narrows_to_the_chosen_version_and_respects_keep() {
        let set = [
            versioned("s1", "stable"),
            versioned("s2", "stable"),
            versioned("c1", "canary"),
        ];
        let rules = TrafficPolicy {
            split: [("stable".to_owned(), 0), ("canary".to_owned(), 1)].into(),
            ..TrafficPolicy::default()
        };
        for _ in 0..50 {
            let p = pick_routed(&set, Some(&rules), RouteHint::default(), |_| true).unwrap();
            assert_eq!(p.instance.id, "c1");
        }
        // The canary is excluded (tried already): the rest of the service still serves.
        let p = pick_routed(&set, Some(&rules), RouteHint::default(), |e| {
            e.instance.id != "c1"
        });
        assert!(p.unwrap().instance.id.starts_with('s'));
        // A header picks stable although its weight is 0.
        let hint = RouteHint {
            version: Some("stable"),
            user: None,
        };
        for _ in 0..50 {
            let p = pick_routed(&set, Some(&rules), hint, |_| true).unwrap();
            assert!(p.instance.id.starts_with('s'));
        }
    }

    #[test]
    fn unknown_scheme_names_the_setting() {
        let err = resolver_from_url("consul://x").err().unwrap().to_string();
        assert!(err.contains("FLOTILLA_DISCOVERY"), "{err}");
    }
}
