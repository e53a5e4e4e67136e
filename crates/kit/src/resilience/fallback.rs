//! Fallbacks: a degraded answer, where one exists, instead of an error.
//!
//! [`FallbackLayer`] is the hook: when the call fails (an error from the layers below:
//! breaker open, bulkhead full, timed out, transport), its [`Fallback`] may answer
//! instead.
//! [`StaleCache`] is the usual source of such answers: the last good answers, kept for
//! a bounded time and number, served "stale if error" (RFC 5861). The gateway serves
//! catalog reads from one while inventory is down; orders takes recent catalog prices
//! from one while inventory's catalog does not answer.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::stack::BoxError;

/// Where a degraded answer comes from.
pub trait Fallback<Req, Res>: Clone + Send + Sync + 'static {
    /// What the fallback keeps of the request (taken before the call).
    type Key: Send + 'static;

    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;

    /// Sees every good answer (a cache remembers it).
    fn record(&self, _key: &Self::Key, _res: &Res) {}

    /// The degraded answer for a failed call, or `None` to let the error through.
    fn answer(&self, key: Self::Key, error: &BoxError) -> Option<Res>;
}

/// Tower layer: on an error from the service below, its [`Fallback`] may answer instead.
#[derive(Debug, Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
}

impl<F> FallbackLayer<F> {
    /// Falls back to `fallback`.
    pub fn new(fallback: F) -> Self {
        Self { fallback }
    }
}

impl<S, F: Clone> tower::Layer<S> for FallbackLayer<F> {
    type Service = FallbackService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of [`FallbackLayer`].
#[derive(Debug, Clone)]
pub struct FallbackService<S, F> {
    inner: S,
    fallback: F,
}

impl<S, F, Req> tower::Service<Req> for FallbackService<S, F>
where
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    F: Fallback<Req, S::Response>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<S::Response, BoxError>>;

    super::stack::always_ready!();

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let fallback = self.fallback.clone();
        let key = fallback.key(&req);
        Box::pin(async move {
            let result = async { super::stack::ready_call(inner, req).await }.await;
            match result {
                Ok(res) => {
                    fallback.record(&key, &res);
                    Ok(res)
                }
                Err(e) => match fallback.answer(key, &e) {
                    Some(res) => {
                        metrics::counter!("fallbacks_total").increment(1);
                        tracing::debug!(error = %e, "answered by the fallback");
                        Ok(res)
                    }
                    None => Err(e),
                },
            }
        })
    }
}

/// A [`StaleCache`] as a fallback: requests are their own keys; every good answer is
/// remembered and served while the target fails.
impl<K, V> Fallback<K, V> for Arc<StaleCache<K, V>>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, req: &K) -> K {
        req.clone()
    }

    fn record(&self, key: &K, res: &V) {
        self.put(key.clone(), res.clone());
    }

    fn answer(&self, key: K, _: &BoxError) -> Option<V> {
        self.get(&key).map(|(v, _)| v)
    }
}

/// The last good answers by key, for "stale if error" fallbacks: at most `max_entries`
/// (the oldest written is evicted first), each served for at most `max_age`.
#[derive(Debug)]
pub struct StaleCache<K, V> {
    max_entries: usize,
    max_age: Duration,
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, (V, Instant)>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> StaleCache<K, V> {
    /// An empty cache.
    pub fn new(max_entries: usize, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            max_entries: max_entries.max(1),
            max_age,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        })
    }

    /// Remembers `value` as the last good answer for `key`.
    pub fn put(&self, key: K, value: V) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if e.map.insert(key.clone(), (value, now)).is_none() {
            e.order.push_back(key);
        }
        while e.map.len() > self.max_entries {
            match e.order.pop_front() {
                Some(old) => {
                    e.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The last good answer for `key` and its age, unless it is older than `max_age`.
    pub fn get(&self, key: &K) -> Option<(V, Duration)> {
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (v, at) = e.map.get(key)?;
        let age = at.elapsed();
        (age <= self.max_age).then(|| (v.clone(), age))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn stale_cache_is_bounded_in_size_and_age() {
        let c = StaleCache::new(2, Duration::from_secs(60));
        c.put("a", 1);
        c.put("b", 2);
        c.put("a", 10);
        assert_eq!(c.get(&"a").map(|x| x.0), Some(10), "overwritten in place");
        c.put("c", 3);
        assert_eq!(c.len(), 2);
        assert!(c.get(&"a").is_none(), "the oldest written is evicted first");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.get(&"b"), Some((2, Duration::from_secs(30))));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(c.get(&"b").is_none(), "too old to serve");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_cache_answers_for_a_failing_target_with_what_it_last_said() {
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = {
            let down = down.clone();
            tower::service_fn(move |sku: &'static str| {
                let down = down.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if down {
                        Err::<String, BoxError>("down".into())
                    } else {
                        Ok(format!("price of {sku}"))
                    }
                }
            })
        };
        let cache = StaleCache::new(10, Duration::from_secs(60));
        let mut svc = FallbackLayer::new(cache.clone()).layer(target);
        assert_eq!(
            svc.ready().await.unwrap().call("A").await.unwrap(),
            "price of A"
        );
        down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            svc.ready().await.unwrap().call("A").await.unwrap(),
            "price of A"
        );
        assert!(
            svc.ready().await.unwrap().call("B").await.is_err(),
            "never seen"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            svc.ready().await.unwrap().call("A").await.is_err(),
            "too stale"
        );
    }
}
