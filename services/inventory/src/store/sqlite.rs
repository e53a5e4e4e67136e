//! SQLite backend (embedded default).

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};
use sqlx::{FromRow, SqlitePool};

use super::{CatalogError, CatalogStore};
use crate::domain::{Product, Sku};

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "products",
    sql: include_str!("../../migrations/sqlite/0001_products.sql"),
}];

/// Products in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
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
        })
    }
}

const COLUMNS: &str = "sku, name, description, price_cents, currency, stock, reserved";

impl SqliteCatalog {
    /// Opens (and migrates) the database at `url`.
    pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pool: kit::store::sqlite::open(url, setting, MIGRATIONS).await?,
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
                        "INSERT OR IGNORE INTO products (sku, name, description, price_cents, currency, stock, reserved) \
                         VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(p.sku.as_str())
                    .bind(&p.name)
                    .bind(&p.description)
                    .bind(p.price_cents)
                    .bind(&p.currency)
                    .bind(p.stock)
                    .bind(p.reserved)
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
}
