//! Orders' public HTTP API: place an order (idempotent), read one with its step
//! timeline, list the caller's, cancel one.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kit::Problem;
use kit::extract::{Json, Query};
use kit::security::Identity;
use saga::{Cancel, Engine, SagaState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clients::Clients;
use crate::domain::{
    self, Order, OrderStatus, PlaceOrder, StepView, now_ms, rfc3339_ms, valid_idempotency_key,
};
use crate::saga::CardVault;
use crate::store::{Created, IdempotencyRecord, OrderStore};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: OrderStore,
    /// The saga engine.
    pub engine: Engine,
    /// Other services.
    pub clients: Clients,
    /// Cards until authorization.
    pub cards: Arc<CardVault>,
}

/// The public routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", post(place_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .with_state(state)
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "orders", description = "Orders and the order saga."),
    paths(place_order, get_order, list_orders, cancel_order),
    components(schemas(
        PlaceOrder,
        domain::ItemInput,
        domain::PaymentInput,
        Accepted,
        OrderView,
        OrderPage,
        StepView,
        OrderStatus,
        domain::OrderItem
    ))
)]
pub struct ApiDoc;

/// `202` answer: the order and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Accepted {
    /// UUIDv7.
    pub order_id: String,
    /// `PENDING` when placed.
    pub status: OrderStatus,
}

/// An order with its saga's step timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OrderView {
    /// The order document.
    #[serde(flatten)]
    pub order: Order,
    /// The payment, once authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// The saga's steps.
    pub steps: Vec<StepView>,
}

/// A page of orders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `GET /api/orders` query.
#[derive(Debug, Deserialize, garde::Validate, utoipa::IntoParams)]
pub struct ListQuery {
    /// 1–100 (default 20).
    #[garde(inner(range(min = 1, max = 100)))]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    #[garde(inner(length(max = 64)))]
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

fn store_failed(e: saga::StoreError) -> Problem {
    tracing::error!(error = %e, "orders store failed");
    Problem::unavailable("the orders store is unavailable", Duration::from_secs(1))
}

fn view(engine: &Engine, order: Order, saga: &SagaState) -> OrderView {
    OrderView {
        payment_id: saga
            .result(domain::steps::AUTHORIZE_PAYMENT)
            .and_then(|r| r["payment_id"].as_str())
            .map(str::to_owned),
        steps: domain::timeline(engine.definition(), saga),
        order,
    }
}

fn request_hash(body: &PlaceOrder) -> String {
    // The body as parsed, re-serialized: the same order in other whitespace or key
    // order is the same request.
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn replay(answer: &crate::store::StoredAnswer, hash: &str) -> Response {
    if answer.request_hash != hash {
        return Problem::invalid_field(
            "Idempotency-Key",
            "this key was used with a different request body",
        )
        .into_response();
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::ACCEPTED);
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        answer.body.clone(),
    )
        .into_response()
}

/// Places an order: prices from inventory, `202 PENDING`, and the saga runs
/// asynchronously. With `Idempotency-Key`, the first answer is replayed for the same
/// body and a different body is `422`.
#[utoipa::path(post, path = "/api/orders", tag = "orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 printable ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the saga runs", body = Accepted, links(
            ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/order_id")))),
            ("CancelOrder" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/order_id")))),
        )),
        (status = 400, description = "Malformed body or Idempotency-Key (problem document)"),
        (status = 401, description = "No access token (problem document)"),
        (status = 422, description = "Invalid fields, unknown SKU, or a reused key (problem document)"),
        (status = 503, description = "Inventory or the store unavailable (problem document)"),
    ))]
async fn place_order(
    caller: Identity,
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, Problem> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if valid_idempotency_key(k) => Some(k.to_owned()),
            _ => {
                return Err(Problem::bad_request(
                    "Idempotency-Key must be 1-255 printable ASCII characters",
                ));
            }
        },
    };
    let hash = request_hash(&body);
    if let Some(k) = &key
        && let Some(answer) = app
            .store
            .answer(&caller.user_id, k)
            .await
            .map_err(store_failed)?
    {
        return Ok(replay(&answer, &hash));
    }

    let prices =
        futures_util::future::join_all(body.items.iter().map(|i| app.clients.price(&i.sku)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                tracing::warn!(error = %e, "pricing failed");
                Problem::unavailable("inventory is unavailable", Duration::from_secs(1))
            })?;
    let (items, total_cents, currency) = domain::price_lines(&body.items, &prices)
        .map_err(|e| Problem::invalid_field(e.field, e.message))?;

    let now = now_ms();
    let order = Order {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: caller.user_id.clone(),
        items,
        total_cents,
        currency,
        status: OrderStatus::Pending,
        reason: None,
        created_at: rfc3339_ms(now),
        updated_at: rfc3339_ms(now),
    };
    let accepted = Accepted {
        order_id: order.id.clone(),
        status: OrderStatus::Pending,
    };
    let answer = serde_json::to_string(&accepted).map_err(|e| Problem::internal(e.to_string()))?;
    let saga = app.engine.new_state(&order.id, domain::saga_data(&order));
    let record = key.map(|key| IdempotencyRecord {
        user_id: caller.user_id.clone(),
        key,
        request_hash: hash.clone(),
        status: 202,
        body: answer.clone(),
    });
    // Storing the order and starting its saga run on their own task: a client that
    // hangs up mid-request can neither cut the accepting transaction in half nor leave
    // an accepted order whose saga never started.
    let task = app.clone();
    let id = order.id.clone();
    let payment = body.payment;
    let created = kit::store::detached(async move {
        let created = task.store.create(&order, &saga, record).await?;
        if created == Created::New {
            task.cards.put(&id, payment);
            task.engine.start(&id);
        }
        Ok::<_, saga::StoreError>(created)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(store_failed)?;
    match created {
        Created::Existing(existing) => Ok(replay(&existing, &hash)),
        Created::New => {
            metrics::counter!("orders_placed_total").increment(1);
            Ok((
                StatusCode::ACCEPTED,
                [(http::header::CONTENT_TYPE, "application/json")],
                answer,
            )
                .into_response())
        }
    }
}

async fn owned(app: &AppState, caller: &Identity, id: &str) -> Result<(Order, SagaState), Problem> {
    // Another user's order is answered exactly like a missing one.
    let not_found = || Problem::not_found(format!("no order {id:?}"));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    match app.store.get(id).await.map_err(store_failed)? {
        Some((o, s)) if o.user_id == caller.user_id || caller.is_admin() => Ok((o, s)),
        _ => Err(not_found()),
    }
}

/// One order with its step timeline (the caller's, or any for an administrator).
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order id (UUIDv7)")),
    security(("bearer" = [])),
    responses(
        // `get_payment` is payments' operation: the link resolves in the gateway's merged
        // document, the one clients read.
        (status = 200, description = "The order", body = OrderView, links(
            ("GetPayment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment_id")))),
        )),
        (status = 401, description = "No access token (problem document)"),
        (status = 404, description = "Unknown or not the caller's (problem document)"),
    ))]
async fn get_order(
    caller: Identity,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    let (order, saga) = owned(&app, &caller, &id).await?;
    Ok(axum::Json(view(&app.engine, order, &saga)))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's orders", body = OrderPage),
        (status = 401, description = "No access token (problem document)"),
        (status = 422, description = "Invalid limit or cursor (problem document)"),
    ))]
async fn list_orders(
    caller: Identity,
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    if let Some(c) = &q.cursor
        && uuid::Uuid::parse_str(c).is_err()
    {
        return Err(Problem::invalid_field(
            "cursor",
            "not a cursor from this API",
        ));
    }
    let limit = q.limit.unwrap_or(20);
    let mut rows = app
        .store
        .list(&caller.user_id, limit + 1, q.cursor.as_deref())
        .await
        .map_err(store_failed)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|(o, _)| o.id.clone()))
        .flatten();
    Ok(axum::Json(OrderPage {
        items: rows
            .into_iter()
            .map(|(o, s)| view(&app.engine, o, &s))
            .collect(),
        next_cursor,
    }))
}

/// Cancels an order: compensates what was done. `409` once it is past confirmation.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "The order id (UUIDv7)")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancelling (or cancelled already)", body = Accepted),
        (status = 401, description = "No access token (problem document)"),
        (status = 404, description = "Unknown or not the caller's (problem document)"),
        (status = 409, description = "Confirmed: it can no longer be cancelled (problem document)"),
    ))]
async fn cancel_order(
    caller: Identity,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (order, _) = owned(&app, &caller, &id).await?;
    let outcome = app
        .engine
        .cancel(&id, "cancelled_by_customer")
        .await
        .map_err(|e| match e {
            saga::SagaError::Store(s) => store_failed(s),
            other => Problem::conflict(other.to_string()),
        })?;
    match outcome {
        Cancel::TooLate => Err(Problem::conflict(
            "the order is confirmed and can no longer be cancelled",
        )),
        Cancel::Accepted => Ok((
            StatusCode::ACCEPTED,
            axum::Json(Accepted {
                order_id: order.id,
                status: order.status,
            }),
        )
            .into_response()),
    }
}
