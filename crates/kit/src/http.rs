//! HTTP plumbing shared by every service: request ids, the per-request context that
//! problem documents read, edge checks, and the problem answers for unknown routes,
//! wrong methods and panics.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue};

use crate::errors::Problem;

/// `x-request-id`, echoed when the client sent a usable one, generated otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest total size of request headers a service accepts (`431` beyond).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the code handling one request may want to know about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The request path, used as a problem's `instance`.
    pub path: String,
}

tokio::task_local! {
    /// The context of the request being handled by the current task.
    pub static REQUEST: RequestContext;
}

/// The path of the request the current task is handling, if any.
pub fn current_path() -> Option<String> {
    REQUEST.try_with(|c| c.path.clone()).ok()
}

/// The request id of the request the current task is handling, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST.try_with(|c| c.request_id.clone()).ok()
}

/// A client-sent request id is kept when it is 1–128 visible ASCII characters.
fn usable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Generates a fresh request id (UUIDv7, so ids sort by time).
pub fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("a uuid is a valid header value")
}

/// Middleware: assigns the request id, rejects oversized headers, and runs the rest of
/// the stack inside the [`REQUEST`] context so problems know their `instance`.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if usable_request_id(v) => v.clone(),
        _ => {
            let v = new_request_id();
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
            v
        }
    };
    let ctx = RequestContext {
        request_id: id.to_str().unwrap_or_default().to_owned(),
        path: req.uri().path().to_owned(),
    };
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut res = REQUEST
        .scope(ctx, async move {
            if header_bytes > MAX_HEADER_BYTES {
                return Problem::headers_too_large(format!(
                    "request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
                ))
                .into_response();
            }
            next.run(req).await
        })
        .await;
    res.headers_mut().insert(X_REQUEST_ID, id);
    res
}

/// Fallback for paths no route matches: `404` problem.
pub async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Fallback for a known path with a method it does not serve: `405` problem.
pub async fn method_not_allowed(req: Request) -> Problem {
    Problem::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// Turns a panic in a handler into a `500` problem (the panic itself is logged).
pub fn panic_to_problem(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = msg, "handler panicked");
    Problem::internal("the request failed unexpectedly").into_response()
}

/// Whether a request speaks gRPC (`content-type: application/grpc…`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A gRPC error answered at once ("trailers-only"): HTTP 200 with `grpc-status` and
/// `grpc-message` in the headers, as gRPC clients expect instead of an HTTP error.
pub fn grpc_error(code: u32, message: &str) -> Response {
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    let msg: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() && b != b'%' || b == b' ' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&msg) {
        h.insert("grpc-message", v);
    }
    res
}

/// The gRPC code closest to an HTTP status (as gRPC's HTTP mapping has it).
pub fn grpc_code_for(status: http::StatusCode) -> u32 {
    match status.as_u16() {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 5,        // NOT_FOUND
        409 => 10,       // ABORTED
        429 => 8,        // RESOURCE_EXHAUSTED
        500 => 13,       // INTERNAL
        501 => 12,       // UNIMPLEMENTED
        502..=503 => 14, // UNAVAILABLE
        504 => 4,        // DEADLINE_EXCEEDED
        _ => 2,          // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(usable_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!usable_request_id(&HeaderValue::from_static("")));
        assert!(!usable_request_id(&HeaderValue::from_static("has space")));
        let long = "a".repeat(129);
        assert!(!usable_request_id(&HeaderValue::from_str(&long).unwrap()));
        assert_eq!(new_request_id().len(), 36);
    }
}
