//! Resilience for every outbound call: [`circuit_breaker`], [`retry`] (budget, jitter,
//! deadline), [`deadline`] propagation, [`bulkhead`], [`fallback`] answers, and
//! server-side [`fault`] injection to see them work. Each is a tower layer usable
//! alone; [`stack::ClientStack`] composes them in the standard order around any HTTP or
//! gRPC transport.
//!
//! A [`Policy`] bundles the breaker, retry and bulkhead for one target; policies are
//! configured per target in the `[resilience]` section:
//!
//! ```toml
//! [resilience.default.breaker]      # every target
//! failure_threshold = 5
//! open_for = "5s"                  # doubled by each failed probe, up to max_open_for
//! max_open_for = "60s"
//! [resilience.targets.inventory.breaker]   # one target (replaces the default's breaker)
//! open_for = "2s"
//! ```
//!
//! Breakers are registered per process, so `GET /admin/breakers` lists every one.

pub mod bulkhead;
pub mod circuit_breaker;
pub mod deadline;
pub mod fallback;
pub mod fault;
pub mod retry;
pub mod stack;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use bulkhead::{Bulkhead, BulkheadConfig};
pub use circuit_breaker::{BreakerConfig, CircuitBreaker, Rejected, State};
pub use retry::{Retry, RetryConfig, Verdict};
pub use stack::{CallError, Classifier, ClientStack};

/// The policies for one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Concurrency limit.
    pub bulkhead: BulkheadConfig,
}

/// The `[resilience]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResilienceConfig {
    /// Policies for targets without their own.
    pub default: PolicyConfig,
    /// Per-target policies, by service name.
    pub targets: BTreeMap<String, PolicyConfig>,
}

impl ResilienceConfig {
    /// The policies for `target`.
    pub fn for_target(&self, target: &str) -> &PolicyConfig {
        self.targets.get(target).unwrap_or(&self.default)
    }
}

/// Breaker, retry and bulkhead for calls to one target.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The target's breaker (also listed at `/admin/breakers`).
    pub breaker: Arc<CircuitBreaker>,
    /// Retries.
    pub retry: Retry,
    /// Concurrency limit.
    pub bulkhead: Bulkhead,
    /// Per-instance breakers, when the breaker config asks for them.
    instances: Option<Arc<InstanceBreakers>>,
}

/// Per-instance breakers by instance id.
type InstanceBreakers = Mutex<HashMap<String, Arc<CircuitBreaker>>>;

/// Per-instance breakers kept per target; beyond this, closed ones are forgotten.
const MAX_INSTANCE_BREAKERS: usize = 256;

impl Policy {
    /// The policy for `target` under `cfg`, registering its breaker.
    pub fn new(target: &str, cfg: &ResilienceConfig) -> Self {
        let p = cfg.for_target(target);
        let breaker = register(CircuitBreaker::new(target, p.breaker.clone()));
        Self {
            breaker,
            retry: Retry::new(target, p.retry.clone()),
            bulkhead: Bulkhead::new(target, p.bulkhead.clone()),
            instances: p.breaker.per_instance.then(Arc::default),
        }
    }

    /// The breaker for calls to `instance`: its own (`target/instance`) when the breaker
    /// is configured `per_instance`, else the target's.
    pub fn breaker_for(&self, instance: Option<&str>) -> Arc<CircuitBreaker> {
        let (Some(map), Some(id)) = (&self.instances, instance) else {
            return self.breaker.clone();
        };
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(id) {
            return b.clone();
        }
        if map.len() >= MAX_INSTANCE_BREAKERS {
            map.retain(|_, b| b.state() != State::Closed);
        }
        let name = format!("{}/{id}", self.breaker.target());
        let b = register(CircuitBreaker::new(&name, self.breaker.config().clone()));
        map.insert(id.to_owned(), b.clone());
        b
    }

    /// Whether calls to `instance` would be rejected now (its breaker is open and not
    /// yet due for a probe). Balancers skip such instances.
    pub fn is_open_for(&self, instance: &str) -> bool {
        self.instances.is_some() && self.breaker_for(Some(instance)).is_rejecting()
    }
}

fn register(b: CircuitBreaker) -> Arc<CircuitBreaker> {
    let b = Arc::new(b);
    let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&b));
    b
}

fn registry() -> &'static Mutex<Vec<Weak<CircuitBreaker>>> {
    static BREAKERS: OnceLock<Mutex<Vec<Weak<CircuitBreaker>>>> = OnceLock::new();
    BREAKERS.get_or_init(Mutex::default)
}

/// Every breaker of this process.
pub fn breakers() -> Vec<circuit_breaker::BreakerSnapshot> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .map(|b| b.snapshot())
        .collect()
}

/// Whether an HTTP answer counts against the target: 5xx do (except 501), 4xx do not.
pub fn is_failure_status(status: http::StatusCode) -> bool {
    status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED
}

/// `GET /admin/breakers` and `/admin/faults`, added to every service's admin listener.
pub fn admin_router() -> Router {
    Router::new()
        .route("/admin/breakers", get(|| async { Json(breakers()) }))
        .merge(fault::admin_router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_target_policies_fall_back_to_the_default() {
        let cfg: ResilienceConfig = serde_json::from_value(serde_json::json!({
            "default": {"breaker": {"open_for": "30s"}},
            "targets": {"inventory": {"breaker": {"open_for": "1s"}, "retry": {"max_attempts": 1}}}
        }))
        .unwrap();
        assert_eq!(cfg.for_target("inventory").breaker.open_for.as_secs(), 1);
        assert_eq!(cfg.for_target("inventory").retry.max_attempts, 1);
        assert_eq!(cfg.for_target("orders").breaker.open_for.as_secs(), 30);
        assert_eq!(cfg.for_target("orders").breaker.failure_threshold, 5);
    }

    #[test]
    fn failure_statuses() {
        assert!(is_failure_status(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_failure_status(http::StatusCode::NOT_FOUND));
        assert!(!is_failure_status(http::StatusCode::NOT_IMPLEMENTED));
    }
}
