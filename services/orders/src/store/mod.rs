//! Orders' store: order documents, the saga state, the first answer to each
//! `Idempotency-Key`, and the outbox — the saga's transitions, the order's status and
//! its events always change in one transaction.
//!
//! Two backends run the same statements: SQLite (JSON text, the embedded default) and
//! PostgreSQL (JSONB, production). Statements are written once with `?` placeholders;
//! for PostgreSQL they are numbered and `json(?)` becomes `CAST(? AS JSONB)`.

use std::sync::Arc;
use std::time::Duration;

use kit::store::{Migration, StoreError as OpenError};
use kit_events::Event;
use saga::{BoxFuture, SagaState, SagaStore, StoreError, Transition};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

use crate::domain::{
    self, Order, OrderStatus, cancelled_event, confirmed_event, now_ms, rfc3339_ms, steps,
};

static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "orders",
        sql: include_str!("../../migrations/sqlite/0001_orders.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
    Migration {
        version: 3,
        description: "sagas by update time",
        sql: SAGAS_BY_UPDATED,
    },
];

static POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "orders",
        sql: include_str!("../../migrations/postgres/0001_orders.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::POSTGRES_SCHEMA,
    },
    Migration {
        version: 3,
        description: "sagas by update time",
        sql: SAGAS_BY_UPDATED,
    },
];

/// The most recently updated sagas (the operators' listing, `GET /admin/sagas`).
const SAGAS_BY_UPDATED: &str = "CREATE INDEX sagas_by_updated ON sagas (updated_ms)";

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

/// The database behind an [`OrderStore`].
#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A pool of either backend (for the outbox relay and tests).
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Orders in SQLite or PostgreSQL.
#[derive(Clone)]
pub struct OrderStore {
    db: Db,
    /// What the spans of its calls say about the database (`kit::telemetry::db`).
    spans: kit::telemetry::db::Db,
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

use kit::store::sqlite::statement as sqlite;

/// PostgreSQL: JSON inputs cast to JSONB, placeholders numbered.
fn postgres(sql: &'static str) -> std::borrow::Cow<'static, str> {
    let sql = sql.replace("json(?)", "CAST(? AS JSONB)");
    std::borrow::Cow::Owned(kit::store::postgres::numbered_placeholders(&sql))
}

/// Runs `$body` with `$pool` bound to the backend's pool, `$q` to its statement
/// rewriter and (optionally) `$ob` to its outbox module; the body is the same text for
/// both backends.
macro_rules! on_db {
    ($db:expr, |$pool:ident, $q:ident, $ob:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => {
                use kit_events::outbox as $ob;
                let $q = sqlite;
                $body
            }
            Db::Postgres($pool) => {
                use kit_events::outbox::postgres as $ob;
                let $q = postgres;
                $body
            }
        }
    };
    ($db:expr, |$pool:ident, $q:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => {
                let $q = sqlite;
                $body
            }
            Db::Postgres($pool) => {
                let $q = postgres;
                $body
            }
        }
    };
}

fn answer_of((request_hash, status, body): (String, i64, String)) -> StoredAnswer {
    StoredAnswer {
        request_hash,
        status: u16::try_from(status).unwrap_or(500),
        body,
    }
}

fn decode(doc: &str, state: &str) -> Result<(Order, SagaState), StoreError> {
    Ok((
        serde_json::from_str(doc).map_err(err)?,
        serde_json::from_str(state).map_err(err)?,
    ))
}

/// The order document `doc` with its status (and reason) changed at `now`.
fn with_status(
    doc: &str,
    status: OrderStatus,
    reason: Option<&str>,
    now: i64,
) -> Result<String, StoreError> {
    let mut doc: serde_json::Value = serde_json::from_str(doc).map_err(err)?;
    let Some(fields) = doc.as_object_mut() else {
        return Err(err("order document is not an object"));
    };
    fields.insert("status".into(), status.as_str().into());
    fields.insert("updated_at".into(), rfc3339_ms(now).into());
    fields.insert("reason".into(), reason.into());
    serde_json::to_string(&doc).map_err(err)
}

const SELECT_ANSWER: &str =
    "SELECT request_hash, status, body FROM idempotency_keys WHERE user_id = ? AND key = ?";
const INSERT_ANSWER: &str = "INSERT INTO idempotency_keys \
     (user_id, key, request_hash, status, body, created_ms) VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (user_id, key) DO NOTHING";
const INSERT_ORDER: &str = "INSERT INTO orders (id, user_id, status, doc, created_ms, updated_ms) \
     VALUES (?, ?, ?, json(?), ?, ?)";
const INSERT_SAGA: &str = "INSERT INTO sagas (id, kind, status, version, state, updated_ms) \
     VALUES (?, ?, ?, ?, json(?), ?)";
const SELECT_ORDER: &str = "SELECT CAST(o.doc AS TEXT), CAST(s.state AS TEXT) \
     FROM orders o JOIN sagas s ON s.id = o.id WHERE o.id = ?";
const SELECT_ORDERS: &str = "SELECT CAST(o.doc AS TEXT), CAST(s.state AS TEXT) \
     FROM orders o JOIN sagas s ON s.id = o.id \
     WHERE o.user_id = ? AND (CAST(? AS TEXT) IS NULL OR o.id < ?) ORDER BY o.id DESC LIMIT ?";
const PURGE_ANSWERS: &str = "DELETE FROM idempotency_keys WHERE created_ms < ?";
const SELECT_DOC: &str = "SELECT CAST(doc AS TEXT) FROM orders WHERE id = ?";
const UPDATE_STATUS: &str =
    "UPDATE orders SET status = ?, updated_ms = ?, doc = json(?) WHERE id = ?";
const UPDATE_SAGA: &str = "UPDATE sagas SET status = ?, version = ?, state = json(?), updated_ms = ? \
     WHERE id = ? AND version = ?";
const SELECT_SAGA: &str = "SELECT CAST(state AS TEXT) FROM sagas WHERE id = ?";
const SELECT_IN_FLIGHT: &str =
    "SELECT id FROM sagas WHERE status IN ('running', 'compensating') ORDER BY id";
const SELECT_RECENT_IN_FLIGHT: &str = "SELECT CAST(state AS TEXT) FROM sagas \
     WHERE status IN ('running', 'compensating') ORDER BY updated_ms DESC, id DESC LIMIT ?";
const SELECT_RECENT_ENDED: &str = "SELECT CAST(state AS TEXT) FROM sagas \
     WHERE status NOT IN ('running', 'compensating') ORDER BY updated_ms DESC, id DESC LIMIT ?";

impl OrderStore {
    /// Opens (and migrates) the database at `url`: `sqlite://…` or `postgres://…`.
    pub async fn open(url: &str, setting: &str) -> Result<Self, OpenError> {
        let db = match kit::store::scheme(url) {
            "sqlite" => {
                Db::Sqlite(kit::store::sqlite::open(url, setting, SQLITE_MIGRATIONS).await?)
            }
            "postgres" | "postgresql" => {
                Db::Postgres(kit::store::postgres::open(url, setting, POSTGRES_MIGRATIONS).await?)
            }
            _ => {
                return Err(OpenError::UnknownScheme {
                    setting: setting.to_owned(),
                    url: kit::store::redact(url),
                    expected: "sqlite:// or postgres://",
                });
            }
        };
        Ok(Self {
            db,
            spans: kit::telemetry::db::Db::from_url(url),
            wake_relay: Arc::new(Notify::new()),
        })
    }

    /// The pool (for the outbox relay and tests).
    pub fn pool(&self) -> Pool {
        match &self.db {
            Db::Sqlite(p) => Pool::Sqlite(p.clone()),
            Db::Postgres(p) => Pool::Postgres(p.clone()),
        }
    }

    /// Wakes the relay after outbox rows are committed.
    pub fn set_relay_notifier(&mut self, wake: Arc<Notify>) {
        self.wake_relay = wake;
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(&self.db, |pool, _q| {
            sqlx::query("SELECT 1").execute(pool).await.map_err(err)?;
        });
        Ok(())
    }

    /// The stored answer to `key` of `user_id`, if any.
    pub async fn answer(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        self.spans
            .run("SELECT", "idempotency_keys", async {
                let row: Option<(String, i64, String)> = on_db!(&self.db, |pool, q| {
                    sqlx::query_as(&q(SELECT_ANSWER))
                        .bind(user_id)
                        .bind(key)
                        .fetch_optional(pool)
                        .await
                        .map_err(err)?
                });
                Ok(row.map(answer_of))
            })
            .await
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
        self.spans
            .run("INSERT", "orders", async {
                let now = now_ms();
                let doc = serde_json::to_string(order).map_err(err)?;
                let state = serde_json::to_string(saga).map_err(err)?;
                let event = Event::new(SOURCE, "orders.created", domain::created_event(order));
                on_db!(&self.db, |pool, q, ob| {
                    let mut tx = pool.begin().await.map_err(err)?;
                    if let Some(r) = &idempotency {
                        let inserted = sqlx::query(&q(INSERT_ANSWER))
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
                            let row: (String, i64, String) = sqlx::query_as(&q(SELECT_ANSWER))
                                .bind(&r.user_id)
                                .bind(&r.key)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(err)?;
                            tx.rollback().await.map_err(err)?;
                            return Ok(Created::Existing(answer_of(row)));
                        }
                    }
                    sqlx::query(&q(INSERT_ORDER))
                        .bind(&order.id)
                        .bind(&order.user_id)
                        .bind(order.status.as_str())
                        .bind(&doc)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    sqlx::query(&q(INSERT_SAGA))
                        .bind(&saga.id)
                        .bind(&saga.kind)
                        .bind(saga.status.as_str())
                        .bind(i64::try_from(saga.version).unwrap_or(i64::MAX))
                        .bind(&state)
                        .bind(saga.updated_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    ob::enqueue(&mut *tx, "orders.created", &event)
                        .await
                        .map_err(err)?;
                    tx.commit().await.map_err(err)?;
                });
                self.wake_relay.notify_one();
                Ok(Created::New)
            })
            .await
    }

    /// One order with its saga.
    pub async fn get(&self, id: &str) -> Result<Option<(Order, SagaState)>, StoreError> {
        self.spans
            .run("SELECT", "orders", async {
                let row: Option<(String, String)> = on_db!(&self.db, |pool, q| {
                    sqlx::query_as(&q(SELECT_ORDER))
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                        .map_err(err)?
                });
                row.map(|(doc, state)| decode(&doc, &state)).transpose()
            })
            .await
    }

    /// Up to `limit` of `user_id`'s orders, newest first, older than `before`.
    pub async fn list(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<(Order, SagaState)>, StoreError> {
        self.spans
            .run("SELECT", "orders", async {
                let rows: Vec<(String, String)> = on_db!(&self.db, |pool, q| {
                    sqlx::query_as(&q(SELECT_ORDERS))
                        .bind(user_id)
                        .bind(before)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await
                        .map_err(err)?
                });
                rows.iter().map(|(doc, state)| decode(doc, state)).collect()
            })
            .await
    }

    /// Up to `limit` sagas for operators: those in flight first, then those that ended,
    /// each most recently updated first.
    pub async fn recent_sagas(&self, limit: u32) -> Result<Vec<SagaState>, StoreError> {
        let mut rows: Vec<(String,)> = Vec::new();
        for sql in [SELECT_RECENT_IN_FLIGHT, SELECT_RECENT_ENDED] {
            let left = i64::from(limit) - rows.len() as i64;
            if left <= 0 {
                break;
            }
            let more: Vec<(String,)> = on_db!(&self.db, |pool, q| {
                sqlx::query_as(&q(sql))
                    .bind(left)
                    .fetch_all(pool)
                    .await
                    .map_err(err)?
            });
            rows.extend(more);
        }
        rows.iter()
            .map(|(s,)| serde_json::from_str(s).map_err(err))
            .collect()
    }

    /// Deletes idempotency records older than `age`.
    pub async fn purge_answers(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query(&q(PURGE_ANSWERS))
                .bind(cutoff)
                .execute(pool)
                .await
                .map_err(err)?
                .rows_affected()
        }))
    }
}

impl SagaStore for OrderStore {
    fn save<'a>(
        &'a self,
        state: &'a SagaState,
        transition: &'a Transition,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.spans.run("UPDATE", "sagas", async move {
            let json = serde_json::to_string(state).map_err(err)?;
            let now = state.updated_ms;
            let at = rfc3339_ms(now);
            let change = match transition {
                Transition::StepDone { step } if step == steps::CONFIRM_ORDER => Some((
                    OrderStatus::Confirmed,
                    None,
                    "orders.confirmed",
                    confirmed_event(state, &at),
                )),
                Transition::Aborted { reason } => Some((
                    OrderStatus::Cancelled,
                    Some(reason.as_str()),
                    "orders.cancelled",
                    cancelled_event(state, reason, &at),
                )),
                _ => None,
            };
            on_db!(&self.db, |pool, q, ob| {
                let mut tx = pool.begin().await.map_err(err)?;
                let changed = sqlx::query(&q(UPDATE_SAGA))
                    .bind(state.status.as_str())
                    .bind(i64::try_from(state.version).unwrap_or(i64::MAX))
                    .bind(&json)
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
                if let Some((status, reason, subject, data)) = &change {
                    // The saga row is ours now (its version moved in this transaction),
                    // so reading and rewriting the order's document cannot race.
                    let (doc,): (String,) = sqlx::query_as(&q(SELECT_DOC))
                        .bind(&state.id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                    sqlx::query(&q(UPDATE_STATUS))
                        .bind(status.as_str())
                        .bind(now)
                        .bind(with_status(&doc, *status, *reason, now)?)
                        .bind(&state.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    let e = Event::new(SOURCE, subject, data.clone());
                    ob::enqueue(&mut *tx, subject, &e).await.map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
            });
            if change.is_some() {
                self.wake_relay.notify_one();
            }
            Ok(true)
        }))
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SagaState>, StoreError>> {
        Box::pin(self.spans.run("SELECT", "sagas", async move {
            let row: Option<(String,)> = on_db!(&self.db, |pool, q| {
                sqlx::query_as(&q(SELECT_SAGA))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(err)?
            });
            row.map(|(s,)| serde_json::from_str(&s).map_err(err))
                .transpose()
        }))
    }

    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = on_db!(&self.db, |pool, _q| {
                sqlx::query_as(SELECT_IN_FLIGHT)
                    .fetch_all(pool)
                    .await
                    .map_err(err)?
            });
            Ok(rows.into_iter().map(|(id,)| id).collect())
        })
    }
}

#[cfg(test)]
mod tests;
