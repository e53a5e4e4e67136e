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
//! The schema ([`SQLITE_SCHEMA`]) goes into the service's own migrations. The SQL is
//! plain (no `RETURNING`, no upsert dialect) so PostgreSQL and MariaDB versions of the
//! same two tables and statements can follow; only placeholders and the
//! auto-increment column differ.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Sqlite, SqlitePool};
use tokio::sync::Notify;

use crate::{Event, EventBus};

/// The outbox and inbox tables for SQLite; add it to the service's migrations.
pub const SQLITE_SCHEMA: &str = include_str!("../migrations/sqlite/outbox_inbox.sql");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes `event` for `subject` into the outbox, inside the caller's transaction.
pub async fn enqueue<'c, E>(executor: E, subject: &str, event: &Event) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (event_id, subject, payload, created_ms) VALUES (?, ?, ?, ?)")
        .bind(&event.id)
        .bind(subject)
        .bind(payload)
        .bind(now_ms())
        .execute(executor)
        .await?;
    Ok(())
}

/// Records that `consumer` handled `event_id`, inside the transaction that applies the
/// effect. Returns `false` if it was handled before: apply nothing, just acknowledge.
pub async fn record_handled<'c, E>(
    executor: E,
    consumer: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, handled_ms) VALUES (?, ?, ?)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
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
    pool: SqlitePool,
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
    /// A relay over the service's own database.
    pub fn new(pool: SqlitePool, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self {
            pool,
            bus,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Poke this after committing outbox rows so they go out at once.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes up to one batch of due rows, oldest first, stopping at the first
    /// failure so events keep their order.
    pub async fn relay_once(&self) -> Result<RelayRound, sqlx::Error> {
        let now = now_ms();
        let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
            "SELECT position, subject, payload, attempts, next_attempt_ms FROM outbox
             WHERE sent_ms IS NULL ORDER BY position LIMIT ?",
        )
        .bind(self.config.batch)
        .fetch_all(&self.pool)
        .await?;
        let mut round = RelayRound::default();
        for (position, subject, payload, attempts, next) in rows {
            if next > now {
                // The oldest unsent row is backing off; later ones wait to keep order.
                round.failed = true;
                break;
            }
            let event: Event = match serde_json::from_str(&payload) {
                Ok(e) => e,
                Err(e) => return Err(sqlx::Error::Decode(Box::new(e))),
            };
            match self.bus.publish(&subject, &event).await {
                Ok(_) => {
                    sqlx::query(
                        "UPDATE outbox SET sent_ms = ?, last_error = NULL WHERE position = ?",
                    )
                    .bind(now_ms())
                    .bind(position)
                    .execute(&self.pool)
                    .await?;
                    round.sent += 1;
                }
                Err(e) => {
                    let attempts = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
                    let delay = self.config.backoff(attempts);
                    tracing::warn!(subject, id = %event.id, attempts, retry_in = ?delay, error = %e, "outbox publish failed");
                    sqlx::query(
                        "UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ? WHERE position = ?",
                    )
                    .bind(i64::from(attempts))
                    .bind(now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)))
                    .bind(e.to_string())
                    .bind(position)
                    .execute(&self.pool)
                    .await?;
                    round.failed = true;
                    break;
                }
            }
        }
        Ok(round)
    }

    /// Rows not yet published.
    pub async fn unsent(&self) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Deletes rows sent more than `age` ago.
    pub async fn purge_sent(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM outbox WHERE sent_ms IS NOT NULL AND sent_ms < ?")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
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

    async fn db() -> (tempfile::TempDir, SqlitePool) {
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
