//! Transactional outbox and idempotent inbox: the two halves of "effectively once".
//!
//! A producer writes its state change and its events in **one transaction of its own
//! database** ([`enqueue`]); a [`Relay`] publishes committed rows in order and marks
//! them sent. A crash between commit and publish loses nothing: the rows stay unsent
//! and the relay (of the restarted process) publishes them. A crash between publish and
//! "mark sent" publishes again with the same event id, which the bus drops as a
//! duplicate — so the relay's retry backoff is capped below the broker's duplicate
//! window (JetStream's is 2 minutes by default; the embedded bus keeps ids as long as
//! it keeps the events).
//!
//! A consumer records each handled event id in **its own database in the same
//! transaction as the effect** ([`record_handled`]); a redelivered event finds its id
//! and has no second effect.
//!
//! The schemas ([`SQLITE_SCHEMA`], [`MYSQL_SCHEMA`], [`POSTGRES_SCHEMA`]) go into the
//! service's own migrations. [`enqueue`] and [`record_handled`] are the SQLite versions;
//! [`mysql`] and [`postgres`] hold the same two functions for those backends, and every
//! backend's pool is an [`OutboxStore`] that a [`Relay`] drains. A store that is not SQL
//! (a Redis outbox written by the producer's scripts) implements [`OutboxStore`] too and
//! reports its failures as [`OutboxError::Backend`].
//!
//! [`inbox_page`] (and its twins in [`mysql`] and [`postgres`]) reads a consumer's
//! inbox back, page by page, for a service's `GET /admin/inbox` ([`InboxPage`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::discovery::BoxFuture;
use kit::telemetry::db::System;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::{Event, EventBus};

/// The outbox and inbox tables for SQLite; add it to the service's migrations.
pub const SQLITE_SCHEMA: &str = include_str!("../migrations/sqlite/outbox_inbox.sql");
/// The outbox and inbox tables for MariaDB / MySQL.
pub const MYSQL_SCHEMA: &str = include_str!("../migrations/mysql/outbox_inbox.sql");
/// The outbox and inbox tables for PostgreSQL.
pub const POSTGRES_SCHEMA: &str = include_str!("../migrations/postgres/outbox_inbox.sql");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One unsent outbox row, as the relay reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Publish order.
    pub position: i64,
    /// The subject to publish on.
    pub subject: String,
    /// The CloudEvent, as JSON.
    pub payload: String,
    /// Failed publishes so far.
    pub attempts: i64,
    /// Not before this time (ms since the epoch).
    pub next_attempt_ms: i64,
}

/// One event a consumer handled, from its inbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct InboxEntry {
    /// The event id.
    pub event_id: String,
    /// When the handling committed (ms since the epoch).
    pub handled_ms: i64,
}

/// Most inbox entries one [`InboxPage`] holds.
pub const INBOX_PAGE_LIMIT: u32 = 1000;

/// One page of a consumer's inbox, in event-id order: the answer of a service's
/// `GET /admin/inbox?after=<next>&limit=<n>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboxPage {
    /// The consumer group the entries were handled as (the inbox's `consumer`).
    pub group: String,
    /// The entries, by event id.
    pub events: Vec<InboxEntry>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<String>,
}

/// The query of `GET /admin/inbox`, for `kit::extract::Query` (a bad value is a `422`
/// problem document).
#[derive(Debug, Clone, serde::Deserialize, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    /// The previous page's `next`; none for the first page.
    #[garde(length(max = 255))]
    pub after: Option<String>,
    /// Entries per page: 1 to [`INBOX_PAGE_LIMIT`], default [`INBOX_PAGE_LIMIT`].
    #[serde(default = "inbox_page_limit")]
    #[garde(range(min = 1, max = 1000))]
    pub limit: u32,
}

fn inbox_page_limit() -> u32 {
    INBOX_PAGE_LIMIT
}

impl InboxPage {
    /// The page of `rows`, read with one more row than `limit` to know whether more follow.
    fn from_rows(group: &str, mut rows: Vec<InboxEntry>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| e.event_id.clone())
        } else {
            None
        };
        Self {
            group: group.to_owned(),
            events: rows,
            next,
        }
    }
}

/// An outbox store or the relay reading it failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The SQL database failed.
    #[error("outbox: {0}")]
    Sql(#[from] sqlx::Error),
    /// A store of another kind failed (connection lost, a script refused, bad data).
    #[error("outbox: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A row's payload is not a CloudEvent.
    #[error("outbox row {position} holds no valid event: {source}")]
    Payload {
        /// The row.
        position: i64,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

impl OutboxError {
    /// The failure of a store that is not SQL.
    pub fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(e.into())
    }
}

/// The outbox of one database, as the [`Relay`] uses it. Implemented for `SqlitePool`,
/// `MySqlPool` and `PgPool`; any other store of rows written in the producer's own
/// atomic change can implement it.
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `limit` unsent rows, oldest first.
    fn due(&self, limit: i64) -> BoxFuture<'_, Result<Vec<OutboxRow>, OutboxError>>;
    /// Marks a row published.
    fn mark_sent(&self, position: i64) -> BoxFuture<'_, Result<(), OutboxError>>;
    /// Records a failed publish and when to try again.
    fn mark_failed(
        &self,
        position: i64,
        attempts: i64,
        next_attempt_ms: i64,
        error: String,
    ) -> BoxFuture<'_, Result<(), OutboxError>>;
    /// Rows not yet published.
    fn unsent(&self) -> BoxFuture<'_, Result<i64, OutboxError>>;
    /// Deletes rows sent before `cutoff_ms`.
    fn purge_sent(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, OutboxError>>;
}

/// The statements of one SQL dialect; only placeholders and the "insert unless present"
/// form differ.
struct Dialect {
    enqueue: &'static str,
    handled: &'static str,
    due: &'static str,
    sent: &'static str,
    failed: &'static str,
    unsent: &'static str,
    purge: &'static str,
    inbox: &'static str,
}

const QUESTION_MARKS: Dialect = Dialect {
    enqueue: "INSERT INTO outbox (event_id, subject, payload, created_ms) VALUES (?, ?, ?, ?)",
    handled: "INSERT INTO inbox (consumer, event_id, handled_ms) VALUES (?, ?, ?) \
              ON CONFLICT (consumer, event_id) DO NOTHING",
    due: "SELECT position, subject, payload, attempts, next_attempt_ms FROM outbox \
          WHERE sent_ms IS NULL ORDER BY position LIMIT ?",
    sent: "UPDATE outbox SET sent_ms = ?, last_error = NULL WHERE position = ?",
    failed: "UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ? WHERE position = ?",
    unsent: "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
    purge: "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND sent_ms < ?",
    inbox: "SELECT event_id, handled_ms FROM inbox WHERE consumer = ? AND event_id > ? \
            ORDER BY event_id LIMIT ?",
};

const SQLITE: Dialect = QUESTION_MARKS;

const MYSQL: Dialect = Dialect {
    handled: "INSERT IGNORE INTO inbox (consumer, event_id, handled_ms) VALUES (?, ?, ?)",
    ..QUESTION_MARKS
};

const POSTGRES: Dialect = Dialect {
    enqueue: "INSERT INTO outbox (event_id, subject, payload, created_ms) VALUES ($1, $2, $3, $4)",
    handled: "INSERT INTO inbox (consumer, event_id, handled_ms) VALUES ($1, $2, $3) \
              ON CONFLICT (consumer, event_id) DO NOTHING",
    due: "SELECT position, subject, payload, attempts, next_attempt_ms FROM outbox \
          WHERE sent_ms IS NULL ORDER BY position LIMIT $1",
    sent: "UPDATE outbox SET sent_ms = $1, last_error = NULL WHERE position = $2",
    failed: "UPDATE outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3 WHERE position = $4",
    unsent: "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
    purge: "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND sent_ms < $1",
    inbox: "SELECT event_id, handled_ms FROM inbox WHERE consumer = $1 AND event_id > $2 \
            ORDER BY event_id LIMIT $3",
};

/// One backend: `enqueue`, `record_handled` and the [`OutboxStore`] of its pool.
///
/// The calls made inside a request, a consumer or a publish (`enqueue`,
/// `record_handled`, `inbox_page`, `mark_sent`, `mark_failed`) are database spans; the
/// relay's polling (`due`, `unsent`, `purge_sent`) is not, so an idle relay sends no
/// trace per tick.
macro_rules! backend {
    ($db:ty, $pool:ty, $dialect:expr, $system:expr) => {
        /// Writes `event` for `subject` into the outbox, inside the caller's transaction.
        pub async fn enqueue<'c, E>(
            executor: E,
            subject: &str,
            event: &Event,
        ) -> Result<(), sqlx::Error>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let payload =
                serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let span = kit::telemetry::db::span($system, "INSERT", "outbox");
            sqlx::query($dialect.enqueue)
                .bind(&event.id)
                .bind(subject)
                .bind(payload)
                .bind(now_ms())
                .execute(executor)
                .instrument(span.clone())
                .await
                .inspect_err(|e| kit::telemetry::db::record_error(&span, e))?;
            Ok(())
        }

        /// Records that `consumer` handled `event_id`, inside the transaction that applies
        /// the effect. Returns `false` if it was handled before: apply nothing, just
        /// acknowledge.
        pub async fn record_handled<'c, E>(
            executor: E,
            consumer: &str,
            event_id: &str,
        ) -> Result<bool, sqlx::Error>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let span = kit::telemetry::db::span($system, "INSERT", "inbox");
            let done = sqlx::query($dialect.handled)
                .bind(consumer)
                .bind(event_id)
                .bind(now_ms())
                .execute(executor)
                .instrument(span.clone())
                .await
                .inspect_err(|e| kit::telemetry::db::record_error(&span, e))?;
            Ok(done.rows_affected() == 1)
        }

        /// Up to `limit` (1 to [`INBOX_PAGE_LIMIT`]) of the events `consumer` handled,
        /// in event-id order, after the id `after` (the previous page's `next`).
        pub async fn inbox_page<'c, E>(
            executor: E,
            consumer: &str,
            after: Option<&str>,
            limit: u32,
        ) -> Result<InboxPage, sqlx::Error>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let limit = limit.clamp(1, INBOX_PAGE_LIMIT);
            let rows = sqlx::query_as($dialect.inbox)
                .bind(consumer)
                // Every event id sorts after the empty string.
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit) + 1)
                .fetch_all(executor)
                .instrument(kit::telemetry::db::span($system, "SELECT", "inbox"))
                .await?;
            Ok(InboxPage::from_rows(consumer, rows, limit))
        }

        impl OutboxStore for $pool {
            fn due(&self, limit: i64) -> BoxFuture<'_, Result<Vec<OutboxRow>, OutboxError>> {
                Box::pin(async move {
                    Ok(sqlx::query_as($dialect.due)
                        .bind(limit)
                        .fetch_all(self)
                        .await?)
                })
            }

            fn mark_sent(&self, position: i64) -> BoxFuture<'_, Result<(), OutboxError>> {
                Box::pin(async move {
                    sqlx::query($dialect.sent)
                        .bind(now_ms())
                        .bind(position)
                        .execute(self)
                        .instrument(kit::telemetry::db::span($system, "UPDATE", "outbox"))
                        .await?;
                    Ok(())
                })
            }

            fn mark_failed(
                &self,
                position: i64,
                attempts: i64,
                next_attempt_ms: i64,
                error: String,
            ) -> BoxFuture<'_, Result<(), OutboxError>> {
                Box::pin(async move {
                    sqlx::query($dialect.failed)
                        .bind(attempts)
                        .bind(next_attempt_ms)
                        .bind(error)
                        .bind(position)
                        .execute(self)
                        .instrument(kit::telemetry::db::span($system, "UPDATE", "outbox"))
                        .await?;
                    Ok(())
                })
            }

            fn unsent(&self) -> BoxFuture<'_, Result<i64, OutboxError>> {
                Box::pin(async move {
                    let (n,): (i64,) = sqlx::query_as($dialect.unsent).fetch_one(self).await?;
                    Ok(n)
                })
            }

            fn purge_sent(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, OutboxError>> {
                Box::pin(async move {
                    Ok(sqlx::query($dialect.purge)
                        .bind(cutoff_ms)
                        .execute(self)
                        .await?
                        .rows_affected())
                })
            }
        }
    };
}

backend!(sqlx::Sqlite, sqlx::SqlitePool, SQLITE, System::Sqlite);

/// The outbox and inbox in MariaDB / MySQL ([`MYSQL_SCHEMA`]).
pub mod mysql {
    use super::*;
    backend!(sqlx::MySql, sqlx::MySqlPool, MYSQL, System::Mysql);
}

/// The outbox and inbox in PostgreSQL ([`POSTGRES_SCHEMA`]).
pub mod postgres {
    use super::*;
    backend!(sqlx::Postgres, sqlx::PgPool, POSTGRES, System::Postgresql);
}

/// How the relay retries and paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows published per round.
    pub batch: i64,
    /// How often the relay looks for rows when nobody pokes it (rows left by a crashed
    /// process, or committed without [`Relay::notifier`]).
    pub poll: Duration,
    /// First retry delay after a failed publish; doubles per attempt.
    pub min_backoff: Duration,
    /// Longest retry delay; must stay below the broker's duplicate window.
    pub max_backoff: Duration,
    /// The broker's duplicate window (JetStream's `duplicate_window`).
    pub duplicate_window: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            poll: Duration::from_millis(500),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl RelayConfig {
    /// The delay before retry number `attempts` (1 after the first failure): doubling
    /// from `min_backoff`, capped at `max_backoff` and below the duplicate window.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let cap = self.max_backoff.min(self.duplicate_window / 2);
        let exp = self
            .min_backoff
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
        exp.min(cap)
    }
}

/// What one round of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRound {
    /// Rows published and marked sent.
    pub sent: usize,
    /// A publish failed; the rest of the batch waits for the retry (keeping order).
    pub failed: bool,
}

/// Publishes committed outbox rows in order and marks them sent.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn OutboxStore>,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish()
    }
}

impl Relay {
    /// A relay over the service's own database (any [`OutboxStore`]: a SQLite, MySQL or
    /// PostgreSQL pool, or a store of another kind).
    pub fn new(store: impl OutboxStore, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self::shared(Arc::new(store), bus, config)
    }

    /// A relay over a store the service also holds elsewhere.
    pub fn shared(
        store: Arc<dyn OutboxStore>,
        bus: Arc<dyn EventBus>,
        config: RelayConfig,
    ) -> Self {
        Self {
            store,
            bus,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes on `wake` instead of a notifier of its own: the producer pokes it after
    /// each commit that wrote outbox rows.
    pub fn with_notifier(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Poke this after committing outbox rows so they go out at once.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes up to one batch of due rows, oldest first, stopping at the first
    /// failure so events keep their order.
    pub async fn relay_once(&self) -> Result<RelayRound, OutboxError> {
        let now = now_ms();
        let rows = self.store.due(self.config.batch).await?;
        let mut round = RelayRound::default();
        for OutboxRow {
            position,
            subject,
            payload,
            attempts,
            next_attempt_ms,
        } in rows
        {
            if next_attempt_ms > now {
                // The oldest unsent row is backing off; later ones wait to keep order.
                round.failed = true;
                break;
            }
            let event: Event = match serde_json::from_str(&payload) {
                Ok(e) => e,
                Err(source) => return Err(OutboxError::Payload { position, source }),
            };
            // The publish joins the trace of the request that wrote the event.
            let span = event.producer_span(self.bus.system(), &subject);
            match self
                .bus
                .publish(&subject, &event)
                .instrument(span.clone())
                .await
            {
                Ok(_) => {
                    self.store.mark_sent(position).instrument(span).await?;
                    round.sent += 1;
                }
                Err(e) => {
                    kit::telemetry::trace::record_failure(&span, e.kind());
                    drop(span);
                    let attempts = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
                    let delay = self.config.backoff(attempts);
                    tracing::warn!(subject, id = %event.id, attempts, retry_in = ?delay, error = %e, "outbox publish failed");
                    let next = now_ms()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    self.store
                        .mark_failed(position, i64::from(attempts), next, e.to_string())
                        .await?;
                    round.failed = true;
                    break;
                }
            }
        }
        Ok(round)
    }

    /// Rows not yet published.
    pub async fn unsent(&self) -> Result<i64, OutboxError> {
        self.store.unsent().await
    }

    /// Deletes rows sent more than `age` ago.
    pub async fn purge_sent(&self, age: Duration) -> Result<u64, OutboxError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.store.purge_sent(cutoff).await
    }

    /// Runs forever: relays when poked, every `poll`, and after a failure when the
    /// backoff has passed.
    pub async fn run(self) {
        loop {
            let round = match self.relay_once().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cannot read its table");
                    RelayRound {
                        sent: 0,
                        failed: true,
                    }
                }
            };
            if round.sent > 0 && !round.failed {
                continue; // there may be more
            }
            let wait = if round.failed {
                self.config.min_backoff
            } else {
                self.config.poll
            };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Starts [`Relay::run`] on the runtime.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stays_under_the_duplicate_window() {
        let c = RelayConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(4), Duration::from_millis(800));
        assert_eq!(c.backoff(100), Duration::from_secs(30));
        let tight = RelayConfig {
            duplicate_window: Duration::from_secs(20),
            ..RelayConfig::default()
        };
        for n in 1..200 {
            assert!(tight.backoff(n) < tight.duplicate_window);
        }
    }

    async fn db() -> (tempfile::TempDir, sqlx::SqlitePool) {
        static M: &[kit::store::Migration] = &[kit::store::Migration {
            version: 1,
            description: "outbox and inbox",
            sql: SQLITE_SCHEMA,
        }];
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/svc.db", dir.path().display());
        (dir, kit::store::sqlite::open(&url, "X", M).await.unwrap())
    }

    #[tokio::test]
    async fn inbox_admits_each_event_once() {
        let (_dir, pool) = db().await;
        let mut tx = pool.begin().await.unwrap();
        assert!(record_handled(&mut *tx, "mail", "e1").await.unwrap());
        tx.commit().await.unwrap();
        assert!(!record_handled(&pool, "mail", "e1").await.unwrap());
        assert!(
            record_handled(&pool, "stats", "e1").await.unwrap(),
            "per consumer"
        );
        // A rolled-back handling leaves no trace: the redelivery is handled.
        let mut tx = pool.begin().await.unwrap();
        assert!(record_handled(&mut *tx, "mail", "e2").await.unwrap());
        tx.rollback().await.unwrap();
        assert!(record_handled(&pool, "mail", "e2").await.unwrap());
    }

    #[tokio::test]
    async fn the_inbox_reads_back_page_by_page() {
        let (_dir, pool) = db().await;
        for id in ["e3", "e1", "e2"] {
            record_handled(&pool, "mail", id).await.unwrap();
        }
        record_handled(&pool, "stats", "e0").await.unwrap();
        let first = inbox_page(&pool, "mail", None, 2).await.unwrap();
        assert_eq!(first.group, "mail");
        let ids: Vec<&str> = first.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(first.next.as_deref(), Some("e2"));
        let rest = inbox_page(&pool, "mail", first.next.as_deref(), 2)
            .await
            .unwrap();
        assert_eq!(rest.events.len(), 1);
        assert_eq!(rest.events[0].event_id, "e3");
        assert!(rest.events[0].handled_ms > 0);
        assert_eq!(rest.next, None, "the last page");
    }

    #[tokio::test]
    async fn outbox_rows_roll_back_with_the_state_change() {
        let (_dir, pool) = db().await;
        let mut tx = pool.begin().await.unwrap();
        enqueue(
            &mut *tx,
            "orders.created",
            &Event::new("t", "orders.created", serde_json::json!({})),
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
