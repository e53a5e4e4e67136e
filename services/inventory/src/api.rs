//! Inventory's public HTTP API: the catalog read path.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use garde::Validate;
use kit::Problem;
use kit::extract::Query;
use serde::{Deserialize, Serialize};

use crate::domain::{Product, Sku, decode_cursor, encode_cursor};
use crate::store::{CatalogError, CatalogStore};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The catalog.
    pub store: Arc<dyn CatalogStore>,
}

/// The public routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/products", get(list_products))
        .route("/api/products/{sku}", get(get_product))
        .with_state(state)
}

/// A product as clients see it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProductView {
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Unit price in minor units.
    pub price_cents: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Units that can be ordered now.
    pub available: i64,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        let available = p.available();
        Self {
            sku: p.sku.to_string(),
            name: p.name,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            available,
        }
    }
}

/// `GET /api/products` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProductPage {
    /// This page.
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, Validate)]
struct ListQuery {
    #[garde(range(min = 1, max = 100))]
    #[serde(default = "default_limit")]
    limit: u32,
    #[garde(length(max = 200))]
    cursor: Option<String>,
}

fn default_limit() -> u32 {
    20
}

fn store_failed(e: CatalogError) -> Problem {
    tracing::error!(error = %e, "catalog store failed");
    Problem::unavailable(
        "the catalog store is unavailable",
        std::time::Duration::from_secs(1),
    )
}

async fn list_products(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ProductPage>, Problem> {
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            Problem::invalid_field("cursor", "not a cursor from a previous page")
        })?),
    };
    // One extra row tells whether there is a next page.
    let mut items = state
        .store
        .list(q.limit + 1, after)
        .await
        .map_err(store_failed)?;
    let next_cursor = if items.len() > q.limit as usize {
        items.truncate(q.limit as usize);
        items.last().map(|p| encode_cursor(&p.sku))
    } else {
        None
    };
    Ok(Json(ProductPage {
        items: items.into_iter().map(ProductView::from).collect(),
        next_cursor,
    }))
}

async fn get_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<ProductView>, Problem> {
    let not_found = || Problem::not_found(format!("no product with SKU {sku:?}"));
    let parsed = Sku::parse(&sku).map_err(|_| not_found())?;
    match state.store.get(parsed).await.map_err(store_failed)? {
        Some(p) => Ok(Json(p.into())),
        None => Err(not_found()),
    }
}
