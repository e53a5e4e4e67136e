//! Deadline propagation: a caller tells the callee how much of its time budget is left
//! (`x-flotilla-deadline-ms`), so work nobody waits for any more is not started, and
//! downstream calls never outlive their caller.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::stack::{BoxError, CallError};
use crate::errors::Problem;

/// Milliseconds left of the caller's budget.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-flotilla-deadline-ms");

/// The instant by which the current request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The deadline of the request the current task is handling, if the caller set one.
pub fn current() -> Option<Instant> {
    CURRENT.try_with(|d| d.0).ok()
}

/// Runs `fut` with `deadline` as its current deadline (what [`current`] and [`budget`]
/// see), as the server middleware does for each request.
pub async fn with_deadline<F: std::future::Future>(deadline: Deadline, fut: F) -> F::Output {
    CURRENT.scope(deadline, fut).await
}

/// The time a call may take: `timeout`, shortened to what is left of the current
/// request's deadline.
pub fn budget(timeout: Duration) -> Duration {
    match current() {
        Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}

/// Sets the deadline header on an outbound call that must finish by `deadline`.
pub fn set_header(headers: &mut HeaderMap, deadline: Instant) {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    headers.insert(
        DEADLINE_HEADER,
        HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
    );
}

/// Middleware: reads the caller's budget (`x-flotilla-deadline-ms` or `grpc-timeout`); a request whose budget is already spent is
/// answered `504` at once; otherwise the rest runs with [`current`] set.
pub async fn propagate(req: Request, next: Next) -> Response {
    let Some(left) = from_headers(req.headers()) else {
        return next.run(req).await;
    };
    if left.is_zero() {
        if crate::http::is_grpc(req.headers()) {
            return crate::http::grpc_error(4, "the caller's deadline has passed");
        }
        return Problem::gateway_timeout("the caller's deadline has passed").into_response();
    }
    let deadline = Deadline(Instant::now() + left);
    CURRENT.scope(deadline, next.run(req)).await
}

/// The standard gRPC deadline header (`grpc-timeout: 1500m`).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Writes what is left until `deadline` into the request's headers: always
/// `x-flotilla-deadline-ms`, and `grpc-timeout` for gRPC requests (so any gRPC server,
/// ours or not, sees the deadline).
pub fn stamp(headers: &mut HeaderMap, deadline: Instant) {
    stamp_left(headers, deadline.saturating_duration_since(Instant::now()));
}

/// [`stamp`] for a budget of `left` from now.
fn stamp_left(headers: &mut HeaderMap, left: Duration) {
    let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    headers.insert(DEADLINE_HEADER, HeaderValue::from(ms));
    let is_grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc && let Ok(v) = HeaderValue::from_str(&format!("{}m", ms.min(99_999_999))) {
        headers.insert(GRPC_TIMEOUT, v);
    }
}

/// Runs `call` on `req` within `budget`: the budget is written into the request's
/// headers ([`stamp`]) and the call fails with [`CallError::TimedOut`] when it runs
/// out. An answer ready at the first poll needs no timer.
pub async fn bounded<B, R, F, Fut>(
    target: &Arc<str>,
    budget: Duration,
    mut req: http::Request<B>,
    call: F,
) -> Result<R, BoxError>
where
    F: FnOnce(http::Request<B>) -> Fut,
    Fut: std::future::Future<Output = Result<R, BoxError>>,
{
    let timed_out = || -> BoxError {
        Box::new(CallError::TimedOut {
            target: target.clone(),
            after: budget,
        })
    };
    if budget.is_zero() {
        return Err(timed_out());
    }
    let at = Instant::now() + budget;
    stamp_left(req.headers_mut(), budget);
    let mut call = std::pin::pin!(call(req));
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    let result = match first {
        Poll::Ready(r) => r,
        Poll::Pending => {
            // The timer lives on the heap and only for calls that wait: it keeps the
            // future small for the calls that do not.
            let mut timer = Box::pin(tokio::time::sleep_until(at));
            let raced = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match raced {
                Some(r) => r,
                None => return Err(timed_out()),
            }
        }
    };
    result.map_err(|e| CallError::from_inner(target, e))
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's remaining budget from the request headers: `x-flotilla-deadline-ms`,
/// else `grpc-timeout`.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get(&DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    headers
        .get(&GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Tower layer: gives each call (each attempt, below the retry layer) a budget — its
/// timeout, cut to what is left of the current request's deadline — sends the budget
/// on in the request headers, and fails the call with [`CallError::TimedOut`] when it
/// runs out.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    target: Arc<str>,
    timeout: Duration,
}

impl DeadlineLayer {
    /// Calls to `target`, each allowed `timeout` at most.
    pub fn new(target: &str, timeout: Duration) -> Self {
        Self {
            target: Arc::from(target),
            timeout,
        }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            target: self.target.clone(),
            timeout: self.timeout,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    target: Arc<str>,
    timeout: Duration,
}

impl<S, B, R> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    super::stack::always_ready!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let budget = budget(self.timeout);
        let target = self.target.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            bounded(&target, budget, req, |req| {
                super::stack::ready_call(inner, req)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_is_the_smaller_of_timeout_and_deadline() {
        assert_eq!(budget(Duration::from_secs(5)), Duration::from_secs(5));
        let d = Deadline(Instant::now() + Duration::from_secs(2));
        CURRENT
            .scope(d, async {
                assert_eq!(budget(Duration::from_secs(5)), Duration::from_secs(2));
                assert_eq!(budget(Duration::from_secs(1)), Duration::from_secs(1));
            })
            .await;
        let mut h = HeaderMap::new();
        set_header(&mut h, Instant::now() + Duration::from_millis(1500));
        assert_eq!(h[DEADLINE_HEADER], "1500");
    }
}
