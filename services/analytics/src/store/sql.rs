//! The SQL backends: SQLite (embedded default) and PostgreSQL (production), from one
//! implementation written against both (`?` placeholders, numbered for PostgreSQL).
//!
//! [`AnalyticsStore::apply`] writes the inbox row first, which takes the write lock,
//! and only then reads the generation (`FOR UPDATE` on PostgreSQL): a rebuild either
//! committed before, and the event is refused as stale, or waits until this
//! transaction is done and then drops what it added.

use std::collections::BTreeMap;

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};

use kit_events::outbox::InboxPage;

use super::{AnalyticsStore, AnalyticsStoreError, Applied, Totals};
use crate::domain::Projection;

static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
    Migration {
        version: 2,
        description: "projections",
        sql: include_str!("../../migrations/sqlite/0001_projections.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox and inbox",
        sql: kit_events::outbox::POSTGRES_SCHEMA,
    },
    Migration {
        version: 2,
        description: "projections",
        sql: include_str!("../../migrations/postgres/0001_projections.sql"),
    },
];

// SQLite takes the statements as written; PostgreSQL numbers its placeholders.
use kit::store::postgres::statement as postgres;
use kit::store::sqlite::statement as sqlite;

const GENERATION: &str = "SELECT generation FROM projection_state WHERE id = 1";

macro_rules! analytics {
    ($(#[$doc:meta])* $name:ident, $pool:ty, $open:path, $migrations:ident, $q:path,
     $handled:path, $inbox:path, $lock_generation:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            /// Opens (and migrates) the database at `url`.
            pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
                Ok(Self {
                    pool: $open(url, setting, $migrations).await?,
                })
            }
        }

        impl AnalyticsStore for $name {
            fn generation(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>> {
                Box::pin(async move {
                    let (g,): (i64,) = sqlx::query_as(GENERATION).fetch_one(&self.pool).await?;
                    Ok(g)
                })
            }

            fn apply<'a>(
                &'a self,
                generation: i64,
                consumer: &'a str,
                event_id: &'a str,
                projection: Option<&'a Projection>,
            ) -> BoxFuture<'a, Result<Applied, AnalyticsStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let new = $handled(&mut *tx, consumer, event_id).await?;
                    let (current,): (i64,) =
                        sqlx::query_as($lock_generation).fetch_one(&mut *tx).await?;
                    if current != generation {
                        tx.rollback().await?;
                        return Ok(Applied::Stale);
                    }
                    if !new {
                        tx.rollback().await?;
                        return Ok(Applied::Duplicate);
                    }
                    if let Some(p) = projection {
                        let add = $q(
                            "INSERT INTO counters (bucket, metric, value) VALUES (?, ?, ?) \
                             ON CONFLICT (bucket, metric) DO UPDATE SET value = counters.value + excluded.value",
                        );
                        for (metric, value) in &p.counters {
                            sqlx::query(&add)
                                .bind(p.bucket)
                                .bind(*metric)
                                .bind(*value)
                                .execute(&mut *tx)
                                .await?;
                        }
                        let sold = $q(
                            "INSERT INTO product_sales (bucket, sku, quantity) VALUES (?, ?, ?) \
                             ON CONFLICT (bucket, sku) DO UPDATE SET quantity = product_sales.quantity + excluded.quantity",
                        );
                        for (sku, quantity) in &p.products {
                            sqlx::query(&sold)
                                .bind(p.bucket)
                                .bind(sku)
                                .bind(*quantity)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(Applied::New)
                })
            }

            fn totals(&self, first_bucket: i64) -> BoxFuture<'_, Result<Totals, AnalyticsStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "SELECT metric, CAST(SUM(value) AS BIGINT) FROM counters \
                         WHERE bucket >= ? GROUP BY metric",
                    );
                    let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
                        .bind(first_bucket)
                        .fetch_all(&self.pool)
                        .await?;
                    let counters: BTreeMap<String, i64> = rows.into_iter().collect();
                    let sql = $q(
                        "SELECT sku, CAST(SUM(quantity) AS BIGINT) FROM product_sales \
                         WHERE bucket >= ? GROUP BY sku ORDER BY sku",
                    );
                    let products: Vec<(String, i64)> = sqlx::query_as(&sql)
                        .bind(first_bucket)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(Totals { counters, products })
                })
            }

            fn rebuild(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let bump = $q(
                        "UPDATE projection_state SET generation = generation + 1, rebuilt_at = ? \
                         WHERE id = 1",
                    );
                    sqlx::query(&bump)
                        .bind(crate::now_rfc3339())
                        .execute(&mut *tx)
                        .await?;
                    for table in ["counters", "product_sales", "inbox"] {
                        sqlx::query(&format!("DELETE FROM {table}"))
                            .execute(&mut *tx)
                            .await?;
                    }
                    let (g,): (i64,) = sqlx::query_as(GENERATION).fetch_one(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(g)
                })
            }

            fn inbox<'a>(
                &'a self,
                consumer: &'a str,
                after: Option<&'a str>,
                limit: u32,
            ) -> BoxFuture<'a, Result<InboxPage, AnalyticsStoreError>> {
                Box::pin(async move { Ok($inbox(&self.pool, consumer, after, limit).await?) })
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), AnalyticsStoreError>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
        }
    };
}

analytics!(
    /// Projections in SQLite (embedded default).
    SqliteAnalytics,
    sqlx::SqlitePool,
    kit::store::sqlite::open,
    SQLITE_MIGRATIONS,
    sqlite,
    kit_events::outbox::record_handled,
    kit_events::outbox::inbox_page,
    GENERATION
);

analytics!(
    /// Projections in PostgreSQL (production).
    PgAnalytics,
    sqlx::PgPool,
    kit::store::postgres::open,
    POSTGRES_MIGRATIONS,
    postgres,
    kit_events::outbox::postgres::record_handled,
    kit_events::outbox::postgres::inbox_page,
    "SELECT generation FROM projection_state WHERE id = 1 FOR UPDATE"
);
