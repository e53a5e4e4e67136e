//! The durable log: events, consumer groups with cursors, and unacknowledged
//! deliveries, all in one SQLite database (WAL). A publish is answered only after its
//! transaction committed, so an acknowledged event survives a crash of the bus.
//!
//! Writes are serialised by one in-process lock (SQLite has one writer anyway, and
//! waiting on a lock is cheaper than retrying on `SQLITE_BUSY`). Every change bumps a
//! watch channel that open delivery streams wait on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::store::Migration;
use kit_events::embedded::wire::GroupRequest;
use kit_events::{StartAt, dead_letter_subject, subject_matches};
use serde::Serialize;
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, watch};

/// The bus's migrations.
pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "log, groups, pending",
    sql: include_str!("../migrations/sqlite/0001_log.sql"),
}];

/// How many log rows one claim examines at most (bounds a transaction's length when a
/// group skips many events it does not follow).
const SCAN_LIMIT: i64 = 2048;

/// A log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such consumer group.
    #[error("no consumer group {0:?}")]
    NoGroup(String),
    /// No dead letter at this position.
    #[error("no dead letter at position {0}")]
    NoDeadLetter(i64),
    /// The dead letter's original event is no longer retained.
    #[error("the original of dead letter {0} is no longer in the log")]
    Gone(i64),
    /// The database failed.
    #[error("bus database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One delivery handed to a consumer; `payload` is the event's JSON as published.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Log position.
    pub seq: i64,
    /// Subject.
    pub subject: String,
    /// Delivery number to the group.
    pub attempt: u32,
    /// The event JSON.
    pub payload: String,
}

/// A subject in the log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SubjectInfo {
    /// Subject.
    pub subject: String,
    /// Retained events.
    pub events: i64,
    /// Newest position.
    pub last_seq: i64,
}

/// A consumer group and how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Filters.
    pub subjects: Vec<String>,
    /// Last position handed out or skipped.
    pub cursor: i64,
    /// Matching events after the cursor (not yet delivered).
    pub lag: i64,
    /// Delivered, not yet acknowledged (includes waiting redeliveries).
    pub pending: i64,
    /// Ack timeout in milliseconds.
    pub ack_timeout_ms: i64,
    /// Deliveries before dead-lettering.
    pub max_deliveries: i64,
}

/// A stored event, for peeking.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredEvent {
    /// Position.
    pub seq: i64,
    /// Subject.
    pub subject: String,
    /// When the bus stored it (ms since epoch).
    pub published_ms: i64,
    /// The event JSON.
    #[serde(skip)]
    pub payload: String,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    subjects: String,
    cursor: i64,
    ack_timeout_ms: i64,
    max_deliveries: i64,
}

/// The log.
#[derive(Debug)]
pub struct Log {
    pool: SqlitePool,
    write: Mutex<()>,
    changes: watch::Sender<u64>,
}

impl Log {
    /// A log over an opened, migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            write: Mutex::new(()),
            changes: watch::channel(0).0,
        }
    }

    /// The pool (readiness checks).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A receiver that sees every change to the log.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|c| *c = c.wrapping_add(1));
    }

    /// Appends an event unless its id is already in the log; returns its position and
    /// whether it was a duplicate.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &str,
    ) -> Result<(i64, bool), LogError> {
        let _w = self.write.lock().await;
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO events (subject, msg_id, payload, published_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (msg_id) DO NOTHING RETURNING seq",
        )
        .bind(subject)
        .bind(msg_id)
        .bind(payload)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        drop(_w);
        match inserted {
            Some((seq,)) => {
                self.changed();
                Ok((seq, false))
            }
            None => {
                let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM events WHERE msg_id = ?")
                    .bind(msg_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((seq, true))
            }
        }
    }

    /// Creates a group, or updates the settings of an existing one (its cursor stays).
    pub async fn put_group(&self, name: &str, req: &GroupRequest) -> Result<(), LogError> {
        let _w = self.write.lock().await;
        let start: i64 = match req.start {
            StartAt::Beginning => 0,
            StartAt::Now => {
                sqlx::query_as::<_, (i64,)>("SELECT COALESCE(MAX(seq), 0) FROM events")
                    .fetch_one(&self.pool)
                    .await?
                    .0
            }
        };
        sqlx::query(
            "INSERT INTO groups (name, subjects, cursor, ack_timeout_ms, max_deliveries, created_ms)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET subjects = excluded.subjects,
                 ack_timeout_ms = excluded.ack_timeout_ms, max_deliveries = excluded.max_deliveries",
        )
        .bind(name)
        .bind(serde_json::to_string(&req.subjects).expect("strings serialize"))
        .bind(start)
        .bind(i64::try_from(req.ack_timeout_ms).unwrap_or(i64::MAX))
        .bind(i64::from(req.max_deliveries.max(1)))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        drop(_w);
        self.changed();
        Ok(())
    }

    async fn group(tx: &mut Transaction<'_, Sqlite>, name: &str) -> Result<GroupRow, LogError> {
        sqlx::query_as(
            "SELECT subjects, cursor, ack_timeout_ms, max_deliveries FROM groups WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| LogError::NoGroup(name.to_owned()))
    }

    /// Moves a pending delivery to the group's dead-letter subject.
    async fn dead_letter(
        tx: &mut Transaction<'_, Sqlite>,
        group: &str,
        seq: i64,
    ) -> Result<(), LogError> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT subject, msg_id, payload FROM events WHERE seq = ?")
                .bind(seq)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((subject, msg_id, payload)) = row {
            sqlx::query(
                "INSERT INTO events (subject, msg_id, payload, published_ms) VALUES (?, ?, ?, ?)
                 ON CONFLICT (msg_id) DO NOTHING",
            )
            .bind(dead_letter_subject(group, &subject))
            .bind(format!("dl:{group}:{msg_id}"))
            .bind(payload)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
            tracing::warn!(group, subject, seq, "event dead-lettered");
        }
        sqlx::query("DELETE FROM pending WHERE grp = ? AND seq = ?")
            .bind(group)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Hands up to `max_in_flight` (minus what `consumer` already holds) deliveries of
    /// `group` to `consumer`: expired or nacked ones first, then new events in log order.
    pub async fn claim(
        &self,
        group: &str,
        consumer: &str,
        max_in_flight: u32,
    ) -> Result<Vec<Claimed>, LogError> {
        let now = now_ms();
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let g = Self::group(&mut tx, group).await?;
        let filters: Vec<String> = serde_json::from_str(&g.subjects).unwrap_or_default();
        let (held,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pending WHERE grp = ? AND consumer = ? AND leased_until_ms > ?",
        )
        .bind(group)
        .bind(consumer)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut credit = i64::from(max_in_flight) - held;
        let mut out = Vec::new();
        let mut dead = false;
        let lease = now.saturating_add(g.ack_timeout_ms);

        if credit > 0 {
            let due: Vec<(i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT p.seq, p.deliveries, e.subject, e.payload FROM pending p
                 LEFT JOIN events e ON e.seq = p.seq
                 WHERE p.grp = ? AND (p.consumer IS NULL OR p.leased_until_ms <= ?) AND p.deliver_after_ms <= ?
                 ORDER BY p.seq LIMIT ?",
            )
            .bind(group)
            .bind(now)
            .bind(now)
            .bind(credit)
            .fetch_all(&mut *tx)
            .await?;
            for (seq, deliveries, subject, payload) in due {
                let (Some(subject), Some(payload)) = (subject, payload) else {
                    // Removed by retention before it was handled.
                    sqlx::query("DELETE FROM pending WHERE grp = ? AND seq = ?")
                        .bind(group)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                };
                if deliveries >= g.max_deliveries {
                    Self::dead_letter(&mut tx, group, seq).await?;
                    dead = true;
                    continue;
                }
                sqlx::query(
                    "UPDATE pending SET deliveries = deliveries + 1, consumer = ?, leased_until_ms = ?
                     WHERE grp = ? AND seq = ?",
                )
                .bind(consumer)
                .bind(lease)
                .bind(group)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                credit -= 1;
                out.push(Claimed {
                    seq,
                    subject,
                    attempt: u32::try_from(deliveries + 1).unwrap_or(u32::MAX),
                    payload,
                });
            }
        }

        let mut cursor = g.cursor;
        if credit > 0 {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT seq, subject, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(cursor)
            .bind(SCAN_LIMIT)
            .fetch_all(&mut *tx)
            .await?;
            for (seq, subject, payload) in rows {
                if credit == 0 {
                    break;
                }
                cursor = seq;
                if !filters.iter().any(|f| subject_matches(f, &subject)) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO pending (grp, seq, deliveries, consumer, leased_until_ms, deliver_after_ms)
                     VALUES (?, ?, 1, ?, ?, 0)",
                )
                .bind(group)
                .bind(seq)
                .bind(consumer)
                .bind(lease)
                .execute(&mut *tx)
                .await?;
                credit -= 1;
                out.push(Claimed {
                    seq,
                    subject,
                    attempt: 1,
                    payload,
                });
            }
            if cursor != g.cursor {
                sqlx::query("UPDATE groups SET cursor = ? WHERE name = ?")
                    .bind(cursor)
                    .bind(group)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        drop(_w);
        if dead {
            self.changed();
        }
        Ok(out)
    }

    /// Gives back deliveries that never reached their consumer (its stream closed): they
    /// are due again at once and do not count as attempts.
    pub async fn release(&self, group: &str, consumer: &str, seqs: &[i64]) -> Result<(), LogError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for seq in seqs {
            sqlx::query(
                "UPDATE pending SET deliveries = deliveries - 1, consumer = NULL, leased_until_ms = 0
                 WHERE grp = ? AND seq = ? AND consumer = ?",
            )
            .bind(group)
            .bind(seq)
            .bind(consumer)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        drop(_w);
        self.changed();
        Ok(())
    }

    /// Acknowledges deliveries of `group`.
    pub async fn ack(&self, group: &str, seqs: &[i64]) -> Result<(), LogError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for seq in seqs {
            sqlx::query("DELETE FROM pending WHERE grp = ? AND seq = ?")
                .bind(group)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        drop(_w);
        self.changed();
        Ok(())
    }

    /// A failed delivery: due again after `delay`, or dead-lettered if it was the last
    /// attempt.
    pub async fn nack(&self, group: &str, seq: i64, delay: Duration) -> Result<(), LogError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let g = Self::group(&mut tx, group).await?;
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT deliveries FROM pending WHERE grp = ? AND seq = ?")
                .bind(group)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        match row {
            Some((deliveries,)) if deliveries >= g.max_deliveries => {
                Self::dead_letter(&mut tx, group, seq).await?;
            }
            Some(_) => {
                let after =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                sqlx::query(
                    "UPDATE pending SET consumer = NULL, leased_until_ms = 0, deliver_after_ms = ?
                     WHERE grp = ? AND seq = ?",
                )
                .bind(after)
                .bind(group)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
            None => {}
        }
        tx.commit().await?;
        drop(_w);
        self.changed();
        Ok(())
    }

    /// When the next pending delivery of `group` becomes due (ms since epoch), if any.
    pub async fn next_due(&self, group: &str) -> Result<Option<i64>, LogError> {
        let (due,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(MAX(leased_until_ms, deliver_after_ms)) FROM pending WHERE grp = ?",
        )
        .bind(group)
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    /// Removes events older than `max_age` and, oldest first, those beyond `max_bytes` of
    /// payload; returns how many went.
    pub async fn enforce_retention(
        &self,
        max_age: Duration,
        max_bytes: i64,
    ) -> Result<u64, LogError> {
        let _w = self.write.lock().await;
        let cutoff = now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut removed = sqlx::query("DELETE FROM events WHERE published_ms < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let (mut total,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM events")
                .fetch_one(&self.pool)
                .await?;
        while total > max_bytes {
            let rows: Vec<(i64, i64)> =
                sqlx::query_as("SELECT seq, LENGTH(payload) FROM events ORDER BY seq LIMIT 500")
                    .fetch_all(&self.pool)
                    .await?;
            if rows.is_empty() {
                break;
            }
            let mut upto = 0;
            for (seq, len) in rows {
                if total <= max_bytes {
                    break;
                }
                total -= len;
                upto = seq;
            }
            removed += sqlx::query("DELETE FROM events WHERE seq <= ?")
                .bind(upto)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if removed > 0 {
            sqlx::query("DELETE FROM pending WHERE seq NOT IN (SELECT seq FROM events)")
                .execute(&self.pool)
                .await?;
        }
        Ok(removed)
    }

    /// Every subject with its retained count and newest position.
    pub async fn subjects(&self) -> Result<Vec<SubjectInfo>, LogError> {
        Ok(sqlx::query_as(
            "SELECT subject, COUNT(*) AS events, MAX(seq) AS last_seq FROM events GROUP BY subject ORDER BY subject",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every group with its lag and pending deliveries.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, LogError> {
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT name, subjects, cursor, ack_timeout_ms, max_deliveries FROM groups ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (name, subjects, cursor, ack_timeout_ms, max_deliveries) in rows {
            let subjects: Vec<String> = serde_json::from_str(&subjects).unwrap_or_default();
            let after: Vec<(String, i64)> = sqlx::query_as(
                "SELECT subject, COUNT(*) FROM events WHERE seq > ? GROUP BY subject",
            )
            .bind(cursor)
            .fetch_all(&self.pool)
            .await?;
            let lag = after
                .iter()
                .filter(|(s, _)| subjects.iter().any(|f| subject_matches(f, s)))
                .map(|(_, n)| n)
                .sum();
            let (pending,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pending WHERE grp = ?")
                .bind(&name)
                .fetch_one(&self.pool)
                .await?;
            out.push(GroupInfo {
                name,
                subjects,
                cursor,
                lag,
                pending,
                ack_timeout_ms,
                max_deliveries,
            });
        }
        Ok(out)
    }

    /// Replays the dead letter at position `seq`: its original event is offered again to
    /// the group that dead-lettered it (and only to it) with a fresh delivery count, and
    /// the dead letter is removed. Returns the group and the original position.
    pub async fn replay_dead_letter(&self, seq: i64) -> Result<(String, i64), LogError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT subject, msg_id FROM events WHERE seq = ?")
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        let (group, original_id) = row
            .as_ref()
            .and_then(|(subject, msg_id)| {
                let (group, _) = kit_events::parse_dead_letter_subject(subject)?;
                let id = msg_id.strip_prefix(&format!("dl:{group}:"))?;
                Some((group.to_owned(), id.to_owned()))
            })
            .ok_or(LogError::NoDeadLetter(seq))?;
        Self::group(&mut tx, &group).await?;
        let (original,): (i64,) = sqlx::query_as("SELECT seq FROM events WHERE msg_id = ?")
            .bind(&original_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(LogError::Gone(seq))?;
        sqlx::query(
            "INSERT INTO pending (grp, seq, deliveries, consumer, leased_until_ms, deliver_after_ms)
             VALUES (?, ?, 0, NULL, 0, 0)
             ON CONFLICT (grp, seq) DO UPDATE SET deliveries = 0, consumer = NULL,
                 leased_until_ms = 0, deliver_after_ms = 0",
        )
        .bind(&group)
        .bind(original)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM events WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        drop(_w);
        tracing::info!(group, seq, original, "dead letter replayed");
        self.changed();
        Ok((group, original))
    }

    /// Up to `limit` events matching `filter` after position `after`, oldest first.
    pub async fn peek(
        &self,
        filter: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::new();
        let mut from = after;
        // Scans in pages so a rare subject in a long log does not load it all at once.
        while (out.len() as i64) < limit {
            let rows: Vec<StoredEvent> = sqlx::query_as(
                "SELECT seq, subject, published_ms, payload FROM events WHERE seq > ? ORDER BY seq LIMIT 1000",
            )
            .bind(from)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { break };
            from = last.seq;
            out.extend(
                rows.into_iter()
                    .filter(|e| subject_matches(filter, &e.subject))
                    .take(usize::try_from(limit).unwrap_or(0) - out.len()),
            );
        }
        Ok(out)
    }
}
