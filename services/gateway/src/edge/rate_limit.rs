//! Rate limits: GCRA per client and per route, in memory (governor) or shared through
//! Redis.
//!
//! The key is the user (`sub`) for a request with a valid token and the client address
//! otherwise (IPv6 by /64, so one host cannot mint fresh keys from its own prefix). A
//! route with its own `rate_limit` has its own bucket per key; every other route shares
//! the default quota's bucket. Answers carry the IETF draft headers
//! (draft-ietf-httpapi-ratelimit-headers, version 09 and later):
//!
//! ```text
//! RateLimit-Policy: "default";q=200;w=2      q = burst, w = seconds to refill it
//! RateLimit: "default";r=57;t=1              r = requests left now, t = seconds to full
//! ```
//!
//! and a `429` adds `Retry-After` (whole seconds, rounded up). Memory stays bounded: idle
//! keys are swept every [`RateLimitConfig::sweep_every`], and beyond
//! [`RateLimitConfig::max_keys`] new clients share one overflow bucket until the sweep
//! frees room. With `rate_limit_store = "redis://…"` every gateway instance shares the
//! buckets: one Lua script does the GCRA step atomically on Redis's clock; when Redis
//! fails, the in-memory buckets decide meanwhile.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use http::{HeaderMap, HeaderName, HeaderValue};
use kit::Problem;
use serde::{Deserialize, Serialize};

use super::auth::Authn;
use super::{Edge, Matched};
use crate::routes::{Quota, RouteConfig};

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The `[gateway.rate_limit]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Whether requests are rate limited at all.
    pub enabled: bool,
    /// Default sustained rate per client, for routes without their own quota.
    pub per_second: f64,
    /// Default burst per client.
    pub burst: u32,
    /// Most keys kept in memory per quota; new clients beyond it share one bucket.
    pub max_keys: usize,
    /// How often idle keys are dropped.
    #[serde(with = "kit::config::duration")]
    pub sweep_every: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 100.0,
            burst: 200,
            max_keys: 100_000,
            sweep_every: Duration::from_secs(60),
        }
    }
}

impl RateLimitConfig {
    /// The default quota.
    pub fn quota(&self) -> Quota {
        Quota {
            per_second: self.per_second,
            burst: self.burst,
        }
    }

    /// Checks the values; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.quota().validate("gateway.rate_limit")?;
        if self.max_keys == 0 || self.sweep_every.is_zero() {
            return Err("gateway.rate_limit: max_keys and sweep_every must be positive".into());
        }
        Ok(())
    }
}

/// Whose bucket a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An anonymous client, by address (IPv6 by its /64).
    Addr(IpAddr),
    /// A verified user, by `sub`.
    User(Arc<str>),
    /// The bucket shared by new clients while the key table is full.
    Overflow,
}

impl ClientKey {
    /// The key for a client at `ip`.
    pub fn for_addr(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        Self::Addr(ip)
    }

    fn redis_part(&self) -> String {
        match self {
            Self::Addr(ip) => format!("a:{ip}"),
            Self::User(sub) => format!("u:{sub}"),
            Self::Overflow => "overflow".to_owned(),
        }
    }
}

/// A keyed state store with a cap on its keys (governor's own map underneath).
struct BoundedStore {
    inner: HashMapStateStore<ClientKey>,
    cap: usize,
}

impl StateStore for BoundedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let full = {
            let map = self.inner.lock();
            map.len() >= self.cap && !map.contains_key(key)
        };
        let key = if full { &ClientKey::Overflow } else { key };
        self.inner.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.inner, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.inner);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.inner)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.inner)
    }
}

type Memory =
    governor::RateLimiter<ClientKey, BoundedStore, DefaultClock, StateInformationMiddleware>;

/// One quota with its buckets.
pub struct Policy {
    /// The name in the `RateLimit` headers (`default`, or the route's prefix).
    pub name: String,
    /// The quota.
    pub quota: Quota,
    memory: Arc<Memory>,
}

impl Policy {
    fn new(name: &str, quota: Quota, max_keys: usize) -> Self {
        let period = Duration::from_secs_f64(1.0 / quota.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        let g = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let store = BoundedStore {
            inner: HashMapStateStore::new(HashMap::default()),
            cap: max_keys,
        };
        let memory = Memory::new(g, store, DefaultClock::default());
        Self {
            name: name.chars().filter(|c| *c != '"' && *c != '\\').collect(),
            quota,
            memory: Arc::new(memory),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.quota.per_second)
    }

    /// Seconds it takes to refill the whole burst (`w` of the policy header).
    pub fn window_secs(&self) -> u64 {
        (f64::from(self.quota.burst) / self.quota.per_second)
            .ceil()
            .max(1.0) as u64
    }

    fn check_memory(&self, key: &ClientKey) -> Decision {
        let burst = self.quota.burst;
        match self.memory.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(burst);
                Decision {
                    allowed: true,
                    remaining,
                    reset: self.interval() * (burst - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset: wait + self.interval() * burst.saturating_sub(1),
                    retry_after: wait,
                }
            }
        }
    }
}

/// The outcome of charging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Requests left in the burst now.
    pub remaining: u32,
    /// Time until the burst is full again.
    pub reset: Duration,
    /// Time until the next request would pass (zero when allowed).
    pub retry_after: Duration,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// Writes `RateLimit-Policy` and `RateLimit` for `policy`.
    pub fn write_headers(&self, policy: &Policy, headers: &mut HeaderMap) {
        let name = &policy.name;
        let p = format!(
            "\"{name}\";q={};w={}",
            policy.quota.burst,
            policy.window_secs()
        );
        let r = format!(
            "\"{name}\";r={};t={}",
            self.remaining,
            ceil_secs(self.reset)
        );
        if let (Ok(p), Ok(r)) = (HeaderValue::from_str(&p), HeaderValue::from_str(&r)) {
            headers.insert(RATELIMIT_POLICY, p);
            headers.insert(RATELIMIT, r);
        }
    }
}

/// GCRA on Redis: one atomic script per request, on the server's clock (microseconds),
/// so every gateway instance charges the same buckets.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return {1, math.floor((now - allow_at) / interval), new_tat - now}
"#;

/// The Redis side of shared limits.
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    last_warning: AtomicU64,
}

impl RedisStore {
    /// Uses `conn` (see [`kit::store::redis::connect`]).
    pub fn new(conn: redis::aio::ConnectionManager) -> Self {
        Self {
            conn,
            script: redis::Script::new(GCRA_LUA),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Charges `key` under `policy` on Redis.
    pub async fn check(&self, policy: &Policy, key: &ClientKey) -> redis::RedisResult<Decision> {
        let interval_us = (1e6 / policy.quota.per_second).max(1.0) as u64;
        let redis_key = format!("flotilla:ratelimit:{}:{}", policy.name, key.redis_part());
        let mut conn = self.conn.clone();
        let (allowed, a, reset_us): (i64, i64, i64) = self
            .script
            .key(redis_key)
            .arg(interval_us)
            .arg(policy.quota.burst)
            .invoke_async(&mut conn)
            .await?;
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(if allowed == 1 {
            Decision {
                allowed: true,
                remaining: a.clamp(0, i64::from(policy.quota.burst)) as u32,
                reset: us(reset_us),
                retry_after: Duration::ZERO,
            }
        } else {
            Decision {
                allowed: false,
                remaining: 0,
                reset: us(reset_us),
                retry_after: us(a),
            }
        })
    }

    fn warn(&self, e: &redis::RedisError) {
        let now = kit::security::jwt::now_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "rate-limit store failed; limiting in memory meanwhile");
        }
    }
}

/// The gateway's rate limits: one policy per route with its own quota, one shared
/// default.
pub struct RateLimiter {
    policies: Vec<Policy>,
    /// Route index → policy index.
    by_route: Vec<usize>,
    redis: Option<RedisStore>,
}

impl RateLimiter {
    /// Policies for `routes` (in table order) under `config`, shared through `redis`
    /// when given. Starts the sweeper of idle keys.
    pub fn new(
        config: &RateLimitConfig,
        routes: &[RouteConfig],
        redis: Option<RedisStore>,
    ) -> Self {
        let mut policies = vec![Policy::new("default", config.quota(), config.max_keys)];
        let by_route = routes
            .iter()
            .map(|r| match r.rate_limit {
                Some(q) => {
                    policies.push(Policy::new(&r.prefix, q, config.max_keys));
                    policies.len() - 1
                }
                None => 0,
            })
            .collect();
        let limiter = Self {
            policies,
            by_route,
            redis,
        };
        limiter.sweep_every(config.sweep_every);
        limiter
    }

    fn sweep_every(&self, every: Duration) {
        let weak: Vec<Weak<Memory>> = self
            .policies
            .iter()
            .map(|p| Arc::downgrade(&p.memory))
            .collect();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut alive = 0;
                for m in weak.iter().filter_map(Weak::upgrade) {
                    m.retain_recent();
                    m.shrink_to_fit();
                    alive += 1;
                }
                if alive == 0 {
                    return;
                }
            }
        });
    }

    /// The policy for the route at `route` (the default one for unrouted paths).
    pub fn policy(&self, route: Option<usize>) -> &Policy {
        let i = route
            .and_then(|r| self.by_route.get(r).copied())
            .unwrap_or(0);
        &self.policies[i]
    }

    /// Keys held in memory, over all policies.
    pub fn keys(&self) -> usize {
        self.policies.iter().map(|p| p.memory.len()).sum()
    }

    /// Drops idle keys now (the sweeper does this periodically).
    pub fn sweep(&self) {
        for p in &self.policies {
            p.memory.retain_recent();
        }
    }

    /// Charges one request by `key` on the route at `route`.
    pub async fn check(&self, route: Option<usize>, key: &ClientKey) -> (Decision, &Policy) {
        let policy = self.policy(route);
        if let Some(redis) = &self.redis {
            match redis.check(policy, key).await {
                Ok(d) => return (d, policy),
                Err(e) => redis.warn(&e),
            }
        }
        (policy.check_memory(key), policy)
    }
}

/// Charges the caller's bucket; `429` when it is empty, `RateLimit` headers either way.
pub async fn limit(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let Some(limiter) = &edge.limiter else {
        return next.run(req).await;
    };
    let key = match req.extensions().get::<Authn>() {
        Some(Authn::User(id)) => ClientKey::User(Arc::from(id.user_id.as_str())),
        _ => {
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
            ClientKey::for_addr(ip)
        }
    };
    let route = req.extensions().get::<Matched>().and_then(|m| m.0);
    let (decision, policy) = limiter.check(route, &key).await;
    if !decision.allowed {
        metrics::counter!("gateway_rate_limited_total", "policy" => policy.name.clone())
            .increment(1);
        let mut res = Problem::too_many_requests(decision.retry_after)
            .with_detail(format!(
                "rate limit {:?} exceeded: {} requests per second, bursts of {}",
                policy.name, policy.quota.per_second, policy.quota.burst
            ))
            .into_response();
        decision.write_headers(policy, res.headers_mut());
        return res;
    }
    let mut res = next.run(req).await;
    decision.write_headers(policy, res.headers_mut());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_keys: usize) -> RateLimiter {
        let config = RateLimitConfig {
            per_second,
            burst,
            max_keys,
            ..RateLimitConfig::default()
        };
        RateLimiter::new(&config, &[], None)
    }

    #[tokio::test]
    async fn a_burst_then_the_rate() {
        let l = limiter(10.0, 5, 100);
        let key = ClientKey::for_addr([10, 0, 0, 1].into());
        let mut admitted = 0;
        for i in 0..20 {
            let (d, _) = l.check(None, &key).await;
            if d.allowed {
                admitted += 1;
                assert_eq!(d.remaining, 4 - i);
            } else {
                assert!(d.retry_after > Duration::ZERO);
                assert!(d.retry_after <= Duration::from_millis(100));
            }
        }
        assert_eq!(admitted, 5);
        // Another client has its own bucket.
        let (d, p) = l.check(None, &ClientKey::User("u-2".into())).await;
        assert!(d.allowed);
        assert_eq!(p.window_secs(), 1);
        let mut h = HeaderMap::new();
        d.write_headers(p, &mut h);
        assert_eq!(h[RATELIMIT_POLICY], "\"default\";q=5;w=1");
        assert_eq!(h[RATELIMIT], "\"default\";r=4;t=1");
    }

    #[tokio::test]
    async fn keys_are_capped_and_swept() {
        let l = limiter(1000.0, 1, 10);
        for i in 0..100u8 {
            l.check(None, &ClientKey::for_addr([10, 0, 1, i].into()))
                .await;
        }
        assert!(l.keys() <= 11, "{} keys", l.keys());
        // New clients beyond the cap share the overflow bucket.
        let (a, _) = l
            .check(None, &ClientKey::for_addr([10, 9, 9, 9].into()))
            .await;
        let (b, _) = l
            .check(None, &ClientKey::for_addr([10, 9, 9, 8].into()))
            .await;
        assert!(!(a.allowed && b.allowed));
        tokio::time::sleep(Duration::from_millis(20)).await;
        l.sweep();
        assert_eq!(l.keys(), 0);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::for_addr(a), ClientKey::for_addr(b));
        assert_ne!(ClientKey::for_addr(a), ClientKey::for_addr(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            ClientKey::for_addr(mapped),
            ClientKey::for_addr([10, 0, 0, 1].into())
        );
    }
}
