//! One wire error type: RFC 9457 problem documents.
//!
//! Every handler, extractor and middleware of every service answers failures with a
//! [`Problem`]. Internal causes are logged where they happen and never reach the client;
//! the `type` is a stable machine-readable URN, the `instance` is the request path.

use std::borrow::Cow;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field, as listed in a `422` problem's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's path in the request (`items[0].quantity`, `limit`).
    pub field: String,
    /// What is wrong with it, for a human.
    pub message: String,
}

impl FieldError {
    /// A field error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document, rendered with `content-type: application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable machine-readable kind, `urn:flotilla:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// Short human summary, the same for every problem of this kind.
    pub title: Cow<'static, str>,
    /// The HTTP status code.
    pub status: u16,
    /// What happened this time, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path this problem answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The invalid fields, for validation failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (`Retry-After`), for 429 and 503.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

macro_rules! problem_kinds {
    ($($(#[$doc:meta])* $fn_name:ident => $status:ident, $slug:literal, $title:literal;)*) => {
        impl Problem {
            $(
                $(#[$doc])*
                pub fn $fn_name(detail: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $slug, $title).with_detail(detail)
                }
            )*
        }
    };
}

problem_kinds! {
    /// `400`: the request could not be parsed.
    bad_request => BAD_REQUEST, "bad-request", "Malformed request";
    /// `401`: no credentials, or invalid ones.
    unauthorized => UNAUTHORIZED, "unauthorized", "Authentication required";
    /// `403`: valid credentials without the right.
    forbidden => FORBIDDEN, "forbidden", "Forbidden";
    /// `404`: unknown, or not the caller's.
    not_found => NOT_FOUND, "not-found", "Not found";
    /// `405`: the path exists but not with this method.
    method_not_allowed => METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed";
    /// `409`: the request conflicts with the current state.
    conflict => CONFLICT, "conflict", "Conflict";
    /// `413`: the body is larger than the route allows.
    payload_too_large => PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large";
    /// `415`: wrong or missing `content-type`.
    unsupported_media_type => UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type";
    /// `431`: the request's headers are too large.
    headers_too_large => REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", "Request headers too large";
    /// `500`: a bug or an unexpected failure; the cause is in the logs, never in the answer.
    internal => INTERNAL_SERVER_ERROR, "internal", "Internal error";
    /// `502`: the upstream service answered badly or the connection failed.
    bad_gateway => BAD_GATEWAY, "bad-gateway", "Upstream failed";
    /// `504`: the upstream service did not answer in time.
    gateway_timeout => GATEWAY_TIMEOUT, "gateway-timeout", "Upstream timed out";
}

impl Problem {
    /// A problem of any status; prefer the named constructors.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            kind: Cow::Owned(format!("urn:flotilla:problem:{slug}")),
            title: Cow::Borrowed(title),
            status: status.as_u16(),
            detail: None,
            instance: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// `422`: the request parsed but some fields are invalid.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request fields",
        )
        .with_detail(detail);
        p.errors = errors;
        p
    }

    /// `422` for one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    /// `429`, retry after the given time.
    pub fn too_many_requests(retry_after: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
        )
        .with_detail("rate limit exceeded")
        .with_retry_after(retry_after)
    }

    /// `503`: a dependency is unavailable; retry after the given time.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
        .with_retry_after(retry_after)
    }

    /// Sets the human detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `Retry-After`, rounded up to whole seconds (at least 1).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Renders the document to bytes (`instance` filled from the current request if unset).
    pub fn to_body(&self) -> Vec<u8> {
        let mut owned;
        let doc = if self.instance.is_none() {
            owned = self.clone();
            owned.instance = crate::http::current_path();
            &owned
        } else {
            self
        };
        serde_json::to_vec(doc).unwrap_or_else(|_| b"{}".to_vec())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_body();
        let mut res = (self.status_code(), body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(p: Problem) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let res = p.into_response();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn renders_rfc9457_document_with_media_type() {
        let (status, headers, body) = render(Problem::not_found("no product FLT-1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(body["type"], "urn:flotilla:problem:not-found");
        assert_eq!(body["title"], "Not found");
        assert_eq!(body["status"], 404);
        assert_eq!(body["detail"], "no product FLT-1");
        assert!(
            body.get("errors").is_none(),
            "no errors member unless validation"
        );
    }

    #[tokio::test]
    async fn validation_lists_fields() {
        let p = Problem::invalid(vec![
            FieldError::new("limit", "must be between 1 and 100"),
            FieldError::new("cursor", "not a cursor"),
        ]);
        let (status, _, body) = render(p).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "limit");
        assert_eq!(body["errors"][1]["message"], "not a cursor");
        assert_eq!(body["detail"], "2 fields are invalid");
    }

    #[tokio::test]
    async fn retry_after_is_whole_seconds_rounded_up() {
        let (status, headers, _) = render(Problem::unavailable(
            "inventory has no instance",
            Duration::from_millis(1500),
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        let (_, headers, _) = render(Problem::too_many_requests(Duration::ZERO)).await;
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn instance_comes_from_the_current_request() {
        let ctx = crate::http::RequestContext {
            request_id: "r1".into(),
            path: "/api/products/X".into(),
        };
        let (_, _, body) = crate::http::REQUEST
            .scope(ctx, async { render(Problem::not_found("x")).await })
            .await;
        assert_eq!(body["instance"], "/api/products/X");
    }
}
