//! The registry's rules, without I/O: leases, expiry, revisions.
//!
//! An instance is healthy while its lease is alive. When the lease runs out it turns
//! unhealthy (clients stop sending it traffic) and is removed one more TTL later, so a
//! briefly stalled instance can come back without churn. Each service has a revision
//! (`index`) that changes whenever what clients route on changes: membership, address,
//! health or version, or its traffic rules. Heartbeats that change nothing else do not
//! wake watchers.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::discovery::Instance;
use kit::discovery::registry::{RegisterRequest, ServiceEntry};
use kit::discovery::traffic::TrafficPolicy;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One registered instance and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The instance as clients see it (health computed on read).
    pub addr: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Lease length.
    pub ttl: Duration,
    /// When the lease runs out unless renewed.
    pub expires_at: Instant,
}

impl Lease {
    fn healthy(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// All services and their leases.
#[derive(Debug, Default)]
pub struct Registry {
    services: BTreeMap<String, ServiceLeases>,
    /// Global counter; each change takes the next value as the service's index.
    counter: u64,
}

#[derive(Debug, Default)]
struct ServiceLeases {
    index: u64,
    instances: BTreeMap<String, Lease>,
    traffic: Option<TrafficPolicy>,
}

/// What a snapshot file holds: enough to keep answering after a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Per service, instance id → registration.
    pub services: BTreeMap<String, BTreeMap<String, RegisterRequest>>,
    /// Per service, its traffic rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, TrafficPolicy>,
}

impl Registry {
    fn bump(&mut self, service: &str) {
        self.counter += 1;
        let counter = self.counter;
        if let Some(s) = self.services.get_mut(service) {
            s.index = counter;
        }
    }

    /// Registers or renews an instance. Returns whether clients must be told.
    pub fn register(
        &mut self,
        service: &str,
        id: &str,
        req: RegisterRequest,
        now: Instant,
    ) -> bool {
        let ttl = Duration::from_millis(req.ttl_ms);
        let lease = Lease {
            addr: req.addr,
            metadata: req.metadata,
            ttl,
            expires_at: now + ttl,
        };
        let entry = self.services.entry(service.to_owned()).or_default();
        let changed = match entry.instances.get(id) {
            None => true,
            Some(old) => {
                old.addr != lease.addr
                    || !old.healthy(now)
                    || old.metadata.get("version") != lease.metadata.get("version")
            }
        };
        entry.instances.insert(id.to_owned(), lease);
        if changed {
            self.bump(service);
        }
        changed
    }

    /// Sets (or with `None` removes) the traffic rules of a service. Returns whether
    /// they changed.
    pub fn set_traffic(&mut self, service: &str, traffic: Option<TrafficPolicy>) -> bool {
        let entry = self.services.entry(service.to_owned()).or_default();
        if entry.traffic == traffic {
            return false;
        }
        entry.traffic = traffic;
        self.bump(service);
        true
    }

    /// The traffic rules of a service, if any.
    pub fn traffic(&self, service: &str) -> Option<&TrafficPolicy> {
        self.services.get(service)?.traffic.as_ref()
    }

    /// Removes an instance. Returns whether it existed.
    pub fn deregister(&mut self, service: &str, id: &str) -> bool {
        let removed = self
            .services
            .get_mut(service)
            .is_some_and(|s| s.instances.remove(id).is_some());
        if removed {
            self.bump(service);
        }
        removed
    }

    /// Applies time: leases that ran out turn unhealthy, and those expired for a further
    /// TTL are removed. Returns the services whose index changed.
    pub fn expire(&mut self, now: Instant, last_check: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, s) in &mut self.services {
            let before = s.instances.len();
            s.instances.retain(|_, l| now < l.expires_at + l.ttl);
            let newly_unhealthy = s
                .instances
                .values()
                .any(|l| l.expires_at <= now && l.expires_at > last_check);
            if s.instances.len() != before || newly_unhealthy {
                changed.push(name.clone());
            }
        }
        for name in &changed {
            self.bump(name);
        }
        self.services
            .retain(|_, s| !s.instances.is_empty() || s.index == 0 || s.traffic.is_some());
        changed
    }

    /// One service as clients see it (an unknown service has no instances, index 0).
    pub fn service(&self, name: &str, now: Instant) -> ServiceEntry {
        let (index, instances, traffic) = match self.services.get(name) {
            Some(s) => (
                s.index,
                s.instances
                    .iter()
                    .map(|(id, l)| Instance {
                        id: id.clone(),
                        addr: l.addr.clone(),
                        healthy: l.healthy(now),
                        metadata: l.metadata.clone(),
                    })
                    .collect(),
                s.traffic.clone(),
            ),
            None => (0, Vec::new(), None),
        };
        ServiceEntry {
            name: name.to_owned(),
            instances,
            index,
            traffic,
        }
    }

    /// The current index of a service (0 if unknown).
    pub fn index(&self, name: &str) -> u64 {
        self.services.get(name).map_or(0, |s| s.index)
    }

    /// Every service.
    pub fn services(&self, now: Instant) -> Vec<ServiceEntry> {
        self.services
            .keys()
            .map(|name| self.service(name, now))
            .collect()
    }

    /// What to write to the snapshot file.
    pub fn snapshot(&self) -> SnapshotFile {
        SnapshotFile {
            services: self
                .services
                .iter()
                .map(|(name, s)| {
                    let instances = s
                        .instances
                        .iter()
                        .map(|(id, l)| {
                            (
                                id.clone(),
                                RegisterRequest {
                                    addr: l.addr.clone(),
                                    ttl_ms: u64::try_from(l.ttl.as_millis()).unwrap_or(u64::MAX),
                                    metadata: l.metadata.clone(),
                                },
                            )
                        })
                        .collect();
                    (name.clone(), instances)
                })
                .collect(),
            traffic: self
                .services
                .iter()
                .filter_map(|(name, s)| Some((name.clone(), s.traffic.clone()?)))
                .collect(),
        }
    }

    /// A registry restored from a snapshot: every lease starts afresh, so instances that
    /// are still alive keep serving and the dead expire as usual.
    pub fn restore(file: SnapshotFile, now: Instant) -> Self {
        let mut r = Self::default();
        for (service, instances) in file.services {
            for (id, req) in instances {
                r.register(&service, &id, req, now);
            }
        }
        for (service, traffic) in file.traffic {
            r.set_traffic(&service, Some(traffic));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(addr: &str, ttl_ms: u64) -> RegisterRequest {
        RegisterRequest {
            addr: addr.into(),
            ttl_ms,
            metadata: BTreeMap::from([("version".into(), "1".into())]),
        }
    }

    #[test]
    fn lease_expiry_turns_unhealthy_then_removes() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        assert!(r.register("inventory", "a", req("127.0.0.1:1", 1000), t0));
        let idx = r.index("inventory");
        assert!(r.service("inventory", t0).instances[0].healthy);

        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(r.expire(t1, t0), vec!["inventory".to_owned()]);
        assert!(r.index("inventory") > idx);
        let s = r.service("inventory", t1);
        assert_eq!(s.instances.len(), 1);
        assert!(!s.instances[0].healthy, "expired lease is unhealthy");

        let t2 = t0 + Duration::from_millis(2100);
        assert_eq!(r.expire(t2, t1), vec!["inventory".to_owned()]);
        assert!(
            r.service("inventory", t2).instances.is_empty(),
            "removed after a further TTL"
        );
    }

    #[test]
    fn heartbeats_renew_without_waking_watchers() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.register("inventory", "a", req("127.0.0.1:1", 1000), t0);
        let idx = r.index("inventory");
        for i in 1..10 {
            let t = t0 + Duration::from_millis(500 * i);
            let mut hb = req("127.0.0.1:1", 1000);
            hb.metadata.insert("rss_bytes".into(), i.to_string());
            assert!(
                !r.register("inventory", "a", hb, t),
                "plain heartbeat is no change"
            );
            assert!(r.expire(t, t - Duration::from_millis(500)).is_empty());
        }
        assert_eq!(r.index("inventory"), idx);
        assert!(
            r.service("inventory", t0 + Duration::from_millis(4600))
                .instances[0]
                .healthy
        );
    }

    #[test]
    fn comeback_after_expiry_and_version_change_are_changes() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.register("orders", "a", req("h:1", 1000), t0);
        let t1 = t0 + Duration::from_millis(1500);
        r.expire(t1, t0);
        assert!(
            r.register("orders", "a", req("h:1", 1000), t1),
            "healthy again"
        );
        let mut v2 = req("h:1", 1000);
        v2.metadata.insert("version".into(), "2".into());
        assert!(r.register("orders", "a", v2, t1));
    }

    #[test]
    fn traffic_rules_wake_watchers_outlive_instances_and_survive_a_restart() {
        let now = Instant::now();
        let mut r = Registry::default();
        r.register("orders", "a", req("127.0.0.1:1", 1000), now);
        let before = r.index("orders");
        let rules = TrafficPolicy {
            split: [("stable".to_owned(), 90), ("canary".to_owned(), 10)].into(),
            ..TrafficPolicy::default()
        };
        assert!(r.set_traffic("orders", Some(rules.clone())));
        assert!(r.index("orders") > before);
        assert!(
            !r.set_traffic("orders", Some(rules.clone())),
            "no change, no wake-up"
        );
        assert_eq!(r.service("orders", now).traffic.as_ref(), Some(&rules));
        // The instance goes; the rules stay, also across a snapshot.
        r.expire(now + Duration::from_secs(5), now);
        assert!(r.service("orders", now).instances.is_empty());
        let restored = Registry::restore(r.snapshot(), now);
        assert_eq!(restored.traffic("orders"), Some(&rules));
        assert!(r.set_traffic("orders", None));
        assert_eq!(r.service("orders", now).traffic, None);
    }

    #[test]
    fn deregister_and_snapshot_round_trip() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.register("a", "1", req("h:1", 5000), t0);
        r.register("a", "2", req("h:2", 5000), t0);
        r.register("b", "1", req("h:3", 5000), t0);
        assert!(r.deregister("a", "2"));
        assert!(!r.deregister("a", "2"));
        let snap = r.snapshot();
        let restored = Registry::restore(snap.clone(), t0);
        assert_eq!(restored.snapshot(), snap);
        assert_eq!(restored.services(t0).len(), 2);
    }
}
