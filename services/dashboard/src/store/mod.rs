//! The dashboard's store: spans with a summary row per trace kept up to date on
//! ingest (so listing and filtering traces never reads spans), the services each trace
//! went through, and log records — in one SQLite file (WAL, incremental auto-vacuum).
//!
//! Writes come from one writer ([`crate::ingest`]), a group of requests per
//! transaction; retention ([`crate::retention`]) deletes whole traces and old logs in
//! chunks and gives the freed pages back to the file system.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use kit::store::{Migration, StoreError as OpenError};
use serde_json::Value;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Row, SqlitePool};

use crate::otlp::{LogRow, SpanRow};

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "spans, traces and logs",
    sql: include_str!("../../migrations/sqlite/0001_telemetry.sql"),
}];

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[error("dashboard store: {0}")]
pub struct StoreError(#[from] sqlx::Error);

/// What one write stored (a span already stored is not stored again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// New spans.
    pub spans: u64,
    /// Log records.
    pub logs: u64,
}

/// Filters of the traces list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFilter {
    /// Traces with a span of this service.
    pub service: Option<String>,
    /// `Some(true)`: with an error span; `Some(false)`: without.
    pub error: Option<bool>,
    /// At least this long, ns.
    pub min_duration_ns: Option<i64>,
    /// The root span's route.
    pub route: Option<String>,
    /// Started before this, Unix ns.
    pub before_ns: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// One trace in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root span's service (the earliest span's while no root arrived).
    pub root_service: String,
    /// The root span's name.
    pub root_name: String,
    /// The root span's `http.route` or `url.path`.
    pub route: Option<String>,
    /// Unix ns.
    pub start_ns: i64,
    /// Unix ns.
    pub end_ns: i64,
    /// Spans stored.
    pub span_count: i64,
    /// The services it went through, by name.
    pub services: Vec<String>,
    /// Whether a span has status error.
    pub error: bool,
}

/// A stored span with the number of log records emitted in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// The span.
    pub span: SpanRow,
    /// Log records with its trace and span ids.
    pub log_count: i64,
}

/// Filters of the logs search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Of this service.
    pub service: Option<String>,
    /// At least this severity number.
    pub min_severity: Option<i32>,
    /// Containing this, case-insensitively.
    pub text: Option<String>,
    /// In this trace.
    pub trace_id: Option<String>,
    /// In this span.
    pub span_id: Option<String>,
    /// At or after this, Unix ns.
    pub since_ns: Option<i64>,
    /// Follow mode: ids above this, oldest first.
    pub after_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// A stored log record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    /// Its id (grows with arrival).
    pub id: i64,
    /// The record.
    pub log: LogRow,
}

/// The store (cheap to clone).
#[derive(Debug, Clone)]
pub struct TelemetryStore {
    pool: SqlitePool,
}

const INSERT_SPAN: &str = "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_span_id, \
     service, instance, name, kind, start_ns, end_ns, status, status_message, attributes, \
     events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
// SQLite evaluates every assignment against the row as it was, so `better` compares the
// new candidate root with the stored one consistently.
const UPSERT_TRACE: &str = "INSERT INTO traces (trace_id, start_ns, end_ns, span_count, error, \
     has_root, root_service, root_name, route) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (trace_id) DO UPDATE SET \
       start_ns = min(traces.start_ns, excluded.start_ns), \
       end_ns = max(traces.end_ns, excluded.end_ns), \
       span_count = traces.span_count + excluded.span_count, \
       error = max(traces.error, excluded.error), \
       root_service = CASE WHEN ?10 THEN excluded.root_service ELSE traces.root_service END, \
       root_name = CASE WHEN ?10 THEN excluded.root_name ELSE traces.root_name END, \
       route = CASE WHEN ?10 THEN excluded.route ELSE traces.route END, \
       has_root = max(traces.has_root, excluded.has_root)";
const INSERT_TRACE_SERVICE: &str =
    "INSERT OR IGNORE INTO trace_services (service, trace_id) VALUES (?, ?)";
const INSERT_LOG: &str = "INSERT INTO logs (time_ns, service, instance, severity, \
     severity_text, message, trace_id, span_id, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The candidate root of a trace within one write, and what it adds to the summary.
#[derive(Debug)]
struct TraceDelta<'a> {
    start_ns: i64,
    end_ns: i64,
    spans: i64,
    error: bool,
    root: &'a SpanRow,
    services: Vec<&'a str>,
}

impl<'a> TraceDelta<'a> {
    fn new(span: &'a SpanRow) -> Self {
        Self {
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            spans: 1,
            error: span.status == 2,
            root: span,
            services: vec![span.service.as_str()],
        }
    }

    fn add(&mut self, span: &'a SpanRow) {
        self.start_ns = self.start_ns.min(span.start_ns);
        self.end_ns = self.end_ns.max(span.end_ns);
        self.spans += 1;
        self.error |= span.status == 2;
        if root_rank(span) < root_rank(self.root) {
            self.root = span;
        }
        if !self.services.contains(&span.service.as_str()) {
            self.services.push(&span.service);
        }
    }
}

/// Orders candidate roots: a span without a parent first, then the earliest.
fn root_rank(span: &SpanRow) -> (bool, i64) {
    (span.parent_span_id.is_some(), span.start_ns)
}

impl TelemetryStore {
    /// Opens (creating and migrating) the SQLite database at `url` (`sqlite://…`).
    pub async fn open(url: &str, setting: &str) -> Result<Self, OpenError> {
        if kit::store::scheme(url) != "sqlite" {
            return Err(OpenError::UnknownScheme {
                setting: setting.to_owned(),
                url: kit::store::redact(url),
                expected: "sqlite://",
            });
        }
        let pool = kit::store::sqlite::open(url, setting, MIGRATIONS).await?;
        let store = Self { pool };
        store
            .incremental_auto_vacuum()
            .await
            .map_err(|e| OpenError::Connect {
                setting: setting.to_owned(),
                url: kit::store::redact(url),
                source: Box::new(e),
            })?;
        Ok(store)
    }

    /// Switches a database to incremental auto-vacuum (freed pages can then be returned
    /// to the file system a few at a time); the `VACUUM` that takes runs once, on the
    /// new, small database.
    async fn incremental_auto_vacuum(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&mut *conn)
            .await?;
        if mode != 2 {
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&mut *conn)
                .await?;
            sqlx::query("VACUUM").execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool (tests hold locks on it).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Stores spans and log records in one transaction, updating each trace's summary
    /// with the spans that were new.
    pub async fn write(&self, spans: &[&SpanRow], logs: &[&LogRow]) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut traces: HashMap<&str, TraceDelta<'_>> = HashMap::new();
        let mut written = Written::default();
        for s in spans {
            let inserted = sqlx::query(INSERT_SPAN)
                .bind(&s.trace_id)
                .bind(&s.span_id)
                .bind(&s.parent_span_id)
                .bind(&s.service)
                .bind(&s.instance)
                .bind(&s.name)
                .bind(s.kind)
                .bind(s.start_ns)
                .bind(s.end_ns)
                .bind(s.status)
                .bind(&s.status_message)
                .bind(s.attributes.to_string())
                .bind(s.events.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                continue;
            }
            written.spans += 1;
            match traces.get_mut(s.trace_id.as_str()) {
                Some(t) => t.add(s),
                None => {
                    traces.insert(&s.trace_id, TraceDelta::new(s));
                }
            }
        }
        for (trace_id, t) in &traces {
            let has_root = t.root.parent_span_id.is_none();
            let (stored_root, stored_start): (Option<i64>, Option<i64>) =
                sqlx::query_as("SELECT has_root, start_ns FROM traces WHERE trace_id = ?")
                    .bind(trace_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map_or((None, None), |(r, s): (i64, i64)| (Some(r), Some(s)));
            let better = match (stored_root, stored_start) {
                // A root replaces a stand-in; a stand-in only an older stand-in.
                (Some(r), Some(start)) => r == 0 && (has_root || t.start_ns < start),
                _ => true,
            };
            sqlx::query(UPSERT_TRACE)
                .bind(trace_id)
                .bind(t.start_ns)
                .bind(t.end_ns)
                .bind(t.spans)
                .bind(t.error)
                .bind(has_root)
                .bind(&t.root.service)
                .bind(&t.root.name)
                .bind(t.root.route())
                .bind(better)
                .execute(&mut *tx)
                .await?;
            for service in &t.services {
                sqlx::query(INSERT_TRACE_SERVICE)
                    .bind(service)
                    .bind(trace_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for l in logs {
            sqlx::query(INSERT_LOG)
                .bind(l.time_ns)
                .bind(&l.service)
                .bind(&l.instance)
                .bind(l.severity)
                .bind(&l.severity_text)
                .bind(&l.message)
                .bind(&l.trace_id)
                .bind(&l.span_id)
                .bind(l.attributes.to_string())
                .execute(&mut *tx)
                .await?;
            written.logs += 1;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Traces matching `filter`, newest first.
    pub async fn traces(&self, filter: &TraceFilter) -> Result<Vec<TraceSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT t.trace_id, t.root_service, t.root_name, t.route, t.start_ns, t.end_ns, \
             t.span_count, t.error, \
             (SELECT json_group_array(s.service) FROM trace_services s \
              WHERE s.trace_id = t.trace_id) AS services \
             FROM traces t WHERE 1 = 1",
        );
        let mut args = SqliteArguments::default();
        if let Some(service) = &filter.service {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM trace_services f \
                 WHERE f.service = ? AND f.trace_id = t.trace_id)",
            );
            add(&mut args, service.clone());
        }
        if let Some(error) = filter.error {
            sql.push_str(" AND t.error = ?");
            add(&mut args, i64::from(error));
        }
        if let Some(min) = filter.min_duration_ns {
            sql.push_str(" AND t.end_ns - t.start_ns >= ?");
            add(&mut args, min);
        }
        if let Some(route) = &filter.route {
            sql.push_str(" AND t.route = ?");
            add(&mut args, route.clone());
        }
        if let Some(before) = filter.before_ns {
            sql.push_str(" AND t.start_ns < ?");
            add(&mut args, before);
        }
        sql.push_str(" ORDER BY t.start_ns DESC LIMIT ?");
        add(&mut args, i64::from(filter.limit));
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let services: String = r.try_get("services")?;
                let mut services: Vec<String> = serde_json::from_str(&services).unwrap_or_default();
                services.sort();
                Ok(TraceSummary {
                    trace_id: r.try_get("trace_id")?,
                    root_service: r.try_get("root_service")?,
                    root_name: r.try_get("root_name")?,
                    route: r.try_get("route")?,
                    start_ns: r.try_get("start_ns")?,
                    end_ns: r.try_get("end_ns")?,
                    span_count: r.try_get("span_count")?,
                    services,
                    error: r.try_get::<i64, _>("error")? != 0,
                })
            })
            .collect()
    }

    /// The spans of one trace, by start, each with its log count; empty for an unknown
    /// trace.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<StoredSpan>, StoreError> {
        let rows = sqlx::query(
            "SELECT trace_id, span_id, parent_span_id, service, instance, name, kind, \
             start_ns, end_ns, status, status_message, attributes, events \
             FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
        )
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?;
        let counts: HashMap<String, i64> = sqlx::query_as(
            "SELECT span_id, COUNT(*) FROM logs \
             WHERE trace_id = ? AND span_id IS NOT NULL GROUP BY span_id",
        )
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        rows.iter()
            .map(|r| {
                let span = SpanRow {
                    trace_id: r.try_get("trace_id")?,
                    span_id: r.try_get("span_id")?,
                    parent_span_id: r.try_get("parent_span_id")?,
                    service: r.try_get("service")?,
                    instance: r.try_get("instance")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    start_ns: r.try_get("start_ns")?,
                    end_ns: r.try_get("end_ns")?,
                    status: r.try_get("status")?,
                    status_message: r.try_get("status_message")?,
                    attributes: json_column(r, "attributes")?,
                    events: json_column(r, "events")?,
                };
                let log_count = counts.get(&span.span_id).copied().unwrap_or(0);
                Ok(StoredSpan { span, log_count })
            })
            .collect()
    }

    /// Log records matching `filter`: newest first, or oldest first after
    /// `after_id` (follow mode).
    pub async fn logs(&self, filter: &LogFilter) -> Result<Vec<StoredLog>, StoreError> {
        let mut sql = String::from(
            "SELECT id, time_ns, service, instance, severity, severity_text, message, \
             trace_id, span_id, attributes FROM logs WHERE 1 = 1",
        );
        let mut args = SqliteArguments::default();
        if let Some(service) = &filter.service {
            sql.push_str(" AND service = ?");
            add(&mut args, service.clone());
        }
        if let Some(min) = filter.min_severity {
            sql.push_str(" AND severity >= ?");
            add(&mut args, min);
        }
        if let Some(text) = &filter.text {
            // LIKE is case-insensitive for ASCII; the pattern's own wildcards are escaped.
            sql.push_str(" AND message LIKE ? ESCAPE '\\'");
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            add(&mut args, format!("%{escaped}%"));
        }
        if let Some(trace_id) = &filter.trace_id {
            sql.push_str(" AND trace_id = ?");
            add(&mut args, trace_id.clone());
        }
        if let Some(span_id) = &filter.span_id {
            sql.push_str(" AND span_id = ?");
            add(&mut args, span_id.clone());
        }
        if let Some(since) = filter.since_ns {
            sql.push_str(" AND time_ns >= ?");
            add(&mut args, since);
        }
        match filter.after_id {
            Some(after) => {
                sql.push_str(" AND id > ? ORDER BY id ASC LIMIT ?");
                add(&mut args, after);
            }
            None => sql.push_str(" ORDER BY id DESC LIMIT ?"),
        }
        add(&mut args, i64::from(filter.limit));
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredLog {
                    id: r.try_get("id")?,
                    log: LogRow {
                        time_ns: r.try_get("time_ns")?,
                        service: r.try_get("service")?,
                        instance: r.try_get("instance")?,
                        severity: r.try_get("severity")?,
                        severity_text: r.try_get("severity_text")?,
                        message: r.try_get("message")?,
                        trace_id: r.try_get("trace_id")?,
                        span_id: r.try_get("span_id")?,
                        attributes: json_column(r, "attributes")?,
                    },
                })
            })
            .collect()
    }

    /// Deletes up to `chunk` traces (with their spans) that started before `cutoff_ns`,
    /// oldest first; returns how many.
    pub async fn delete_traces_before(
        &self,
        cutoff_ns: i64,
        chunk: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT trace_id FROM traces WHERE start_ns < ? ORDER BY start_ns LIMIT ?",
        )
        .bind(cutoff_ns)
        .bind(i64::from(chunk))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = Value::from(ids.iter().map(|(id,)| id.as_str()).collect::<Vec<_>>()).to_string();
        for table in ["spans", "trace_services", "traces"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE trace_id IN (SELECT value FROM json_each(?))"
            ))
            .bind(&list)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Deletes up to `chunk` log records older than `cutoff_ns`, oldest first; returns
    /// how many.
    pub async fn delete_logs_before(&self, cutoff_ns: i64, chunk: u32) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM logs WHERE id IN \
             (SELECT id FROM logs WHERE time_ns < ? ORDER BY time_ns LIMIT ?)",
        )
        .bind(cutoff_ns)
        .bind(i64::from(chunk))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The start of the oldest trace and the time of the oldest log record, Unix ns.
    pub async fn oldest(&self) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let (traces,): (Option<i64>,) = sqlx::query_as("SELECT MIN(start_ns) FROM traces")
            .fetch_one(&self.pool)
            .await?;
        let (logs,): (Option<i64>,) = sqlx::query_as("SELECT MIN(time_ns) FROM logs")
            .fetch_one(&self.pool)
            .await?;
        Ok((traces, logs))
    }

    /// Bytes the database's live pages take (free pages not counted).
    pub async fn used_bytes(&self) -> Result<u64, StoreError> {
        let (used,): (i64,) = sqlx::query_as(
            "SELECT (p.page_count - f.freelist_count) * s.page_size \
             FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Returns up to `pages` free pages to the file system (all with `None`) and
    /// truncates the write-ahead log.
    pub async fn vacuum(&self, pages: Option<u32>) -> Result<(), StoreError> {
        let sql = match pages {
            Some(n) => format!("PRAGMA incremental_vacuum({n})"),
            None => "PRAGMA incremental_vacuum".to_owned(),
        };
        sqlx::query(&sql).execute(&self.pool).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Spans and log records stored.
    pub async fn counts(&self) -> Result<(i64, i64), StoreError> {
        let (spans,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM spans")
            .fetch_one(&self.pool)
            .await?;
        let (logs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM logs")
            .fetch_one(&self.pool)
            .await?;
        Ok((spans, logs))
    }
}

fn add<'q, T>(args: &mut SqliteArguments<'q>, value: T)
where
    T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    // Encoding an owned string or integer into SQLite arguments cannot fail.
    let _ = args.add(value);
}

fn json_column(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}
