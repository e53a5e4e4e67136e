//! Bulkhead: a concurrency limit per target with a bounded queue; excess is rejected at
//! once instead of piling up and taking the caller down with the target.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stack::{BoxError, CallError};

/// Bulkhead settings for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkheadConfig {
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls allowed to wait for a slot; more are rejected.
    pub max_queue: usize,
    /// Longest wait for a slot.
    #[serde(with = "crate::config::duration")]
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 512,
            max_queue: 512,
            queue_timeout: Duration::from_millis(500),
        }
    }
}

/// The bulkhead is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many concurrent calls")]
pub struct Full;

/// A concurrency limit with a bounded queue.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    target: Arc<str>,
    cfg: BulkheadConfig,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl Bulkhead {
    /// A bulkhead for `target`.
    pub fn new(target: &str, cfg: BulkheadConfig) -> Self {
        Self {
            target: Arc::from(target),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            waiting: Arc::default(),
            cfg,
        }
    }

    /// A slot, at once if free, else after waiting in the queue; [`Full`] when the
    /// queue is full or the wait times out.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Full> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let result = if queued >= self.cfg.max_queue {
            Err(Full)
        } else {
            tokio::time::timeout(self.cfg.queue_timeout, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or(Full)
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        if result.is_err() {
            metrics::counter!("rejected_total", "target" => self.target.to_string(), "reason" => "bulkhead")
                .increment(1);
        }
        result
    }

    /// Runs the call `call` makes in a slot, or fails at once with
    /// [`CallError::BulkheadFull`]. (It takes a closure rather than a future so the
    /// call's future is built in place, not moved through every layer.)
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, BoxError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, BoxError>>,
    {
        let _slot = self.enter().await.map_err(|Full| CallError::BulkheadFull {
            target: self.target.clone(),
        })?;
        call().await
    }
}

/// Tower layer: calls pass through a [`Bulkhead`]; when it is full they fail at once with
/// [`CallError::BulkheadFull`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// Calls through `bulkhead`.
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> tower::Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> tower::Service<Req> for BulkheadService<S>
where
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<S::Response, BoxError>>;

    super::stack::always_ready!();

    fn call(&mut self, req: Req) -> Self::Future {
        let bulkhead = self.bulkhead.clone();
        let inner = self.inner.clone();
        Box::pin(async move { bulkhead.run(|| super::stack::ready_call(inner, req)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rejects_beyond_slots_and_queue() {
        let b = Bulkhead::new(
            "t",
            BulkheadConfig {
                max_concurrent: 2,
                max_queue: 1,
                queue_timeout: Duration::from_millis(100),
            },
        );
        let p1 = b.enter().await.unwrap();
        let _p2 = b.enter().await.unwrap();
        let queued = {
            let b = b.clone();
            tokio::spawn(async move { b.enter().await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            b.enter().await.err(),
            Some(Full),
            "queue full: rejected at once"
        );
        drop(p1);
        assert!(
            queued.await.unwrap().is_ok(),
            "the queued call got the freed slot"
        );
        let _p3 = b.enter().await.unwrap();
        assert_eq!(b.enter().await.err(), Some(Full), "timed out in the queue");
    }
}
