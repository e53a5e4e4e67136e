//! Inventory's public HTTP API: the catalog (public reads, admin writes).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use garde::Validate;
use http::StatusCode;
use kit::Problem;
use kit::extract::Query;
use kit::security::Identity;
use serde::{Deserialize, Serialize};

use crate::domain::{Product, Sku, decode_cursor, encode_cursor, is_currency};
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
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/products/{sku}", get(get_product))
        .route("/api/products/{sku}/stock", put(set_stock))
        .with_state(state)
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "inventory",
        description = "The product catalog and its stock."
    ),
    paths(list_products, get_product, create_product, set_stock),
    components(schemas(ProductView, ProductPage, NewProduct, StockUpdate))
)]
pub struct ApiDoc;

/// A product as clients see it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
    match e {
        CatalogError::Exists(_) | CatalogError::BelowReserved { .. } => {
            Problem::conflict(e.to_string())
        }
        CatalogError::NotFound(_) => Problem::not_found(e.to_string()),
        CatalogError::Backend(_) => {
            tracing::error!(error = %e, "catalog store failed");
            Problem::unavailable(
                "the catalog store is unavailable",
                std::time::Duration::from_secs(1),
            )
        }
    }
}

/// The largest price and stock accepted: far beyond any real product, far below
/// where sums of them could overflow.
const MAX_AMOUNT: i64 = 1_000_000_000_000;

fn valid_currency(value: &str, _: &()) -> garde::Result {
    if is_currency(value) {
        Ok(())
    } else {
        Err(garde::Error::new(
            "an ISO 4217 code: three upper-case letters",
        ))
    }
}

/// `POST /api/products` body.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// 2–64 of `A-Z`, `0-9`, `-`.
    #[garde(skip)]
    #[schema(value_type = String, pattern = "^[A-Z0-9][A-Z0-9-]{1,63}$")]
    pub sku: Sku,
    /// Display name.
    #[garde(length(chars, min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Description.
    #[garde(length(chars, max = 4000))]
    #[schema(max_length = 4000)]
    #[serde(default)]
    pub description: String,
    /// Unit price in minor units.
    #[garde(range(min = 0, max = MAX_AMOUNT))]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_cents: i64,
    /// ISO 4217 currency.
    #[garde(custom(valid_currency))]
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Units on hand.
    #[garde(range(min = 0, max = MAX_AMOUNT))]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub stock: i64,
}

/// `PUT /api/products/{sku}/stock` body.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockUpdate {
    /// Units on hand (including reserved ones).
    #[garde(range(min = 0, max = MAX_AMOUNT))]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub stock: i64,
}

/// Adds a product (administrators).
#[utoipa::path(post, path = "/api/products", tag = "inventory",
    request_body = NewProduct,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = ProductView),
        (status = 401, description = "No access token (problem document)"),
        (status = 403, description = "Not an administrator (problem document)"),
        (status = 409, description = "The SKU exists (problem document)"),
        (status = 422, description = "Invalid fields, each named (problem document)"),
    ))]
async fn create_product(
    caller: Identity,
    State(state): State<AppState>,
    kit::extract::Json(body): kit::extract::Json<NewProduct>,
) -> Result<(StatusCode, Json<ProductView>), Problem> {
    caller.require_role("admin")?;
    let product = Product {
        sku: body.sku,
        name: body.name,
        description: body.description,
        price_cents: body.price_cents,
        currency: body.currency,
        stock: body.stock,
        reserved: 0,
        sold: 0,
    };
    let created = state.store.create(product).await.map_err(store_failed)?;
    tracing::info!(sku = %created.sku, by = %caller.user_id, "product created");
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Sets the units on hand of a product (administrators).
#[utoipa::path(put, path = "/api/products/{sku}/stock", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = StockUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 401, description = "No access token (problem document)"),
        (status = 403, description = "Not an administrator (problem document)"),
        (status = 404, description = "No such product (problem document)"),
        (status = 409, description = "Below the reserved units (problem document)"),
        (status = 422, description = "Invalid stock (problem document)"),
    ))]
async fn set_stock(
    caller: Identity,
    State(state): State<AppState>,
    Path(sku): Path<String>,
    kit::extract::Json(body): kit::extract::Json<StockUpdate>,
) -> Result<Json<ProductView>, Problem> {
    caller.require_role("admin")?;
    let sku =
        Sku::parse(&sku).map_err(|_| Problem::not_found(format!("no product with SKU {sku:?}")))?;
    let store = state.store.clone();
    let updated = kit::store::detached(async move { store.set_stock(sku, body.stock).await })
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(store_failed)?;
    tracing::info!(sku = %updated.sku, stock = updated.stock, by = %caller.user_id, "stock set");
    Ok(Json(updated.into()))
}

/// One page of the catalog, in SKU order.
#[utoipa::path(get, path = "/api/products", tag = "inventory",
    params(
        ("limit" = Option<u32>, Query, description = "1-100, default 20", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", max_length = 200),
    ),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 422, description = "Invalid limit or cursor (problem document)"),
    ))]
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

/// One product.
#[utoipa::path(get, path = "/api/products/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, description = "No such product (problem document)"),
    ))]
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
