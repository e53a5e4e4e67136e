//! SQLite backend (embedded default).

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};
use kit_events::outbox::{OutboxStore, enqueue};
use sqlx::{FromRow, SqlitePool};
use tokio::sync::Notify;

use super::{CatalogError, CatalogStore};
use crate::domain::{
    Action, Line, Product, Reservation, ReservationError, ReservationStatus, Sku, Step, decide,
};

static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "products",
        sql: include_str!("../../migrations/sqlite/0001_products.sql"),
    },
    Migration {
        version: 2,
        description: "reservations",
        sql: include_str!("../../migrations/sqlite/0002_reservations.sql"),
    },
    Migration {
        version: 3,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
];

/// Write transactions take the write lock up front (`BEGIN IMMEDIATE`): a deferred
/// transaction that reads and then writes could fail with `SQLITE_BUSY` instead of
/// waiting its turn, and holding the lock for the whole check-then-update is what
/// keeps concurrent reservations from overselling.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Products in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
    wake: Arc<Notify>,
}

#[derive(FromRow)]
struct Row {
    sku: String,
    name: String,
    description: String,
    price_cents: i64,
    currency: String,
    stock: i64,
    reserved: i64,
    sold: i64,
}

impl TryFrom<Row> for Product {
    type Error = CatalogError;
    fn try_from(r: Row) -> Result<Self, CatalogError> {
        Ok(Product {
            sku: Sku::parse(&r.sku)
                .map_err(|e| CatalogError::Backend(format!("stored SKU {:?}: {e}", r.sku)))?,
            name: r.name,
            description: r.description,
            price_cents: r.price_cents,
            currency: r.currency,
            stock: r.stock,
            reserved: r.reserved,
            sold: r.sold,
        })
    }
}

const COLUMNS: &str = "sku, name, description, price_cents, currency, stock, reserved, sold";

fn backend(e: sqlx::Error) -> ReservationError {
    ReservationError::Backend(e.to_string())
}

async fn load_reservation(
    conn: &mut sqlx::SqliteConnection,
    order_id: &str,
) -> Result<Option<Reservation>, ReservationError> {
    let head: Option<(String, i64)> =
        sqlx::query_as("SELECT status, expires_at FROM reservations WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    let Some((status, expires_at_ms)) = head else {
        return Ok(None);
    };
    let status = ReservationStatus::parse(&status)
        .ok_or_else(|| ReservationError::Backend(format!("stored status {status:?}")))?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = ? ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let lines = rows
        .into_iter()
        .map(|(sku, quantity)| {
            Ok(Line {
                sku: Sku::parse(&sku)
                    .map_err(|e| ReservationError::Backend(format!("stored SKU {sku:?}: {e}")))?,
                quantity,
            })
        })
        .collect::<Result<_, ReservationError>>()?;
    Ok(Some(Reservation {
        order_id: order_id.to_owned(),
        lines,
        status,
        expires_at_ms,
    }))
}

impl SqliteCatalog {
    async fn product_in(
        conn: &mut sqlx::SqliteConnection,
        sku: &Sku,
    ) -> Result<Option<Product>, CatalogError> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE sku = ?"))
                .bind(sku.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        row.map(Product::try_from).transpose()
    }
}

impl SqliteCatalog {
    /// Opens (and migrates) the database at `url`.
    pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pool: kit::store::sqlite::open(url, setting, MIGRATIONS).await?,
            wake: Arc::new(Notify::new()),
        })
    }
}

impl CatalogStore for SqliteCatalog {
    fn list(
        &self,
        limit: u32,
        after: Option<Sku>,
    ) -> BoxFuture<'_, Result<Vec<Product>, CatalogError>> {
        Box::pin(async move {
            let after = after.map(|s| s.as_str().to_owned()).unwrap_or_default();
            let rows: Vec<Row> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM products WHERE sku > ? ORDER BY sku LIMIT ?"
            ))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(Product::try_from).collect()
        })
    }

    fn get(&self, sku: Sku) -> BoxFuture<'_, Result<Option<Product>, CatalogError>> {
        Box::pin(async move {
            let row: Option<Row> =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE sku = ?"))
                    .bind(sku.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(Product::try_from).transpose()
        })
    }

    fn seed_once(&self, products: Vec<Product>) -> BoxFuture<'_, Result<usize, CatalogError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let first =
                sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('seeded', '1')")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            let mut added = 0;
            if first {
                for p in &products {
                    added += sqlx::query(
                        "INSERT OR IGNORE INTO products (sku, name, description, price_cents, currency, stock, reserved, sold) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(p.sku.as_str())
                    .bind(&p.name)
                    .bind(&p.description)
                    .bind(p.price_cents)
                    .bind(&p.currency)
                    .bind(p.stock)
                    .bind(p.reserved)
                    .bind(p.sold)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
                }
            }
            tx.commit().await?;
            Ok(added)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn create(&self, p: Product) -> BoxFuture<'_, Result<Product, CatalogError>> {
        Box::pin(async move {
            let inserted = sqlx::query(
                "INSERT OR IGNORE INTO products (sku, name, description, price_cents, currency, stock, reserved, sold) \
                 VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
            )
            .bind(p.sku.as_str())
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.price_cents)
            .bind(&p.currency)
            .bind(p.stock)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(CatalogError::Exists(p.sku));
            }
            Ok(Product {
                reserved: 0,
                sold: 0,
                ..p
            })
        })
    }

    fn set_stock(&self, sku: Sku, stock: i64) -> BoxFuture<'_, Result<Product, CatalogError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
            let Some(current) = Self::product_in(&mut tx, &sku).await? else {
                return Err(CatalogError::NotFound(sku));
            };
            if stock < current.reserved {
                return Err(CatalogError::BelowReserved {
                    sku,
                    reserved: current.reserved,
                });
            }
            sqlx::query(
                "UPDATE products SET stock = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE sku = ?",
            )
            .bind(stock)
            .bind(sku.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Product { stock, ..current })
        })
    }

    fn reserve(
        &self,
        order_id: String,
        lines: Vec<Line>,
        expires_at_ms: i64,
    ) -> BoxFuture<'_, Result<Reservation, ReservationError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(backend)?;
            if let Some(existing) = load_reservation(&mut tx, &order_id).await? {
                return if existing.lines == lines || existing.lines.is_empty() {
                    Ok(existing)
                } else {
                    Err(ReservationError::Mismatch(order_id))
                };
            }
            for line in &lines {
                // The condition makes the check and the hold one statement; any
                // failure drops the transaction, undoing the lines held before it.
                let held = sqlx::query(
                    "UPDATE products SET reserved = reserved + ?1 WHERE sku = ?2 AND stock - reserved >= ?1",
                )
                .bind(line.quantity)
                .bind(line.sku.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
                if held == 0 {
                    let exists = Self::product_in(&mut tx, &line.sku).await?.is_some();
                    return Err(if exists {
                        ReservationError::Insufficient(line.sku.clone())
                    } else {
                        ReservationError::UnknownSku(line.sku.clone())
                    });
                }
            }
            sqlx::query(
                "INSERT INTO reservations (order_id, status, expires_at) VALUES (?, 'reserved', ?)",
            )
            .bind(&order_id)
            .bind(expires_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            for line in &lines {
                sqlx::query(
                    "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES (?, ?, ?)",
                )
                .bind(&order_id)
                .bind(line.sku.as_str())
                .bind(line.quantity)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            let reservation = Reservation {
                order_id,
                lines,
                status: ReservationStatus::Reserved,
                expires_at_ms,
            };
            let (subject, event) = crate::events::reserved(&reservation);
            enqueue(&mut *tx, subject, &event).await.map_err(backend)?;
            for line in &reservation.lines {
                let (available,): (i64,) =
                    sqlx::query_as("SELECT stock - reserved FROM products WHERE sku = ?")
                        .bind(line.sku.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?;
                if let Some((subject, event)) =
                    crate::events::low_stock(line.sku.as_str(), available)
                {
                    enqueue(&mut *tx, subject, &event).await.map_err(backend)?;
                }
            }
            tx.commit().await.map_err(backend)?;
            self.wake.notify_one();
            Ok(reservation)
        })
    }

    fn finish(
        &self,
        order_id: String,
        action: Action,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(backend)?;
            let current = load_reservation(&mut tx, &order_id).await?;
            match decide(&order_id, current.as_ref(), action, now_ms) {
                Step::Nothing => Ok(current),
                Step::Refuse(e) => Err(e),
                Step::Tombstone => {
                    sqlx::query(
                        "INSERT INTO reservations (order_id, status, expires_at) VALUES (?, 'released', 0)",
                    )
                    .bind(&order_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    Ok(Some(Reservation {
                        order_id,
                        lines: Vec::new(),
                        status: ReservationStatus::Released,
                        expires_at_ms: 0,
                    }))
                }
                Step::Transition { to, refuse } => {
                    let mut r = current.expect("a transition has a reservation");
                    let sql = if to == ReservationStatus::Committed {
                        "UPDATE products SET reserved = reserved - ?1, stock = stock - ?1, sold = sold + ?1 WHERE sku = ?2"
                    } else {
                        "UPDATE products SET reserved = reserved - ?1 WHERE sku = ?2"
                    };
                    for line in &r.lines {
                        sqlx::query(sql)
                            .bind(line.quantity)
                            .bind(line.sku.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    sqlx::query(
                        "UPDATE reservations SET status = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE order_id = ?",
                    )
                    .bind(to.as_str())
                    .bind(&order_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                    if let Some((subject, event)) =
                        crate::events::transition(&order_id, &r.lines, to)
                    {
                        enqueue(&mut *tx, subject, &event).await.map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)?;
                    self.wake.notify_one();
                    r.status = to;
                    match refuse {
                        Some(e) => Err(e),
                        None => Ok(Some(r)),
                    }
                }
            }
        })
    }

    fn reservation(
        &self,
        order_id: String,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            load_reservation(&mut conn, &order_id).await
        })
    }

    fn outbox(&self) -> (Arc<dyn OutboxStore>, Arc<Notify>) {
        (Arc::new(self.pool.clone()), self.wake.clone())
    }

    fn due(&self, now_ms: i64, limit: u32) -> BoxFuture<'_, Result<Vec<String>, ReservationError>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT order_id FROM reservations WHERE status = 'reserved' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            )
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            Ok(rows.into_iter().map(|(id,)| id).collect())
        })
    }
}
