//! Orders' store in SQLite: order documents (JSON), the saga state, the first answer to
//! each `Idempotency-Key`, and the outbox — the saga's transitions, the order's status
//! and its events always change in one transaction.

use std::sync::Arc;
use std::time::Duration;

use kit::store::{Migration, StoreError as OpenError};
use kit_events::Event;
use saga::{BoxFuture, SagaState, SagaStore, StoreError, Transition};
use sqlx::SqlitePool;
use tokio::sync::Notify;

use crate::domain::{
    self, Order, OrderStatus, cancelled_event, confirmed_event, now_ms, rfc3339_ms, steps,
};

static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "orders",
        sql: include_str!("../migrations/sqlite/0001_orders.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
];

/// The service's name as event source.
pub const SOURCE: &str = "orders";

/// The first answer given to an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// Hash of the request it answered.
    pub request_hash: String,
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// What creating an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The order, its saga and `orders.created` were stored.
    New,
    /// The idempotency key had an answer already: nothing was stored.
    Existing(StoredAnswer),
}

/// The idempotency record written with a new order.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// The caller.
    pub user_id: String,
    /// The key.
    pub key: String,
    /// Hash of the request.
    pub request_hash: String,
    /// The answer's status.
    pub status: u16,
    /// The answer's JSON body.
    pub body: String,
}

/// Orders in SQLite.
#[derive(Clone)]
pub struct OrderStore {
    pool: SqlitePool,
    wake_relay: Arc<Notify>,
}

impl std::fmt::Debug for OrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl OrderStore {
    /// Opens (and migrates) the database at `url` (`sqlite://…`).
    pub async fn open(url: &str, setting: &str) -> Result<Self, OpenError> {
        if kit::store::scheme(url) != "sqlite" {
            return Err(OpenError::UnknownScheme {
                setting: setting.to_owned(),
                url: kit::store::redact(url),
                expected: "sqlite://",
            });
        }
        Ok(Self {
            pool: kit::store::sqlite::open(url, setting, MIGRATIONS).await?,
            wake_relay: Arc::new(Notify::new()),
        })
    }

    /// The pool (for the outbox relay and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Wakes the relay after outbox rows are committed.
    pub fn set_relay_notifier(&mut self, wake: Arc<Notify>) {
        self.wake_relay = wake;
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The stored answer to `key` of `user_id`, if any.
    pub async fn answer(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let row: Option<(String, i64, String)> = sqlx::query_as(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE user_id = ? AND key = ?",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        Ok(row.map(|(request_hash, status, body)| StoredAnswer {
            request_hash,
            status: u16::try_from(status).unwrap_or(500),
            body,
        }))
    }

    /// Stores a new order with its saga, its `orders.created` event and (when given)
    /// its idempotency record, in one transaction. The idempotency record goes first: a
    /// concurrent duplicate finds it and stores nothing.
    pub async fn create(
        &self,
        order: &Order,
        saga: &SagaState,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<Created, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(err)?;
        if let Some(r) = &idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, status, body, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, key) DO NOTHING",
            )
            .bind(&r.user_id)
            .bind(&r.key)
            .bind(&r.request_hash)
            .bind(i64::from(r.status))
            .bind(&r.body)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            if inserted == 0 {
                let (request_hash, status, body): (String, i64, String) = sqlx::query_as(
                    "SELECT request_hash, status, body FROM idempotency_keys WHERE user_id = ? AND key = ?",
                )
                .bind(&r.user_id)
                .bind(&r.key)
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
                tx.rollback().await.map_err(err)?;
                return Ok(Created::Existing(StoredAnswer {
                    request_hash,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }));
            }
        }
        let doc = serde_json::to_string(order).map_err(err)?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, doc, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&order.id)
        .bind(&order.user_id)
        .bind(order.status.as_str())
        .bind(doc)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        insert_saga(&mut tx, saga).await?;
        let event = Event::new(SOURCE, "orders.created", domain::created_event(order));
        kit_events::outbox::enqueue(&mut *tx, "orders.created", &event)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.wake_relay.notify_one();
        Ok(Created::New)
    }

    /// One order with its saga.
    pub async fn get(&self, id: &str) -> Result<Option<(Order, SagaState)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT o.doc, s.state FROM orders o JOIN sagas s ON s.id = o.id WHERE o.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        row.map(|(doc, state)| {
            Ok((
                serde_json::from_str(&doc).map_err(err)?,
                serde_json::from_str(&state).map_err(err)?,
            ))
        })
        .transpose()
    }

    /// Up to `limit` of `user_id`'s orders, newest first, older than `before`.
    pub async fn list(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<(Order, SagaState)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT o.doc, s.state FROM orders o JOIN sagas s ON s.id = o.id \
             WHERE o.user_id = ? AND (? IS NULL OR o.id < ?) ORDER BY o.id DESC LIMIT ?",
        )
        .bind(user_id)
        .bind(before)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.into_iter()
            .map(|(doc, state)| {
                Ok((
                    serde_json::from_str(&doc).map_err(err)?,
                    serde_json::from_str(&state).map_err(err)?,
                ))
            })
            .collect()
    }

    /// Deletes idempotency records older than `age`.
    pub async fn purge_answers(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_ms < ?")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(err)?
                .rows_affected(),
        )
    }

    /// Sets an order's status (and reason) in its document.
    async fn set_status(
        tx: &mut sqlx::SqliteConnection,
        id: &str,
        status: OrderStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE orders SET status = ?1, updated_ms = ?2, \
             doc = json_set(doc, '$.status', ?1, '$.updated_at', ?3, '$.reason', ?4) WHERE id = ?5",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(rfc3339_ms(now))
        .bind(reason)
        .bind(id)
        .execute(tx)
        .await
        .map_err(err)?;
        Ok(())
    }
}

async fn insert_saga(tx: &mut sqlx::SqliteConnection, saga: &SagaState) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sagas (id, kind, status, version, state, updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&saga.id)
    .bind(&saga.kind)
    .bind(saga.status.as_str())
    .bind(i64::try_from(saga.version).unwrap_or(i64::MAX))
    .bind(serde_json::to_string(saga).map_err(err)?)
    .bind(saga.updated_ms)
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    Ok(())
}

impl SagaStore for OrderStore {
    fn save<'a>(
        &'a self,
        state: &'a SagaState,
        transition: &'a Transition,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(err)?;
            let changed = sqlx::query(
                "UPDATE sagas SET status = ?, version = ?, state = ?, updated_ms = ? WHERE id = ? AND version = ?",
            )
            .bind(state.status.as_str())
            .bind(i64::try_from(state.version).unwrap_or(i64::MAX))
            .bind(serde_json::to_string(state).map_err(err)?)
            .bind(state.updated_ms)
            .bind(&state.id)
            .bind(i64::try_from(state.version.saturating_sub(1)).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await.map_err(err)?;
                return Ok(false);
            }
            let now = state.updated_ms;
            let at = rfc3339_ms(now);
            let event = match transition {
                Transition::StepDone { step } if step == steps::CONFIRM_ORDER => {
                    OrderStore::set_status(&mut tx, &state.id, OrderStatus::Confirmed, None, now)
                        .await?;
                    Some(("orders.confirmed", confirmed_event(state, &at)))
                }
                Transition::Aborted { reason } => {
                    OrderStore::set_status(
                        &mut tx,
                        &state.id,
                        OrderStatus::Cancelled,
                        Some(reason),
                        now,
                    )
                    .await?;
                    Some(("orders.cancelled", cancelled_event(state, reason, &at)))
                }
                _ => None,
            };
            if let Some((subject, data)) = &event {
                let e = Event::new(SOURCE, subject, data.clone());
                kit_events::outbox::enqueue(&mut *tx, subject, &e)
                    .await
                    .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            if event.is_some() {
                self.wake_relay.notify_one();
            }
            Ok(true)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SagaState>, StoreError>> {
        Box::pin(async move {
            let row: Option<(String,)> = sqlx::query_as("SELECT state FROM sagas WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
            row.map(|(s,)| serde_json::from_str(&s).map_err(err))
                .transpose()
        })
    }

    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT id FROM sagas WHERE status IN ('running', 'compensating') ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
            Ok(rows.into_iter().map(|(id,)| id).collect())
        })
    }
}
