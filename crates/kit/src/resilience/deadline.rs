//! Deadline propagation: a caller tells the callee how much of its time budget is left
//! (`x-flotilla-deadline-ms`), so work nobody waits for any more is not started, and
//! downstream calls never outlive their caller.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

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

/// Middleware: reads the caller's budget; a request whose budget is already spent is
/// answered `504` at once; otherwise the rest runs with [`current`] set.
pub async fn propagate(req: Request, next: Next) -> Response {
    let Some(ms) = req
        .headers()
        .get(&DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return next.run(req).await;
    };
    if ms == 0 {
        return Problem::gateway_timeout("the caller's deadline has passed").into_response();
    }
    let deadline = Deadline(Instant::now() + Duration::from_millis(ms));
    CURRENT.scope(deadline, next.run(req)).await
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
