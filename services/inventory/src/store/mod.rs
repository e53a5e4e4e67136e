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
use kit::telemetry::db::{Db, System};

use crate::domain::{Action, Line, Product, Reservation, ReservationError, Sku};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The backend failed (connection lost, timeout, bad data).
    #[error("inventory store: {0}")]
    Backend(String),
    /// A product with this SKU exists already.
    #[error("a product with SKU {0} exists")]
    Exists(Sku),
    /// No product with this SKU.
    #[error("no product with SKU {0}")]
    NotFound(Sku),
    /// The new stock is below what is held for orders in flight.
    #[error("{reserved} units of {sku} are reserved; stock cannot go below that")]
    BelowReserved {
        /// The SKU.
        sku: Sku,
        /// Units reserved now.
        reserved: i64,
    },
}

impl From<CatalogError> for ReservationError {
    fn from(e: CatalogError) -> Self {
        ReservationError::Backend(e.to_string())
    }
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
    /// Adds a new product (its `reserved` and `sold` start at 0).
    fn create(&self, product: Product) -> BoxFuture<'_, Result<Product, CatalogError>>;
    /// Sets the units on hand of a product; refused below its reserved units.
    fn set_stock(&self, sku: Sku, stock: i64) -> BoxFuture<'_, Result<Product, CatalogError>>;

    /// Holds stock for every line, or for none (atomically, without overselling under
    /// any concurrency). An order that already has a reservation gets it back unchanged
    /// when the lines are equal ([`ReservationError::Mismatch`] otherwise). `lines` come
    /// from [`crate::domain::normalize_request`].
    fn reserve(
        &self,
        order_id: String,
        lines: Vec<Line>,
        expires_at_ms: i64,
    ) -> BoxFuture<'_, Result<Reservation, ReservationError>>;
    /// Applies `action` to the order's reservation following
    /// [`crate::domain::decide`]; `None` only for an expiry with nothing to expire.
    fn finish(
        &self,
        order_id: String,
        action: Action,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>>;
    /// The order's reservation.
    fn reservation(
        &self,
        order_id: String,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>>;
    /// Up to `limit` order ids whose held reservations expired by `now_ms`.
    fn due(&self, now_ms: i64, limit: u32) -> BoxFuture<'_, Result<Vec<String>, ReservationError>>;
    /// The outbox written in the same transaction (SQLite) or script (Redis) as each
    /// reservation change, and the notifier poked after each change that wrote events.
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    );
}

/// Expires every held reservation past its TTL, returning their stock; returns how
/// many expired. Run periodically by the service.
pub async fn expire_due(store: &dyn CatalogStore, now_ms: i64) -> Result<usize, ReservationError> {
    let mut expired = 0;
    loop {
        let due = store.due(now_ms, 100).await?;
        if due.is_empty() {
            return Ok(expired);
        }
        let mut batch = 0;
        for order_id in due {
            if let Some(r) = store.finish(order_id, Action::Expire, now_ms).await?
                && r.status == crate::domain::ReservationStatus::Expired
            {
                batch += 1;
            }
        }
        expired += batch;
        // A batch that expired nothing would come back the same: stop rather than spin.
        if batch == 0 {
            return Ok(expired);
        }
    }
}

/// Opens the store a URL names. Every call made for a request or a saga step is a
/// database client span; the sweeper's `due` and the probes' `ping` are not.
pub async fn open(
    url: &str,
    setting: &str,
    redis_prefix: &str,
) -> Result<Arc<dyn CatalogStore>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sqlite::SqliteCatalog::open(url, setting).await?,
            db,
        })),
        "redis" | "rediss" => Ok(Arc::new(Traced {
            inner: redis::RedisCatalog::open(url, setting, redis_prefix).await?,
            db,
        })),
        _ => Err(StoreError::UnknownScheme {
            setting: setting.to_owned(),
            url: kit::store::redact(url),
            expected: "sqlite://, redis://",
        }),
    }
}

/// A store whose calls are database client spans (see `kit::telemetry::db`).
struct Traced<S> {
    inner: S,
    db: Db,
}

impl<S> Traced<S> {
    /// The operation's name in this backend's words: SQL, or the Redis command.
    fn op(&self, sql: &'static str, redis: &'static str) -> &'static str {
        if self.db.system() == System::Redis {
            redis
        } else {
            sql
        }
    }
}

impl<S: CatalogStore> CatalogStore for Traced<S> {
    fn list(
        &self,
        limit: u32,
        after: Option<Sku>,
    ) -> BoxFuture<'_, Result<Vec<Product>, CatalogError>> {
        let op = self.op("SELECT", "ZRANGE");
        Box::pin(self.db.run(op, "products", self.inner.list(limit, after)))
    }
    fn get(&self, sku: Sku) -> BoxFuture<'_, Result<Option<Product>, CatalogError>> {
        let op = self.op("SELECT", "HGETALL");
        Box::pin(self.db.run(op, "products", self.inner.get(sku)))
    }
    fn seed_once(&self, products: Vec<Product>) -> BoxFuture<'_, Result<usize, CatalogError>> {
        let op = self.op("INSERT", "EVALSHA");
        Box::pin(self.db.run(op, "products", self.inner.seed_once(products)))
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), CatalogError>> {
        self.inner.ping()
    }
    fn create(&self, product: Product) -> BoxFuture<'_, Result<Product, CatalogError>> {
        let op = self.op("INSERT", "EVALSHA");
        Box::pin(self.db.run(op, "products", self.inner.create(product)))
    }
    fn set_stock(&self, sku: Sku, stock: i64) -> BoxFuture<'_, Result<Product, CatalogError>> {
        let op = self.op("UPDATE", "EVALSHA");
        Box::pin(
            self.db
                .run(op, "products", self.inner.set_stock(sku, stock)),
        )
    }
    fn reserve(
        &self,
        order_id: String,
        lines: Vec<Line>,
        expires_at_ms: i64,
    ) -> BoxFuture<'_, Result<Reservation, ReservationError>> {
        let op = self.op("INSERT", "EVALSHA");
        let call = self.inner.reserve(order_id, lines, expires_at_ms);
        Box::pin(self.db.run(op, "reservations", call))
    }
    fn finish(
        &self,
        order_id: String,
        action: Action,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        let op = self.op("UPDATE", "EVALSHA");
        let call = self.inner.finish(order_id, action, now_ms);
        Box::pin(self.db.run(op, "reservations", call))
    }
    fn reservation(
        &self,
        order_id: String,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        let op = self.op("SELECT", "HGETALL");
        Box::pin(
            self.db
                .run(op, "reservations", self.inner.reservation(order_id)),
        )
    }
    fn due(&self, now_ms: i64, limit: u32) -> BoxFuture<'_, Result<Vec<String>, ReservationError>> {
        self.inner.due(now_ms, limit)
    }
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    ) {
        self.inner.outbox()
    }
}
