//! Response aggregation: `GET /api/orders/{id}/summary` combines the order, its user,
//! its products and its payment in one answer.
//!
//! The order comes first (the other parts need its user, SKUs and payment id); then the
//! user, the products and the payment are fetched concurrently, each call bounded by
//! [`CALL_TIMEOUT`] and passing the service's resilience stack (bulkhead, deadline,
//! retry, circuit breaker — shared with the proxy, so an open breaker skips a part at
//! once). A part whose service is down, slow, unrouted or failing is `null` and named
//! in `degraded` (the aggregation's fallback), and the answer is still `200`. Only the order itself
//! decides the status: `404` (unknown or not the caller's) and `401` pass through.
//!
//! Every call carries the caller's identity as the gateway verified it — the
//! [`Identity`] its authentication put in the request's extensions — never identity
//! headers sent by the client.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full, Limited};
use kit::Problem;
use kit::resilience::ClientStack;
use kit::security::{Identity, ROLES, SCOPES, USER_ID};
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::Instrument;

use crate::proxy::Gateway;
use crate::routes;

/// Time allowed for each call of an aggregation.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Aggregator {
    gateway: Arc<Gateway>,
    timeout: Duration,
}

/// The aggregation routes, over the gateway's route table.
pub fn router(gateway: Arc<Gateway>) -> Router {
    router_with_timeout(gateway, CALL_TIMEOUT)
}

/// Like [`router`] with another per-call timeout.
pub fn router_with_timeout(gateway: Arc<Gateway>, timeout: Duration) -> Router {
    Router::new()
        .route("/api/orders/{id}/summary", get(summary))
        .with_state(Aggregator { gateway, timeout })
}

/// The path of the order summary in the OpenAPI document.
pub const SUMMARY_PATH: &str = "/api/orders/{id}/summary";

/// The OpenAPI path item of the order summary (the gateway's own operation; the
/// gateway adds its edge answers to it like to every other).
pub fn summary_openapi() -> Value {
    let part = |kind: &str, what: &str| json!({"type": [kind, "null"], "description": what});
    json!({"get": {
        "tags": ["gateway"],
        "operationId": "order_summary",
        "summary": "The order with its user, products and payment in one answer.",
        "description": "A part whose service is down, slow or failing is `null` and named in `degraded`; the answer is still `200`.",
        "parameters": [{
            "name": "id", "in": "path", "required": true,
            "description": "The order id (UUIDv7)", "schema": {"type": "string"},
        }],
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "The summary", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["order", "user", "products", "payment", "degraded"],
                "properties": {
                    "order": part("object", "As `GET /api/orders/{id}` answers it"),
                    "user": part("object", "As `GET /api/users/{id}` answers it"),
                    "products": {
                        "type": ["array", "null"],
                        "description": "Each line's product, as `GET /api/products/{sku}` answers it",
                        "items": {"type": "object"},
                    },
                    "payment": part("object", "As `GET /api/payments/{id}` answers it, once there is one"),
                    "degraded": {
                        "type": "array",
                        "description": "The parts that are missing because their service failed",
                        "items": {"type": "string", "enum": ["order", "user", "products", "payment"]},
                    },
                },
            }}}},
            "401": {"description": "No access token (problem document)"},
            "404": {"description": "Unknown or not the caller's (problem document)"},
        },
    }})
}

/// Why a part is missing.
#[derive(Debug)]
enum Failed {
    /// The service answered this status (a `4xx` about the caller's request).
    Status(u16, Value),
    /// Down, slow, unrouted, or a `5xx`.
    Unavailable,
}

impl Aggregator {
    /// `GET path` on the service routed for it, as `caller`, through the service's
    /// resilience stack (the same bulkhead, breaker and retry budget as the proxy).
    async fn fetch(&self, path: &str, caller: Option<&Identity>) -> Result<Value, Failed> {
        let (route, upstream) =
            routes::find(&self.gateway.routes, path).ok_or(Failed::Unavailable)?;
        let picked = upstream.endpoints.pick().ok_or(Failed::Unavailable)?;
        let mut req = http::Request::get(format!(
            "{}://{}{path}",
            kit::security::mtls::scheme(),
            picked.instance.addr
        ));
        if let Some(id) = caller {
            req = req
                .header(USER_ID, &id.user_id)
                .header(ROLES, id.roles.join(" "))
                .header(SCOPES, id.scopes.join(" "));
        }
        if let Some(rid) = kit::http::current_request_id() {
            req = req.header(kit::http::X_REQUEST_ID, rid);
        }
        let mut req = req
            .body(Full::new(Bytes::new()))
            .map_err(|_| Failed::Unavailable)?;
        let span = kit::telemetry::trace::http_client_span(req.method(), &req.uri().to_string());
        kit::telemetry::trace::inject(&span, req.headers_mut());
        let client = self.gateway.client(route.protocol).clone();
        let res = ClientStack::new(&upstream.policy, self.timeout)
            .instance(&picked.instance.id)
            .layer(client, Full::new)
            .oneshot(req)
            .instrument(span.clone())
            .await
            .map_err(|_| {
                kit::telemetry::trace::record_failure(&span, "unavailable");
                Failed::Unavailable
            })?;
        kit::telemetry::trace::record_http_status(&span, res.status());
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_PART_BYTES)
            .collect()
            .await
            .map_err(|_| Failed::Unavailable)?
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).map_err(|_| Failed::Unavailable)?;
        match status {
            200 => Ok(body),
            400..=499 => Err(Failed::Status(status, body)),
            _ => Err(Failed::Unavailable),
        }
    }
}

/// The largest part an aggregation reads.
const MAX_PART_BYTES: usize = 1024 * 1024;

async fn summary(State(agg): State<Aggregator>, Path(id): Path<String>, req: Request) -> Response {
    let caller = req.extensions().get::<Identity>().cloned();
    if uuid_like(&id).is_none() {
        return Problem::not_found(format!("no order {id:?}")).into_response();
    }
    let mut degraded: Vec<&str> = Vec::new();
    let order = match agg
        .fetch(&format!("/api/orders/{id}"), caller.as_ref())
        .await
    {
        Ok(o) => o,
        Err(Failed::Status(status, problem)) => return passthrough(status, problem),
        Err(Failed::Unavailable) => {
            degraded.extend(["order", "user", "products", "payment"]);
            return axum::Json(json!({
                "order": null, "user": null, "products": null, "payment": null,
                "degraded": degraded,
            }))
            .into_response();
        }
    };
    let user_id = order["user_id"].as_str().unwrap_or_default();
    let user_path = match &caller {
        Some(c) if c.user_id != user_id => format!("/api/users/{user_id}"),
        _ => "/api/users/me".to_owned(),
    };
    let product_paths: Vec<String> = order["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["sku"].as_str())
                .map(|sku| format!("/api/products/{sku}"))
                .collect()
        })
        .unwrap_or_default();
    let payment_path = order["payment_id"]
        .as_str()
        .map(|p| format!("/api/payments/{p}"));
    let c = caller.as_ref();
    let (user, products, payment) = tokio::join!(
        agg.fetch(&user_path, c),
        join_all(product_paths.iter().map(|p| agg.fetch(p, c))),
        async {
            match &payment_path {
                Some(p) => Some(agg.fetch(p, c).await),
                None => None,
            }
        },
    );
    let user = user.ok().unwrap_or_else(|| {
        degraded.push("user");
        Value::Null
    });
    let products = match products.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(p) => Value::from(p),
        Err(_) => {
            degraded.push("products");
            Value::Null
        }
    };
    let payment = match payment {
        None => Value::Null,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            degraded.push("payment");
            Value::Null
        }
    };
    axum::Json(json!({
        "order": order,
        "user": user,
        "products": products,
        "payment": payment,
        "degraded": degraded,
    }))
    .into_response()
}

/// `Some` for a plausible id (so nothing odd is put in an upstream path).
fn uuid_like(id: &str) -> Option<&str> {
    (id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(id)
}

fn passthrough(status: u16, problem: Value) -> Response {
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    (
        code,
        [(http::header::CONTENT_TYPE, "application/problem+json")],
        problem.to_string(),
    )
        .into_response()
}
