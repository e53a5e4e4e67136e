//! Inventory's admin API (on the admin listener only, never forwarded by the gateway):
//! its own state as an invariant checker (`flotilla verify`) needs it.
//!
//! - `GET /admin/stock`: every product's units on hand, reserved and sold;
//! - `GET /admin/reservations/overdue`: the orders whose reservation is still held past
//!   its TTL (the sweeper expires them every `sweep_interval`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use serde::{Deserialize, Serialize};

use crate::domain::now_ms;
use crate::store::CatalogStore;

/// One product's stock as inventory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    /// The SKU.
    pub sku: String,
    /// Units on hand (including reserved ones).
    pub stock: i64,
    /// Units held for orders in flight.
    pub reserved: i64,
    /// Units sold (committed reservations).
    pub sold: i64,
}

/// Most overdue reservations one answer lists.
const OVERDUE_LIMIT: u32 = 1000;

/// The admin routes over `store`.
pub fn router(store: Arc<dyn CatalogStore>) -> Router {
    Router::new()
        .route("/admin/stock", get(stock))
        .route("/admin/reservations/overdue", get(overdue))
        .with_state(store)
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "inventory store failed");
    Problem::unavailable(
        "the inventory store is unavailable",
        std::time::Duration::from_secs(1),
    )
}

async fn stock(
    State(store): State<Arc<dyn CatalogStore>>,
) -> Result<Json<Vec<StockLine>>, Problem> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(100, after.take()).await.map_err(unavailable)?;
        let more = page.len() == 100;
        after = page.last().map(|p| p.sku.clone());
        out.extend(page.into_iter().map(|p| StockLine {
            sku: p.sku.as_str().to_owned(),
            stock: p.stock,
            reserved: p.reserved,
            sold: p.sold,
        }));
        if !more {
            return Ok(Json(out));
        }
    }
}

async fn overdue(State(store): State<Arc<dyn CatalogStore>>) -> Result<Json<Vec<String>>, Problem> {
    store
        .due(now_ms(), OVERDUE_LIMIT)
        .await
        .map(Json)
        .map_err(unavailable)
}
