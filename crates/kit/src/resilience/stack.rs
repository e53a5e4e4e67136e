//! The standard client stack: every resilience layer around one outbound transport, in
//! one place that names their order.
//!
//! ```text
//!   caller
//!     │ fallback         a degraded answer when the call fails (optional)
//!     │ bulkhead         at most N calls in flight to the target, a bounded queue
//!     │ retry            safe calls only, full jitter, budget, never past the deadline
//!     │ circuit breaker  per attempt: rejected at once while open
//!     │ deadline         per attempt: its timeout, cut to the caller's deadline, sent
//!     │                  on as x-flotilla-deadline-ms (and grpc-timeout)
//!     ▼ transport        a tonic Channel, a hyper client, …
//! ```
//!
//! The timeout applies to each attempt (Envoy's per-try timeout), so a timed-out
//! attempt charges the breaker and may be retried; the caller's own deadline, when it
//! has one, bounds all attempts together.
//!
//! The layers work on `http::Request`/`http::Response`, so one stack serves HTTP and
//! gRPC clients alike; a [`Classifier`] says which answers count as failures. Each layer
//! is usable alone (`CircuitBreakerLayer`, `BulkheadLayer`, `DeadlineLayer`,
//! `RetryLayer`, `FallbackLayer`); [`ClientService`] runs the same code of each, nested
//! in one future. Their errors are [`CallError`]s, boxed as tower errors are.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::bulkhead::Bulkhead;
use super::circuit_breaker::CircuitBreaker;
use super::deadline;
use super::retry::RetryLayer;
use super::{Policy, State};

/// The error type of tower services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call through the stack did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The target's circuit breaker is open.
    #[error("{target} is failing; its circuit breaker is open (retry after {retry_after:?})")]
    BreakerOpen {
        /// The target.
        target: Arc<str>,
        /// When the breaker admits a probe again.
        retry_after: Duration,
    },
    /// The target's bulkhead is full.
    #[error("too many concurrent calls to {target}")]
    BulkheadFull {
        /// The target.
        target: Arc<str>,
    },
    /// No answer within the call's budget.
    #[error("{target} did not answer within {after:?}")]
    TimedOut {
        /// The target.
        target: Arc<str>,
        /// The budget that ran out.
        after: Duration,
    },
    /// The transport failed (connection refused, reset, protocol error).
    #[error("call to {target} failed: {source}")]
    Transport {
        /// The target.
        target: Arc<str>,
        /// Whether the request surely never reached the target (connection refused):
        /// safe to retry whatever the call.
        not_sent: bool,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
}

impl CallError {
    /// Wraps a transport error, or passes a `CallError` from an inner layer through.
    pub fn from_inner(target: &Arc<str>, e: BoxError) -> BoxError {
        if e.is::<CallError>() {
            return e;
        }
        Box::new(CallError::Transport {
            target: target.clone(),
            not_sent: connection_refused(&*e),
            source: e,
        })
    }

    /// The `CallError` inside a boxed tower error, if it is one.
    pub fn find(e: &BoxError) -> Option<&CallError> {
        e.downcast_ref::<CallError>()
    }

    /// Whether the request surely never reached the target.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            Self::Transport { not_sent: true, .. }
                | Self::BreakerOpen { .. }
                | Self::BulkheadFull { .. }
        )
    }

    /// A hint for the caller's `Retry-After`, when the stack knows one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::BreakerOpen { retry_after, .. } => Some(*retry_after),
            Self::BulkheadFull { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// Waits until `svc` is ready and calls it (each layer owns a clone of the service
/// below it per call, as tower's buffered services expect).
pub(crate) async fn ready_call<S, Req>(svc: S, req: Req) -> Result<S::Response, BoxError>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
{
    tower::ServiceExt::oneshot(svc, req)
        .await
        .map_err(Into::into)
}

/// The layers do their waiting in `call` (on a clone of the service below), so they
/// are always ready.
macro_rules! always_ready {
    () => {
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
    };
}
pub(crate) use always_ready;

/// Whether `e` or one of its sources is a refused connection.
pub fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Which answers count against the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Classifier {
    /// `5xx` (except `501`) fail; `4xx` are the caller's problem, not the target's.
    #[default]
    Http,
    /// As HTTP, plus the gRPC codes that mean the server is in trouble (`UNKNOWN`,
    /// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`,
    /// `DATA_LOSS`), read from `grpc-status` in the headers (where a server puts it for
    /// an error answered at once). `INVALID_ARGUMENT`, `NOT_FOUND`,
    /// `FAILED_PRECONDITION` and the like are answers, not failures.
    Grpc,
}

impl Classifier {
    /// Whether this answer is a failure of the target.
    pub fn is_failure<B>(self, res: &http::Response<B>) -> bool {
        if super::is_failure_status(res.status()) {
            return true;
        }
        match self {
            Self::Http => false,
            Self::Grpc => {
                grpc_code(res.headers()).is_some_and(|c| matches!(c, 2 | 4 | 8 | 13 | 14 | 15))
            }
        }
    }
}

/// The `grpc-status` in `headers`, if any.
pub fn grpc_code(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Builds the standard stack for one target from its [`Policy`].
#[derive(Debug, Clone)]
pub struct ClientStack {
    policy: Policy,
    breaker: Arc<CircuitBreaker>,
    classifier: Classifier,
    timeout: Duration,
    idempotent: bool,
}

impl ClientStack {
    /// The stack for calls under `policy`, each allowed `timeout`.
    pub fn new(policy: &Policy, timeout: Duration) -> Self {
        Self {
            breaker: policy.breaker.clone(),
            policy: policy.clone(),
            classifier: Classifier::Http,
            timeout,
            idempotent: false,
        }
    }

    /// Every call through this stack is idempotent (an internal API whose methods all
    /// are, by order id or idempotency key), so the retry layer may repeat any of them.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Classifies answers as gRPC answers (see [`Classifier::Grpc`]).
    pub fn grpc(mut self) -> Self {
        self.classifier = Classifier::Grpc;
        self
    }

    /// Uses this instance's breaker instead of the target's (per-instance breakers;
    /// see [`Policy::breaker_for`]).
    pub fn instance(mut self, instance: &str) -> Self {
        self.breaker = self.policy.breaker_for(Some(instance));
        self
    }

    /// Whether calls would be rejected right now by the breaker this stack uses.
    pub fn is_open(&self) -> bool {
        self.breaker.state() == State::Open
    }

    /// Wraps `transport`. `rebuild` makes a request body from buffered bytes, so the
    /// retry layer can send a request again (`tonic::body::Body::new`,
    /// `http_body_util::Full::new`, …).
    pub fn layer<S, B>(&self, transport: S, rebuild: fn(bytes::Bytes) -> B) -> ClientService<S, B> {
        ClientService {
            inner: transport,
            layers: Arc::new(Layers {
                bulkhead: self.policy.bulkhead.clone(),
                retry: RetryLayer::new(self.policy.retry.clone(), self.classifier, rebuild)
                    .all_idempotent(self.idempotent),
                breaker: self.breaker.clone(),
                classifier: self.classifier,
                target: Arc::from(self.policy.breaker.target()),
                timeout: self.timeout,
            }),
        }
    }
}

/// The layers of a [`ClientService`], shared by its clones.
#[derive(Debug)]
struct Layers<B> {
    bulkhead: Bulkhead,
    retry: RetryLayer<B>,
    breaker: Arc<CircuitBreaker>,
    classifier: Classifier,
    target: Arc<str>,
    timeout: Duration,
}

/// The standard stack around a transport `S` (see the module docs for the order).
///
/// It runs the same code as the layers stacked one by one ([`Bulkhead::run`],
/// [`RetryLayer::send`], [`CircuitBreaker::guard`], [`deadline::bounded`]), nested in
/// one future: one allocation per call instead of one per layer and attempt.
#[derive(Debug)]
pub struct ClientService<S, B> {
    inner: S,
    layers: Arc<Layers<B>>,
}

impl<S: Clone, B> Clone for ClientService<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layers: self.layers.clone(),
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for ClientService<S, B>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    always_ready!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let layers = self.layers.clone();
        let fut = async move {
            let l = &*layers;
            let attempt = move |req| {
                let svc = inner.clone();
                async move {
                    let budget = deadline::budget(l.timeout);
                    let call = |req| ready_call(svc, req);
                    l.breaker
                        .guard(l.classifier, || {
                            deadline::bounded(&l.target, budget, req, call)
                        })
                        .await
                }
            };
            l.bulkhead.run(|| l.retry.send(req, attempt)).await
        };
        Box::pin(fut)
    }
}

pub use super::bulkhead::BulkheadService;
pub use super::circuit_breaker::CircuitBreakerService;
pub use super::deadline::DeadlineService;
pub use super::retry::RetryService;

#[cfg(test)]
mod tests;
