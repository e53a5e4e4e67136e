//! Payments' admin API (on the admin listener only, never forwarded by the gateway): its
//! own ledger as an invariant checker (`flotilla verify`) needs it.
//!
//! - `GET /admin/payments?after=ID&limit=N`: payments in id order (at most 1000 a page),
//!   each with its status, amount, refunded amount and number of captures.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use serde::Deserialize;

use crate::store::{Ledger, PaymentLine};

/// The admin routes over `ledger`.
pub fn router(ledger: Arc<dyn Ledger>) -> Router {
    Router::new()
        .route("/admin/payments", get(payments))
        .with_state(ledger)
}

#[derive(Debug, Deserialize)]
struct Page {
    /// The last id of the previous page.
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    1000
}

async fn payments(
    State(ledger): State<Arc<dyn Ledger>>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<PaymentLine>>, Problem> {
    ledger
        .lines(page.after, page.limit.clamp(1, 1000))
        .await
        .map(Json)
        .map_err(|e| {
            tracing::error!(error = %e, "payments ledger failed");
            Problem::unavailable(
                "the payments ledger is unavailable",
                std::time::Duration::from_secs(1),
            )
        })
}
