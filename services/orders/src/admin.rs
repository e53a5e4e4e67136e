//! Orders' admin API (on the admin listener only, never forwarded by the gateway): its
//! own state as an invariant checker (`flotilla verify`) needs it.
//!
//! - `GET /admin/orders/in-flight`: the ids of the orders whose saga has not ended yet
//!   (still `PENDING`: running forward or compensating).

use ::saga::SagaStore;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;

use crate::store::OrderStore;

/// The admin routes over `store`.
pub fn router(store: OrderStore) -> Router {
    Router::new()
        .route("/admin/orders/in-flight", get(in_flight))
        .with_state(store)
}

async fn in_flight(State(store): State<OrderStore>) -> Result<Json<Vec<String>>, Problem> {
    store.in_flight().await.map(Json).map_err(|e| {
        tracing::error!(error = %e, "orders store failed");
        Problem::unavailable(
            "the orders store is unavailable",
            std::time::Duration::from_secs(1),
        )
    })
}
