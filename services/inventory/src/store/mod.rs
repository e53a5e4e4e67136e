//! Inventory's store: one trait, one module per backend. SQLite is the embedded
//! default; Redis (`FLOTILLA_INVENTORY__STORE=redis://…`) is the production engine.
//! Both pass the same conformance tests (`tests.rs`).

pub mod redis;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;

use crate::domain::{Product, Sku};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The backend failed (connection lost, timeout, bad data).
    #[error("inventory store: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<::redis::RedisError> for CatalogError {
    fn from(e: ::redis::RedisError) -> Self {
        Self::Backend(e.to_string())
    }
}

/// Where products and stock are kept.
pub trait CatalogStore: Send + Sync + 'static {
    /// Up to `limit` products ordered by SKU, starting after `after`.
    fn list(
        &self,
        limit: u32,
        after: Option<Sku>,
    ) -> BoxFuture<'_, Result<Vec<Product>, CatalogError>>;
    /// One product.
    fn get(&self, sku: Sku) -> BoxFuture<'_, Result<Option<Product>, CatalogError>>;
    /// Inserts `products` if this store was never seeded; returns how many were added
    /// (0 when it had been seeded before, even if products were removed since).
    fn seed_once(&self, products: Vec<Product>) -> BoxFuture<'_, Result<usize, CatalogError>>;
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), CatalogError>>;
}

/// Opens the store a URL names.
pub async fn open(
    url: &str,
    setting: &str,
    redis_prefix: &str,
) -> Result<Arc<dyn CatalogStore>, StoreError> {
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(sqlite::SqliteCatalog::open(url, setting).await?)),
        "redis" | "rediss" => Ok(Arc::new(
            redis::RedisCatalog::open(url, setting, redis_prefix).await?,
        )),
        _ => Err(StoreError::UnknownScheme {
            setting: setting.to_owned(),
            url: kit::store::redact(url),
            expected: "sqlite://, redis://",
        }),
    }
}
