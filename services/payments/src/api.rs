//! Payments' public HTTP API: a payment for its owner or an administrator.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use kit::security::Identity;
use serde::{Deserialize, Serialize};

use crate::domain::{Payment, Status};
use crate::ledger::Payments;

/// The public routes.
pub fn router(payments: Payments) -> Router {
    Router::new()
        .route("/api/payments/{id}", get(get_payment))
        .with_state(payments)
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "payments", description = "The payments ledger."),
    paths(get_payment),
    components(schemas(PaymentView, Status))
)]
pub struct ApiDoc;

/// A payment as clients see it (never card data beyond the last four digits).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PaymentView {
    /// UUIDv7.
    pub id: String,
    /// The order paid for.
    pub order_id: String,
    /// Minor units.
    pub amount_cents: i64,
    /// ISO 4217.
    pub currency: String,
    /// `authorized`, `captured`, `voided`, `refunded` or `declined`.
    pub status: Status,
    /// Minor units refunded.
    pub refunded_cents: i64,
    /// The card's last four digits.
    pub card_last4: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        Self {
            id: p.id,
            order_id: p.order_id,
            amount_cents: p.amount_cents,
            currency: p.currency,
            status: p.status,
            refunded_cents: p.refunded_cents,
            card_last4: p.card_last4,
            created_at: p.created_at,
        }
    }
}

/// One payment, for its owner or an administrator.
#[utoipa::path(get, path = "/api/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "The payment id (UUIDv7)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 401, description = "No access token (problem document)"),
        (status = 404, description = "Unknown or not the caller's (problem document)"),
    ))]
async fn get_payment(
    caller: Identity,
    State(payments): State<Payments>,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, Problem> {
    // Another user's payment is answered exactly like a missing one.
    let not_found = || Problem::not_found(format!("no payment {id:?}"));
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(not_found());
    }
    let payment = payments.ledger().get(id.clone()).await.map_err(|e| {
        tracing::error!(error = %e, "payments ledger failed");
        Problem::unavailable(
            "the payments ledger is unavailable",
            std::time::Duration::from_secs(1),
        )
    })?;
    match payment {
        Some(p)
            if p.status != Status::Pending
                && (p.user_id == caller.user_id || caller.is_admin()) =>
        {
            Ok(Json(p.into()))
        }
        _ => Err(not_found()),
    }
}
