//! The SQL backends: SQLite (embedded default) and MariaDB/MySQL (production), from one
//! implementation written against both.

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};
use kit_events::outbox::OutboxStore;
use sqlx::FromRow;
use tokio::sync::Notify;

use super::{Applied, Begin, Change, Completed, Ledger, LedgerError, PaymentLine};
use crate::domain::{Payment, Status, now_rfc3339};

static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "payments",
        sql: include_str!("../../migrations/sqlite/0001_payments.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
    Migration {
        version: 3,
        description: "pending claims index",
        sql: include_str!("../../migrations/sqlite/0003_pending_claims.sql"),
    },
];

static MYSQL_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "payments",
        sql: include_str!("../../migrations/mysql/0001_payments.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::MYSQL_SCHEMA,
    },
    Migration {
        version: 3,
        description: "pending claims index",
        sql: include_str!("../../migrations/mysql/0003_pending_claims.sql"),
    },
];

#[derive(FromRow)]
struct Row {
    id: String,
    order_id: String,
    user_id: String,
    amount_cents: i64,
    currency: String,
    status: String,
    refunded_cents: i64,
    card_last4: String,
    decline_reason: Option<String>,
    provider_ref: Option<String>,
    created_at: String,
}

impl TryFrom<Row> for Payment {
    type Error = LedgerError;
    fn try_from(r: Row) -> Result<Self, LedgerError> {
        Ok(Payment {
            status: Status::parse(&r.status)
                .ok_or_else(|| LedgerError(format!("stored status {:?}", r.status)))?,
            id: r.id,
            order_id: r.order_id,
            user_id: r.user_id,
            amount_cents: r.amount_cents,
            currency: r.currency,
            refunded_cents: r.refunded_cents,
            card_last4: r.card_last4,
            decline_reason: r.decline_reason,
            provider_ref: r.provider_ref,
            created_at: r.created_at,
        })
    }
}

const SELECT: &str = "SELECT id, order_id, user_id, amount_cents, currency, status, refunded_cents, \
     card_last4, decline_reason, provider_ref, created_at FROM payments";

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

macro_rules! ledger {
    ($(#[$doc:meta])* $name:ident, $db:ty, $pool:ty, $open:path, $migrations:ident, $enqueue:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
            wake: Arc<Notify>,
        }

        impl $name {
            /// Opens (and migrates) the database at `url`.
            pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
                Ok(Self {
                    pool: $open(url, setting, $migrations).await?,
                    wake: Arc::new(Notify::new()),
                })
            }

            /// Reads a payment inside a transaction and writes `event` for it into the
            /// outbox of the same transaction.
            async fn publish_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: &str,
                event: impl FnOnce(&Payment) -> Option<(&'static str, kit_events::Event)>,
            ) -> Result<(), LedgerError> {
                let row: Row = sqlx::query_as(&format!("{SELECT} WHERE id = ?"))
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
                if let Some((subject, e)) = event(&Payment::try_from(row)?) {
                    $enqueue(&mut **tx, subject, &e).await?;
                }
                Ok(())
            }

            async fn fetch(&self, column: &str, value: &str) -> Result<Option<Payment>, LedgerError> {
                let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE {column} = ?"))
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(Payment::try_from).transpose()
            }

            async fn must(&self, id: &str) -> Result<Payment, LedgerError> {
                self.fetch("id", id)
                    .await?
                    .ok_or_else(|| LedgerError(format!("payment {id} vanished")))
            }
        }

        impl Ledger for $name {
            fn lines(
                &self,
                after: Option<String>,
                limit: u32,
            ) -> BoxFuture<'_, Result<Vec<PaymentLine>, LedgerError>> {
                Box::pin(async move {
                    Ok(sqlx::query_as(
                        "SELECT p.id, p.order_id, p.status, p.amount_cents, p.refunded_cents, \
                         (SELECT COUNT(*) FROM operations o WHERE o.payment_id = p.id AND o.kind = 'capture') AS captures \
                         FROM payments p WHERE p.id > ? ORDER BY p.id LIMIT ?",
                    )
                    .bind(after.unwrap_or_default())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?)
                })
            }

            fn begin(&self, p: Payment, key: String) -> BoxFuture<'_, Result<Begin, LedgerError>> {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO payments (id, order_id, user_id, amount_cents, currency, status, \
                         refunded_cents, card_last4, idempotency_key, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
                    )
                    .bind(&p.id)
                    .bind(&p.order_id)
                    .bind(&p.user_id)
                    .bind(p.amount_cents)
                    .bind(&p.currency)
                    .bind(&p.card_last4)
                    .bind(&key)
                    .bind(&p.created_at)
                    .bind(&p.created_at)
                    .execute(&self.pool)
                    .await;
                    match inserted {
                        Ok(_) => Ok(Begin::Started),
                        Err(e) if unique_violation(&e) => match self.fetch("order_id", &p.order_id).await? {
                            Some(existing) => Ok(Begin::Existing(Box::new(existing))),
                            // Abandoned between our insert and read: the caller retries.
                            None => Err(LedgerError("the order's payment changed; retry".into())),
                        },
                        Err(e) => Err(e.into()),
                    }
                })
            }

            fn complete(
                &self,
                id: String,
                status: Status,
                provider_ref: Option<String>,
                decline_reason: Option<String>,
            ) -> BoxFuture<'_, Result<Completed, LedgerError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let changed = sqlx::query(
                        "UPDATE payments SET status = ?, provider_ref = ?, decline_reason = ?, updated_at = ? \
                         WHERE id = ? AND status = 'pending'",
                    )
                    .bind(status.as_str())
                    .bind(provider_ref)
                    .bind(decline_reason)
                    .bind(now_rfc3339())
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed == 0 {
                        drop(tx);
                        return Ok(Completed::Lost(self.fetch("id", &id).await?.map(Box::new)));
                    }
                    Self::publish_in(&mut tx, &id, crate::events::authorization).await?;
                    tx.commit().await?;
                    self.wake.notify_one();
                    Ok(Completed::Recorded(Box::new(self.must(&id).await?)))
                })
            }

            fn abandon(&self, id: String) -> BoxFuture<'_, Result<bool, LedgerError>> {
                Box::pin(async move {
                    let removed = sqlx::query("DELETE FROM payments WHERE id = ? AND status = 'pending'")
                        .bind(id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    Ok(removed == 1)
                })
            }

            fn stale_pending(
                &self,
                before: String,
                limit: u32,
            ) -> BoxFuture<'_, Result<Vec<Payment>, LedgerError>> {
                Box::pin(async move {
                    let rows: Vec<Row> = sqlx::query_as(&format!(
                        "{SELECT} WHERE status = 'pending' AND created_at <= ? ORDER BY created_at, id LIMIT ?"
                    ))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(Payment::try_from).collect()
                })
            }

            fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Payment>, LedgerError>> {
                Box::pin(async move { self.fetch("id", &id).await })
            }

            fn seen(&self, payment_id: String, key: String) -> BoxFuture<'_, Result<bool, LedgerError>> {
                Box::pin(async move {
                    let row: Option<(String,)> = sqlx::query_as(
                        "SELECT kind FROM operations WHERE payment_id = ? AND idempotency_key = ?",
                    )
                    .bind(payment_id)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.is_some())
                })
            }

            fn apply(&self, c: Change) -> BoxFuture<'_, Result<Applied, LedgerError>> {
                Box::pin(async move {
                    let now = now_rfc3339();
                    let mut tx = self.pool.begin().await?;
                    // The update goes first so SQLite takes its write lock at once; the
                    // conditions make it a compare-and-set.
                    let changed = sqlx::query(
                        "UPDATE payments SET status = ?, refunded_cents = ?, updated_at = ? \
                         WHERE id = ? AND status = ? AND refunded_cents = ?",
                    )
                    .bind(c.status.as_str())
                    .bind(c.refunded_cents)
                    .bind(&now)
                    .bind(&c.payment_id)
                    .bind(c.from_status.as_str())
                    .bind(c.from_refunded)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed == 0 {
                        return Ok(Applied::Lost);
                    }
                    if let Some((kind, key, amount)) = &c.operation {
                        let (kind, amount) = (*kind, *amount);
                        let recorded = sqlx::query(
                            "INSERT INTO operations (payment_id, idempotency_key, kind, amount_cents, created_at) \
                             VALUES (?, ?, ?, ?, ?)",
                        )
                        .bind(&c.payment_id)
                        .bind(key)
                        .bind(kind)
                        .bind(amount)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await;
                        match recorded {
                            Ok(_) => {}
                            Err(e) if unique_violation(&e) => return Ok(Applied::Duplicate),
                            Err(e) => return Err(e.into()),
                        }
                        Self::publish_in(&mut tx, &c.payment_id, |p| {
                            crate::events::operation(kind, amount, p)
                        })
                        .await?;
                    }
                    tx.commit().await?;
                    self.wake.notify_one();
                    Ok(Applied::Done(Box::new(self.must(&c.payment_id).await?)))
                })
            }

            fn outbox(&self) -> (Arc<dyn OutboxStore>, Arc<Notify>) {
                (Arc::new(self.pool.clone()), self.wake.clone())
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
        }
    };
}

ledger!(
    /// The ledger in SQLite (embedded default).
    SqliteLedger,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    kit::store::sqlite::open,
    SQLITE_MIGRATIONS,
    kit_events::outbox::enqueue
);

ledger!(
    /// The ledger in MariaDB / MySQL (production).
    MySqlLedger,
    sqlx::MySql,
    sqlx::MySqlPool,
    kit::store::mysql::open,
    MYSQL_MIGRATIONS,
    kit_events::outbox::mysql::enqueue
);
