//! Retries that cannot multiply an outage: only calls that are safe to repeat, with
//! exponential backoff and full jitter, within a retry budget, never past the deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use super::stack::{BoxError, CallError, Classifier};

/// Retry settings for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff cap for the first retry; doubles per retry.
    #[serde(with = "crate::config::duration")]
    pub base_backoff: Duration,
    /// Largest backoff.
    #[serde(with = "crate::config::duration")]
    pub max_backoff: Duration,
    /// Retries allowed as a fraction of recent requests (0.2 = 20 %).
    pub budget_ratio: f32,
    /// Retries per second always allowed, however few requests there were.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
        }
    }
}

/// Whether a request may be sent twice: idempotent methods, or any request carrying an
/// `Idempotency-Key`.
pub fn is_retry_safe(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// Full jitter: a random wait between zero and `min(max, base × 2^retry)`.
pub fn backoff(cfg: &RetryConfig, retry: u32) -> Duration {
    let cap = cfg
        .base_backoff
        .saturating_mul(1u32 << retry.min(16))
        .min(cfg.max_backoff);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// What a finished attempt means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: success, or a failure retrying will not fix.
    Done,
    /// A failure another attempt might fix (if the request is safe to repeat).
    Retryable,
    /// A failure before the request reached the target (connection refused): safe to
    /// retry whatever the method.
    NotSent,
}

/// A retry policy with its budget, shared by all calls to one target.
#[derive(Debug, Clone)]
pub struct Retry {
    target: Arc<str>,
    cfg: RetryConfig,
    budget: Arc<TpsBudget>,
}

impl Retry {
    /// A policy for `target`.
    pub fn new(target: &str, cfg: RetryConfig) -> Self {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            cfg.budget_min_per_sec,
            cfg.budget_ratio,
        );
        Self {
            target: Arc::from(target),
            cfg,
            budget: Arc::new(budget),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.cfg
    }

    /// Runs `attempt` (given the attempt number from 0) until its verdict is
    /// [`Verdict::Done`], attempts run out, the budget is spent, or the next backoff
    /// would end past `deadline`. `safe` says whether the call may be repeated after
    /// it reached the target.
    pub async fn run<T, F, Fut>(
        &self,
        safe: bool,
        deadline: Option<Instant>,
        mut attempt: F,
        verdict: impl Fn(&T) -> Verdict,
    ) -> T
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = T>,
    {
        self.budget.deposit();
        let mut n = 0;
        loop {
            let out = attempt(n).await;
            let again = match verdict(&out) {
                Verdict::Done => false,
                Verdict::Retryable => safe,
                Verdict::NotSent => true,
            };
            n += 1;
            if !again || n >= self.cfg.max_attempts.max(1) {
                return out;
            }
            let wait = backoff(&self.cfg, n - 1);
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return out;
            }
            if !self.budget.withdraw() {
                metrics::counter!("rejected_total", "target" => self.target.to_string(), "reason" => "retry_budget")
                    .increment(1);
                return out;
            }
            metrics::counter!("retries_total", "target" => self.target.to_string()).increment(1);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Tower layer: sends a call again, under a [`Retry`] policy, when its answer or error
/// says another attempt might work — only for requests that are safe to repeat
/// ([`is_retry_safe`]) or that surely never reached the target.
///
/// The request body is buffered once so each attempt can carry it; `rebuild` turns the
/// bytes back into the inner service's body type. No attempt starts past the deadline
/// of the request being handled ([`super::deadline::current`]).
#[derive(Debug)]
pub struct RetryLayer<B> {
    retry: Retry,
    classifier: Classifier,
    rebuild: fn(Bytes) -> B,
    all_idempotent: bool,
}

impl<B> Clone for RetryLayer<B> {
    fn clone(&self) -> Self {
        Self {
            retry: self.retry.clone(),
            classifier: self.classifier,
            rebuild: self.rebuild,
            all_idempotent: self.all_idempotent,
        }
    }
}

impl<B> RetryLayer<B> {
    /// Retries under `retry`, judging answers with `classifier`.
    pub fn new(retry: Retry, classifier: Classifier, rebuild: fn(Bytes) -> B) -> Self {
        Self {
            retry,
            classifier,
            rebuild,
            all_idempotent: false,
        }
    }

    /// Treats every request as safe to repeat (for APIs whose every method is
    /// idempotent).
    pub fn all_idempotent(mut self, yes: bool) -> Self {
        self.all_idempotent = yes;
        self
    }
}

impl<B> RetryLayer<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Sends `req` through `attempt` until an answer is final (see [`Retry::run`]).
    /// The body is buffered once, unless retries are off or it is empty, so each
    /// attempt can carry it.
    pub async fn send<R, F, Fut>(
        &self,
        req: http::Request<B>,
        mut attempt: F,
    ) -> Result<http::Response<R>, BoxError>
    where
        F: FnMut(http::Request<B>) -> Fut,
        Fut: Future<Output = Result<http::Response<R>, BoxError>>,
    {
        if self.retry.cfg.max_attempts <= 1 {
            return attempt(req).await;
        }
        let (parts, body) = req.into_parts();
        let bytes = if body.is_end_stream() {
            Bytes::new()
        } else {
            http_body_util::BodyExt::collect(body)
                .await
                .map_err(Into::into)?
                .to_bytes()
        };
        let safe = self.all_idempotent || is_retry_safe(&parts.method, &parts.headers);
        let rebuild = self.rebuild;
        let classifier = self.classifier;
        self.retry
            .run(
                safe,
                super::deadline::current(),
                |_| {
                    attempt(http::Request::from_parts(
                        parts.clone(),
                        rebuild(bytes.clone()),
                    ))
                },
                |r| verdict_of(classifier, r),
            )
            .await
    }
}

impl<S, B> tower::Layer<S> for RetryLayer<B> {
    type Service = RetryService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug)]
pub struct RetryService<S, B> {
    inner: S,
    layer: RetryLayer<B>,
}

impl<S: Clone, B> Clone for RetryService<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

/// What an attempt's result means for retrying.
fn verdict_of<R>(classifier: Classifier, result: &Result<http::Response<R>, BoxError>) -> Verdict {
    match result {
        Ok(res) if classifier.is_failure(res) => Verdict::Retryable,
        Ok(_) => Verdict::Done,
        Err(e) => match CallError::find(e) {
            Some(CallError::BreakerOpen { .. } | CallError::BulkheadFull { .. }) => Verdict::Done,
            Some(c) if c.not_sent() => Verdict::NotSent,
            _ if super::stack::connection_refused(&**e) => Verdict::NotSent,
            _ => Verdict::Retryable,
        },
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RetryService<S, B>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    super::stack::always_ready!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move {
            layer
                .send(req, move |req| super::stack::ready_call(inner.clone(), req))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(cfg: RetryConfig) -> Retry {
        Retry::new("t", cfg)
    }

    async fn count_attempts(r: &Retry, safe: bool, deadline: Option<Instant>, v: Verdict) -> u32 {
        let n = AtomicU32::new(0);
        r.run(
            safe,
            deadline,
            |_| async {
                n.fetch_add(1, Ordering::SeqCst);
            },
            |_| v,
        )
        .await;
        n.load(Ordering::SeqCst)
    }

    #[test]
    fn only_safe_calls_are_retried() {
        let h = HeaderMap::new();
        assert!(is_retry_safe(&Method::GET, &h));
        assert!(is_retry_safe(&Method::PUT, &h));
        assert!(!is_retry_safe(&Method::POST, &h));
        assert!(!is_retry_safe(&Method::PATCH, &h));
        let mut k = HeaderMap::new();
        k.insert("idempotency-key", "abc".parse().unwrap());
        assert!(is_retry_safe(&Method::POST, &k));
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_calls_are_not_retried_unless_never_sent() {
        let r = policy(RetryConfig::default());
        assert_eq!(count_attempts(&r, false, None, Verdict::Retryable).await, 1);
        assert_eq!(count_attempts(&r, false, None, Verdict::NotSent).await, 3);
        assert_eq!(count_attempts(&r, true, None, Verdict::Retryable).await, 3);
        assert_eq!(count_attempts(&r, true, None, Verdict::Done).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_past_the_deadline() {
        let r = policy(RetryConfig {
            max_attempts: 10,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            budget_min_per_sec: 1000,
            ..Default::default()
        });
        // Backoff is full jitter up to 1 s; with a 1 ms deadline no retry fits (a zero
        // jitter draw is the only exception, so allow at most one).
        let deadline = Instant::now() + Duration::from_millis(1);
        assert!(count_attempts(&r, true, Some(deadline), Verdict::Retryable).await <= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_under_total_failure() {
        let r = policy(RetryConfig {
            max_attempts: 5,
            budget_ratio: 0.1,
            budget_min_per_sec: 1,
            ..Default::default()
        });
        let mut attempts = 0;
        let calls = 200;
        for _ in 0..calls {
            attempts += count_attempts(&r, true, None, Verdict::Retryable).await;
        }
        let retries = attempts - calls;
        // 10 % of 200 requests plus the floor of 1/s over a 10 s window.
        assert!(
            retries <= 20 + 10 + 1,
            "{retries} retries for {calls} calls"
        );
        assert!(retries > 0);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let cfg = RetryConfig::default();
        for retry in 0..20 {
            assert!(backoff(&cfg, retry) <= cfg.max_backoff);
        }
        assert!(backoff(&cfg, 0) <= Duration::from_millis(25));
    }
}
